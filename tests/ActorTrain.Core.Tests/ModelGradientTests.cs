using ActorTrain.Core;
using ActorTrain.Core.Models;

namespace ActorTrain.Core.Tests;

public class ModelGradientTests
{
    public static TheoryData<string> Models => new() { "linear", "linear-3out", "softmax", "logistic", "mlp-relu", "mlp-tanh" };

    internal static ModelSpec Build(string name) => name switch
    {
        "linear" => ModelSpec.LinearRegression(5),
        "linear-3out" => ModelSpec.LinearRegression(4, 3),
        "softmax" => ModelSpec.SoftmaxRegression(6, 4),
        "logistic" => ModelSpec.SoftmaxRegression(3, 2),
        "mlp-relu" => ModelSpec.Mlp(5, [7, 6], 3, Activation.Relu),
        "mlp-tanh" => ModelSpec.Mlp(5, [8], 4, Activation.Tanh),
        _ => throw new ArgumentException(name),
    };

    /// <summary>Random weights, inputs and labels/targets in double for a model.</summary>
    internal static (double[] W, double[] X, int[] Labels, double[] Targets) Problem(ModelSpec spec, int count, ulong seed)
    {
        var rng = new Rng(seed);
        var w = new double[spec.ParameterCount];
        for (int i = 0; i < w.Length; i++) w[i] = 0.5 * rng.NextGaussian();
        var x = new double[count * spec.Inputs];
        for (int i = 0; i < x.Length; i++) x[i] = rng.NextGaussian();
        var labels = new int[count];
        var targets = new double[count * spec.Outputs];
        for (int i = 0; i < count; i++) labels[i] = rng.NextInt(spec.Outputs);
        for (int i = 0; i < targets.Length; i++) targets[i] = rng.NextGaussian();
        return (w, x, labels, targets);
    }

    [Theory]
    [MemberData(nameof(Models))]
    public void Reference_gradient_matches_central_finite_differences(string name)
    {
        var spec = Build(name);
        const int n = 9;
        var (w, x, labels, targets) = Problem(spec, n, 42);
        var grad = new double[w.Length];
        ReferenceModel.LossAndGradient<double>(spec, w, x, n, labels, targets, grad);

        const double h = 1e-6;
        var probe = (double[])w.Clone();
        for (int i = 0; i < w.Length; i++)
        {
            probe[i] = w[i] + h;
            double up = ReferenceModel.Loss<double>(spec, probe, x, n, labels, targets);
            probe[i] = w[i] - h;
            double down = ReferenceModel.Loss<double>(spec, probe, x, n, labels, targets);
            probe[i] = w[i];
            double numeric = (up - down) / (2 * h);
            // Central differences in double: truncation O(h^2) ~ 1e-12, cancellation ~ 1e-16 / h = 1e-10.
            Assert.True(Math.Abs(numeric - grad[i]) <= 1e-7 * Math.Max(1, Math.Abs(grad[i])),
                $"{name} parameter {i}: analytic {grad[i]:G10}, numeric {numeric:G10}");
        }
    }

    [Theory]
    [MemberData(nameof(Models))]
    public void Float_reference_agrees_with_double_reference(string name)
    {
        var spec = Build(name);
        const int n = 16;
        var (w, x, labels, targets) = Problem(spec, n, 7);
        var g64 = new double[w.Length];
        double l64 = ReferenceModel.LossAndGradient<double>(spec, w, x, n, labels, targets, g64);
        var g32 = new float[w.Length];
        float l32 = ReferenceModel.LossAndGradient<float>(spec, Array.ConvertAll(w, v => (float)v), Array.ConvertAll(x, v => (float)v),
            n, labels, Array.ConvertAll(targets, v => (float)v), g32);
        Assert.Equal(l64, l32, 1e-5 * Math.Max(1, Math.Abs(l64)));
        double scale = g64.Max(Math.Abs);
        for (int i = 0; i < w.Length; i++) Assert.True(Math.Abs(g32[i] - g64[i]) <= 1e-5 * scale, $"{name} parameter {i}");
    }

    [Fact]
    public void Layout_places_each_layer_weight_then_bias_contiguously()
    {
        var spec = ModelSpec.Mlp(784, [256, 128], 10, Activation.Relu);
        Assert.Equal(["layer0.weight", "layer0.bias", "layer1.weight", "layer1.bias", "layer2.weight", "layer2.bias"], spec.Layout.Select(b => b.Name));
        Assert.Equal(784 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10, spec.ParameterCount);
        Assert.Equal(784 * 256, spec.Bias(0).Offset);
        Assert.Equal(784 * 256 + 256, spec.Weight(1).Offset);
        Assert.Equal((256, 128), (spec.Weight(1).Rows, spec.Weight(1).Columns));
        // forward 2*in*out per layer + weight gradient 2*in*out + input gradient for layers after the first
        Assert.Equal(4L * 784 * 256 + 6L * 256 * 128 + 6L * 128 * 10, spec.FlopsPerSample);
    }

    [Fact]
    public void Linear_regression_loss_is_half_mean_squared_error()
    {
        var spec = ModelSpec.LinearRegression(1);
        // y_hat = 2x + 1 on x = {0, 1}; targets {0, 0} -> residuals {1, 3}; loss = (1 + 9) / (2 * 2)
        float loss = ReferenceModel.Loss<float>(spec, [2f, 1f], [0f, 1f], 2, default, [0f, 0f]);
        Assert.Equal(2.5f, loss);
    }

    [Fact]
    public void Softmax_loss_of_zero_weights_is_log_of_class_count()
    {
        var spec = ModelSpec.SoftmaxRegression(3, 5);
        var w = new double[spec.ParameterCount];
        double loss = ReferenceModel.Loss<double>(spec, w, [1, 2, 3, -1, 0, 4], 2, [0, 3], default);
        Assert.Equal(Math.Log(5), loss, 1e-12);
    }

    [Fact]
    public void Mlp_initialisation_is_seeded_and_scaled_by_fan_in()
    {
        var spec = ModelSpec.Mlp(400, [300], 10, Activation.Relu);
        var a = new float[spec.ParameterCount];
        var b = new float[spec.ParameterCount];
        spec.Initialize(a, 5);
        spec.Initialize(b, 5);
        Assert.Equal(a, b);
        var w0 = a.AsSpan(spec.Weight(0).Offset, spec.Weight(0).Length).ToArray();
        double var0 = w0.Select(v => (double)v * v).Average();
        Assert.Equal(2.0 / 400, var0, 0.1 * 2.0 / 400); // He: Var = 2 / fan_in, 120k samples
        Assert.All(a.AsSpan(spec.Bias(0).Offset, 300).ToArray(), v => Assert.Equal(0f, v));
    }

    [Fact]
    public void Invalid_model_shapes_are_rejected_with_a_message()
    {
        Assert.Contains("at least 2 classes", Assert.Throws<ActorTrainException>(() => ModelSpec.SoftmaxRegression(4, 1)).Message);
        Assert.Contains("must be positive", Assert.Throws<ActorTrainException>(() => ModelSpec.Mlp(4, [0], 3, Activation.Relu)).Message);
    }
}

/// <summary>
/// The reference model's vectorised loops (a row of W at a time) give the bits of the plain
/// element-by-element loops it had before: every element still adds its products in the same order, unfused.
/// </summary>
public sealed class ReferenceLoopOrderTests
{
    private static (T Loss, T[] Gradient) Plain<T>(ActorTrain.Core.Models.ModelSpec spec, T[] weights, T[] x, int count, int[] labels)
        where T : System.Numerics.IFloatingPointIeee754<T>
    {
        var acts = new List<T[]> { x };
        var pre = new List<T[]>();
        for (int l = 0; l < spec.LayerCount; l++)
        {
            int fin = spec.LayerSizes[l], fout = spec.LayerSizes[l + 1];
            var z = new T[count * fout];
            for (int i = 0; i < count; i++)
                for (int o = 0; o < fout; o++)
                {
                    T s = weights[spec.Bias(l).Offset + o];
                    for (int k = 0; k < fin; k++) s += acts[l][i * fin + k] * weights[spec.Weight(l).Offset + k * fout + o];
                    z[i * fout + o] = s;
                }
            pre.Add(z);
            if (l + 1 < spec.LayerCount) acts.Add(z.Select(v => T.Tanh(v)).ToArray());
        }
        int outs = spec.Outputs;
        T n = T.CreateChecked(count), loss = T.Zero;
        var delta = new T[count * outs];
        for (int i = 0; i < count; i++)
        {
            var zo = pre[^1].AsSpan(i * outs, outs);
            T max = zo[0];
            for (int c = 1; c < outs; c++) max = T.Max(max, zo[c]);
            T sum = T.Zero;
            for (int c = 0; c < outs; c++) sum += T.Exp(zo[c] - max);
            T logSum = max + T.Log(sum);
            loss += logSum - zo[labels[i]];
            for (int c = 0; c < outs; c++) delta[i * outs + c] = (T.Exp(zo[c] - logSum) - (c == labels[i] ? T.One : T.Zero)) / n;
        }
        var gradient = new T[spec.ParameterCount];
        for (int l = spec.LayerCount - 1; l >= 0; l--)
        {
            int fin = spec.LayerSizes[l], fout = spec.LayerSizes[l + 1];
            for (int i = 0; i < count; i++)
                for (int o = 0; o < fout; o++)
                {
                    T d = delta[i * fout + o];
                    gradient[spec.Bias(l).Offset + o] += d;
                    for (int k = 0; k < fin; k++) gradient[spec.Weight(l).Offset + k * fout + o] += acts[l][i * fin + k] * d;
                }
            if (l == 0) break;
            var prev = new T[count * fin];
            for (int i = 0; i < count; i++)
                for (int k = 0; k < fin; k++)
                {
                    T s = T.Zero;
                    for (int o = 0; o < fout; o++) s += delta[i * fout + o] * weights[spec.Weight(l).Offset + k * fout + o];
                    T a = acts[l][i * fin + k];
                    prev[i * fin + k] = s * (T.One - a * a);
                }
            delta = prev;
        }
        return (loss / n, gradient);
    }

    [Fact]
    public void The_vectorised_reference_gives_the_plain_loops_bits_in_float_and_double()
    {
        var spec = ActorTrain.Core.Models.ModelSpec.Mlp(37, [19, 23], 5, ActorTrain.Core.Models.Activation.Tanh);
        var w = new float[spec.ParameterCount];
        spec.Initialize(w, 9);
        var rng = new Rng(10);
        const int count = 7;
        var x = Enumerable.Range(0, count * spec.Inputs).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        var labels = Enumerable.Range(0, count).Select(i => i % spec.Outputs).ToArray();

        var g = new float[spec.ParameterCount];
        float loss = ActorTrain.Core.Models.ReferenceModel.LossAndGradient<float>(spec, w, x, count, labels, [], g);
        var (plainLoss, plainGradient) = Plain(spec, w, x, count, labels);
        Assert.Equal(plainLoss, loss);
        Assert.Equal(plainGradient, g);

        var wd = Array.ConvertAll(w, v => (double)v);
        var xd = Array.ConvertAll(x, v => (double)v);
        var gd = new double[spec.ParameterCount];
        double lossD = ActorTrain.Core.Models.ReferenceModel.LossAndGradient<double>(spec, wd, xd, count, labels, [], gd);
        var (plainLossD, plainGradientD) = Plain(spec, wd, xd, count, labels);
        Assert.Equal(plainLossD, lossD);
        Assert.Equal(plainGradientD, gd);
    }
}
