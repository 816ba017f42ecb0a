using ActorTrain.Core.Data;
using ActorTrain.Core.Models;
using ActorTrain.Core.Optimization;

namespace ActorTrain.Core.Tests;

/// <summary>
/// K-FAC's factors, damping and preconditioned step against references written here in plain double:
/// factors recovered from per-sample gradients, and the step as a solve with the explicit
/// Kronecker product (A + pi sqrt(gamma) I) (x) (G + sqrt(gamma) / pi I).
/// </summary>
public sealed class KfacTests
{
    private static readonly ModelSpec Mlp = ModelSpec.Mlp(3, [4], 3, Activation.Tanh);
    private const int Count = 6;

    private static (float[] Weights, float[] Features, int[] Labels) Problem(ulong seed)
    {
        var weights = new float[Mlp.ParameterCount];
        Mlp.Initialize(weights, seed);
        var rng = new Rng(seed + 1);
        var features = Enumerable.Range(0, Count * Mlp.Inputs).Select(_ => (float)(2 * rng.NextDouble() - 1)).ToArray();
        var labels = Enumerable.Range(0, Count).Select(i => i % Mlp.Outputs).ToArray();
        return (weights, features, labels);
    }

    /// <summary>
    /// A sample's gradient of layer l is a~ g^T: its bias part is g (the per-sample gradient of the
    /// pre-activations), and a~_k = dW[k, o] / g[o] for the o with the largest |g[o]|.
    /// </summary>
    private static (double[] A, double[] G) ReferenceFactors(int layer, float[] weights, float[] features, int[] labels)
    {
        int fin = Mlp.LayerSizes[layer], fout = Mlp.LayerSizes[layer + 1], da = fin + 1;
        var a = new double[da * da];
        var g = new double[fout * fout];
        var w = Array.ConvertAll(weights, x => (double)x);
        for (int i = 0; i < Count; i++)
        {
            var x = features.Skip(i * Mlp.Inputs).Take(Mlp.Inputs).Select(v => (double)v).ToArray();
            var gradient = new double[Mlp.ParameterCount];
            ReferenceModel.LossAndGradient<double>(Mlp, w, x, 1, labels.AsSpan(i, 1), [], gradient);
            var gb = gradient.AsSpan(Mlp.Bias(layer).Offset, fout).ToArray();
            int o = Enumerable.Range(0, fout).MaxBy(j => Math.Abs(gb[j]));
            var input = new double[da];
            for (int k = 0; k < fin; k++) input[k] = gradient[Mlp.Weight(layer).Offset + k * fout + o] / gb[o];
            input[fin] = 1;
            for (int r = 0; r < da; r++)
                for (int c = 0; c < da; c++) a[r * da + c] += input[r] * input[c] / Count;
            for (int r = 0; r < fout; r++)
                for (int c = 0; c < fout; c++) g[r * fout + c] += gb[r] * gb[c] / Count;
        }
        return (a, g);
    }

    [Fact]
    public void The_factors_of_a_batch_equal_those_recovered_from_per_sample_gradients()
    {
        var (weights, features, labels) = Problem(11);
        var factors = KfacFactors.Compute(Mlp, weights, new Batch(features, Count, labels, default));
        for (int l = 0; l < Mlp.LayerCount; l++)
        {
            var (a, g) = ReferenceFactors(l, weights, features, labels);
            AssertClose(a, factors[l].A, 1e-10);
            AssertClose(g, factors[l].G, 1e-10);
        }
    }

    /// <summary>x = (A (x) G)^-1 m by Gaussian elimination on the explicit Kronecker product, with (k, o) -> k * dg + o.</summary>
    private static double[] KroneckerSolve(double[] a, int da, double[] g, int dg, double[] m)
    {
        int n = da * dg;
        var f = new double[n, n + 1];
        for (int k = 0; k < da; k++)
            for (int o = 0; o < dg; o++)
            {
                for (int k2 = 0; k2 < da; k2++)
                    for (int o2 = 0; o2 < dg; o2++) f[k * dg + o, k2 * dg + o2] = a[k * da + k2] * g[o * dg + o2];
                f[k * dg + o, n] = m[k * dg + o];
            }
        for (int c = 0; c < n; c++)
        {
            int pivot = Enumerable.Range(c, n - c).MaxBy(r => Math.Abs(f[r, c]));
            for (int j = 0; j <= n; j++) (f[c, j], f[pivot, j]) = (f[pivot, j], f[c, j]);
            for (int r = 0; r < n; r++)
            {
                if (r == c) continue;
                double factor = f[r, c] / f[c, c];
                for (int j = c; j <= n; j++) f[r, j] -= factor * f[c, j];
            }
        }
        return Enumerable.Range(0, n).Select(r => f[r, n] / f[r, r]).ToArray();
    }

    /// <summary>The damped factors by the pi rule, written out here.</summary>
    private static (double[] A, double[] G) Damped(double[] a, int da, double[] g, int dg, double gamma)
    {
        double ta = Enumerable.Range(0, da).Sum(i => a[i * da + i]) / da, tg = Enumerable.Range(0, dg).Sum(i => g[i * dg + i]) / dg;
        double pi = Math.Sqrt(ta / tg);
        var ad = (double[])a.Clone();
        var gd = (double[])g.Clone();
        for (int i = 0; i < da; i++) ad[i * da + i] += pi * Math.Sqrt(gamma);
        for (int i = 0; i < dg; i++) gd[i * dg + i] += Math.Sqrt(gamma) / pi;
        return (ad, gd);
    }

    /// <summary>The factors as the shard sees them: rounded to float on the wire.</summary>
    private static double[] AsSent(double[] m) => Array.ConvertAll(m, v => (double)(float)v);

    [Theory]
    [InlineData(0.0)]    // no clipping
    [InlineData(1e-6)]   // the KL bound scales every layer's step down
    public void One_step_is_the_damped_kronecker_solve_of_the_gradient(double klClip)
    {
        var (weights, features, labels) = Problem(5);
        var factors = KfacFactors.Compute(Mlp, weights, new Batch(features, Count, labels, default));
        var gradient = new float[Mlp.ParameterCount];
        ReferenceModel.LossAndGradient(Mlp, weights, new Batch(features, Count, labels, default), gradient);
        const double lr = 0.3, gamma = 0.01;
        var settings = new OptimizerSettings { Kind = OptimizerKind.Kfac, Momentum = 0, Kfac = new KfacSettings(Damping: gamma, KlClip: klClip, InverseEvery: 1) };
        var layers = KfacFactors.Layers(Mlp);
        var kfac = new KfacOptimizer(settings, 0, Mlp.ParameterCount, layers);
        kfac.AddFactors(KfacFactors.Pack(layers, factors));
        var after = (float[])weights.Clone();
        kfac.Step(after, gradient, lr);

        bool clipped = false;
        foreach (var layer in layers)
        {
            var (a, g) = Damped(AsSent(factors[layer.Index].A), layer.ADim, AsSent(factors[layer.Index].G), layer.GDim, gamma);
            var m = gradient.AsSpan(layer.Offset, layer.Length).ToArray().Select(v => (double)v).ToArray();
            var p = KroneckerSolve(a, layer.ADim, g, layer.GDim, m);
            double inner = p.Zip(m, (x, y) => x * y).Sum();
            double nu = klClip > 0 ? Math.Min(1, Math.Sqrt(klClip / (lr * lr * inner))) : 1;
            clipped |= nu < 1;
            var expected = Enumerable.Range(0, layer.Length).Select(i => weights[layer.Offset + i] - lr * nu * p[i]).ToArray();
            var step = Enumerable.Range(0, layer.Length).Select(i => lr * nu * p[i]).ToArray();
            double scale = step.Max(Math.Abs);
            for (int i = 0; i < layer.Length; i++)
                Assert.True(Math.Abs(after[layer.Offset + i] - expected[i]) <= 1e-5 * scale + 1e-7 * Math.Abs(expected[i]),
                    $"layer {layer.Index} element {i}: {after[layer.Offset + i]} vs {expected[i]} (step scale {scale})");
        }
        Assert.Equal(klClip > 0, clipped);
    }

    [Fact]
    public void Factors_are_averaged_over_workers_and_over_steps()
    {
        var (w1, f1, l1) = Problem(21);
        var (_, f2, l2) = Problem(22);
        var first = KfacFactors.Compute(Mlp, w1, new Batch(f1, Count, l1, default));
        var second = KfacFactors.Compute(Mlp, w1, new Batch(f2, Count, l2, default));
        var layers = KfacFactors.Layers(Mlp);
        const double decay = 0.8, gamma = 0.05, lr = 0.1;
        var settings = new OptimizerSettings { Kind = OptimizerKind.Kfac, Momentum = 0, Kfac = new KfacSettings(FactorDecay: decay, Damping: gamma, KlClip: 0, InverseEvery: 1) };
        var kfac = new KfacOptimizer(settings, 0, Mlp.ParameterCount, layers);
        var gradient = Enumerable.Range(0, Mlp.ParameterCount).Select(i => (float)Math.Sin(i)).ToArray();
        var weights = new float[Mlp.ParameterCount];
        // step 1: two workers' contributions, averaged; step 2: one, blended into the running average
        kfac.AddFactors(KfacFactors.Pack(layers, first));
        kfac.AddFactors(KfacFactors.Pack(layers, second));
        kfac.Step(weights, gradient, lr);
        kfac.AddFactors(KfacFactors.Pack(layers, second));
        var before = (float[])weights.Clone();
        kfac.Step(weights, gradient, lr);
        foreach (var layer in layers)
        {
            double[] Running(Func<(double[] A, double[] G), double[]> pick) =>
                AsSent(pick(first[layer.Index])).Zip(AsSent(pick(second[layer.Index])), (x, y) => decay * (x + y) / 2 + (1 - decay) * y).ToArray();
            var (a, g) = Damped(Running(f => f.A), layer.ADim, Running(f => f.G), layer.GDim, gamma);
            var p = KroneckerSolve(a, layer.ADim, g, layer.GDim, gradient.AsSpan(layer.Offset, layer.Length).ToArray().Select(v => (double)v).ToArray());
            double scale = p.Max(Math.Abs) * lr;
            for (int i = 0; i < layer.Length; i++)
                Assert.True(Math.Abs(before[layer.Offset + i] - weights[layer.Offset + i] - lr * p[i]) <= 1e-5 * scale, $"layer {layer.Index} element {i}");
        }
    }

    [Fact]
    public void Momentum_accumulates_the_preconditioned_direction_and_checkpoints_restore_it_bit_for_bit()
    {
        var (weights, features, labels) = Problem(3);
        var layers = KfacFactors.Layers(Mlp);
        var settings = new OptimizerSettings { Kind = OptimizerKind.Kfac, Momentum = 0.9, Kfac = new KfacSettings(InverseEvery: 2) };
        var gradient = new float[Mlp.ParameterCount];
        var kfac = new KfacOptimizer(settings, 0, Mlp.ParameterCount, layers);
        var w = (float[])weights.Clone();
        for (int step = 0; step < 4; step++) // steps 1 and 3 invert (inverse-every = 2), and step 5 below
        {
            ReferenceModel.LossAndGradient(Mlp, w, new Batch(features, Count, labels, default), gradient);
            kfac.AddFactors(KfacFactors.Pack(layers, KfacFactors.Compute(Mlp, w, new Batch(features, Count, labels, default))));
            kfac.Step(w, gradient, 0.05);
        }
        var copy = new KfacOptimizer(settings, 0, Mlp.ParameterCount, layers);
        copy.Restore(kfac.Steps, kfac.State.Select(s => (float[])s.Clone()).ToList());
        var w2 = (float[])w.Clone();
        ReferenceModel.LossAndGradient(Mlp, w, new Batch(features, Count, labels, default), gradient);
        // the copy holds the same factors and inverses: step 5 inverts on both (inverse-every = 2), the same step
        kfac.AddFactors(KfacFactors.Pack(layers, KfacFactors.Compute(Mlp, w, new Batch(features, Count, labels, default))));
        copy.AddFactors(KfacFactors.Pack(layers, KfacFactors.Compute(Mlp, w2, new Batch(features, Count, labels, default))));
        kfac.Step(w, gradient, 0.05);
        copy.Step(w2, gradient, 0.05);
        Assert.True(kfac.InvertedLastStep);
        Assert.Equal(w, w2);
    }

    [Fact]
    public void The_cholesky_inverse_inverts()
    {
        var rng = new Rng(7);
        const int n = 9;
        var b = Enumerable.Range(0, n * n).Select(_ => rng.NextDouble() - 0.5).ToArray();
        var m = new double[n * n];
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++)
                for (int k = 0; k < n; k++) m[i * n + j] += b[i * n + k] * b[j * n + k];
        var inverse = new double[n * n];
        SymmetricPositiveDefinite.Inverse(m, n, 0.1, inverse);
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++)
            {
                double s = 0;
                for (int k = 0; k < n; k++) s += (m[i * n + k] + (i == k ? 0.1 : 0)) * inverse[k * n + j];
                Assert.Equal(i == j ? 1 : 0, s, 10);
            }
        Assert.Throws<ActorTrainException>(() => SymmetricPositiveDefinite.Inverse(new double[] { -1 }, 1, 0, new double[1]));
    }

    [Theory]
    [InlineData(1.0, 1e-3, 10, 1e-3, 1, "factor-decay")]
    [InlineData(0.95, 0.0, 10, 1e-3, 1, "damping")]
    [InlineData(0.95, 1e-3, 0, 1e-3, 1, "inverse-every")]
    [InlineData(0.95, 1e-3, 10, -1.0, 1, "kl-clip")]
    [InlineData(0.95, 1e-3, 10, 1e-3, 0, "factor-every")]
    public void Settings_out_of_range_name_their_key(double decay, double damping, int inverseEvery, double klClip, int factorEvery, string key)
    {
        var e = Assert.Throws<ActorTrainException>(() => new KfacSettings(decay, damping, inverseEvery, klClip, factorEvery).Validate());
        Assert.Contains($"optimizer.kfac.{key}", e.Message);
    }

    [Fact]
    public void A_range_that_cuts_a_layer_is_refused()
    {
        var layers = KfacFactors.Layers(Mlp);
        var e = Assert.Throws<ActorTrainException>(() => new KfacOptimizer(new OptimizerSettings { Kind = OptimizerKind.Kfac }, 0, layers[0].Length + 1, [layers[0]]));
        Assert.Contains("whole layers", e.Message);
    }

    private static void AssertClose(double[] expected, double[] actual, double relative)
    {
        Assert.Equal(expected.Length, actual.Length);
        double scale = expected.Max(Math.Abs);
        for (int i = 0; i < expected.Length; i++) Assert.True(Math.Abs(expected[i] - actual[i]) <= relative * scale, $"[{i}] {actual[i]} vs {expected[i]}");
    }
}
