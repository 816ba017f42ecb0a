using ILGPU;
using ILGPU.Algorithms;

namespace ActorTrain.Compute.Ilgpu;

/// <summary>
/// The dense-layer kernels, one thread per output element, generic over the storage type
/// (<see cref="IStorage{T}"/>): loads widen to float, sums accumulate in float, results are stored
/// narrowed. Layout matches ModelSpec: W_l row-major fan_in x fan_out at wOffset, b_l at bOffset.
/// </summary>
internal static class Kernels
{
    public const int Identity = 0, Relu = 1, Tanh = 2;
    public const int MeanSquaredError = 0, CrossEntropy = 1;

    /// <summary>output[i, o] = act(b[o] + sum_k input[i, k] W[k, o]); index = (row, output).</summary>
    public static void Dense<T, TS>(Index2D index, ArrayView<T> input, ArrayView<T> weights, ArrayView<T> output,
        int fanIn, int fanOut, int wOffset, int bOffset, int activation)
        where T : unmanaged where TS : struct, IStorage<T>
    {
        TS s = default;
        int i = index.X, o = index.Y;
        float sum = s.Load(weights[bOffset + o]);
        for (int k = 0; k < fanIn; k++)
            sum += s.Load(input[i * fanIn + k]) * s.Load(weights[wOffset + k * fanOut + o]);
        if (activation == Relu) sum = XMath.Max(sum, 0f);
        else if (activation == Tanh) sum = XMath.Tanh(sum);
        output[i * fanOut + o] = s.Store(sum);
    }

    /// <summary>
    /// Per row: loss into rowLoss, and delta = scaleOverN * dLoss/dz stored narrowed. For MSE the loss
    /// is the row's sum of squared residuals (the host halves and averages); for cross-entropy it is
    /// log-sum-exp minus the true logit.
    /// </summary>
    public static void OutputDelta<T, TS>(Index1D row, ArrayView<T> logits, ArrayView<int> labels, ArrayView<float> targets,
        ArrayView<T> delta, ArrayView<float> rowLoss, int outputs, int lossKind, float scaleOverN)
        where T : unmanaged where TS : struct, IStorage<T>
    {
        TS s = default;
        int i = row;
        int start = i * outputs;
        if (lossKind == MeanSquaredError)
        {
            float sq = 0;
            for (int c = 0; c < outputs; c++)
            {
                float r = s.Load(logits[start + c]) - targets[start + c];
                sq += r * r;
                delta[start + c] = s.Store(r * scaleOverN);
            }
            rowLoss[i] = sq;
            return;
        }
        float max = s.Load(logits[start]);
        for (int c = 1; c < outputs; c++) max = XMath.Max(max, s.Load(logits[start + c]));
        float sum = 0;
        for (int c = 0; c < outputs; c++) sum += XMath.Exp(s.Load(logits[start + c]) - max);
        int label = labels[i];
        rowLoss[i] = max + XMath.Log(sum) - s.Load(logits[start + label]);
        for (int c = 0; c < outputs; c++)
        {
            float p = XMath.Exp(s.Load(logits[start + c]) - max) / sum;
            delta[start + c] = s.Store((p - (c == label ? 1f : 0f)) * scaleOverN);
        }
    }

    /// <summary>grad[W_l][k, o] = sum_i input[i, k] delta[i, o]; index = (k, o).</summary>
    public static void WeightGradient<T, TS>(Index2D index, ArrayView<T> input, ArrayView<T> delta, ArrayView<float> gradient,
        int rows, int fanIn, int fanOut, int wOffset)
        where T : unmanaged where TS : struct, IStorage<T>
    {
        TS s = default;
        int k = index.X, o = index.Y;
        float sum = 0;
        for (int i = 0; i < rows; i++) sum += s.Load(input[i * fanIn + k]) * s.Load(delta[i * fanOut + o]);
        gradient[wOffset + k * fanOut + o] = sum;
    }

    /// <summary>grad[b_l][o] = sum_i delta[i, o].</summary>
    public static void BiasGradient<T, TS>(Index1D o, ArrayView<T> delta, ArrayView<float> gradient, int rows, int fanOut, int bOffset)
        where T : unmanaged where TS : struct, IStorage<T>
    {
        TS s = default;
        float sum = 0;
        for (int i = 0; i < rows; i++) sum += s.Load(delta[i * fanOut + o]);
        gradient[bOffset + o] = sum;
    }

    /// <summary>
    /// previous[i, k] = (sum_o delta[i, o] W[k, o]) * act'(a[i, k]), where a is the layer's input
    /// (the previous layer's activation output); index = (i, k).
    /// </summary>
    public static void InputDelta<T, TS>(Index2D index, ArrayView<T> delta, ArrayView<T> weights, ArrayView<T> activations,
        ArrayView<T> previous, int fanIn, int fanOut, int wOffset, int activation)
        where T : unmanaged where TS : struct, IStorage<T>
    {
        TS s = default;
        int i = index.X, k = index.Y;
        float sum = 0;
        for (int o = 0; o < fanOut; o++) sum += s.Load(delta[i * fanOut + o]) * s.Load(weights[wOffset + k * fanOut + o]);
        float a = s.Load(activations[i * fanIn + k]);
        float d = activation == Relu ? (a > 0f ? sum : 0f) : sum * (1f - a * a);
        previous[i * fanIn + k] = s.Store(d);
    }
}
