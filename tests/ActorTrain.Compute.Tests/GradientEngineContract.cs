using ActorTrain.Compute.Ilgpu;
using ActorTrain.Compute.Simd;
using ActorTrain.Core;
using ActorTrain.Core.Data;
using ActorTrain.Core.Engines;
using ActorTrain.Core.Models;
using ActorTrain.Core.Precision;

namespace ActorTrain.Compute.Tests;

/// <summary>
/// What every gradient engine must satisfy, checked against the plain-loop reference model. One
/// subclass per engine / accelerator.
///
/// Tolerances. FP32: engines sum in a different order than the reference (blocked FMAs, per-thread
/// partitions), so each element may differ by a few float ulps of the largest term; 1e-5 of the
/// gradient's max-norm covers sums of a few hundred terms. FP16: every stored tensor carries a
/// relative rounding error up to 2^-11 = 4.9e-4; a gradient element passes through about five
/// roundings (input, weight, activation, delta, result) per layer, so with two hidden layers the
/// error reaches 1e-3..5e-3 of the norm. The test demands 1e-2 of the max-norm, and the loss within
/// 5e-3 relative. Agreement between two FP16 engines (same rounding points, different summation
/// order) is held to the same bound.
/// </summary>
public abstract class GradientEngineContract
{
    protected abstract IGradientEngine Create(ModelSpec model, int maxBatch);

    /// <summary>ILGPU's CPU accelerator emulates a GPU thread by thread: keep its problems small.</summary>
    protected virtual int Scale => 1;

    public static ModelSpec[] Models(int scale) =>
    [
        ModelSpec.LinearRegression(6 * scale, 2),
        ModelSpec.SoftmaxRegression(9 * scale, 4),
        ModelSpec.SoftmaxRegression(5, 2),
        ModelSpec.Mlp(12 * scale, [20 * scale, 9], 3, Activation.Relu),
        ModelSpec.Mlp(7 * scale, [11 * scale], 5, Activation.Tanh),
    ];

    private static (float[] W, Dataset Data) Problem(ModelSpec spec, int count, ulong seed)
    {
        var rng = new Rng(seed);
        var w = new float[spec.ParameterCount];
        spec.Initialize(w, seed);
        for (int i = 0; i < w.Length; i++) w[i] += (float)(0.1 * rng.NextGaussian());
        var x = new float[count * spec.Inputs];
        for (int i = 0; i < x.Length; i++) x[i] = (float)rng.NextGaussian();
        if (spec.Loss == LossKind.CrossEntropy)
        {
            var y = new int[count];
            for (int i = 0; i < count; i++) y[i] = rng.NextInt(spec.Outputs);
            return (w, new Dataset("test", x, spec.Inputs, y, spec.Outputs));
        }
        var t = new float[count * spec.Outputs];
        for (int i = 0; i < t.Length; i++) t[i] = (float)rng.NextGaussian();
        return (w, new Dataset("test", x, spec.Inputs, t, spec.Outputs));
    }

    private static double MaxAbs(ReadOnlySpan<float> v)
    {
        double m = 0;
        foreach (float x in v) m = Math.Max(m, Math.Abs(x));
        return m;
    }

    private static void AssertClose(float[] expected, float[] actual, double relativeToMax, string what)
    {
        double scale = MaxAbs(expected);
        double worst = 0;
        int at = -1;
        for (int i = 0; i < expected.Length; i++)
        {
            double d = Math.Abs(expected[i] - actual[i]);
            if (d > worst) { worst = d; at = i; }
        }
        Assert.True(worst <= relativeToMax * scale,
            $"{what}: max |diff| {worst:E3} at {at} exceeds {relativeToMax:E1} x {scale:E3} (expected {(at >= 0 ? expected[at] : 0)}, got {(at >= 0 ? actual[at] : 0)})");
    }

    [EngineFact]
    public void Fp32_gradient_and_loss_match_the_reference()
    {
        foreach (var spec in Models(Scale))
        {
            var (w, data) = Problem(spec, 37, 1);
            var expected = new float[spec.ParameterCount];
            float expectedLoss = ReferenceModel.LossAndGradient(spec, w, data.AsBatch(), expected);
            using var engine = Create(spec, 64);
            var actual = new float[spec.ParameterCount];
            var result = engine.ComputeGradient(w, data.AsBatch(), actual, GradientRequest.Fp32);
            AssertClose(expected, actual, 1e-5, spec.Describe());
            Assert.Equal(expectedLoss, result.Loss, 1e-5 * Math.Max(1, expectedLoss));
            Assert.Equal(spec.FlopsPerSample * 37, result.Flops);
            Assert.False(result.NonFinite);
            Assert.Equal(0, result.UnderflowedElements);
        }
    }

    [EngineFact]
    public void Fp16_gradient_divided_by_the_loss_scale_matches_the_fp32_reference()
    {
        foreach (var spec in Models(Scale))
        {
            var (w, data) = Problem(spec, 29, 2);
            var expected = new float[spec.ParameterCount];
            float expectedLoss = ReferenceModel.LossAndGradient(spec, w, data.AsBatch(), expected);
            using var engine = Create(spec, 32);
            var scaled = new float[spec.ParameterCount];
            const float lossScale = 1024f;
            var result = engine.ComputeGradient(w, data.AsBatch(), scaled, new GradientRequest(PrecisionMode.Fp16, lossScale));
            foreach (float g in scaled) Assert.Equal(g, (float)(Half)g); // the result is FP16-representable
            AssertClose(expected, scaled.Select(g => g / lossScale).ToArray(), 1e-2, spec.Describe() + " fp16");
            Assert.Equal(expectedLoss, result.Loss, 5e-3 * Math.Max(1, expectedLoss));
        }
    }

    [EngineFact]
    public void Fp16_agrees_with_the_simd_engine_in_fp16()
    {
        foreach (var spec in Models(Scale))
        {
            var (w, data) = Problem(spec, 21, 3);
            var request = new GradientRequest(PrecisionMode.Fp16, 256f);
            var simd = new float[spec.ParameterCount];
            using (var reference = new SimdGradientEngine(spec, 32, threads: 1))
                reference.ComputeGradient(w, data.AsBatch(), simd, request);
            var actual = new float[spec.ParameterCount];
            using var engine = Create(spec, 32);
            engine.ComputeGradient(w, data.AsBatch(), actual, request);
            AssertClose(simd, actual, 1e-2, spec.Describe() + " fp16 vs simd");
        }
    }

    [EngineFact]
    public void Tiny_gradients_underflow_in_fp16_without_scaling_and_survive_with_it()
    {
        var spec = ModelSpec.SoftmaxRegression(8, 3);
        var (w, data) = Problem(spec, 16, 4);
        // Inputs of ~2e-7 make the weight gradients ~1e-8, below FP16's smallest subnormal (6e-8):
        // with a scale of 1 they flush to zero; 2^16 lifts them to ~1e-3, well inside the range.
        var tiny = new Dataset("tiny", data.Features.Select(v => v * 2e-7f).ToArray(), 8, data.Labels!, 3);
        using var engine = Create(spec, 16);
        var g = new float[spec.ParameterCount];
        var unscaled = engine.ComputeGradient(w, tiny.AsBatch(), g, new GradientRequest(PrecisionMode.Fp16, 1f));
        var scaled = engine.ComputeGradient(w, tiny.AsBatch(), g, new GradientRequest(PrecisionMode.Fp16, 65536f));
        Assert.True(unscaled.UnderflowedElements > 0, "expected underflow without loss scaling");
        Assert.Equal(0, scaled.UnderflowedElements);
        Assert.False(scaled.NonFinite);
    }

    [EngineFact]
    public void Too_large_a_loss_scale_overflows_fp16_and_is_flagged()
    {
        var spec = ModelSpec.SoftmaxRegression(6, 3);
        var (w, data) = Problem(spec, 8, 5);
        using var engine = Create(spec, 8);
        var g = new float[spec.ParameterCount];
        var r = engine.ComputeGradient(w, data.AsBatch(), g, new GradientRequest(PrecisionMode.Fp16, 1e9f));
        Assert.True(r.NonFinite);
        var ok = engine.ComputeGradient(w, data.AsBatch(), g, new GradientRequest(PrecisionMode.Fp32, 1e9f));
        Assert.False(ok.NonFinite);
    }

    [EngineFact]
    public void Evaluate_matches_reference_loss_and_counts_correct_predictions_across_chunks()
    {
        var spec = ModelSpec.Mlp(6 * Scale, [10], 4, Activation.Relu);
        var (w, data) = Problem(spec, 45, 6);
        using var engine = Create(spec, 16); // 45 rows evaluated as 16 + 16 + 13
        var e = engine.Evaluate(w, data.AsBatch(), PrecisionMode.Fp32);
        float expectedLoss = ReferenceModel.Loss<float>(spec, w, data.Features, data.Count, data.Labels, default);
        var logits = ReferenceModel.Outputs<float>(spec, w, data.Features, data.Count);
        int correct = Enumerable.Range(0, data.Count)
            .Count(i => Array.IndexOf(logits, logits.Skip(i * 4).Take(4).Max(), i * 4) - i * 4 == data.Labels![i]);
        Assert.Equal(expectedLoss, e.Loss, 1e-5);
        Assert.Equal(correct, e.Correct);
        Assert.Equal(45, e.Count);
    }

    [EngineFact]
    public void Repeated_calls_give_identical_results()
    {
        var spec = ModelSpec.Mlp(10 * Scale, [16], 3, Activation.Tanh);
        var (w, data) = Problem(spec, 24, 7);
        using var engine = Create(spec, 32);
        var a = new float[spec.ParameterCount];
        var b = new float[spec.ParameterCount];
        engine.ComputeGradient(w, data.AsBatch(), a, GradientRequest.Fp32);
        engine.ComputeGradient(w, data.AsBatch(), new float[spec.ParameterCount], new GradientRequest(PrecisionMode.Fp16, 8));
        engine.ComputeGradient(w, data.AsBatch(), b, GradientRequest.Fp32);
        Assert.Equal(a, b);
    }

    [EngineFact]
    public void Oversized_batches_are_rejected()
    {
        var spec = ModelSpec.SoftmaxRegression(3, 2);
        var (w, data) = Problem(spec, 9, 8);
        using var engine = Create(spec, 8);
        Assert.Throws<ArgumentException>(() => engine.ComputeGradient(w, data.AsBatch(), new float[spec.ParameterCount], GradientRequest.Fp32));
    }
}

public sealed class SimdEngineTests : GradientEngineContract
{
    protected override IGradientEngine Create(ModelSpec model, int maxBatch) => new SimdGradientEngine(model, maxBatch);
}

public sealed class SimdSingleThreadEngineTests : GradientEngineContract
{
    protected override IGradientEngine Create(ModelSpec model, int maxBatch) => new SimdGradientEngine(model, maxBatch, threads: 1);
}

public sealed class IlgpuCpuEngineTests : GradientEngineContract
{
    protected override IGradientEngine Create(ModelSpec model, int maxBatch) => new IlgpuGradientEngine(model, maxBatch, IlgpuTarget.Cpu);
}

/// <summary>
/// The tiled products (what a GPU runs) on ILGPU's CPU emulator, 4 x 4 threads a group: the
/// contract's odd sizes (5, 7, 9, 11, 20 ...) leave partial tiles on every edge.
/// </summary>
public sealed class IlgpuCpuTiledEngineTests : GradientEngineContract
{
    protected override IGradientEngine Create(ModelSpec model, int maxBatch) => new IlgpuGradientEngine(model, maxBatch, IlgpuTarget.Cpu, tiled: true);

    [Fact]
    public void The_emulator_runs_products_per_element_unless_tiles_are_asked_for()
    {
        var spec = ModelSpec.SoftmaxRegression(3, 2);
        using var plain = new IlgpuGradientEngine(spec, 4, IlgpuTarget.Cpu);
        using var tiled = new IlgpuGradientEngine(spec, 4, IlgpuTarget.Cpu, tiled: true);
        Assert.Equal(0, plain.Tile);
        Assert.Equal(4, tiled.Tile);
    }
}

[RequiresCuda]
public sealed class IlgpuCudaEngineTests : GradientEngineContract
{
    protected override int Scale => 8;
    protected override IGradientEngine Create(ModelSpec model, int maxBatch) => new IlgpuGradientEngine(model, maxBatch, IlgpuTarget.Cuda);

    [EngineFact]
    public void A_gpu_runs_the_products_in_16_by_16_tiles()
    {
        using var engine = new IlgpuGradientEngine(ModelSpec.SoftmaxRegression(3, 2), 4, IlgpuTarget.Cuda);
        Assert.Equal(16, engine.Tile);
    }
}
