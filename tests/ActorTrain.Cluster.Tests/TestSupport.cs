using System.Runtime.CompilerServices;
using ActorTrain.Core.Data;
using ActorTrain.Core.Engines;
using ActorTrain.Core.Models;
using ActorTrain.Core.Precision;

namespace ActorTrain.Cluster.Tests;

internal static class TestAssemblySetup
{
    /// <summary>Akka.TestKit on 2 cores starves the thread pool without this (DESIGN.md section 7).</summary>
    [ModuleInitializer]
    internal static void RaiseThreadPoolMinimum() => ThreadPool.SetMinThreads(32, 32);
}

/// <summary>
/// The plain-loop reference model behind the engine interface: Cluster never references Compute,
/// so actor tests run on this, and it is deterministic by construction.
/// </summary>
internal sealed class ReferenceEngine(ModelSpec model, int maxBatch) : IGradientEngine
{
    public string Name => "reference";
    public ModelSpec Model { get; } = model;
    public int MaxBatch { get; } = maxBatch;

    public GradientResult ComputeGradient(ReadOnlySpan<float> weights, Batch batch, Span<float> gradient, GradientRequest request)
    {
        if (batch.Count > MaxBatch) throw new ArgumentException("batch too large");
        float loss = ReferenceModel.LossAndGradient(Model, weights, batch, gradient);
        if (request.LossScale != 1f)
            for (int i = 0; i < gradient.Length; i++) gradient[i] *= request.LossScale;
        bool nonFinite = false;
        foreach (float g in gradient) nonFinite |= !float.IsFinite(g);
        return new GradientResult(loss, Model.FlopsPerSample * batch.Count, nonFinite, 0);
    }

    public Evaluation Evaluate(ReadOnlySpan<float> weights, Batch batch, PrecisionMode precision)
    {
        float loss = ReferenceModel.Loss(Model, weights, batch.Features, batch.Count, batch.Labels, batch.Targets);
        int correct = 0;
        if (Model.Loss == LossKind.CrossEntropy)
        {
            var logits = ReferenceModel.Outputs(Model, weights, batch.Features, batch.Count);
            for (int i = 0; i < batch.Count; i++)
            {
                var row = logits.AsSpan(i * Model.Outputs, Model.Outputs);
                int best = 0;
                for (int c = 1; c < row.Length; c++) if (row[c] > row[best]) best = c;
                if (best == batch.Labels[i]) correct++;
            }
        }
        return new Evaluation(loss, correct, batch.Count);
    }

    public void Dispose() { }
}

internal sealed class ReferenceEngineFactory : IGradientEngineFactory
{
    public string Name => "reference";
    public IGradientEngine Create(ModelSpec model, int maxBatch) => new ReferenceEngine(model, maxBatch);
}

/// <summary>
/// Engines whose gradients hold a NaN: the engine created <paramref name="poisonedCreation"/>-th
/// (0 = the coordinator's evaluator) on every call, or, with <paramref name="period"/> > 0, every
/// engine on calls 2, 2 + period, 2 + 2 period, ...
/// </summary>
internal sealed class PoisonedEngineFactory(int poisonedCreation = -1, int period = 0) : IGradientEngineFactory
{
    private int _created;
    public string Name => "poisoned";

    public IGradientEngine Create(ModelSpec model, int maxBatch)
    {
        int index = Interlocked.Increment(ref _created) - 1;
        if (period > 0) return new NaNEngine(model, maxBatch, period);
        return index == poisonedCreation ? new NaNEngine(model, maxBatch, 1) : new ReferenceEngine(model, maxBatch);
    }

    private sealed class NaNEngine(ModelSpec model, int maxBatch, int period) : IGradientEngine
    {
        private readonly ReferenceEngine _inner = new(model, maxBatch);
        private int _calls;
        public string Name => "nan";
        public ModelSpec Model => _inner.Model;
        public int MaxBatch => _inner.MaxBatch;

        public GradientResult ComputeGradient(ReadOnlySpan<float> weights, Batch batch, Span<float> gradient, GradientRequest request)
        {
            var r = _inner.ComputeGradient(weights, batch, gradient, request);
            if (++_calls % period != 2 % period) return r;
            gradient[0] = float.NaN;
            return r with { NonFinite = true };
        }

        public Evaluation Evaluate(ReadOnlySpan<float> weights, Batch batch, PrecisionMode precision) => _inner.Evaluate(weights, batch, precision);
        public void Dispose() { }
    }
}

/// <summary>Dense FP32 payloads for tests that talk to a shard directly.</summary>
internal static class Wire
{
    public static byte[] Dense(params float[] values)
    {
        var codec = new ActorTrain.Core.Compression.NoneCodec();
        var payload = new byte[codec.MaxEncodedSize(values.Length)];
        codec.Encode(values, payload, new ActorTrain.Core.Rng(0));
        return payload;
    }

    public static float[] Values(ActorTrain.Cluster.Protocol.ParameterSlice slice, int length)
    {
        var values = new float[length];
        ActorTrain.Core.Compression.GradientCodec.Decode(slice.Payload.Span, values);
        return values;
    }
}

/// <summary>
/// A 30-step run under the virtual clock (reference engine, 1 ms of compute per step, 100 us links)
/// whose coordinator is named so that a test's stranger finds its actors at /user/coordinator-*/...
/// </summary>
internal static class StrangerTarget
{
    public static async Task<Cluster.Actors.RunOutcome> Run(Akka.Actor.ActorSystem system, int workers, int shards, Cluster.Actors.IRunObserver? observer,
        Cluster.Actors.AllReduceSettings? allReduce = null)
    {
        var (train, test) = BspTrainingTests.Data();
        var settings = BspTrainingTests.Settings(train, test, workers, shards, 10, 30, new Core.Optimization.OptimizerSettings()) with
        {
            Timing = new Cluster.Actors.TimingSettings(new Core.Simulation.ComputeTime(Core.Simulation.ComputeTimeKind.Fixed, 0.001)),
            AllReduce = allReduce,
        };
        var network = Core.Simulation.NetworkSettings.Ideal with
        {
            Default = new Core.Simulation.LinkSpec(Core.Simulation.Distribution.Parse("constant(100us)", "network.latency", true), 1.25e9, 0, 0),
        };
        var link = new Cluster.Transport.VirtualLink(network, 1, workers, allReduce is null ? shards : 0);
        var completion = new TaskCompletionSource<Cluster.Actors.RunOutcome>(TaskCreationOptions.RunContinuationsAsynchronously);
        system.ActorOf(Cluster.Actors.Coordinator.Props(settings, new ReferenceEngineFactory(), link, completion, observer), "coordinator-" + Guid.NewGuid().ToString("N"));
        return await completion.Task.WaitAsync(TimeSpan.FromSeconds(120));
    }
}
