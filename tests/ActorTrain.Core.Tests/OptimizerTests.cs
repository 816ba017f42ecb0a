using System.Text.Json;
using ActorTrain.Core.Models;
using ActorTrain.Core.Optimization;

namespace ActorTrain.Core.Tests;

public class OptimizerTests
{
    private static readonly float[] Start = [1f, -2f];
    private static readonly float[] Grad = [0.5f, 0.25f];

    private static float[] Steps(OptimizerSettings settings, double lr, int steps)
    {
        var w = (float[])Start.Clone();
        var opt = Optimizer.Create(settings, w.Length);
        for (int i = 0; i < steps; i++) opt.Step(w, Grad, lr);
        return w;
    }

    private static void Near(double[] expected, float[] actual, double tol = 1e-6)
    {
        for (int i = 0; i < expected.Length; i++) Assert.True(Math.Abs(expected[i] - actual[i]) <= tol, $"[{i}] expected {expected[i]}, got {actual[i]}");
    }

    // Hand-computed with w = (1, -2), g = (0.5, 0.25) held fixed.
    [Fact]
    public void Sgd_step_is_w_minus_lr_g() => Near([0.95, -2.025], Steps(new() { Kind = OptimizerKind.Sgd }, 0.1, 1));

    [Fact]
    public void Sgd_l2_adds_decay_times_weight_to_gradient() =>
        // g + 0.1 w = (0.6, 0.05)
        Near([0.94, -2.005], Steps(new() { Kind = OptimizerKind.Sgd, WeightDecay = 0.1 }, 0.1, 1));

    [Fact]
    public void Momentum_accumulates_velocity() =>
        // v1 = g; v2 = 0.9 g + g = (0.95, 0.475); w2 = w - 0.1 (v1 + v2)
        Near([0.855, -2.0725], Steps(new() { Kind = OptimizerKind.Momentum, Momentum = 0.9 }, 0.1, 2));

    [Fact]
    public void Nesterov_looks_ahead_by_momentum_times_velocity() =>
        // v1 = g; step uses g + 0.9 v1 = (0.95, 0.475)
        Near([0.905, -2.0475], Steps(new() { Kind = OptimizerKind.Nesterov, Momentum = 0.9 }, 0.1, 1));

    [Fact]
    public void Adagrad_divides_by_root_of_summed_squares() =>
        // step 1: 0.1 g/|g| = 0.1 each; step 2: sum = 2 g^2 -> 0.1 / sqrt(2) each
        Near([1 - 0.1 - 0.1 / Math.Sqrt(2), -2 - 0.1 - 0.1 / Math.Sqrt(2)], Steps(new() { Kind = OptimizerKind.Adagrad }, 0.1, 2));

    [Fact]
    public void RmsProp_divides_by_root_of_running_mean_square() =>
        // v = 0.01 g^2 -> sqrt v = 0.1 |g|; step = 0.01 * g / (0.1 |g|) = 0.1
        Near([0.9, -2.1], Steps(new() { Kind = OptimizerKind.RmsProp, Alpha = 0.99 }, 0.01, 1));

    [Fact]
    public void Adam_first_step_is_lr_times_sign_with_bias_correction() =>
        Near([0.9, -2.1], Steps(new() { Kind = OptimizerKind.Adam }, 0.1, 1));

    [Fact]
    public void Adam_without_bias_correction_is_the_textbook_update() =>
        // m = 0.1 g, v = 0.001 g^2 -> m / sqrt(v) = 0.1 / sqrt(0.001) = sqrt(10)
        Near([1 - 0.1 * Math.Sqrt(10), -2 - 0.1 * Math.Sqrt(10)], Steps(new() { Kind = OptimizerKind.Adam, BiasCorrection = false }, 0.1, 1), 1e-5);

    [Fact]
    public void AdamW_decays_weights_before_the_adam_step() =>
        // w (1 - 0.1 * 0.1) = (0.99, -1.98), then -0.1 sign(g)
        Near([0.89, -2.08], Steps(new() { Kind = OptimizerKind.AdamW, WeightDecay = 0.1 }, 0.1, 1));

    public static TheoryData<OptimizerKind, double, int> Kinds()
    {
        var data = new TheoryData<OptimizerKind, double, int>();
        foreach (var kind in new[] { OptimizerKind.Sgd, OptimizerKind.Momentum, OptimizerKind.Nesterov, OptimizerKind.Adagrad, OptimizerKind.RmsProp, OptimizerKind.Adam, OptimizerKind.AdamW })
            foreach (double decay in new[] { 0, 0.01 })
                foreach (int length in new[] { 3, 37 })
                    data.Add(kind, decay, length);
        return data;
    }

    /// <summary>
    /// The optimizers run Vector&lt;float&gt; lanes (8 or 16 elements) and read the gradient times a
    /// scale; both must give the bits of the plain per-element loops on the gradient multiplied
    /// beforehand. 37 elements: whole lanes and a tail; 3: the tail alone. The loops below are the
    /// per-element updates as written before the lanes (PyTorch's formulas; see the trajectory test).
    /// </summary>
    [Theory]
    [MemberData(nameof(Kinds))]
    public void Lanes_and_the_gradient_scale_give_the_bits_of_the_per_element_loop(OptimizerKind kind, double decay, int length)
    {
        var settings = new OptimizerSettings { Kind = kind, WeightDecay = decay };
        var rng = new Rng(11);
        var w = new float[length];
        for (int i = 0; i < length; i++) w[i] = (float)rng.NextGaussian();
        var expected = (float[])w.Clone();
        var optimizer = Optimizer.Create(settings, length);
        var reference = new PerElement(settings, length);
        const float scale = 0.3f;
        for (int step = 1; step <= 5; step++)
        {
            var g = new float[length];
            for (int i = 0; i < length; i++) g[i] = (float)rng.NextGaussian();
            g[0] = -0f;
            double lr = 0.05 / step;
            optimizer.Step(w, g, lr, scale);
            reference.Step(expected, g.Select(x => x * scale).ToArray(), lr, step);
        }
        Assert.Equal(expected.Select(BitConverter.SingleToInt32Bits), w.Select(BitConverter.SingleToInt32Bits));
    }

    /// <summary>The updates one element at a time, as the optimizers were written before they ran lanes.</summary>
    private sealed class PerElement(OptimizerSettings s, int length)
    {
        private readonly float[] _a = new float[length], _b = new float[length];

        public void Step(float[] w, float[] g, double lr, long t)
        {
            float rate = (float)lr, mu = (float)s.Momentum, eps = (float)s.EffectiveEpsilon;
            bool decoupled = s.Kind == OptimizerKind.AdamW;
            float wd = decoupled ? 0f : (float)s.WeightDecay;
            for (int i = 0; i < w.Length; i++)
            {
                if (decoupled) w[i] *= (float)(1 - lr * s.WeightDecay);
                float d = wd == 0 ? g[i] : g[i] + wd * w[i];
                switch (s.Kind)
                {
                    case OptimizerKind.Sgd:
                        w[i] -= rate * d;
                        break;
                    case OptimizerKind.Momentum or OptimizerKind.Nesterov:
                        _a[i] = mu * _a[i] + d;
                        w[i] -= rate * (s.Kind == OptimizerKind.Nesterov ? d + mu * _a[i] : _a[i]);
                        break;
                    case OptimizerKind.Adagrad:
                        _a[i] += d * d;
                        w[i] -= rate * d / (MathF.Sqrt(_a[i]) + eps);
                        break;
                    case OptimizerKind.RmsProp:
                        _a[i] = (float)s.Alpha * _a[i] + (float)(1 - s.Alpha) * d * d;
                        w[i] -= rate * d / (MathF.Sqrt(_a[i]) + eps);
                        break;
                    default:
                        _a[i] += (d - _a[i]) * (float)(1 - s.Beta1);
                        _b[i] = (float)s.Beta2 * _b[i] + (float)(1 - s.Beta2) * d * d;
                        float denom = MathF.Sqrt(_b[i]) / (float)Math.Sqrt(1 - Math.Pow(s.Beta2, t)) + eps;
                        w[i] -= (float)(lr / (1 - Math.Pow(s.Beta1, t))) * _a[i] / denom;
                        break;
                }
            }
        }
    }

    [Fact]
    public void Optimizer_on_a_slice_touches_only_its_range()
    {
        var full = new float[] { 1, 2, 3, 4, 5, 6 };
        var opt = Optimizer.Create(new() { Kind = OptimizerKind.Adam }, 2);
        opt.Step(full.AsSpan(2, 2), [1f, -1f], 0.5);
        // Adam's first step moves each weight by lr * g / (|g| + eps)
        Near([1, 2, 2.5, 4.5, 5, 6], full);
        Assert.Equal(2, opt.State.Count);
        Assert.Throws<ArgumentException>(() => opt.Step(full, new float[6], 0.1));
    }

    [Fact]
    public void Out_of_range_hyperparameters_name_the_key()
    {
        var e = Assert.Throws<ActorTrainException>(() => Optimizer.Create(new() { Kind = OptimizerKind.Momentum, Momentum = 1.5 }, 3));
        Assert.Contains("optimizer.momentum", e.Message);
        Assert.Contains("optimizer.weight-decay", Assert.Throws<ActorTrainException>(() => Optimizer.Create(new() { WeightDecay = -1 }, 3)).Message);
    }

    public static TheoryData<string> TorchCases => new() { "sgd", "momentum", "nesterov", "momentum-l2", "adagrad", "rmsprop", "adam", "adam-l2", "adamw" };

    /// <summary>
    /// Trajectories from tests/reference/torch_optimizer_trajectories.py (torch.optim, FP32): the same
    /// data, start and hyperparameters, 25 full-batch steps of softmax regression.
    /// </summary>
    [Theory]
    [MemberData(nameof(TorchCases))]
    public void Trajectory_matches_pytorch_to_1e_5_relative(string name)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "Reference", "optimizer_trajectories.json")));
        var root = doc.RootElement;
        int d = root.GetProperty("features").GetInt32(), c = root.GetProperty("classes").GetInt32();
        float[] x = Floats(root.GetProperty("x"));
        int[] y = root.GetProperty("y").EnumerateArray().Select(e => e.GetInt32()).ToArray();
        float[] w = Floats(root.GetProperty("w0"));
        var @case = root.GetProperty("cases").GetProperty(name);
        var hyper = @case.GetProperty("hyper");
        double Get(string key, double fallback) => hyper.TryGetProperty(key, out var v) ? v.GetDouble() : fallback;
        var kind = name switch
        {
            "sgd" => OptimizerKind.Sgd,
            "momentum" or "momentum-l2" => OptimizerKind.Momentum,
            "nesterov" => OptimizerKind.Nesterov,
            "adagrad" => OptimizerKind.Adagrad,
            "rmsprop" => OptimizerKind.RmsProp,
            "adamw" => OptimizerKind.AdamW,
            _ => OptimizerKind.Adam,
        };
        // torch.optim.AdamW's default weight_decay is 0.01; every case here sets what it uses.
        var settings = new OptimizerSettings
        {
            Kind = kind,
            Momentum = Get("momentum", 0),
            WeightDecay = Get("weight_decay", 0),
            Alpha = Get("alpha", 0.99),
        };
        var spec = ModelSpec.SoftmaxRegression(d, c);
        var opt = Optimizer.Create(settings, spec.ParameterCount);
        var grad = new float[spec.ParameterCount];
        double lr = hyper.GetProperty("lr").GetDouble();
        int step = 0;
        foreach (var expectedRow in @case.GetProperty("trajectory").EnumerateArray())
        {
            step++;
            ReferenceModel.LossAndGradient<float>(spec, w, x, y.Length, y, default, grad);
            opt.Step(w, grad, lr);
            float[] expected = Floats(expectedRow);
            double scale = expected.Max(v => Math.Abs(v));
            double worst = expected.Zip(w, (e, a) => Math.Abs(e - a)).Max();
            Assert.True(worst <= 1e-5 * scale, $"{name} step {step}: max |diff| {worst:E2} > 1e-5 x {scale:G4}");
        }
        Assert.Equal(25, step);
    }

    private static float[] Floats(JsonElement array) => array.EnumerateArray().Select(e => e.GetSingle()).ToArray();
}

public class ScheduleTests
{
    [Fact]
    public void Inverse_time_decay_is_eta0_over_one_plus_lambda_t()
    {
        var s = LearningRateSchedule.Create(ScheduleKind.InverseTime, 0.1, 1000, decay: 0.5);
        Assert.Equal(0.1, s.Rate(0), 12);
        Assert.Equal(0.05, s.Rate(2), 12);
        Assert.Equal(0.1 / 51, s.Rate(100), 12);
    }

    [Fact]
    public void Step_decay_multiplies_by_gamma_every_step_size()
    {
        var s = LearningRateSchedule.Create(ScheduleKind.Step, 0.1, 1000, stepSize: 10, gamma: 0.5);
        Assert.Equal(0.1, s.Rate(9), 12);
        Assert.Equal(0.05, s.Rate(10), 12);
        Assert.Equal(0.025, s.Rate(25), 12);
    }

    [Fact]
    public void Cosine_goes_from_base_to_minimum_over_total_steps()
    {
        var s = LearningRateSchedule.Create(ScheduleKind.Cosine, 1.0, 100, minRate: 0.1);
        Assert.Equal(1.0, s.Rate(0), 12);
        Assert.Equal(0.55, s.Rate(50), 12);
        Assert.Equal(0.1, s.Rate(100), 12);
        Assert.Equal(0.1, s.Rate(150), 12);
    }

    [Fact]
    public void Warmup_ramps_linearly_then_hands_over_to_the_inner_schedule()
    {
        var constant = LearningRateSchedule.Create(ScheduleKind.Constant, 1.0, 100, warmupFraction: 0.1);
        Assert.Equal(0.1, constant.Rate(0), 12);
        Assert.Equal(0.5, constant.Rate(4), 12);
        Assert.Equal(1.0, constant.Rate(9), 12);
        Assert.Equal(1.0, constant.Rate(50), 12);

        var cosine = LearningRateSchedule.Create(ScheduleKind.Cosine, 1.0, 100, warmupFraction: 0.1);
        Assert.Equal(1.0, cosine.Rate(10), 12);   // inner step 0 of 90
        Assert.Equal(0.5, cosine.Rate(55), 12);   // inner step 45 of 90
        Assert.Equal(0.0, cosine.Rate(100), 12);
    }

    [Fact]
    public void Bad_schedule_values_name_the_key()
    {
        Assert.Contains("optimizer.learning-rate", Assert.Throws<ActorTrainException>(() => LearningRateSchedule.Create(ScheduleKind.Constant, -0.1, 10)).Message);
        Assert.Contains("optimizer.warmup-fraction", Assert.Throws<ActorTrainException>(() => LearningRateSchedule.Create(ScheduleKind.Constant, 0.1, 10, warmupFraction: 1.5)).Message);
    }
}

public class VectorisedOptimizerTests
{
    /// <summary>
    /// The vectorised Adam loop must give the scalar loop's bits: a 100-element optimizer (vector
    /// body and scalar tail) against 100 one-element optimizers (scalar only), over 20 steps.
    /// </summary>
    [Theory]
    [InlineData(OptimizerKind.Adam, 0.0)]
    [InlineData(OptimizerKind.Adam, 0.01)]
    [InlineData(OptimizerKind.AdamW, 0.01)]
    public void Vectorised_adam_equals_the_scalar_loop_bit_for_bit(OptimizerKind kind, double weightDecay)
    {
        var settings = new OptimizerSettings { Kind = kind, WeightDecay = weightDecay };
        const int n = 100;
        var rng = new Rng(5);
        var w = Enumerable.Range(0, n).Select(_ => (float)rng.NextGaussian()).ToArray();
        var single = w.ToArray();
        var whole = Optimizer.Create(settings, n);
        var parts = Enumerable.Range(0, n).Select(_ => Optimizer.Create(settings, 1)).ToArray();
        for (int step = 0; step < 20; step++)
        {
            var g = Enumerable.Range(0, n).Select(_ => (float)rng.NextGaussian()).ToArray();
            whole.Step(w, g, 0.01);
            for (int i = 0; i < n; i++) parts[i].Step(single.AsSpan(i, 1), g.AsSpan(i, 1), 0.01);
        }
        Assert.Equal(single, w);
    }
}
