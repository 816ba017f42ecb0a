using ActorTrain.Compute;
using ActorTrain.Core.Data;
using ActorTrain.Core.Engines;
using ActorTrain.Core.Models;
using ActorTrain.Core.Precision;
using BenchmarkDotNet.Attributes;

namespace ActorTrain.Benchmarks;

/// <summary>Shapes the issue names: softmax regression 784->10 and an MLP 784-256-128-10.</summary>
public static class BenchmarkModels
{
    public static ModelSpec Build(string name) => name switch
    {
        "softmax" => ModelSpec.SoftmaxRegression(784, 10),
        "mlp" => ModelSpec.Mlp(784, [256, 128], 10, Activation.Relu),
        _ => throw new ArgumentException($"unknown model {name}; use softmax or mlp"),
    };
}

/// <summary>One forward+backward step (loss and full gradient) at batch 64.</summary>
[GFlopsColumn]
public class EngineStepBenchmarks
{
    public const int Batch = 64;

    [Params("simd", "ilgpu-cpu")]
    public string Engine { get; set; } = "simd";

    [Params("softmax", "mlp")]
    public string Model { get; set; } = "softmax";

    [Params(PrecisionMode.Fp32, PrecisionMode.Fp16)]
    public PrecisionMode Precision { get; set; }

    private IGradientEngine _engine = null!;
    private Dataset _data = null!;
    private float[] _weights = null!, _gradient = null!;

    [GlobalSetup]
    public void Setup()
    {
        var spec = BenchmarkModels.Build(Model);
        _engine = new GradientEngineFactory(Engine).Create(spec, Batch);
        _data = SyntheticData.Blobs(Batch, 784, 10, 1.0, 7);
        _weights = new float[spec.ParameterCount];
        spec.Initialize(_weights, 7);
        _gradient = new float[spec.ParameterCount];
    }

    [Benchmark]
    public float Step() =>
        _engine.ComputeGradient(_weights, _data.AsBatch(), _gradient, new GradientRequest(Precision, Precision == PrecisionMode.Fp16 ? 1024f : 1f)).Loss;

    [GlobalCleanup]
    public void Cleanup() => _engine.Dispose();
}
