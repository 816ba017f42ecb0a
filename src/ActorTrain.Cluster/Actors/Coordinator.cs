using System.Diagnostics;
using ActorTrain.Cluster.Protocol;
using ActorTrain.Cluster.Telemetry;
using ActorTrain.Cluster.Transport;
using ActorTrain.Core.Compression;
using ActorTrain.Core.Data;
using ActorTrain.Core.Engines;
using ActorTrain.Core.Models;
using ActorTrain.Core.Optimization;
using ActorTrain.Core.Precision;
using ActorTrain.Core.Simulation;
using Akka.Actor;

namespace ActorTrain.Cluster.Actors;

public enum StopReason
{
    MaxSteps,
    TargetAccuracy,
    TargetLoss,
    TimeBudget,
    /// <summary>The test loss became non-finite: the run stops at that evaluation and keeps what it has.</summary>
    Diverged,
    /// <summary>The user interrupted the run (SIGINT/SIGTERM): it ends with what was done so far.</summary>
    Interrupted,
}

/// <summary>One evaluation of the master weights on the test split.</summary>
public sealed record EvaluationPoint(
    long Step,
    double Epoch,
    double ElapsedSeconds,
    double? TrainLoss,
    double TestLoss,
    double TestAccuracy,
    long SamplesProcessed,
    long BytesWorkerToShard,
    long BytesShardToWorker,
    long SkippedGradients,
    double LossScale,
    long Updates,
    double MeanStaleness,
    long MaxStaleness,
    long DroppedLate,
    long DenseBytesWorkerToShard,
    long DenseBytesShardToWorker)
{
    /// <summary>Stands for the last evaluation of a run interrupted before its first: nothing measured.</summary>
    public static readonly EvaluationPoint None = new(0, 0, 0, null, double.NaN, double.NaN, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0);

    /// <summary>Dense FP32 bytes over bytes sent, per direction: how much compression saved.</summary>
    public double UplinkRatio => BytesWorkerToShard == 0 ? 1 : (double)DenseBytesWorkerToShard / BytesWorkerToShard;
    public double DownlinkRatio => BytesShardToWorker == 0 ? 1 : (double)DenseBytesShardToWorker / BytesShardToWorker;
}

/// <summary>
/// One worker over the run: compute (modelled under the virtual clock), communication (its
/// messages on the network, queueing included) and wait (the shards holding their answer: barrier,
/// staleness bound, apply), in seconds of the run's clock; restarts after faults.
/// </summary>
public sealed record WorkerSummary(int Worker, long Steps, double ComputeSeconds, double CommunicationSeconds, double WaitSeconds, long Flops,
    long UnderflowedElements, long NonFiniteSteps, float LastLossScale, int Kills = 0, double GradientSeconds = 0);

/// <summary>
/// A fault to inject: worker <paramref name="Worker"/> is killed at <paramref name="AtSeconds"/> on the
/// run's clock or once it has pushed <paramref name="AtStep"/> steps, and restarted
/// <paramref name="RestartAfter"/> seconds later (never when null).
/// </summary>
public sealed record WorkerFault(int Worker, double? AtSeconds, long? AtStep, double? RestartAfter);

/// <summary>A fault as it happened, on the run's clock; <paramref name="NodeLost"/>: not injected, the worker's node left the cluster.</summary>
public sealed record FaultEvent(int Worker, double KilledAt, double? RestartedAt, bool NodeLost = false);

/// <summary>Every shard's checkpoint of one step, and the run's time then: what `run --resume` goes on from.</summary>
public sealed record RunCheckpoint(long Step, double Time, IReadOnlyList<ShardCheckpoint> Shards)
{
    /// <summary>The clock the shards have seen from worker w: where a resumed worker's batch order goes on.</summary>
    public long WorkerClock(int w) => Shards.Min(s => s.WorkerClocks[w]);
}

/// <summary>Shards and workers built elsewhere (on other nodes) for the coordinator that asks.</summary>
public interface ITopologyPlacement
{
    Task<PlacedTopology> Place(IActorRef coordinator);
}

/// <summary>The actors of a placed topology, shards by shard id and workers by worker id.</summary>
public sealed record PlacedTopology(IActorRef[] Shards, IActorRef[] Workers);

/// <summary>
/// How time is spent besides the gradient itself: compute-time model, shard apply cost, random
/// slowdowns, faults, the step's overlap of backward pass and communication (training.overlap,
/// training.bucket-size) and the codecs' time (compression.cost).
/// </summary>
public sealed record TimingSettings(
    ComputeTime ComputeTime,
    DeviceProfile? ShardDevice = null,
    Distribution? RandomSlowdown = null,
    IReadOnlyList<WorkerFault>? Faults = null,
    DeviceProfile? WorkerDevice = null,
    OverlapMode Overlap = OverlapMode.Off,
    long BucketBytes = 25_000_000,
    CodecCostMode CodecCost = CodecCostMode.Off)
{
    public static readonly TimingSettings Measured = new(ComputeTime.Measured);
}

/// <summary>
/// topology.aggregation other than ps: the all-reduce algorithm, the workers per host its layout
/// assumes (placement.workers-per-host) and whether the gradient crosses the wire as FP16
/// (precision.allreduce).
/// </summary>
public sealed record AllReduceSettings(Core.Collectives.IAllReduceAlgorithm Algorithm, int WorkersPerHost, bool Fp16);

public sealed record RunOutcome(
    StopReason StopReason,
    float[] FinalWeights,
    long FinalStep,
    IReadOnlyList<EvaluationPoint> Evaluations,
    IReadOnlyList<WorkerSummary> Workers,
    IReadOnlyList<ShardCounters> Shards,
    double ElapsedSeconds,
    double WallSeconds = 0,
    bool VirtualTime = false,
    LinkStatistics? Link = null,
    IReadOnlyList<FaultEvent>? Faults = null,
    int ReplicaChecks = 0,
    double EvaluationSeconds = 0)
{
    /// <summary>Staleness of every applied push, summed over shards (bucket i = staleness i; the last is 63+).</summary>
    public long[] StalenessHistogram()
    {
        var total = new long[ShardCounters.HistogramBuckets];
        foreach (var shard in Shards)
            for (int i = 0; i < total.Length; i++) total[i] += shard.StalenessHistogram[i];
        return total;
    }
}

/// <summary>Receives the run's plan and each evaluation as it happens (progress display, live metrics file).</summary>
public interface IRunObserver
{
    /// <summary>The number of global steps the run will take unless a target or the time budget stops it first.</summary>
    void OnStart(long plannedSteps) { }

    void OnEvaluation(EvaluationPoint point);

    /// <summary>The run's root span started: every span of this run has this trace id.</summary>
    void OnTrace(ActivityTraceId traceId) { }

    /// <summary>Something the user should know that does not fail the run (spans that did not reach the collector); stderr by default.</summary>
    void OnWarning(string warning) => Console.Error.WriteLine(warning);
}

/// <summary>
/// Builds the topology (K shards, N workers) as its children, starts them through the link, evaluates
/// the master weights on the test split whenever every shard has reported the same version (every
/// EvalEvery steps, and at the end), applies the stop conditions, injects the fault schedule and
/// completes the run. Evaluation runs off the actor's thread and comes back as a message; one at a
/// time, in version order. Its inputs (reports, snapshots, timers) come through the link, so under
/// the virtual clock they arrive in a deterministic order at virtual times, and every figure of an
/// evaluation is fixed when its snapshot completes.
/// </summary>
public sealed class Coordinator : LinkedActor
{
    public sealed record Settings(
        ModelSpec Model,
        float[] InitialWeights,
        IReadOnlyList<Dataset> Partitions,
        Dataset Test,
        int TrainCount,
        int BatchSize,
        ulong Seed,
        PrecisionMode Precision,
        Func<LossScaler> LossScaler,
        int Shards,
        SyncPolicy Policy,
        IReadOnlyList<double>? Slowdowns,
        OptimizerSettings Optimizer,
        LearningRateSchedule Schedule,
        long MaxSteps,
        int EvalEvery,
        double? TargetAccuracy,
        double? TargetLoss,
        TimeSpan? TimeBudget,
        string? WorkerDispatcher,
        CompressionSettings? Compression = null,
        string? ShardDispatcher = null,
        TimingSettings? Timing = null,
        int TraceEvery = 1,
        ITopologyPlacement? Placement = null,
        int CheckpointEvery = 0,
        Action<RunCheckpoint>? OnCheckpoint = null,
        RunCheckpoint? Resume = null,
        TimeSpan? StallTimeout = null,
        AllReduceSettings? AllReduce = null,
        PipelineSettings? Pipeline = null);

    private sealed record EvaluationDone(long Step, bool Final, Evaluation Result, PendingSnapshot Snapshot, double Seconds);
    private sealed record ChildFailed(Exception Cause);
    private sealed class TimeBudgetExpired
    {
        public static readonly TimeBudgetExpired Instance = new();
    }

    private sealed record KillWorker(int Fault);

    /// <summary>The user asked the run to stop (SIGINT/SIGTERM): end now with what is done.</summary>
    public sealed class Interrupt
    {
        public static readonly Interrupt Instance = new();
    }

    /// <summary>Wall clock: time to look whether the run still moves.</summary>
    private sealed class StallCheck
    {
        public static readonly StallCheck Instance = new();
    }

    private sealed record RestartWorker(int Worker);

    private sealed class PendingSnapshot(int parameters, int shards)
    {
        public readonly float[] Weights = new float[parameters];
        public readonly ShardCounters?[] Counters = new ShardCounters?[shards];
        public int Received;
        public long Version;
        /// <summary>Final snapshots: the fewest steps any shard (stage) had taken.</summary>
        public long MinVersion = long.MaxValue;
        public double Time;
        public double? TrainLoss;
    }

    private readonly Settings _settings;
    private readonly TimingSettings _timing;
    private readonly IGradientEngineFactory _engines;
    private readonly IRunObserver? _observer;
    private readonly TaskCompletionSource<RunOutcome> _completion;
    private readonly ParameterRange[] _ranges;
    private readonly Stopwatch _wall = new();
    private readonly IReadOnlyList<WorkerFault> _faults;
    private readonly bool[] _faultFired;
    private IActorRef[] _workerRefs = [];
    private IActorRef[][] _stageGrid = [];
    private readonly List<FaultEvent> _faultEvents = [];
    private readonly HashSet<int> _lost = [];
    // workers killed by a fault without restart-after: BSP and SSP wait for them forever
    private readonly SortedSet<int> _killedForGood = [];
    private long _lastProgress = Stopwatch.GetTimestamp();
    private ICancelable? _stallChecks;
    private readonly Dictionary<long, ShardCheckpoint[]> _checkpoints = new();
    // A resumed run's times go on from the checkpoint's.
    private readonly double _timeOffset;
    private int _incarnations;
    private double _startedAt, _trainingStart;
    private Activity? _runSpan;
    private double _runEnd;
    private RunOutcome? _outcome;
    private ActivityContext _run;
    private readonly SortedDictionary<long, PendingSnapshot> _pending = new();
    private readonly Queue<(long Step, bool Final, PendingSnapshot Snapshot)> _toEvaluate = new();
    private PendingSnapshot? _awaitingReports;
    private readonly List<EvaluationPoint> _evaluations = [];
    private readonly WorkerTally[] _workers;
    private readonly ShardCounters[] _shardCounters;
    private PendingSnapshot? _final;
    // the weights of the last evaluation: what an interrupted run ends with
    private PendingSnapshot? _lastEvaluated;
    // measured seconds of the evaluations so far (the test split's forward passes, off the actor's thread)
    private double _evaluationSeconds;
    private IGradientEngine? _evaluator;
    private readonly List<IActorRef> _children = [];
    private IActorRef[] _shards = [];
    // who holds the weights: the shards, or under all-reduce worker 0's replica (it sends the snapshots and checkpoints)
    private IActorRef[] _holders = [];
    private readonly Dictionary<long, ulong> _replicaDigests = new();
    private int _replicaChecks;
    private bool _evaluating, _stopping;
    private StopReason _stopReason = StopReason.MaxSteps;
    // Mini-batch losses by the evaluation step whose window (previous evaluation, step] holds their clock.
    private readonly SortedDictionary<long, (double Sum, int Count)> _trainLoss = new();

    private sealed class WorkerTally
    {
        public long Steps, Flops, Underflow, NonFinite;
        /// <summary>The clocks reported up to (the last report's clock + 1): a resumed run's count starts at its checkpoint.</summary>
        public long Through;
        public double Compute, Communication, Wait, Gradient;
        public float Scale = 1;
        public int Kills;
    }

    public Coordinator(Settings settings, IGradientEngineFactory engines, ILink link,
        TaskCompletionSource<RunOutcome> completion, IRunObserver? observer) : base(link)
    {
        _settings = settings;
        _timing = settings.Timing ?? TimingSettings.Measured;
        _faults = _timing.Faults ?? [];
        _faultFired = new bool[_faults.Count];
        _engines = engines;
        _completion = completion;
        _observer = observer;
        _ranges = settings.Pipeline?.Ranges(settings.Model) ?? ParameterSharding.For(settings.Model, settings.Shards, settings.Optimizer.Kind);
        _workers = Enumerable.Range(0, settings.Partitions.Count).Select(_ => new WorkerTally()).ToArray();
        _shardCounters = new ShardCounters[settings.Shards];
        _timeOffset = settings.Resume?.Time ?? 0;

        Receive<WorkerStepReport>(OnReport);
        Receive<ShardSnapshot>(OnSnapshot);
        Receive<ReplicaDigest>(OnDigest);
        Receive<EvaluationDone>(OnEvaluated);
        Receive<TimeBudgetExpired>(_ => BeginStop(StopReason.TimeBudget));
        Receive<KillWorker>(k => Kill(k.Fault));
        Receive<RestartWorker>(r => Restart(r.Worker));
        Receive<SimulationIdle>(OnIdle);
        Receive<StallCheck>(_ => CheckProgress());
        Receive<Interrupt>(_ => OnInterrupt());
        Receive<PlacedTopology>(OnPlaced);
        Receive<ShardCheckpoint>(OnShardCheckpoint);
        Receive<Terminated>(OnTerminated);
        Receive<ChildFailed>(f => Fail(f.Cause));
        Receive<Status.Failure>(f => Fail(f.Cause));
    }

    public static Props Props(Settings settings, IGradientEngineFactory engines, ILink link,
        TaskCompletionSource<RunOutcome> completion, IRunObserver? observer = null) =>
        Akka.Actor.Props.Create(() => new Coordinator(settings, engines, link, completion, observer));

    /// <summary>Any failure of a shard or worker ends the run with that failure.</summary>
    protected override SupervisorStrategy SupervisorStrategy()
    {
        var self = Self;
        return new OneForOneStrategy(0, TimeSpan.Zero, cause =>
        {
            self.Tell(new ChildFailed(cause));
            return Directive.Stop;
        });
    }

    protected override void PreStart()
    {
        try
        {
            Start();
        }
        catch (Exception e)
        {
            // A failure while building the topology (an engine that cannot be created, say) ends the
            // run with that error rather than an actor restart the caller never hears of.
            Fail(e);
        }
    }

    private void Start()
    {
        _wall.Start();
        _startedAt = Link.Now;
        _runSpan = RunTelemetry.BeginRun(Link, _startedAt);
        if (_runSpan is not null)
        {
            _runSpan.SetTag("actortrain.model", _settings.Model.Describe());
            _runSpan.SetTag("actortrain.workers", _settings.Partitions.Count);
            _runSpan.SetTag("actortrain.shards", _settings.Shards);
            _runSpan.SetTag("actortrain.policy", _settings.Policy.Describe());
            _runSpan.SetTag("actortrain.codec", (_settings.Compression ?? CompressionSettings.Dense).Codec);
            _runSpan.SetTag("actortrain.clock", Link.IsVirtual ? "virtual" : "wall");
            _runSpan.SetTag("actortrain.trace_every", _settings.TraceEvery);
            _run = _runSpan.Context;
            _observer?.OnTrace(_run.TraceId);
        }
        _observer?.OnStart(_settings.MaxSteps);
        int evalBatch = Math.Max(1, Math.Min(_settings.Test.Count, 1024));
        // a sizes-only model (a workload table) has no values to evaluate: its points carry no loss
        if (!_settings.Model.SizesOnly) _evaluator = _engines.Create(_settings.Model, evalBatch);
        Link.Attach(Self, Endpoint.Coordinator);

        if (_settings.Placement is { } placement)
        {
            // Shards and workers live on other nodes: their hosts build them, then the run launches.
            placement.Place(Self).PipeTo(Self);
            return;
        }
        if (_settings.Pipeline is { } pipeline)
        {
            // D replicas of P stages: replica 0's stages hold the weights as shards do (and average
            // the other replicas' gradients); each replica's driver takes its worker's place
            int replicas = _settings.Partitions.Count;
            _stageGrid = Enumerable.Range(0, replicas).Select(r => Enumerable.Range(0, pipeline.Stages)
                .Select(s => Context.ActorOf(StageProps(_settings, s, Link, Self, r), PipelineStage.ActorName(r, s, replicas))).ToArray()).ToArray();
            _shards = _stageGrid[0];
            _workerRefs = Enumerable.Range(0, replicas).Select(r => Context.ActorOf(DriverProps(_settings, r, Link, Self),
                PipelineDriver.ActorName(r, replicas))).ToArray();
            _children.AddRange(_stageGrid.SelectMany(r => r));
            _children.AddRange(_workerRefs);
            Launch();
            return;
        }
        _shards = new IActorRef[_settings.AllReduce is null ? _settings.Shards : 0];
        for (int k = 0; k < _shards.Length; k++)
        {
            _shards[k] = Context.ActorOf(ShardProps(_settings, k, Link, Self), $"shard-{k}");
            _children.Add(_shards[k]);
        }
        _workerRefs = new IActorRef[_settings.Partitions.Count];
        for (int w = 0; w < _workerRefs.Length; w++) _workerRefs[w] = CreateWorker(w, $"worker-{w}");
        Launch();
    }

    private void OnPlaced(PlacedTopology placed)
    {
        if (_settings.Pipeline is { } pipeline)
        {
            // the placed "shards" are the stage grid, replica by replica (replica r's stage s at r x P + s)
            _stageGrid = placed.Shards.Chunk(pipeline.Stages).ToArray();
            _shards = _stageGrid[0];
        }
        else _shards = _settings.AllReduce is null ? placed.Shards : [];
        _workerRefs = placed.Workers;
        _children.AddRange(_settings.Pipeline is null ? _shards : placed.Shards);
        _children.AddRange(_workerRefs);
        foreach (var actor in _children) Context.Watch(actor);
        Launch();
    }

    /// <summary>Every actor exists: attach them to the network, say Begin, start the clock.</summary>
    private void Launch()
    {
        // Run time (metrics, checkpoints, faults) counts from here: building a cluster's actors
        // (the nodes load their data) is not training; the run span shows it as "placement".
        if (_settings.Placement is not null) RunTelemetry.Record("placement", _run, Link, _startedAt, Link.Now);
        _trainingStart = Link.Now;
        _wall.Restart();
        for (int k = 0; k < _shards.Length; k++) Link.Attach(_shards[k], Endpoint.Shard(k));
        for (int r = 1; r < _stageGrid.Length; r++)
            for (int s = 0; s < _stageGrid[r].Length; s++) Link.Attach(_stageGrid[r][s], Endpoint.Shard(PipelineStage.EndpointOf(r, s, _stageGrid[r].Length)));
        for (int w = 0; w < _workerRefs.Length; w++) Link.Attach(_workerRefs[w], Endpoint.Worker(w));
        _holders = _settings.AllReduce is null ? _shards : [_workerRefs[0]];
        if (_settings.Pipeline is not null) BeginPipeline();
        else
        {
            var begin = new Begin(Trace: _run);
            foreach (var shard in _shards) Link.Send(shard, begin, 0, TrafficClass.Control, Self);
            // Resumed workers rejoin: they take their clock and full weights from the restored shards.
            var workerBegin = new Begin(Rejoin: _settings.Resume is not null, Trace: _run, Peers: _settings.AllReduce is null ? null : _workerRefs);
            foreach (var worker in _workerRefs) Link.Send(worker, workerBegin, 0, TrafficClass.Control, Self);
        }
        if (_settings.TimeBudget is { } budget) Link.ScheduleOnce(Self, TimeBudgetExpired.Instance, budget.TotalSeconds, Self);
        for (int f = 0; f < _faults.Count; f++)
            if (_faults[f].AtSeconds is { } at) Link.ScheduleOnce(Self, new KillWorker(f), at, Self);
        if (Link is VirtualLink simulated) simulated.NotifyWhenIdle(Self);
        else if (_settings.StallTimeout is { } timeout)
        {
            // the wall clock has no idle signal: a run that stops moving is noticed by the time since its last step
            var every = TimeSpan.FromTicks(Math.Clamp(timeout.Ticks / 4, TimeSpan.TicksPerMillisecond * 50, TimeSpan.TicksPerSecond));
            _stallChecks = Context.System.Scheduler.ScheduleTellRepeatedlyCancelable(every, every, Self, StallCheck.Instance, Self);
        }
        Link.Start();
    }

    /// <summary>
    /// A pipeline's actors learn each other: a stage gets its replica's stages, the replica's
    /// driver, then the same stage of every replica; a driver its replica's stages and itself.
    /// </summary>
    private void BeginPipeline()
    {
        for (int r = 0; r < _stageGrid.Length; r++)
        {
            var line = _stageGrid[r];
            for (int s = 0; s < line.Length; s++)
                Link.Send(line[s], new Begin(Trace: _run, Peers: [.. line, _workerRefs[r], .. _stageGrid.Select(g => g[s])]), 0, TrafficClass.Control, Self);
            Link.Send(_workerRefs[r], new Begin(Trace: _run, Peers: [.. line, _workerRefs[r]]), 0, TrafficClass.Control, Self);
        }
    }

    /// <summary>The endpoint that sends the weights of part k: shard k, or under all-reduce worker 0.</summary>
    private Endpoint Holder(int k) => _settings.AllReduce is null ? Endpoint.Shard(k) : Endpoint.Worker(0);

    /// <summary>Shard k of a run with these settings (built here, or by a ps node's host).</summary>
    public static Props ShardProps(Settings settings, int k, ILink link, IActorRef coordinator)
    {
        var range = ParameterSharding.For(settings.Model, settings.Shards, settings.Optimizer.Kind)[k];
        var compression = settings.Compression ?? CompressionSettings.Dense;
        bool sizesOnly = settings.Model.SizesOnly;
        var shardSettings = new ParameterServerShard.Settings(k, range.Start,
            sizesOnly ? [] : settings.InitialWeights.AsSpan(range.Start, range.Length).ToArray(), settings.Partitions.Count,
            settings.Policy, settings.Optimizer, settings.Schedule, settings.MaxSteps, settings.EvalEvery, settings.Compression,
            sizesOnly ? [] : MatrixBlock.InRange(settings.Model, range.Start, range.Length, compression.Rank),
            settings.Timing?.ShardDevice, settings.CheckpointEvery, settings.Resume?.Shards[k],
            sizesOnly ? range.Length : null, new CodecTimer(compression, settings.Timing?.CodecCost ?? CodecCostMode.Off, settings.Timing?.ShardDevice),
            settings.Optimizer.Kind == OptimizerKind.Kfac ? KfacFactors.InRange(settings.Model, range.Start, range.Length) : null);
        var props = ParameterServerShard.Props(shardSettings, link, coordinator);
        return settings.ShardDispatcher is { } dispatcher ? props.WithDispatcher(dispatcher) : props;
    }

    /// <summary>A pipeline replica's loss scaler: the run's in FP16 (static or dynamic), a static 1 in FP32.</summary>
    private static LossScaler PipelineScaler(Settings settings) =>
        settings.Precision == Core.Precision.PrecisionMode.Fp16 ? settings.LossScaler() : LossScaler.Static(1);

    /// <summary>Pipeline stage s of a run with these settings.</summary>
    public static Props StageProps(Settings settings, int s, ILink link, IActorRef coordinator, int replica = 0)
    {
        var timing = settings.Timing ?? TimingSettings.Measured;
        // the stages start at the scaler's scale; a dynamic one is the driver's, which tells them each step's
        var scaler = PipelineScaler(settings);
        var props = PipelineStage.Props(new PipelineStage.Settings(s, settings.Pipeline!, settings.Model, settings.InitialWeights, settings.Optimizer,
            settings.Schedule, settings.MaxSteps, settings.EvalEvery, settings.BatchSize, timing.ComputeTime, timing.ShardDevice, settings.TraceEvery,
            replica, settings.Partitions.Count, settings.Precision, scaler.Scale, settings.CheckpointEvery, settings.Resume?.Shards[s],
            scaler is Core.Precision.DynamicLossScaler), link, coordinator);
        return settings.ShardDispatcher is { } dispatcher ? props.WithDispatcher(dispatcher) : props;
    }

    /// <summary>Pipeline replica r's driver (on worker r's endpoint; built here, or by a worker node's host).</summary>
    public static Props DriverProps(Settings settings, int r, ILink link, IActorRef coordinator) =>
        PipelineDriver.Props(settings.Pipeline!, r, settings.Model, settings.Partitions[r], settings.BatchSize, WorkerDataSeed(settings.Seed, r),
            settings.MaxSteps, PipelineScaler(settings), link, coordinator,
            settings.Resume?.WorkerClock(r) ?? 0);

    /// <summary>Worker w of a run with these settings (built here, or by a worker node's host).</summary>
    public static Props WorkerProps(Settings settings, int w, IGradientEngineFactory engines, ILink link, IActorRef coordinator,
        IReadOnlyList<IActorRef> shards)
    {
        var timing = settings.Timing ?? TimingSettings.Measured;
        var workerSettings = new Worker.Settings(w, settings.Model, settings.Partitions[w], settings.BatchSize,
            WorkerDataSeed(settings.Seed, w), settings.Precision, settings.LossScaler,
            ParameterSharding.For(settings.Model, settings.Shards, settings.Optimizer.Kind), settings.Policy.Kind,
            settings.Slowdowns is { } slow && w < slow.Count ? slow[w] : 1, settings.Compression, timing.ComputeTime, timing.RandomSlowdown,
            settings.TraceEvery, settings.Resume?.WorkerClock(w) ?? 0, settings.AllReduce is { } a
                ? new AllReducePeer.Settings(a.Algorithm, new Core.Collectives.CollectiveLayout(settings.Partitions.Count, a.WorkersPerHost), a.Fp16,
                    settings.InitialWeights, settings.Optimizer, settings.Schedule, settings.MaxSteps, settings.EvalEvery, timing.WorkerDevice,
                    settings.CheckpointEvery, settings.Resume?.Shards[0])
                : null,
            timing.Overlap, timing.BucketBytes, new CodecTimer(settings.Compression ?? CompressionSettings.Dense, timing.CodecCost, timing.WorkerDevice),
            settings.Optimizer.Kind == OptimizerKind.Kfac ? settings.Optimizer.Kfac : null);
        var props = Worker.Props(workerSettings, engines, link, coordinator, shards);
        return settings.WorkerDispatcher is { } dispatcher ? props.WithDispatcher(dispatcher) : props;
    }

    private IActorRef CreateWorker(int w, string name)
    {
        var worker = Context.ActorOf(WorkerProps(_settings, w, _engines, Link, Self, _shards), name);
        _children.Add(worker);
        return worker;
    }

    /// <summary>A shard's part of a checkpoint; once every shard's part of the step is in, the run's checkpoint is written.</summary>
    private void OnShardCheckpoint(ShardCheckpoint part)
    {
        if ((uint)part.Shard >= (uint)_settings.Shards || !Authentic(Holder(part.Shard), part)) return;
        if (!_checkpoints.TryGetValue(part.Step, out var parts)) _checkpoints[part.Step] = parts = new ShardCheckpoint[_settings.Shards];
        parts[part.Shard] = part;
        if (parts.Any(p => p is null)) return;
        _checkpoints.Remove(part.Step);
        _settings.OnCheckpoint?.Invoke(new RunCheckpoint(part.Step, RunTime, parts));
    }

    /// <summary>
    /// A shard or worker on another node is gone (its node was removed from the cluster). Without a
    /// shard the run cannot go on; without a worker it goes on with the others (the shards stop
    /// waiting for it). Under the virtual clock an event sent to the lost node would never complete,
    /// so a lost node ends the run there too.
    /// </summary>
    private void OnTerminated(Terminated terminated)
    {
        var actor = terminated.ActorRef;
        if (_settings.Pipeline is not null)
        {
            // a pipeline has no spare: every stage holds layers no other has, every driver a replica's data
            for (int r = 0; r < _stageGrid.Length; r++)
                if (Array.IndexOf(_stageGrid[r], actor) is var s and >= 0)
                {
                    Fail(new Core.RunFailedException($"pipeline stage {s} of replica {r} on {actor.Path.Address} was lost: the run cannot go on without its layers"));
                    return;
                }
            if (Array.IndexOf(_workerRefs, actor) is var d and >= 0)
                Fail(new Core.RunFailedException($"the pipeline driver of replica {d} on {actor.Path.Address} was lost: the run cannot go on without its data"));
            return;
        }
        if (Array.IndexOf(_shards, actor) is var k and >= 0)
        {
            Fail(new Core.RunFailedException($"shard {k} on {actor.Path.Address} was lost: the run cannot go on without its weights"));
            return;
        }
        int w = Array.IndexOf(_workerRefs, actor);
        if (w < 0 || _lost.Contains(w)) return;
        if (_settings.AllReduce is not null)
        {
            Fail(new Core.RunFailedException(AllReduceLost(w, $"on {actor.Path.Address} was lost")));
            return;
        }
        if (Link.IsVirtual)
        {
            Fail(new Core.RunFailedException($"worker {w} on {actor.Path.Address} was lost: a virtual-clock run cannot lose a node (its events would never complete); use simulation.clock = wall for runs that may lose nodes, or faults = [...] to simulate crashes"));
            return;
        }
        _lost.Add(w);
        _faultEvents.Add(new FaultEvent(w, RunTime, null, NodeLost: true));
        if (_lost.Count == _workerRefs.Length)
        {
            Fail(new Core.RunFailedException("every worker was lost: nothing is left to train"));
            return;
        }
        foreach (var shard in _shards) Link.Send(shard, new WorkerLost(w), 0, TrafficClass.Control, Self);
    }

    private void Kill(int fault)
    {
        if (_faultFired[fault] || _stopping) return;
        _faultFired[fault] = true;
        var f = _faults[fault];
        if (_settings.AllReduce is not null)
        {
            Fail(new Core.RunFailedException(AllReduceLost(f.Worker, $"was killed by a fault at {Quantity.FormatSeconds(RunTime)}")));
            return;
        }
        Link.Kill(_workerRefs[f.Worker]);
        _workers[f.Worker].Kills++;
        _faultEvents.Add(new FaultEvent(f.Worker, RunTime, null));
        if (f.RestartAfter is { } after) Link.ScheduleOnce(Self, new RestartWorker(f.Worker), after, Self);
        else
        {
            _killedForGood.Add(f.Worker);
            if (_killedForGood.Count + _lost.Count >= _workerRefs.Length)
                Fail(new Core.RunFailedException(
                    $"every worker was killed by faults without restart-after (the last, worker {f.Worker}, at {Quantity.FormatSeconds(RunTime)}): nothing is left to train"));
        }
    }

    /// <summary>All-reduce does not re-form its ring without a member (no elastic membership): the run ends, saying so.</summary>
    private string AllReduceLost(int w, string what) =>
        $"worker {w} {what} at step {Progress}: an all-reduce run ends when a member of its ring is gone " +
        $"(topology.aggregation = {_settings.AllReduce!.Algorithm.Name} has no elastic re-forming); use topology.aggregation = ps for runs with faults";

    /// <summary>Under all-reduce every replica's weights must be the same bits at every evaluation step.</summary>
    private void OnDigest(ReplicaDigest d)
    {
        if ((uint)d.Worker >= (uint)_workerRefs.Length || !Authentic(Endpoint.Worker(d.Worker), d)) return;
        if (!_replicaDigests.TryGetValue(d.Step, out ulong first))
        {
            _replicaDigests[d.Step] = d.Hash;
            return;
        }
        _replicaChecks++;
        if (first != d.Hash)
            Fail(new Core.RunFailedException($"the replicas diverged at step {d.Step}: worker {d.Worker}'s weights differ from another worker's (a bug: every replica applies the same sum)"));
    }

    private void Restart(int w)
    {
        if (_stopping) return;
        _killedForGood.Remove(w);
        _workerRefs[w] = CreateWorker(w, $"worker-{w}-{++_incarnations}");
        Link.Attach(_workerRefs[w], Endpoint.Worker(w));
        int last = _faultEvents.FindLastIndex(e => e.Worker == w);
        _faultEvents[last] = _faultEvents[last] with { RestartedAt = RunTime };
        Link.Send(_workerRefs[w], new Begin(Rejoin: true, Trace: _run), 0, TrafficClass.Control, Self);
    }

    /// <summary>The virtual clock ran out of events: fine once the final snapshots are in, a stall otherwise.</summary>
    private void OnIdle(SimulationIdle idle)
    {
        if (_final is { } f && f.Received == _settings.Shards) return;
        Fail(new Core.RunFailedException(FormattableString.Invariant(
            $"the run stalled at virtual time {idle.Time:0.######} s (step {Progress}): no message is in flight; {StallCause()}")));
    }

    /// <summary>Wall clock: no step report, snapshot or evaluation for simulation.stall-timeout ends the run.</summary>
    private void CheckProgress()
    {
        // waiting for the rest of the final snapshots is not exempt: a shard that never sends its own would hang the run
        if (_settings.StallTimeout is not { } timeout || _final is { } f && f.Received == _settings.Shards || _evaluating) return;
        var quiet = Stopwatch.GetElapsedTime(_lastProgress);
        if (quiet < timeout) return;
        Fail(new Core.RunFailedException(FormattableString.Invariant(
            $"the run stalled at {RunTime:0.###} s (step {Progress}): nothing moved for {quiet.TotalSeconds:0.#} s (simulation.stall-timeout = {Quantity.FormatSeconds(timeout.TotalSeconds)}); {StallCause()}")));
    }

    private long Progress => _workers.Length == 0 ? 0 : _workers.Min(w => w.Steps);

    /// <summary>Why a run stopped moving, from what the coordinator and the link know: lost messages first, then dead workers.</summary>
    private string StallCause()
    {
        var link = Link.Statistics;
        var causes = new List<string>();
        if (link.Lost > 0)
            causes.Add($"{link.Lost} message(s) were lost for good, every attempt dropped (network.drop; network.max-attempts attempts each; the first: {link.FirstLost})");
        if (_killedForGood.Count > 0)
            causes.Add($"worker(s) {string.Join(", ", _killedForGood)} were killed by faults without restart-after and {_settings.Policy.Kind.ToString().ToUpperInvariant()} waits for every worker");
        if (_final is { } f && f.Received < _settings.Shards)
            causes.Add($"the final snapshot of shard(s) {string.Join(", ", Enumerable.Range(0, _settings.Shards).Where(k => f.Counters[k] is null))} never came, after another shard's");
        if (causes.Count == 0) causes.Add("no lost message and no dead worker explains it (a bug: please report it with the run's config.conf)");
        return string.Join("; ", causes);
    }

    /// <summary>Seconds of the run so far (from the launch; a resumed run goes on from its checkpoint's time).</summary>
    private double RunTime => Link.Now - _trainingStart + _timeOffset;

    /// <summary>The link's time of a run time.</summary>
    private double LinkTime(double runTime) => _trainingStart + runTime - _timeOffset;

    /// <summary>The mini-batch order seed of worker w; shared with single-process references in tests.</summary>
    public static ulong WorkerDataSeed(ulong seed, int worker) => Core.Rng.Derive(seed, 0x5EED, (ulong)worker);

    protected override void PostStop()
    {
        _stallChecks?.Cancel();
        _evaluator?.Dispose();
        // every local shard and worker has stopped (Akka stops the children first): no span is still
        // being recorded, so the run span can end after the last of them, and only then is the run done
        RunTelemetry.EndRun(_runSpan, Link, _runEnd);
        _runSpan = null;
        if (_outcome is not null) _completion.TrySetResult(_outcome);
        _completion.TrySetException(new InvalidOperationException("the coordinator stopped before the run completed"));
    }

    private void OnReport(WorkerStepReport r)
    {
        if ((uint)r.Worker >= (uint)_workers.Length || !Authentic(Endpoint.Worker(r.Worker), r)) return;
        _lastProgress = Stopwatch.GetTimestamp();
        var t = _workers[r.Worker];
        t.Steps++;
        t.Through = Math.Max(t.Through, r.Clock + 1);
        t.Compute += r.ComputeSeconds;
        t.Communication += r.CommunicationSeconds;
        t.Gradient += r.GradientSeconds;
        t.Wait += r.WaitSeconds;
        t.Flops += r.Flops;
        t.Underflow += r.UnderflowedElements;
        if (r.NonFinite) t.NonFinite++;
        else
        {
            long window = (r.Clock / _settings.EvalEvery + 1) * _settings.EvalEvery;
            var (sum, count) = _trainLoss.GetValueOrDefault(window);
            _trainLoss[window] = (sum + r.Loss, count + 1);
        }
        t.Scale = r.LossScale;
        for (int f = 0; f < _faults.Count; f++)
            if (!_faultFired[f] && _faults[f].Worker == r.Worker && _faults[f].AtStep is { } at && r.Clock + 1 >= at) Kill(f);
        EvaluateFinalOnceReported();
    }

    private void OnSnapshot(ShardSnapshot s)
    {
        if ((uint)s.Shard >= (uint)_settings.Shards || !Authentic(Holder(s.Shard), s)) return;
        _lastProgress = Stopwatch.GetTimestamp();
        _shardCounters[s.Shard] = s.Counters;
        PendingSnapshot pending;
        if (s.Final)
        {
            // A node lost mid-run can have delivered its workers' last pushes to some shards and not to
            // others, so one shard reaches the last step while another never will (its survivors wait for
            // the finished shard's answer): once a node is lost, the first final snapshot ends every shard.
            if (_final is null && _lost.Count > 0 && !_stopping)
                foreach (var holder in _holders) Link.Send(holder, FinalSnapshotRequest.Instance, 0, TrafficClass.Control, Self);
            pending = _final ??= new PendingSnapshot(_settings.InitialWeights.Length, _settings.Shards);
            pending.Version = Math.Max(pending.Version, s.Step);
            pending.MinVersion = Math.Min(pending.MinVersion, s.Step);
        }
        else
        {
            if (_stopping) return;
            if (!_pending.TryGetValue(s.Step, out pending!))
                _pending[s.Step] = pending = new PendingSnapshot(_settings.InitialWeights.Length, _settings.Shards) { Version = s.Step };
        }
        var range = _ranges[s.Shard];
        if (!_settings.Model.SizesOnly) s.Values.Span.CopyTo(pending.Weights.AsSpan(range.Start, range.Length));
        pending.Counters[s.Shard] = s.Counters;
        pending.Received++;
        if (pending.Received < _settings.Shards) return;

        if (s.Final) _pending.Clear();
        else _pending.Remove(s.Step);
        pending.Time = RunTime;
        if (s.Final && _settings.Pipeline is not null)
        {
            // a driver reports a step after its stages are done with it, and the stages' final
            // snapshots can arrive before the last report: the run's figures wait for it
            _awaitingReports = pending;
            EvaluateFinalOnceReported();
            return;
        }
        Enqueue(pending, s.Final);
    }

    private void Enqueue(PendingSnapshot pending, bool final)
    {
        pending.TrainLoss = TakeTrainLoss(final ? long.MaxValue : pending.Version);
        _toEvaluate.Enqueue((pending.Version, final, pending));
        EvaluateNext();
    }

    /// <summary>A pipeline's final snapshot is evaluated once every driver has reported the steps every stage took.</summary>
    private void EvaluateFinalOnceReported()
    {
        if (_awaitingReports is not { } pending || _workers.Any(w => w.Through < pending.MinVersion)) return;
        _awaitingReports = null;
        Enqueue(pending, final: true);
    }

    private void EvaluateNext()
    {
        if (_evaluating || _toEvaluate.Count == 0) return;
        var (step, final, snapshot) = _toEvaluate.Dequeue();
        _evaluating = true;
        var evaluator = _evaluator;
        var test = _settings.Test;
        Task.Run(() =>
        {
            long started = Stopwatch.GetTimestamp();
            var result = evaluator?.Evaluate(snapshot.Weights, test.AsBatch(), PrecisionMode.Fp32) ?? new Evaluation(double.NaN, 0, 0);
            return new EvaluationDone(step, final, result, snapshot, Stopwatch.GetElapsedTime(started).TotalSeconds);
        }).PipeTo(Self);
    }

    private void OnEvaluated(EvaluationDone done)
    {
        _evaluating = false;
        _evaluationSeconds += done.Seconds;
        _lastProgress = Stopwatch.GetTimestamp();
        var counters = done.Snapshot.Counters.Select(c => c!).ToArray();
        // Every shard sees every push, so any one shard's sample count is the run's.
        long samples = counters.Max(c => c.Samples);
        var point = new EvaluationPoint(
            done.Step,
            (double)samples / _settings.TrainCount,
            done.Snapshot.Time,
            done.Snapshot.TrainLoss,
            done.Result.Loss,
            _settings.Model.SizesOnly ? double.NaN : done.Result.Accuracy,
            samples,
            counters.Sum(c => c.BytesIn),
            counters.Sum(c => c.BytesOut),
            counters.Max(c => c.PushesSkippedNonFinite),
            counters[0].LossScale,
            counters.Max(c => c.Steps),
            counters.Sum(c => c.StalenessSum) / (double)Math.Max(1, counters.Sum(c => c.PushesApplied)),
            counters.Max(c => c.StalenessMax),
            counters.Sum(c => c.PushesDroppedLate),
            counters.Sum(c => c.DenseBytesIn),
            counters.Sum(c => c.DenseBytesOut));
        _evaluations.Add(point);
        _lastEvaluated = done.Snapshot;
        _observer?.OnEvaluation(point);
        RunTelemetry.Loss.Record(point.TestLoss);
        // Evaluation is not part of the simulated cluster: its span starts when the snapshot was
        // complete. Under the virtual clock it takes no virtual time (a real duration on the virtual
        // timeline made a 22 ms run's trace 95 ms long); what it really took is an attribute.
        double at = LinkTime(done.Snapshot.Time);
        RunTelemetry.Record("evaluation", _run, Link, at, Link.IsVirtual ? at : at + done.Seconds,
            [new("actortrain.step", done.Step), new("actortrain.test_loss", point.TestLoss), new("actortrain.test_accuracy", point.TestAccuracy),
             new("actortrain.real_seconds", done.Seconds)], endsParent: done.Final);

        // a workload's points carry no loss (NaN by design), which is not divergence
        bool diverged = !_settings.Model.SizesOnly && !double.IsFinite(done.Result.Loss);
        if (done.Final)
        {
            Complete(done, diverged ? StopReason.Diverged : null);
            return;
        }
        if (diverged)
        {
            Complete(done, StopReason.Diverged);
            return;
        }
        if (!_stopping)
        {
            if (_settings.TargetAccuracy is { } acc && done.Result.Accuracy >= acc) { Complete(done, StopReason.TargetAccuracy); return; }
            if (_settings.TargetLoss is { } loss && done.Result.Loss <= loss) { Complete(done, StopReason.TargetLoss); return; }
        }
        EvaluateNext();
    }

    /// <summary>Mean mini-batch loss of the steps up to <paramref name="step"/> not yet reported.</summary>
    private double? TakeTrainLoss(long step)
    {
        double sum = 0;
        int count = 0;
        foreach (var window in _trainLoss.Keys.Where(k => k <= step).ToList())
        {
            sum += _trainLoss[window].Sum;
            count += _trainLoss[window].Count;
            _trainLoss.Remove(window);
        }
        return count > 0 ? sum / count : null;
    }

    private void BeginStop(StopReason reason)
    {
        // a final snapshot already on its way (max-steps reached) must not be dropped from the queue
        if (_stopping || _final is not null) return;
        _stopping = true;
        _stopReason = reason;
        _toEvaluate.Clear();
        foreach (var holder in _holders) Link.Send(holder, FinalSnapshotRequest.Instance, 0, TrafficClass.Control, Self);
    }

    private void Complete(EvaluationDone done, StopReason? reason = null)
    {
        if (reason is { } r) _stopReason = r;
        Complete(done.Step, done.Snapshot.Time, done.Snapshot.Weights,
            done.Final ? done.Snapshot.Counters.Select(c => c!).ToList() : _shardCounters.ToList());
    }

    private void Complete(long step, double time, float[] weights, IReadOnlyList<ShardCounters> shards)
    {
        Link.Stop();
        _runSpan?.SetTag("actortrain.stop_reason", _stopReason.ToString());
        _runSpan?.SetTag("actortrain.steps", step);
        _runEnd = LinkTime(time); // the span ends, and the outcome is handed over, once the children have stopped (PostStop)
        foreach (var child in _children) child.Tell(StopTraining.Instance);
        var workers = _workers.Select((t, i) => new WorkerSummary(i, t.Steps, t.Compute, t.Communication, t.Wait, t.Flops, t.Underflow, t.NonFinite,
            t.Scale, t.Kills, t.Gradient)).ToList();
        _outcome = new RunOutcome(_stopReason, weights, step, _evaluations, workers,
            shards, time, _wall.Elapsed.TotalSeconds, Link.IsVirtual, Link.Statistics, _faultEvents.ToList(), _replicaChecks, _evaluationSeconds);
        Context.Stop(Self);
    }

    /// <summary>
    /// Ends the run at once with the evaluations so far and the weights of the last one (the
    /// initial weights before any): waiting for a final snapshot could take as long as a step.
    /// </summary>
    private void OnInterrupt()
    {
        _stopReason = StopReason.Interrupted;
        var last = _lastEvaluated;
        Complete(last?.Version ?? 0, last?.Time ?? RunTime, last?.Weights ?? _settings.InitialWeights,
            _shardCounters.Where(c => c is not null).ToList());
    }

    private void Fail(Exception cause)
    {
        Link.Stop();
        _runSpan?.SetStatus(ActivityStatusCode.Error, cause.Message);
        RunTelemetry.EndRun(_runSpan, Link, Link.Now);
        _runSpan = null;
        foreach (var child in _children) child.Tell(StopTraining.Instance);
        _completion.TrySetException(cause);
        Context.Stop(Self);
    }
}
