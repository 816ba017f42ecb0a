using System.Numerics;
using System.Numerics.Tensors;
using ActorTrain.Core.Data;

namespace ActorTrain.Core.Models;

/// <summary>
/// The ground truth every engine is checked against: forward and backward of a <see cref="ModelSpec"/>
/// in plain loops, generic over the element type so the same code runs in double for
/// finite-difference checks and in float as the FP32 reference. Clarity over speed; it allocates.
/// </summary>
public static class ReferenceModel
{
    /// <summary>Mean loss over the batch; <paramref name="gradient"/> receives its gradient.</summary>
    public static T LossAndGradient<T>(ModelSpec spec, ReadOnlySpan<T> weights, ReadOnlySpan<T> features, int count,
        ReadOnlySpan<int> labels, ReadOnlySpan<T> targets, Span<T> gradient)
        where T : IFloatingPointIeee754<T>
    {
        var (acts, pre) = Forward(spec, weights, features, count);
        var output = pre[^1];
        int outs = spec.Outputs;
        var delta = new T[count * outs];
        T loss = OutputLossAndDelta(spec, output, count, labels, targets, delta);

        gradient.Clear();
        for (int l = spec.LayerCount - 1; l >= 0; l--)
        {
            AddLayerGradient(spec, l, acts[l], delta, count, gradient);
            if (l == 0) break;
            delta = PreviousDelta(spec, weights, l, delta, pre[l - 1], acts[l], count);
        }
        return loss;
    }

    /// <summary>
    /// Adds layer l's weight and bias gradient for <paramref name="count"/> samples (inputs a, deltas
    /// of its pre-activations) to <paramref name="gradient"/>: row by row (contiguous, vectorised),
    /// each element summing over the samples in order, unfused. A pipeline stage calls it per
    /// micro-batch, in micro-batch order: the same sums as one pass over the whole batch.
    /// </summary>
    internal static void AddLayerGradient<T>(ModelSpec spec, int l, T[] a, T[] delta, int count, Span<T> gradient)
        where T : IFloatingPointIeee754<T>
    {
        int fin = spec.LayerSizes[l], fout = spec.LayerSizes[l + 1];
        var gw = gradient.Slice(spec.Weight(l).Offset, fin * fout);
        var gb = gradient.Slice(spec.Bias(l).Offset, fout);
        for (int i = 0; i < count; i++)
        {
            var d = delta.AsSpan(i * fout, fout);
            TensorPrimitives.Add(gb, d, gb);
            for (int k = 0; k < fin; k++)
            {
                var row = gw.Slice(k * fout, fout);
                TensorPrimitives.MultiplyAdd(d, a[i * fin + k], row, row);
            }
        }
    }

    /// <summary>
    /// Layer l's pre-activations for <paramref name="count"/> samples: z_i = b + sum_k a_ik w_k, a row
    /// of W at a time (contiguous, vectorised); each element starts from its bias and adds its
    /// products in k order, unfused, as a dot product would.
    /// </summary>
    internal static T[] LayerForward<T>(ModelSpec spec, ReadOnlySpan<T> weights, int l, T[] a, int count)
        where T : IFloatingPointIeee754<T>
    {
        int fin = spec.LayerSizes[l], fout = spec.LayerSizes[l + 1];
        var w = weights.Slice(spec.Weight(l).Offset, fin * fout);
        var b = weights.Slice(spec.Bias(l).Offset, fout);
        var z = new T[count * fout];
        for (int i = 0; i < count; i++)
        {
            var zi = z.AsSpan(i * fout, fout);
            b.CopyTo(zi);
            for (int k = 0; k < fin; k++) TensorPrimitives.MultiplyAdd(w.Slice(k * fout, fout), a[i * fin + k], zi, zi);
        }
        return z;
    }

    /// <summary>The deltas of layer l - 1's pre-activations from layer l's: (delta W_l^T) times the activation's derivative.</summary>
    internal static T[] PreviousDelta<T>(ModelSpec spec, ReadOnlySpan<T> weights, int l, T[] delta, T[] z, T[] a, int count)
        where T : IFloatingPointIeee754<T>
    {
        int fin = spec.LayerSizes[l], fout = spec.LayerSizes[l + 1];
        var w = weights.Slice(spec.Weight(l).Offset, fin * fout);
        var prev = new T[count * fin];
        for (int i = 0; i < count; i++)
            for (int k = 0; k < fin; k++)
            {
                T s = T.Zero;
                for (int o = 0; o < fout; o++) s += delta[i * fout + o] * w[k * fout + o];
                prev[i * fin + k] = s * ActivationDerivative(spec.Activation, z[i * fin + k], a[i * fin + k]);
            }
        return prev;
    }

    /// <summary>
    /// What K-FAC needs of a batch: each layer's inputs (Count x its input width: the features, then
    /// the hidden activations) and the gradient of the mean loss with respect to its pre-activations
    /// (Count x its output width).
    /// </summary>
    public static (T[][] Inputs, T[][] Deltas) LayerInputsAndDeltas<T>(ModelSpec spec, ReadOnlySpan<T> weights, ReadOnlySpan<T> features, int count,
        ReadOnlySpan<int> labels, ReadOnlySpan<T> targets)
        where T : IFloatingPointIeee754<T>
    {
        var (acts, pre) = Forward(spec, weights, features, count);
        var deltas = new T[spec.LayerCount][];
        var delta = new T[count * spec.Outputs];
        OutputLossAndDelta(spec, pre[^1], count, labels, targets, delta);
        for (int l = spec.LayerCount - 1; l >= 0; l--)
        {
            deltas[l] = delta;
            if (l > 0) delta = PreviousDelta(spec, weights, l, delta, pre[l - 1], acts[l], count);
        }
        return (acts, deltas);
    }

    /// <summary>Mean loss only.</summary>
    public static T Loss<T>(ModelSpec spec, ReadOnlySpan<T> weights, ReadOnlySpan<T> features, int count,
        ReadOnlySpan<int> labels, ReadOnlySpan<T> targets)
        where T : IFloatingPointIeee754<T>
    {
        var (_, pre) = Forward(spec, weights, features, count);
        return OutputLossAndDelta(spec, pre[^1], count, labels, targets, new T[count * spec.Outputs]);
    }

    public static float LossAndGradient(ModelSpec spec, ReadOnlySpan<float> weights, Batch batch, Span<float> gradient) =>
        LossAndGradient(spec, weights, batch.Features, batch.Count, batch.Labels, batch.Targets, gradient);

    /// <summary>Output-layer values (logits for classifiers, predictions for regression), Count x Outputs.</summary>
    public static T[] Outputs<T>(ModelSpec spec, ReadOnlySpan<T> weights, ReadOnlySpan<T> features, int count)
        where T : IFloatingPointIeee754<T> => Forward(spec, weights, features, count).Pre[^1];

    private static (T[][] Acts, T[][] Pre) Forward<T>(ModelSpec spec, ReadOnlySpan<T> weights, ReadOnlySpan<T> features, int count)
        where T : IFloatingPointIeee754<T>
    {
        if (weights.Length != spec.ParameterCount) throw new ArgumentException($"expected {spec.ParameterCount} weights, got {weights.Length}");
        if (features.Length < count * spec.Inputs) throw new ArgumentException("features shorter than count x inputs");
        var acts = new T[spec.LayerCount][];
        var pre = new T[spec.LayerCount][];
        acts[0] = features[..(count * spec.Inputs)].ToArray();
        for (int l = 0; l < spec.LayerCount; l++)
        {
            var z = LayerForward(spec, weights, l, acts[l], count);
            pre[l] = z;
            if (l + 1 < spec.LayerCount)
            {
                var a = new T[z.Length];
                for (int i = 0; i < z.Length; i++) a[i] = Activate(spec.Activation, z[i]);
                acts[l + 1] = a;
            }
        }
        return (acts, pre);
    }

    /// <param name="divisor">the number of samples the loss is the mean over (a micro-batch's share of a larger batch); default count</param>
    internal static T OutputLossAndDelta<T>(ModelSpec spec, T[] output, int count, ReadOnlySpan<int> labels,
        ReadOnlySpan<T> targets, Span<T> delta, int? divisor = null)
        where T : IFloatingPointIeee754<T>
    {
        int outs = spec.Outputs;
        T n = T.CreateChecked(divisor ?? count);
        T loss = T.Zero;
        if (spec.Loss == LossKind.MeanSquaredError)
        {
            if (targets.Length < count * outs) throw new ArgumentException("regression needs count x outputs targets");
            for (int i = 0; i < count * outs; i++)
            {
                T r = output[i] - targets[i];
                loss += r * r;
                delta[i] = r / n;
            }
            return loss / (T.CreateChecked(2) * n);
        }
        if (labels.Length < count) throw new ArgumentException("classification needs one label per sample");
        for (int i = 0; i < count; i++)
        {
            var z = output.AsSpan(i * outs, outs);
            T max = z[0];
            for (int c = 1; c < outs; c++) max = T.Max(max, z[c]);
            T sum = T.Zero;
            for (int c = 0; c < outs; c++) sum += T.Exp(z[c] - max);
            T logSum = max + T.Log(sum);
            loss += logSum - z[labels[i]];
            for (int c = 0; c < outs; c++)
                delta[i * outs + c] = (T.Exp(z[c] - logSum) - (c == labels[i] ? T.One : T.Zero)) / n;
        }
        return loss / n;
    }

    internal static T Activate<T>(Activation activation, T z) where T : IFloatingPointIeee754<T> =>
        activation == Activation.Relu ? T.Max(z, T.Zero) : T.Tanh(z);

    internal static T ActivationDerivative<T>(Activation activation, T z, T a) where T : IFloatingPointIeee754<T> =>
        activation == Activation.Relu ? (z > T.Zero ? T.One : T.Zero) : T.One - a * a;
}
