using ActorTrain.Compute.Simd;
using ActorTrain.Core.Data;
using ActorTrain.Core.Engines;
using ActorTrain.Core.Models;
using ActorTrain.Core.Precision;

namespace ActorTrain.Compute.Tests;

public class SimdEngineAllocationTests
{
    [Theory]
    [InlineData(1, PrecisionMode.Fp32)]
    [InlineData(2, PrecisionMode.Fp16)]
    public void Steady_state_steps_allocate_nothing_on_the_calling_thread(int threads, PrecisionMode precision)
    {
        var spec = ModelSpec.Mlp(64, [32, 16], 10, Activation.Relu);
        var data = SyntheticData.Blobs(64, 64, 10, 2.0, 1);
        var w = new float[spec.ParameterCount];
        spec.Initialize(w, 1);
        var g = new float[spec.ParameterCount];
        using var engine = new SimdGradientEngine(spec, 64, threads);
        var request = new GradientRequest(precision, 128f);
        engine.ComputeGradient(w, data.AsBatch(), g, request); // warm-up: JIT, first-use paths
        engine.Evaluate(w, data.AsBatch(), precision);
        long before = GC.GetAllocatedBytesForCurrentThread();
        const int steps = 100;
        for (int i = 0; i < steps; i++)
        {
            engine.ComputeGradient(w, data.AsBatch(), g, request);
            engine.Evaluate(w, data.AsBatch(), precision);
        }
        // The first time the calling thread has to block on the worker threads, the wait primitive
        // creates its kernel event once (about 100 bytes); anything allocated per step would cost at
        // least 24 bytes x 100 steps.
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.True(allocated < 1024, $"{allocated} bytes allocated over {steps} steps");
    }
}
