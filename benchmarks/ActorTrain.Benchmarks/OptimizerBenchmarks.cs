using ActorTrain.Core.Optimization;
using BenchmarkDotNet.Attributes;

namespace ActorTrain.Benchmarks;

/// <summary>
/// One optimizer step over a parameter server shard's range: half of the MLP 784-256-128-10's
/// 235,146 parameters (two shards), as the Fashion-MNIST runs split it.
/// </summary>
public class OptimizerStepBenchmarks
{
    public const int Length = 117_573;

    [Params(OptimizerKind.Sgd, OptimizerKind.Momentum, OptimizerKind.Adagrad, OptimizerKind.RmsProp, OptimizerKind.Adam)]
    public OptimizerKind Kind { get; set; }

    private Optimizer _optimizer = null!;
    private float[] _weights = null!, _gradient = null!;

    [GlobalSetup]
    public void Setup()
    {
        _optimizer = Optimizer.Create(new OptimizerSettings { Kind = Kind }, Length);
        var rng = new Core.Rng(3);
        _weights = new float[Length];
        _gradient = new float[Length];
        for (int i = 0; i < Length; i++)
        {
            _weights[i] = (float)rng.NextGaussian();
            _gradient[i] = (float)rng.NextGaussian() * 1e-3f;
        }
    }

    [Benchmark]
    public void Step() => _optimizer.Step(_weights, _gradient, 1e-4);
}
