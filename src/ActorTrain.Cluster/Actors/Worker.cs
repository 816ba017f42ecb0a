using System.Diagnostics;
using ActorTrain.Cluster.Telemetry;
using ActorTrain.Cluster.Protocol;
using ActorTrain.Cluster.Transport;
using ActorTrain.Core.Compression;
using ActorTrain.Core.Data;
using ActorTrain.Core.Engines;
using ActorTrain.Core.Models;
using ActorTrain.Core.Precision;
using ActorTrain.Core.Simulation;
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
/// step (backup workers) rejoins at the current clock instead of falling further behind. A worker
/// restarted after a fault starts from scratch (fresh engine, compressors, loss scaler, batch
/// order) and resumes at the clock the shards have seen from it.
///
/// A step takes the <see cref="ComputeTime"/> (measured, fixed or the device profile's) times its
/// slowdown: the fixed straggler factor, times 1 + a draw of the random slowdown when one is set.
/// The link turns that into virtual time, or sleeps the difference under the wall clock.
/// </summary>
public sealed class Worker : LinkedActor
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
        CompressionSettings? Compression = null,
        ComputeTime? ComputeTime = null,
        Distribution? RandomSlowdown = null,
        int TraceEvery = 1,
        long StartClock = 0);

    private readonly Settings _settings;
    private readonly IGradientEngineFactory _engines;
    private readonly IActorRef _coordinator;
    private readonly IReadOnlyList<IActorRef> _shards;
    private readonly MiniBatchIterator _batches;
    private readonly BatchBuffer _batch;
    private readonly float[] _weights;
    private readonly float[] _gradient;
    private readonly LossScaler _scaler;
    private readonly long[] _shardVersions;
    private readonly IGradientCompressor[] _compressors;
    private readonly byte[] _encoded;
    private readonly float[] _decoded;
    private readonly ComputeTime _computeTime;
    private readonly Core.Rng _slowdownRng;
    private IGradientEngine? _engine;
    private long _clock;
    private int _slicesReceived;
    private readonly bool[] _sliceIn;
    private bool _rejoining;
    private double _pushedAt, _held;
    private ActivityContext _run;

    public Worker(Settings settings, IGradientEngineFactory engines, ILink link, IActorRef coordinator, IReadOnlyList<IActorRef> shards)
        : base(link)
    {
        _settings = settings;
        _engines = engines;
        _coordinator = coordinator;
        _shards = shards;
        _batches = new MiniBatchIterator(settings.Partition, settings.BatchSize, settings.DataSeed);
        _batch = _batches.CreateBuffer();
        _weights = new float[settings.Model.ParameterCount];
        _gradient = new float[settings.Model.ParameterCount];
        _scaler = settings.LossScaler();
        _shardVersions = new long[shards.Count];
        _sliceIn = new bool[shards.Count];
        var compression = settings.Compression ?? CompressionSettings.Dense;
        _compressors = settings.Shards.Select((r, k) => compression.CreateCompressor(r.Length,
            Core.Rng.Derive(settings.DataSeed, 0xC0DEC, (ulong)k), compression.ErrorFeedback,
            MatrixBlock.InRange(settings.Model, r.Start, r.Length, compression.Rank))).ToArray();
        _encoded = new byte[_compressors.Max(c => c.MaxEncodedSize)];
        _decoded = new float[settings.Shards.Max(r => r.Length)];
        _computeTime = settings.ComputeTime ?? ComputeTime.Measured;
        _slowdownRng = new Core.Rng(Core.Rng.Derive(settings.DataSeed, 0x510));
        // A worker resumed from a checkpoint goes on with the batches (and slowdown draws) it would have had.
        for (long i = 0; i < settings.StartClock; i++)
        {
            _batches.Next(_batch);
            settings.RandomSlowdown?.Sample(_slowdownRng);
        }

        Receive<Begin>(OnBegin);
        Receive<ParameterSlice>(OnSlice);
        Receive<StopTraining>(_ => Context.Stop(Self));
    }

    public static Props Props(Settings settings, IGradientEngineFactory engines, ILink link, IActorRef coordinator, IReadOnlyList<IActorRef> shards) =>
        Akka.Actor.Props.Create(() => new Worker(settings, engines, link, coordinator, shards));

    protected override void PreStart() => _engine = _engines.Create(_settings.Model, _batches.BatchSize);

    protected override void PostStop() => _engine?.Dispose();

    private void OnBegin(Begin begin)
    {
        _rejoining = begin.Rejoin;
        _run = begin.Trace;
        _pushedAt = Link.Now;
        for (int s = 0; s < _shards.Count; s++)
            Link.Send(_shards[s], new PullParameters(_settings.WorkerId, 0, begin.Rejoin, _run), PullParameters.HeaderBytes, TrafficClass.WorkerToShard, Self);
    }

    private void OnSlice(ParameterSlice slice)
    {
        if ((uint)slice.Shard >= (uint)_shards.Count || !Authentic(Endpoint.Shard(slice.Shard), slice))
        {
            slice.Owner?.Release();
            return;
        }
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
        slice.Owner?.Release();
        _shardVersions[slice.Shard] = slice.Version;
        _held = Math.Max(_held, slice.HeldSeconds);
        if (_rejoining) _clock = Math.Max(_clock, slice.WorkerClock);
        // Counted per shard: a shard may answer twice in one round (a dropped late push is answered
        // at once, its step's answer comes later), which must not stand for another shard's slice.
        if (!_sliceIn[slice.Shard])
        {
            _sliceIn[slice.Shard] = true;
            _slicesReceived++;
        }
        if (_slicesReceived < _shards.Count) return;
        _slicesReceived = 0;
        Array.Clear(_sliceIn);
        _rejoining = false;
        if (_settings.Policy == SyncPolicyKind.Bsp) _clock = _shardVersions.Min();
        Step();
    }

    private void Step()
    {
        // From the pushes leaving to the last slice arriving: the shards held the answer for up to
        // _held of it, the rest was the network (transfer, queueing at the shard).
        double begun = Link.Now;
        double idle = Math.Max(0, begun - _pushedAt);
        double wait = Math.Min(idle, _held);
        _held = 0;
        // The step span covers the previous pushes' departure to this step's: network, wait, compute, compress.
        var step = _clock % _settings.TraceEvery == 0 ? RunTelemetry.Begin("worker.step", _run, Link, _pushedAt) : null;
        var trace = step?.Context ?? _run;
        _batches.Next(_batch);
        int epoch = _batches.Epoch;
        var started = Stopwatch.GetTimestamp();
        float scale = _scaler.Scale;
        var result = _engine!.ComputeGradient(_weights, _batch.AsBatch(), _gradient, new GradientRequest(_settings.Precision, scale));
        double measured = Stopwatch.GetElapsedTime(started).TotalSeconds;
        double slowdown = _settings.Slowdown * (1 + (_settings.RandomSlowdown?.Sample(_slowdownRng) ?? 0));
        double computed = _computeTime.Seconds(measured, _settings.Model, _batch.Count, _settings.Precision) * slowdown;
        Link.Occupy(computed, measured);
        double encodeFrom = Link.Now;
        _scaler.Update(result.NonFinite);

        long encodedBytes = 0;
        for (int s = 0; s < _shards.Count; s++)
        {
            var range = _settings.Shards[s];
            // A non-finite gradient is not encoded (nor fed to error feedback): the shard skips it unread.
            // Pooled: the shard returns the buffer once decoded, so steady-state steps allocate no payloads.
            var payload = result.NonFinite
                ? ReadOnlyMemory<byte>.Empty
                : PushGradient.Rent(_encoded.AsSpan(0, _compressors[s].Compress(_gradient.AsSpan(range.Start, range.Length), scale, _encoded)));
            var push = new PushGradient(_settings.WorkerId, _clock, _shardVersions[s], scale, result.NonFinite, _batch.Count, payload, Link.Now, trace,
                Pooled: !result.NonFinite);
            encodedBytes += push.WireBytes;
            Link.Send(_shards[s], push, push.WireBytes, TrafficClass.WorkerToShard, Self);
        }
        double sent = Link.Now;
        Link.Send(_coordinator, new WorkerStepReport(_settings.WorkerId, _clock, result.Loss, _batch.Count, result.Flops, computed, idle - wait, wait,
            result.UnderflowedElements, result.NonFinite, scale, epoch, measured), 0, TrafficClass.Control, Self);
        if (step is not null)
        {
            step.SetTag("actortrain.worker", _settings.WorkerId);
            step.SetTag("actortrain.clock", _clock);
            step.SetTag("actortrain.loss_scale", scale);
            step.SetTag("actortrain.encoded_bytes", encodedBytes);
            step.SetTag("actortrain.codec", (_settings.Compression ?? CompressionSettings.Dense).Codec);
            step.SetTag("actortrain.version", _shardVersions.Min());
            RunTelemetry.Record("network", trace, Link, _pushedAt, _pushedAt + idle - wait);
            RunTelemetry.Record("wait", trace, Link, _pushedAt + idle - wait, begun);
            RunTelemetry.Record("compute", trace, Link, begun, encodeFrom, [new("actortrain.flops", result.Flops)]);
            RunTelemetry.Record("compress", trace, Link, encodeFrom, sent, [new("actortrain.encoded_bytes", encodedBytes)]);
            RunTelemetry.End(step, Link, sent);
        }
        var worker = new KeyValuePair<string, object?>("actortrain.worker", _settings.WorkerId);
        RunTelemetry.StepTime.Record(sent - _pushedAt, worker);
        RunTelemetry.WaitTime.Record(wait, worker);
        RunTelemetry.LossScale.Record(scale, worker);
        _clock++;
        _pushedAt = sent;
    }
}
