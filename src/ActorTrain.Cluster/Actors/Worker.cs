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
using Akka.Event;

namespace ActorTrain.Cluster.Actors;

/// <summary>
/// A data-parallel worker: owns a gradient engine, its partition of the training set and the
/// weights it computes on. Each step it computes the loss-scaled gradient of its next mini-batch
/// and hands it to its <see cref="IGradientExchange"/>, which says when the next weights are in:
/// a parameter-server client (the weights come from the shards) or an all-reduce peer (the worker
/// keeps a replica of the weights and optimizer and steps it with the averaged gradient). Compute
/// blocks this actor's thread, so workers run on the dedicated compute dispatcher. A worker
/// restarted after a fault starts from scratch (fresh engine, compressors, loss scaler, batch
/// order) and resumes at the clock the shards have seen from it.
///
/// A step takes the <see cref="ComputeTime"/> (measured, fixed or the device profile's) times its
/// slowdown: the fixed straggler factor, times 1 + a draw of the random slowdown when one is set.
/// The link turns that into virtual time, or sleeps the difference under the wall clock.
///
/// training.overlap = layer or bucket (virtual clock): the step follows its <see cref="StepTimeline"/>.
/// The forward pass of each layer starts once the previous layer's is done and its parameters
/// are in (<see cref="IGradientExchange.ParametersIn"/>); the backward pass starts at its end and
/// the exchange sends each part as the backward pass produces it. A sizes-only model
/// (model.type = workload) computes nothing: the step takes the profile's time for the layer
/// table and the exchange sends sizes.
/// </summary>
public sealed class Worker : LinkedActor, IExchangeHost
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
        long StartClock = 0,
        AllReducePeer.Settings? AllReduce = null,
        OverlapMode Overlap = OverlapMode.Off,
        long BucketBytes = 25_000_000,
        CodecTimer? CodecTimer = null,
        Core.Optimization.KfacSettings? Kfac = null);

    private readonly Settings _settings;
    private readonly IGradientEngineFactory _engines;
    private readonly IActorRef _coordinator;
    private readonly MiniBatchIterator _batches;
    private readonly BatchBuffer _batch;
    private readonly float[] _weights;
    private readonly float[] _gradient;
    private readonly LossScaler _scaler;
    private readonly ComputeTime _computeTime;
    private readonly Core.Rng _slowdownRng;
    private readonly IGradientExchange _exchange;
    private readonly bool _sizesOnly;
    private StepTimeline? _timeline;
    private double _timelineFor = double.NaN, _deviceFree;
    private IGradientEngine? _engine;
    private Core.Optimization.KfacLayer[][]? _kfacShardLayers;
    private long _clock, _version;
    private double _pushedAt, _held;
    private ActivityContext _run;

    public Worker(Settings settings, IGradientEngineFactory engines, ILink link, IActorRef coordinator, IReadOnlyList<IActorRef> shards)
        : base(link)
    {
        _settings = settings;
        _engines = engines;
        _coordinator = coordinator;
        _batches = new MiniBatchIterator(settings.Partition, settings.BatchSize, settings.DataSeed);
        _batch = _batches.CreateBuffer();
        _sizesOnly = settings.Model.SizesOnly;
        _weights = _sizesOnly ? [] : new float[settings.Model.ParameterCount];
        _gradient = _sizesOnly ? [] : new float[settings.Model.ParameterCount];
        _scaler = settings.LossScaler();
        _computeTime = settings.ComputeTime ?? ComputeTime.Measured;
        _slowdownRng = new Core.Rng(Core.Rng.Derive(settings.DataSeed, 0x510));
        // A worker resumed from a checkpoint goes on with the batches (and slowdown draws) it would have had.
        for (long i = 0; i < settings.StartClock; i++)
        {
            _batches.Next(_batch);
            settings.RandomSlowdown?.Sample(_slowdownRng);
        }
        _exchange = settings.AllReduce is { } allReduce
            ? new AllReducePeer(this, allReduce, settings, _weights, coordinator)
            : new ParameterServerClient(this, settings, _weights, shards);

        ReceiveFromCoordinator<Begin>(OnBegin);
        ReceiveFromCoordinator<StopTraining>(_ => Context.Stop(Self));
        ReceiveAny(message =>
        {
            if (!_exchange.Receive(message)) Unhandled(message);
        });
    }

    public static Props Props(Settings settings, IGradientEngineFactory engines, ILink link, IActorRef coordinator, IReadOnlyList<IActorRef> shards) =>
        Akka.Actor.Props.Create(() => new Worker(settings, engines, link, coordinator, shards));

    protected override void PreStart()
    {
        if (!_sizesOnly) _engine = _engines.Create(_settings.Model, _batches.BatchSize);
    }

    protected override void PostStop() => _engine?.Dispose();

    ILink IExchangeHost.Link => Link;
    IActorRef IExchangeHost.Self => Self;
    IActorRef IExchangeHost.Sender => Sender;
    Akka.Event.ILoggingAdapter IExchangeHost.Log => Context.GetLogger();
    bool IExchangeHost.Authentic(Endpoint claimed, object message) => Authentic(claimed, message);

    void IExchangeHost.Ready(long clock, double heldSeconds, long version)
    {
        _clock = clock;
        _held = heldSeconds;
        _version = version;
        Step();
    }

    private void OnBegin(Begin begin)
    {
        _run = begin.Trace;
        _pushedAt = Link.Now;
        _exchange.Begin(begin);
    }

    private void Step()
    {
        // From the pushes leaving to the next weights being in: the exchange held them back for up to
        // _held of it (a shard's barrier), the rest was the network (transfer, queueing at the shard).
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
        var result = _sizesOnly
            ? new GradientResult(float.NaN, _settings.Model.FlopsPerSample * _batch.Count, false, 0)
            : _engine!.ComputeGradient(_weights, _batch.AsBatch(), _gradient, new GradientRequest(_settings.Precision, scale));
        double measured = Stopwatch.GetElapsedTime(started).TotalSeconds;
        double slowdown = _settings.Slowdown * (1 + (_settings.RandomSlowdown?.Sample(_slowdownRng) ?? 0));
        double computed = _computeTime.Seconds(measured, _settings.Model, _batch.Count, _settings.Precision) * slowdown;
        var factors = _settings.Kfac is { } kfac && _clock % kfac.FactorEvery == 0 && !result.NonFinite && !_sizesOnly ? KfacFactors(ref computed, slowdown) : null;
        StepTimeline? timeline = null;
        double forwardFrom = begun;
        if (_settings.Overlap == OverlapMode.Off) Link.Occupy(computed, measured);
        else
        {
            timeline = Timeline(computed);
            // the forward pass starts when the device is free, layer by layer as parameters arrive
            forwardFrom = timeline.ForwardStart(_deviceFree, _exchange.ParametersIn);
            double forwardEnd = timeline.ForwardEnd(_deviceFree, _exchange.ParametersIn);
            Link.WaitUntil(forwardEnd);
        }
        double encodeFrom = Link.Now;
        _scaler.Update(result.NonFinite);
        long clock = _clock;
        long encodedBytes = _exchange.Send(_gradient, scale, result.NonFinite, _batch.Count, clock, trace, timeline, factors);
        // with overlap the step is done when the backward pass is (what is still in flight is the next step's wait)
        double sent = timeline is null ? Link.Now : Math.Max(Link.Now, encodeFrom + timeline.BackwardSeconds);
        _deviceFree = sent;
        Link.Send(_coordinator, new WorkerStepReport(_settings.WorkerId, clock, result.Loss, _batch.Count, result.Flops, computed, idle - wait, wait,
            result.UnderflowedElements, result.NonFinite, scale, epoch, measured), 0, TrafficClass.Control, Self);
        if (step is not null)
        {
            step.SetTag("actortrain.worker", _settings.WorkerId);
            step.SetTag("actortrain.clock", clock);
            step.SetTag("actortrain.loss_scale", scale);
            step.SetTag("actortrain.encoded_bytes", encodedBytes);
            step.SetTag("actortrain.codec", (_settings.Compression ?? CompressionSettings.Dense).Codec);
            step.SetTag("actortrain.version", _version);
            RunTelemetry.Record("network", trace, Link, _pushedAt, _pushedAt + idle - wait);
            RunTelemetry.Record("wait", trace, Link, _pushedAt + idle - wait, begun);
            if (timeline is null)
            {
                RunTelemetry.Record("compute", trace, Link, begun, encodeFrom, [new("actortrain.flops", result.Flops)]);
                RunTelemetry.Record("compress", trace, Link, encodeFrom, sent, [new("actortrain.encoded_bytes", encodedBytes)], endsParent: true);
            }
            else
            {
                // overlapped: the forward pass (from its first layer), then the backward pass, during which the parts leave
                RunTelemetry.Record("forward", trace, Link, forwardFrom, encodeFrom, [new("actortrain.flops", result.Flops / 3)]);
                RunTelemetry.Record("backward", trace, Link, encodeFrom, encodeFrom + timeline.BackwardSeconds,
                    [new("actortrain.flops", result.Flops - result.Flops / 3), new("actortrain.encoded_bytes", encodedBytes), new("actortrain.parts", timeline.Buckets.Count)]);
            }
            RunTelemetry.End(step, Link, sent);
        }
        var worker = new KeyValuePair<string, object?>("actortrain.worker", _settings.WorkerId);
        RunTelemetry.StepTime.Record(sent - _pushedAt, worker);
        RunTelemetry.WaitTime.Record(wait, worker);
        RunTelemetry.LossScale.Record(scale, worker);
        _pushedAt = sent;
    }

    /// <summary>
    /// K-FAC: this batch's factor contribution for each shard's layers (a forward and backward pass
    /// in double, on the FP32 weights), its time added to the step's: measured, or its FLOPs on the
    /// worker's device profile; with a fixed compute time the fixed time stands for the whole step.
    /// </summary>
    private float[][] KfacFactors(ref double computed, double slowdown)
    {
        var started = Stopwatch.GetTimestamp();
        var factors = Core.Optimization.KfacFactors.Compute(_settings.Model, _weights, _batch.AsBatch());
        _kfacShardLayers ??= _settings.Shards.Select(r => Core.Optimization.KfacFactors.InRange(_settings.Model, r.Start, r.Length)).ToArray();
        var perShard = _kfacShardLayers.Select(layers => Core.Optimization.KfacFactors.Pack(layers, factors)).ToArray();
        double measured = Stopwatch.GetElapsedTime(started).TotalSeconds;
        computed += slowdown * (_computeTime.Kind switch
        {
            ComputeTimeKind.Profile => _computeTime.Device!.FlopSeconds(_kfacShardLayers.Sum(layers => layers.Sum(l => l.ContributionFlops(_batch.Count)))),
            ComputeTimeKind.Fixed => 0,
            _ => measured,
        });
        return perShard;
    }

    /// <summary>The step's timeline for this compute time (the same every step unless the slowdown is random).</summary>
    private StepTimeline Timeline(double computed)
    {
        if (_timeline is null || computed != _timelineFor)
        {
            _timeline = StepTimeline.Build(_settings.Model, computed, _settings.Overlap, _settings.BucketBytes);
            _timelineFor = computed;
        }
        return _timeline;
    }
}
