using System.Diagnostics;
using ActorTrain.Cluster.Protocol;
using ActorTrain.Cluster.Transport;
using ActorTrain.Core.Compression;
using ActorTrain.Core.Data;
using ActorTrain.Core.Engines;
using ActorTrain.Core.Models;
using ActorTrain.Core.Optimization;
using ActorTrain.Core.Precision;
using Akka.Actor;

namespace ActorTrain.Cluster.Actors;

public enum StopReason
{
    MaxSteps,
    TargetAccuracy,
    TargetLoss,
    TimeBudget,
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
    /// <summary>Dense FP32 bytes over bytes sent, per direction: how much compression saved.</summary>
    public double UplinkRatio => BytesWorkerToShard == 0 ? 1 : (double)DenseBytesWorkerToShard / BytesWorkerToShard;
    public double DownlinkRatio => BytesShardToWorker == 0 ? 1 : (double)DenseBytesShardToWorker / BytesShardToWorker;
}

public sealed record WorkerSummary(int Worker, long Steps, double ComputeSeconds, double WaitSeconds, long Flops, long UnderflowedElements,
    long NonFiniteSteps, float LastLossScale);

public sealed record RunOutcome(
    StopReason StopReason,
    float[] FinalWeights,
    long FinalStep,
    IReadOnlyList<EvaluationPoint> Evaluations,
    IReadOnlyList<WorkerSummary> Workers,
    IReadOnlyList<ShardCounters> Shards,
    double ElapsedSeconds)
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
}

/// <summary>
/// Builds the topology (K shards, N workers) as its children, evaluates the master weights on the
/// test split whenever every shard has reported the same version (every EvalEvery steps, and at the
/// end), applies the stop conditions and completes the run. Evaluation runs off the actor's thread
/// and comes back as a message; one at a time, in version order.
/// </summary>
public sealed class Coordinator : ReceiveActor, IWithTimers
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
        string? ShardDispatcher = null);

    private sealed record EvaluationDone(long Step, bool Final, Evaluation Result, float[] Weights, ShardCounters[] Counters);
    private sealed record ChildFailed(Exception Cause);
    private sealed class TimeBudgetExpired
    {
        public static readonly TimeBudgetExpired Instance = new();
    }

    private sealed class PendingSnapshot(int parameters, int shards)
    {
        public readonly float[] Weights = new float[parameters];
        public readonly ShardCounters?[] Counters = new ShardCounters?[shards];
        public int Received;
        public long Version;
    }

    private readonly Settings _settings;
    private readonly IGradientEngineFactory _engines;
    private readonly ILink _link;
    private readonly IRunObserver? _observer;
    private readonly TaskCompletionSource<RunOutcome> _completion;
    private readonly ParameterRange[] _ranges;
    private readonly Stopwatch _elapsed = new();
    private readonly SortedDictionary<long, PendingSnapshot> _pending = new();
    private readonly Queue<(long Step, bool Final, PendingSnapshot Snapshot)> _toEvaluate = new();
    private readonly List<EvaluationPoint> _evaluations = [];
    private readonly WorkerTally[] _workers;
    private readonly ShardCounters[] _shardCounters;
    private PendingSnapshot? _final;
    private IGradientEngine? _evaluator;
    private readonly List<IActorRef> _children = [];
    private readonly List<IActorRef> _shards = [];
    private bool _evaluating, _stopping;
    private StopReason _stopReason = StopReason.MaxSteps;
    // Mini-batch losses by the evaluation step whose window (previous evaluation, step] holds their clock.
    private readonly SortedDictionary<long, (double Sum, int Count)> _trainLoss = new();

    private sealed class WorkerTally
    {
        public long Steps, Flops, Underflow, NonFinite;
        public double Compute, Wait;
        public float Scale = 1;
    }

    public Coordinator(Settings settings, IGradientEngineFactory engines, ILink link,
        TaskCompletionSource<RunOutcome> completion, IRunObserver? observer)
    {
        _settings = settings;
        _engines = engines;
        _link = link;
        _completion = completion;
        _observer = observer;
        _ranges = ParameterSharding.Balanced(settings.Model.ParameterCount, settings.Shards);
        _workers = Enumerable.Range(0, settings.Partitions.Count).Select(_ => new WorkerTally()).ToArray();
        _shardCounters = new ShardCounters[settings.Shards];

        Receive<WorkerStepReport>(OnReport);
        Receive<ShardSnapshot>(OnSnapshot);
        Receive<EvaluationDone>(OnEvaluated);
        Receive<TimeBudgetExpired>(_ => BeginStop(StopReason.TimeBudget));
        Receive<ChildFailed>(f => Fail(f.Cause));
        Receive<Status.Failure>(f => Fail(f.Cause));
    }

    public ITimerScheduler Timers { get; set; } = null!;

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
        _elapsed.Start();
        _observer?.OnStart(_settings.MaxSteps);
        int evalBatch = Math.Max(1, Math.Min(_settings.Test.Count, 1024));
        _evaluator = _engines.Create(_settings.Model, evalBatch);

        var shards = new IActorRef[_settings.Shards];
        for (int k = 0; k < shards.Length; k++)
        {
            var range = _ranges[k];
            var shardSettings = new ParameterServerShard.Settings(k, range.Start,
                _settings.InitialWeights.AsSpan(range.Start, range.Length).ToArray(), _settings.Partitions.Count,
                _settings.Policy, _settings.Optimizer, _settings.Schedule, _settings.MaxSteps, _settings.EvalEvery, _settings.Compression,
                MatrixBlock.InRange(_settings.Model, range.Start, range.Length, (_settings.Compression ?? CompressionSettings.Dense).Rank));
            var shardProps = ParameterServerShard.Props(shardSettings, _link, Self);
            if (_settings.ShardDispatcher is { } shardDispatcher) shardProps = shardProps.WithDispatcher(shardDispatcher);
            shards[k] = Context.ActorOf(shardProps, $"shard-{k}");
            _children.Add(shards[k]);
            _shards.Add(shards[k]);
        }
        for (int w = 0; w < _settings.Partitions.Count; w++)
        {
            var workerSettings = new Worker.Settings(w, _settings.Model, _settings.Partitions[w], _settings.BatchSize,
                WorkerDataSeed(_settings.Seed, w), _settings.Precision, _settings.LossScaler, _ranges, _settings.Policy.Kind,
                _settings.Slowdowns is { } slow && w < slow.Count ? slow[w] : 1, _settings.Compression);
            var props = Worker.Props(workerSettings, _engines, _link, Self, shards);
            if (_settings.WorkerDispatcher is { } dispatcher) props = props.WithDispatcher(dispatcher);
            _children.Add(Context.ActorOf(props, $"worker-{w}"));
        }
        if (_settings.TimeBudget is { } budget) Timers.StartSingleTimer("time-budget", TimeBudgetExpired.Instance, budget);
    }

    /// <summary>The mini-batch order seed of worker w; shared with single-process references in tests.</summary>
    public static ulong WorkerDataSeed(ulong seed, int worker) => Core.Rng.Derive(seed, 0x5EED, (ulong)worker);

    protected override void PostStop()
    {
        _evaluator?.Dispose();
        _completion.TrySetException(new InvalidOperationException("the coordinator stopped before the run completed"));
    }

    private void OnReport(WorkerStepReport r)
    {
        var t = _workers[r.Worker];
        t.Steps++;
        t.Compute += r.ComputeSeconds;
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
    }

    private void OnSnapshot(ShardSnapshot s)
    {
        _shardCounters[s.Shard] = s.Counters;
        PendingSnapshot pending;
        if (s.Final)
        {
            pending = _final ??= new PendingSnapshot(_settings.Model.ParameterCount, _settings.Shards);
            pending.Version = Math.Max(pending.Version, s.Step);
        }
        else
        {
            if (_stopping) return;
            if (!_pending.TryGetValue(s.Step, out pending!))
                _pending[s.Step] = pending = new PendingSnapshot(_settings.Model.ParameterCount, _settings.Shards) { Version = s.Step };
        }
        var range = _ranges[s.Shard];
        s.Values.Span.CopyTo(pending.Weights.AsSpan(range.Start, range.Length));
        pending.Counters[s.Shard] = s.Counters;
        pending.Received++;
        if (pending.Received < _settings.Shards) return;

        if (s.Final) _pending.Clear();
        else _pending.Remove(s.Step);
        _toEvaluate.Enqueue((pending.Version, s.Final, pending));
        EvaluateNext();
    }

    private void EvaluateNext()
    {
        if (_evaluating || _toEvaluate.Count == 0) return;
        var (step, final, snapshot) = _toEvaluate.Dequeue();
        _evaluating = true;
        var evaluator = _evaluator!;
        var test = _settings.Test;
        var weights = snapshot.Weights;
        var counters = snapshot.Counters.Select(c => c!).ToArray();
        Task.Run(() => new EvaluationDone(step, final, evaluator.Evaluate(weights, test.AsBatch(), PrecisionMode.Fp32), weights, counters))
            .PipeTo(Self);
    }

    private void OnEvaluated(EvaluationDone done)
    {
        _evaluating = false;
        double? trainLoss = TakeTrainLoss(done.Final ? long.MaxValue : done.Step);
        // Every shard sees every push, so any one shard's sample count is the run's.
        long samples = done.Counters.Max(c => c.Samples);
        var point = new EvaluationPoint(
            done.Step,
            (double)samples / _settings.TrainCount,
            _elapsed.Elapsed.TotalSeconds,
            trainLoss,
            done.Result.Loss,
            done.Result.Accuracy,
            samples,
            done.Counters.Sum(c => c.BytesIn),
            done.Counters.Sum(c => c.BytesOut),
            done.Counters.Max(c => c.PushesSkippedNonFinite),
            done.Counters[0].LossScale,
            done.Counters.Max(c => c.Steps),
            done.Counters.Sum(c => c.StalenessSum) / (double)Math.Max(1, done.Counters.Sum(c => c.PushesApplied)),
            done.Counters.Max(c => c.StalenessMax),
            done.Counters.Sum(c => c.PushesDroppedLate),
            done.Counters.Sum(c => c.DenseBytesIn),
            done.Counters.Sum(c => c.DenseBytesOut));
        _evaluations.Add(point);
        _observer?.OnEvaluation(point);

        if (done.Final)
        {
            Complete(done);
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
        if (_stopping) return;
        _stopping = true;
        _stopReason = reason;
        _toEvaluate.Clear();
        foreach (var shard in _shards) shard.Tell(FinalSnapshotRequest.Instance);
    }

    private void Complete(EvaluationDone done, StopReason? reason = null)
    {
        if (reason is { } r) _stopReason = r;
        foreach (var child in _children) child.Tell(StopTraining.Instance);
        var workers = _workers.Select((t, i) => new WorkerSummary(i, t.Steps, t.Compute, t.Wait, t.Flops, t.Underflow, t.NonFinite, t.Scale)).ToList();
        _completion.TrySetResult(new RunOutcome(_stopReason, done.Weights, done.Step, _evaluations, workers,
            _shardCounters.ToList(), _elapsed.Elapsed.TotalSeconds));
        Context.Stop(Self);
    }

    private void Fail(Exception cause)
    {
        foreach (var child in _children) child.Tell(StopTraining.Instance);
        _completion.TrySetException(cause);
        Context.Stop(Self);
    }
}
