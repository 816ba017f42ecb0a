using System.Diagnostics;
using ActorTrain.Cluster.Protocol;
using ActorTrain.Cluster.Transport;
using ActorTrain.Core.Compression;
using ActorTrain.Core.Data;
using ActorTrain.Core.Engines;
using ActorTrain.Core.Models;
using ActorTrain.Core.Precision;
using Akka.Actor;

namespace ActorTrain.Cluster.Actors;

/// <summary>
/// A data-parallel worker: owns a gradient engine and its partition of the training set. It
/// assembles the full parameter vector from every shard's slice, computes the loss-scaled gradient
/// of its next mini-batch, and pushes each shard its range with the version of that shard's slice it
/// used. Compute blocks this actor's thread, so workers run on the dedicated compute dispatcher.
///
/// Its clock is the number of steps it has pushed, except under BSP, where it takes the clock of
/// the parameters it received (the lowest shard version): a worker whose push came too late for a
/// step (backup workers) rejoins at the current clock instead of falling further behind.
/// A slowdown factor above 1 makes it a straggler: after each gradient it stays busy for
/// (factor - 1) times the compute time (slept on its own thread, in whole milliseconds with the
/// remainder carried over).
/// </summary>
public sealed class Worker : ReceiveActor
{
    public sealed record Settings(
        int WorkerId,
        ModelSpec Model,
        Dataset Partition,
        int BatchSize,
        ulong DataSeed,
        PrecisionMode Precision,
        Func<LossScaler> LossScaler,
        IReadOnlyList<ParameterRange> Shards,
        SyncPolicyKind Policy,
        double Slowdown = 1,
        CompressionSettings? Compression = null);

    private readonly Settings _settings;
    private readonly IGradientEngineFactory _engines;
    private readonly ILink _link;
    private readonly IActorRef _coordinator;
    private readonly IReadOnlyList<IActorRef> _shards;
    private readonly MiniBatchIterator _batches;
    private readonly BatchBuffer _batch;
    private readonly float[] _weights;
    private readonly float[] _gradient;
    private readonly LossScaler _scaler;
    private readonly Stopwatch _waiting = new();
    private readonly long[] _shardVersions;
    private readonly IGradientCompressor[] _compressors;
    private readonly byte[] _encoded;
    private readonly float[] _decoded;
    private IGradientEngine? _engine;
    private long _clock;
    private int _slicesReceived;
    private double _owedSeconds;

    public Worker(Settings settings, IGradientEngineFactory engines, ILink link, IActorRef coordinator, IReadOnlyList<IActorRef> shards)
    {
        _settings = settings;
        _engines = engines;
        _link = link;
        _coordinator = coordinator;
        _shards = shards;
        _batches = new MiniBatchIterator(settings.Partition, settings.BatchSize, settings.DataSeed);
        _batch = _batches.CreateBuffer();
        _weights = new float[settings.Model.ParameterCount];
        _gradient = new float[settings.Model.ParameterCount];
        _scaler = settings.LossScaler();
        _shardVersions = new long[shards.Count];
        var compression = settings.Compression ?? CompressionSettings.Dense;
        _compressors = settings.Shards.Select((r, k) => compression.CreateCompressor(r.Length,
            Core.Rng.Derive(settings.DataSeed, 0xC0DEC, (ulong)k), compression.ErrorFeedback,
            MatrixBlock.InRange(settings.Model, r.Start, r.Length, compression.Rank))).ToArray();
        _encoded = new byte[_compressors.Max(c => c.MaxEncodedSize)];
        _decoded = new float[settings.Shards.Max(r => r.Length)];

        Receive<ParameterSlice>(OnSlice);
        Receive<StopTraining>(_ => Context.Stop(Self));
    }

    public static Props Props(Settings settings, IGradientEngineFactory engines, ILink link, IActorRef coordinator, IReadOnlyList<IActorRef> shards) =>
        Akka.Actor.Props.Create(() => new Worker(settings, engines, link, coordinator, shards));

    protected override void PreStart()
    {
        _engine = _engines.Create(_settings.Model, _batches.BatchSize);
        _waiting.Start();
        for (int s = 0; s < _shards.Count; s++)
            _link.Send(_shards[s], new PullParameters(_settings.WorkerId, 0), PullParameters.HeaderBytes, TrafficClass.WorkerToShard, Self);
    }

    protected override void PostStop() => _engine?.Dispose();

    private void OnSlice(ParameterSlice slice)
    {
        var range = _settings.Shards[slice.Shard];
        var target = _weights.AsSpan(range.Start, range.Length);
        if (slice.Delta)
        {
            var change = _decoded.AsSpan(0, range.Length);
            GradientCodec.Decode(slice.Payload.Span, change);
            System.Numerics.Tensors.TensorPrimitives.Add(target, change, target);
        }
        else
        {
            GradientCodec.Decode(slice.Payload.Span, target);
        }
        _shardVersions[slice.Shard] = slice.Version;
        if (++_slicesReceived < _shards.Count) return;
        _slicesReceived = 0;
        if (_settings.Policy == SyncPolicyKind.Bsp) _clock = _shardVersions.Min();
        Step();
    }

    private void Step()
    {
        double waited = _waiting.Elapsed.TotalSeconds;
        _batches.Next(_batch);
        int epoch = _batches.Epoch;
        var started = Stopwatch.GetTimestamp();
        float scale = _scaler.Scale;
        var result = _engine!.ComputeGradient(_weights, _batch.AsBatch(), _gradient, new GradientRequest(_settings.Precision, scale));
        double computed = Stopwatch.GetElapsedTime(started).TotalSeconds;
        if (_settings.Slowdown > 1)
        {
            // A straggler's extra compute time: this thread is the worker's compute, so it waits here,
            // in whole milliseconds with the fraction carried to the next step, so that even sub-
            // millisecond steps are slowed by the factor on average.
            _owedSeconds += (_settings.Slowdown - 1) * computed;
            int ms = (int)(_owedSeconds * 1000);
            if (ms > 0)
            {
                Thread.Sleep(ms);
                _owedSeconds -= ms / 1000.0;
            }
            computed = Stopwatch.GetElapsedTime(started).TotalSeconds;
        }
        _scaler.Update(result.NonFinite);

        for (int s = 0; s < _shards.Count; s++)
        {
            var range = _settings.Shards[s];
            // A non-finite gradient is not encoded (nor fed to error feedback): the shard skips it unread.
            byte[] payload = result.NonFinite
                ? []
                : _encoded.AsSpan(0, _compressors[s].Compress(_gradient.AsSpan(range.Start, range.Length), scale, _encoded)).ToArray();
            var push = new PushGradient(_settings.WorkerId, _clock, _shardVersions[s], scale, result.NonFinite, _batch.Count, payload);
            _link.Send(_shards[s], push, push.WireBytes, TrafficClass.WorkerToShard, Self);
        }
        _coordinator.Tell(new WorkerStepReport(_settings.WorkerId, _clock, result.Loss, _batch.Count, result.Flops, computed, waited,
            result.UnderflowedElements, result.NonFinite, scale, epoch), Self);
        _clock++;
        _waiting.Restart();
    }
}
