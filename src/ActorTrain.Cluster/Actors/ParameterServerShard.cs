using System.Diagnostics;
using System.Numerics.Tensors;
using ActorTrain.Cluster.Telemetry;
using ActorTrain.Cluster.Protocol;
using ActorTrain.Cluster.Transport;
using ActorTrain.Core;
using ActorTrain.Core.Compression;
using ActorTrain.Core.Optimization;
using ActorTrain.Core.Simulation;
using Akka.Actor;
using Akka.Event;

namespace ActorTrain.Cluster.Actors;

/// <summary>
/// Owns the contiguous range [Start, Start + Length) of the flat parameter vector: its FP32 master
/// weights, the optimizer state for exactly that range, and the synchronisation of the pushes for it.
/// Every push is unscaled by the loss scale it was computed with, in FP32; a push flagged
/// non-finite is skipped and counted without touching the weights.
///
/// BSP: the pushes of clock c are held; after the first N - b (b backup workers) they are summed in
/// worker order (so the result does not depend on arrival order) and the mean of the finite ones
/// takes one optimizer step, the version becomes c + 1 and those workers get the new
/// slice, which answers their pull of c + 1. Pushes of an older clock arriving later are dropped,
/// counted, and answered with the current slice, so their worker rejoins at the current clock. If
/// every push of a clock was non-finite the version still advances, without a step.
///
/// ASP: every push is one optimizer step on gradient / N and is answered at once.
/// SSP(s): as ASP, but the answer to a worker that has completed c clocks waits until the slowest
/// worker (as this shard has seen it: every worker pushes to every shard) has completed c - s.
///
/// Workers are addressed by id (the last actor that spoke for the id), so a worker restarted after
/// a fault gets the answers of its predecessor. Its first pull is a rejoin: under BSP it is answered
/// with the current slice, or at the step if its predecessor's push of this clock is already held;
/// under ASP/SSP it is parked like a push of the clock the shard has seen from that worker. Under the
/// virtual clock the shard spends the modelled time of each accumulation and optimizer step, and
/// of decoding each push and re-encoding an FP16 or codec downlink (compression.cost). A sizes-only
/// shard (model.type = workload) keeps no values: it syncs, counts and spends time as any other,
/// and its slices carry their sizes.
/// </summary>
public sealed class ParameterServerShard : LinkedActor
{
    public sealed record Settings(
        int ShardId,
        int Start,
        float[] InitialValues,
        int Workers,
        SyncPolicy Policy,
        OptimizerSettings Optimizer,
        LearningRateSchedule Schedule,
        long MaxSteps,
        int SnapshotEvery,
        CompressionSettings? Compression = null,
        IReadOnlyList<MatrixBlock>? Blocks = null,
        DeviceProfile? Device = null,
        int CheckpointEvery = 0,
        ShardCheckpoint? Restore = null,
        int? SizesOnlyLength = null,
        CodecTimer? CodecTimer = null,
        IReadOnlyList<KfacLayer>? KfacLayers = null)
    {
        /// <summary>The range's length; a sizes-only shard (model.type = workload) holds no values for it.</summary>
        public int Length => SizesOnlyLength ?? InitialValues.Length;

        public bool SizesOnly => SizesOnlyLength is not null;
    }

    private readonly Settings _settings;
    private readonly IActorRef _coordinator;
    private readonly float[] _weights;
    private readonly float[] _sum;
    private readonly Optimizer _optimizer;
    private readonly KfacOptimizer? _kfac;
    private readonly double _preconditionSeconds, _inverseSeconds;
    private long _factorBytesIn;
    private readonly int _versionsPerStep;
    private int _quorum;
    private readonly List<int> _pushers;
    private readonly WorkerClocks _workerClocks;
    private readonly IActorRef[] _workerRefs;
    private readonly double[] _requestAt;
    private readonly bool[] _fresh;
    private readonly double _accumulateSeconds, _applySeconds;
    private readonly KeyValuePair<string, object?> _shardTag;
    private ActivityContext _run, _lastApply;
    private readonly System.Diagnostics.Stopwatch _busy = new();
    private readonly List<(int Id, long Clock)> _parked = [];
    private readonly float[] _decoded;
    private readonly PushGradient?[] _clockPushes;
    // BSP: the pushes of workers 0.._summedUpTo-1 are already in _sum; _summedSeconds[w] is the time
    // worker w's push is charged when the step closes (NaN: skipped, nothing charged)
    private int _summedUpTo;
    private readonly double[] _summedSeconds;
    private readonly Downlink _downlink;
    private readonly CodecTimer _codecTimer, _downlinkTimer;
    private readonly long? _sliceBytes;
    private long _fp16Version = -1;
    private readonly long[] _staleness = new long[ShardCounters.HistogramBuckets];
    private long _version;
    private int _received, _finite;
    private long _applied, _skipped, _dropped, _samples, _bytesIn, _bytesOut, _denseIn, _denseOut, _stalenessSum, _stalenessMax, _maxLead;
    private double _scaleSum, _recentScale = 1;

    public ParameterServerShard(Settings settings, ILink link, IActorRef coordinator) : base(link)
    {
        _settings = settings;
        _coordinator = coordinator;
        _weights = (float[])settings.InitialValues.Clone();
        _sum = new float[settings.InitialValues.Length];
        _optimizer = settings.KfacLayers is { } layers
            ? new KfacOptimizer(settings.Optimizer, settings.Start, settings.InitialValues.Length, layers)
            : Optimizer.Create(settings.Optimizer, settings.InitialValues.Length);
        _kfac = _optimizer as KfacOptimizer;
        // K-FAC's preconditioning every step and its inversions, as FLOPs on the shard's device
        _preconditionSeconds = _kfac is null ? 0 : settings.Device?.FlopSeconds(_kfac.Layers.Sum(l => l.PreconditionFlops)) ?? 0;
        _inverseSeconds = _kfac is null ? 0 : settings.Device?.FlopSeconds(_kfac.Layers.Sum(l => l.InverseFlops)) ?? 0;
        _codecTimer = settings.CodecTimer ?? CodecTimer.Off;
        var compression = settings.Compression ?? CompressionSettings.Dense;
        _downlinkTimer = _codecTimer with { Codec = compression.Downlink == DownlinkMode.Fp16 ? new CompressionSettings("fp16") : compression };
        _sliceBytes = settings.SizesOnly ? compression.Downlink == DownlinkMode.Fp16 ? new CompressionSettings("fp16").EncodedBytes(settings.Length)
            : CompressionSettings.Dense.EncodedBytes(settings.Length) : null;
        _versionsPerStep = settings.Policy.VersionsPerStep(settings.Workers);
        _quorum = settings.Workers - settings.Policy.BackupWorkers;
        _pushers = new(settings.Workers);
        _workerClocks = new WorkerClocks(settings.Workers);
        _workerRefs = new IActorRef[settings.Workers];
        _requestAt = new double[settings.Workers];
        _fresh = new bool[settings.Workers];
        _shardTag = new("actortrain.shard", settings.ShardId);
        _accumulateSeconds = settings.Device?.AccumulateSeconds(settings.Length) ?? 0;
        // K-FAC's per-step state is its velocity: the factors are touched only when contributions arrive
        _applySeconds = settings.Device?.ApplySeconds(settings.Length, _kfac is null ? _optimizer.State.Count : 1) ?? 0;
        _decoded = new float[settings.InitialValues.Length];
        _clockPushes = new PushGradient?[settings.Workers];
        _summedSeconds = new double[settings.Workers];
        _downlink = new Downlink(compression, settings.Workers, settings.InitialValues.Length,
            Rng.Derive(0xD0, (ulong)settings.ShardId), settings.Blocks ?? []);
        if (settings.Restore is { } restore) Restore(restore);
        Training();
    }

    public static Props Props(Settings settings, ILink link, IActorRef coordinator) =>
        Akka.Actor.Props.Create(() => new ParameterServerShard(settings, link, coordinator));

    private long Step => _version / _versionsPerStep;

    /// <summary>Goes on from a checkpoint: weights, optimizer, version, the workers' clocks and the counters.</summary>
    private void Restore(ShardCheckpoint c)
    {
        if (c.Weights.Length != _weights.Length || c.WorkerClocks.Length != _settings.Workers)
            throw new Core.ActorTrainException($"checkpoint of shard {c.Shard} holds {c.Weights.Length} weights and {c.WorkerClocks.Length} workers; this run's shard has {_weights.Length} and {_settings.Workers}");
        c.Weights.CopyTo(_weights, 0);
        _optimizer.Restore(c.OptimizerSteps, c.OptimizerState);
        _version = c.Version;
        _workerClocks.Restore(c.WorkerClocks);
        var k = c.Counters;
        (_applied, _skipped, _dropped, _samples, _bytesIn, _bytesOut, _denseIn, _denseOut) =
            (k.PushesApplied, k.PushesSkippedNonFinite, k.PushesDroppedLate, k.Samples, k.BytesIn, k.BytesOut, k.DenseBytesIn, k.DenseBytesOut);
        (_recentScale, _stalenessSum, _stalenessMax, _maxLead) = (k.LossScale, k.StalenessSum, k.StalenessMax, k.MaxClockLead);
        _factorBytesIn = k.FactorBytesIn;
        k.StalenessHistogram.CopyTo(_staleness, 0);
    }

    private bool IsBsp => _settings.Policy.Kind == SyncPolicyKind.Bsp;

    private void Training()
    {
        ReceiveFromCoordinator<Begin>(begin =>
        {
            _run = _lastApply = begin.Trace;
            // counters that stay at zero are exported as zero, not missing (a clean run has no dropped or skipped pushes)
            RunTelemetry.DroppedPushes.Add(0, _shardTag);
            RunTelemetry.SkippedPushes.Add(0, _shardTag);
            SendSnapshot(final: false);
        });
        Receive<PullParameters>(OnPull);
        Receive<PushGradient>(push =>
        {
            if ((uint)push.Worker >= (uint)_workerRefs.Length || !Authentic(Endpoint.Worker(push.Worker), push) || !FromCurrentIncarnation(push))
            {
                push.Release();
                return;
            }
            if (!IsBsp && SkipLostPushes(push))
            {
                push.Release();
                return;
            }
            _requestAt[push.Worker] = Link.Now;
            Account(push);
            _busy.Start();
            if (IsBsp) OnBspPush(push);
            else OnAsyncPush(push);
            _busy.Stop();
        });
        ReceiveFromCoordinator<WorkerLost>(OnWorkerLost);
        ReceiveFromCoordinator<FinalSnapshotRequest>(_ => Finish());
        ReceiveFromCoordinator<StopTraining>(_ => Context.Stop(Self));
    }

    /// <summary>
    /// The worker's node is gone: the BSP quorum shrinks (the step completes now if the others'
    /// pushes are all in) and SSP stops measuring the others against its clock.
    /// </summary>
    private void OnWorkerLost(WorkerLost lost)
    {
        if (!_workerClocks.IsActive(lost.Worker)) return;
        _workerClocks.Deactivate(lost.Worker);
        _quorum--;
        _parked.RemoveAll(p => p.Id == lost.Worker);
        if (IsBsp)
        {
            if (_received > 0 && _received >= _quorum) StepBsp();
        }
        else ReleaseParked();
    }

    /// <summary>The least clock among the workers still in the run.</summary>
    private long SlowestClock() => _workerClocks.Slowest;

    private void Finished()
    {
        Receive<Begin>(_ => { });
        Receive<PullParameters>(_ => { });
        Receive<PushGradient>(push => push.Release());
        Receive<FinalSnapshotRequest>(_ => { });
        Receive<WorkerLost>(_ => { });
        ReceiveFromCoordinator<StopTraining>(_ => Context.Stop(Self));
    }

    /// <summary>A push from a traced step (telemetry can trace 1 step in N; untraced pushes carry the run's context).</summary>
    private bool Sampled(PushGradient push) => push.Trace != _run;

    /// <summary>
    /// A worker speaks for its id from its first pull (a restarted worker from its rejoin pull) on.
    /// A push from any other actor is from a killed predecessor, still on the wire when its
    /// successor rejoined: counting it would give the id two pushes in one BSP step (the step then
    /// closes without another worker's push) and would send the answer to a dead actor.
    /// </summary>
    private bool FromCurrentIncarnation(PushGradient push)
    {
        var current = _workerRefs[push.Worker];
        if (current is null) _workerRefs[push.Worker] = Sender;
        if (current is null || current.Equals(Sender)) return true;
        RunTelemetry.DroppedPushes.Add(1, _shardTag, new KeyValuePair<string, object?>("actortrain.reason", "predecessor"));
        return false;
    }

    /// <summary>
    /// ASP and SSP count a global step as N pushes. A killed worker's pushes that never reached
    /// this shard (lost with it, or dropped as its predecessor's) would leave the shard short of
    /// the others for good: they end, stop answering, and this one waits for pushes that never
    /// come. The clocks its successor skipped here count as pushes dropped (dropped_late). True
    /// when that ended the run for this shard.
    /// </summary>
    private bool SkipLostPushes(PushGradient push)
    {
        while (_workerClocks[push.Worker] < push.Clock)
        {
            _workerClocks.Raise(push.Worker, _workerClocks[push.Worker] + 1);
            _dropped++;
            _version++;
            if (AfterVersion()) return true;
        }
        return false;
    }

    private void Heard(int worker)
    {
        _workerRefs[worker] = Sender;
        _requestAt[worker] = Link.Now;
    }

    private void OnPull(PullParameters pull)
    {
        // Only a worker's first pull (and a restarted worker's) reaches a shard: later ones are fused with the push.
        // A rejoin speaks for the id from now on; a first pull from another actor than the one that
        // speaks for it is a killed predecessor's, still on the wire: answering it would re-register the dead actor.
        if ((uint)pull.Worker >= (uint)_workerRefs.Length || !Authentic(Endpoint.Worker(pull.Worker), pull)) return;
        if (!pull.Rejoin && _workerRefs[pull.Worker] is { } current && !current.Equals(Sender)) return;
        Heard(pull.Worker);
        _bytesIn += PullParameters.HeaderBytes;
        _denseIn += PullParameters.HeaderBytes;
        if (pull.Rejoin)
        {
            if (IsBsp)
            {
                // its predecessor's push of this clock is held: the answer comes with the step
                _fresh[pull.Worker] = true;
                if (_clockPushes[pull.Worker] is null) SendSlice(pull.Worker);
                return;
            }
            _fresh[pull.Worker] = true;
            _parked.RemoveAll(p => p.Id == pull.Worker);
            _parked.Add((pull.Worker, _workerClocks[pull.Worker]));
            ReleaseParked();
            return;
        }
        // SSP answers a pull for clock 0 with the initial weights: a late first pull must not see
        // other workers' clock-0 updates, or SSP(0) would no longer read at BSP's barrier.
        // (Later pulls are released at the barrier itself.) ASP reads whatever is current.
        if (_settings.Policy.Kind == SyncPolicyKind.Ssp && pull.Clock == 0) SendSlice(pull.Worker, _settings.InitialValues, 0, first: true);
        else SendSlice(pull.Worker, first: true);
    }

    private void Account(PushGradient push)
    {
        RunTelemetry.Pushes.Add(1, _shardTag);
        RunTelemetry.Bytes.Add(push.WireBytes, new KeyValuePair<string, object?>("actortrain.direction", "worker_to_shard"), _shardTag);
        if (RunTelemetry.Tracing && Sampled(push))
        {
            // on a sharing fabric: waiting for bandwidth, sending alone, and from the last byte to the shard taking it (latency, a busy shard)
            var t = Link.Transfer;
            // a child of the run, linked to the step that sent it: the push is still in transit after its step span has ended
            RunTelemetry.Record("transfer", _run, Link, push.SentAt, Link.Now,
                [new("actortrain.worker", push.Worker), _shardTag, new("actortrain.clock", push.Clock), new("actortrain.encoded_bytes", (long)push.WireBytes),
                 new("actortrain.queueing_s", t?.Queueing), new("actortrain.transmission_s", t?.Uncontended), new("actortrain.after_last_byte_s", t is null ? null : Link.Now - t.LastByte)],
                [new ActivityLink(push.Trace)]);
        }
        _samples += push.Samples;
        _bytesIn += push.WireBytes - push.FactorBytes;
        _factorBytesIn += push.FactorBytes;
        _denseIn += PushGradient.DenseBytes(_settings.Length);
        long slowest = SlowestClock();
        _maxLead = Math.Max(_maxLead, push.Clock - slowest);
        _workerClocks.Raise(push.Worker, push.Clock + 1);
    }

    private void OnBspPush(PushGradient push)
    {
        if (push.Clock < _version)
        {
            _dropped++;
            push.Release();
            RunTelemetry.DroppedPushes.Add(1, _shardTag);
            SendSlice(push.Worker);
            return;
        }
        if (push.Clock > _version)
        {
            // no worker of this run can be ahead of the barrier: a forged or corrupted push
            Context.GetLogger().Warning("shard {0}: dropped a BSP push of clock {1} from worker {2} at version {3}, sent by {4}",
                _settings.ShardId, push.Clock, push.Worker, _version, Sender.Path);
            push.Release();
            return;
        }
        if (_clockPushes[push.Worker] is not null)
        {
            // one push per worker and clock: a second one is forged or corrupted (counting it would close the step without another worker's)
            Context.GetLogger().Warning("shard {0}: dropped a second BSP push of clock {1} from worker {2}", _settings.ShardId, push.Clock, push.Worker);
            push.Release();
            return;
        }
        _received++;
        _pushers.Add(push.Worker);
        _scaleSum += push.LossScale;
        _clockPushes[push.Worker] = push;
        if (_received >= _quorum) StepBsp();
        else SumInOrder(all: false);
    }

    /// <summary>
    /// BSP sums its pushes in worker order. Each push whose predecessors are all summed is summed at
    /// once, while the other workers still compute, instead of all of them when the last arrives: the
    /// same additions in the same order (the same bits), off the step's critical path. The bookkeeping
    /// (counters, the virtual clock's charge) stays with the step, so the modelled time is unchanged.
    /// <paramref name="all"/>: the step closes, every held push is summed (a worker without one is skipped).
    /// </summary>
    private void SumInOrder(bool all)
    {
        for (; _summedUpTo < _clockPushes.Length; _summedUpTo++)
        {
            if (_clockPushes[_summedUpTo] is not { } held)
            {
                if (all) continue;
                return;
            }
            AddFactors(held);
            _summedSeconds[_summedUpTo] = Sum(held, out double seconds) ? seconds : double.NaN;
        }
    }

    /// <summary>The held pushes of this clock make one optimizer step; their workers get the new slice.</summary>
    private void StepBsp()
    {
        // The aggregation's span links to every push it sums.
        double from = Link.Now;
        var links = RunTelemetry.Tracing ? _clockPushes.Where(p => p is not null && Sampled(p)).Select(p => new ActivityLink(p!.Trace)).ToList() : null;
        int aggregated = _received;
        double rate = _settings.Schedule.Rate(_version);
        if (_received == 1 && _summedUpTo == 0)
        {
            // one push makes the step (one worker, a quorum of one) and was not summed on arrival
            // (it was when a lost worker closes the step): the optimizer reads it, unsummed
            int w = Array.FindIndex(_clockPushes, p => p is not null);
            var held = _clockPushes[w]!;
            AddFactors(held);
            StepAlone(held, rate);
            _clockPushes[w] = null;
        }
        else
        {
            // Summed in worker order, not arrival order: float addition is not associative, and the
            // arrival order follows thread timing, which would make BSP runs differ in the last bits.
            SumInOrder(all: true);
            for (int w = 0; w < _clockPushes.Length; w++)
            {
                if (_clockPushes[w] is not { } held) continue;
                Count(held, !double.IsNaN(_summedSeconds[w]), _summedSeconds[w]);
                _clockPushes[w] = null;
            }
            _summedUpTo = 0;
            if (_finite > 0) Apply(rate, 1f / _finite);
        }
        if (links is { Count: > 0 })
            _lastApply = RunTelemetry.Record("shard.apply", _run, Link, from, Link.Now,
                [_shardTag, new("actortrain.version", _version + 1), new("actortrain.pushes", aggregated)], links);
        _recentScale = _scaleSum / _received;
        _scaleSum = 0;
        _received = _finite = 0;
        _version++;
        var pushers = _pushers.ToArray();
        _pushers.Clear();
        if (!AfterVersion())
        {
            foreach (int id in pushers) SendSlice(id);
        }
    }

    private void OnAsyncPush(PushGradient push)
    {
        double from = Link.Now;
        long staleness = _version - push.BaseVersion;
        double rate = _settings.Schedule.Rate(Step);
        if (_settings.Policy.StalenessAwareLearningRate) rate /= Math.Max(1, staleness);
        // The learning rate, not the gradient, is divided by N: Adam, AdamW, Adagrad and RMSprop
        // do not see a gradient's scale, so gradient / N would still move each push a whole
        // rate and a clock of N pushes up to N times as far as a BSP step. For SGD and momentum both
        // are the same step; L2 decay now also acts once per clock, not N times.
        if (StepAlone(push, rate / _settings.Workers))
        {
            RecordStaleness(staleness);
            if (RunTelemetry.Tracing && Sampled(push))
                _lastApply = RunTelemetry.Record("shard.apply", _run, Link, from, Link.Now,
                    [_shardTag, new("actortrain.version", _version + 1), new("actortrain.pushes", 1), new("actortrain.staleness", staleness)],
                    [new ActivityLink(push.Trace)]);
        }
        _recentScale = push.LossScale;
        _finite = 0;
        _version++;
        if (AfterVersion()) return;
        _parked.Add((push.Worker, push.Clock + 1));
        ReleaseParked();
    }

    /// <summary>
    /// ASP and SSP, and BSP when one push makes the step: the optimizer reads the push itself,
    /// unscaling each element as it reads it, instead of a sum holding only it: no pass adding it into
    /// the sum, none clearing the sum after. The step is what summing it into
    /// zeros gave, but for the sign of a zero element of the gradient (+0 + -0 is +0), which moves no
    /// weight other than a zero. Counted and charged as a sum and an apply; false when the push is
    /// non-finite or malformed (skipped and counted).
    /// </summary>
    private bool StepAlone(PushGradient push, double rate)
    {
        if (!TryRead(push, out var gradient, out double decode))
        {
            Count(push, false, 0);
            return false;
        }
        Count(push, true, _accumulateSeconds + decode);
        _optimizer.Step(_weights, gradient, rate, 1f / push.LossScale);
        // only now: the gradient may be a view of the payload, which goes back to the pool here
        push.Release();
        ChargeApply();
        return true;
    }

    /// <summary>
    /// Decodes the push (a dense FP32 one is read where it lies), adds it unscaled to the sum and gives
    /// its payload back; false when it is non-finite or malformed and the sum stays as it was.
    /// <paramref name="seconds"/>: what summing it costs on the shard's device.
    /// </summary>
    private bool Sum(PushGradient push, out double seconds)
    {
        seconds = 0;
        if (!TryRead(push, out var gradient, out double decode)) return false;
        TensorPrimitives.MultiplyAdd(gradient, 1f / push.LossScale, _sum, _sum);
        // only now: the view above reads the payload, which goes back to the pool here
        push.Release();
        seconds = _accumulateSeconds + decode;
        return true;
    }

    /// <summary>
    /// The push's gradient, still scaled: a dense FP32 payload where it lies, any other decoded into
    /// <see cref="_decoded"/>. False when it is non-finite, or malformed: a payload that does not
    /// decode, or a loss scale that is not a positive finite number (logged, its payload given back).
    /// <paramref name="decodeSeconds"/>: what decoding it costs on the shard's device.
    /// </summary>
    private bool TryRead(PushGradient push, out ReadOnlySpan<float> gradient, out double decodeSeconds)
    {
        gradient = _decoded;
        decodeSeconds = 0;
        if (push.NonFinite) return false;
        if (!(push.LossScale > 0) || !float.IsFinite(push.LossScale))
        {
            // a forged or corrupted scale: dividing by it would put inf or NaN into the master weights
            Context.GetLogger().Warning("shard {0}: dropped a push of worker {1} with loss scale {2} (not a positive finite number)",
                _settings.ShardId, push.Worker, push.LossScale);
            push.Release();
            return false;
        }
        long started = Stopwatch.GetTimestamp();
        try
        {
            if (!_settings.SizesOnly && !GradientCodec.TryViewDense(push.Payload.Span, _decoded.Length, out gradient))
            {
                GradientCodec.Decode(push.Payload.Span, _decoded);
                gradient = _decoded;
            }
        }
        catch (CompressionFormatException e)
        {
            Context.GetLogger().Warning("shard {0}: dropped a malformed push of worker {1}: {2}", _settings.ShardId, push.Worker, e.Message);
            push.Release();
            return false;
        }
        decodeSeconds = _codecTimer.Decode(_settings.Length, push.WireBytes - PushGradient.HeaderBytes, Stopwatch.GetElapsedTime(started).TotalSeconds, _settings.Blocks);
        return true;
    }

    /// <summary>
    /// The bookkeeping of a push <see cref="Sum"/> or <see cref="StepAlone"/> has read: a used one is
    /// charged its time and counted (with its staleness under BSP); a skipped one (non-finite, or
    /// malformed: counted like a non-finite push, the shard's state stays as it was) is counted as skipped.
    /// </summary>
    private void Count(PushGradient push, bool summed, double seconds)
    {
        if (!summed)
        {
            _skipped++;
            RunTelemetry.SkippedPushes.Add(1, _shardTag);
            return;
        }
        if (Link.IsVirtual) Link.Occupy(seconds, 0);
        _finite++;
        if (IsBsp) RecordStaleness(_version - push.BaseVersion);
    }

    /// <summary>One optimizer step on sum * factor (multiplied as the optimizer reads it), then the sum is cleared.</summary>
    private void Apply(double rate, float factor)
    {
        _optimizer.Step(_weights, _sum, rate, factor);
        Array.Clear(_sum);
        ChargeApply();
    }

    /// <summary>Under the virtual clock: the optimizer step's modelled time (with K-FAC's preconditioning and inversion).</summary>
    private void ChargeApply()
    {
        if (Link.IsVirtual) Link.Occupy(_applySeconds + _preconditionSeconds + (_kfac?.InvertedLastStep == true ? _inverseSeconds : 0), 0);
    }

    /// <summary>
    /// K-FAC: a finite push's factor contribution joins this step's average. One of the wrong size
    /// or with a non-finite value (a forged or corrupted push) is dropped with a warning; its gradient still counts.
    /// </summary>
    private void AddFactors(PushGradient push)
    {
        if (_kfac is null || push.Factors is not { } factors || push.NonFinite) return;
        if (factors.Length != _kfac.PackedLength || !float.IsFinite(TensorPrimitives.Sum(factors)))
        {
            Context.GetLogger().Warning("shard {0}: dropped worker {1}'s K-FAC factors ({2} values, {3} expected, or not finite)",
                _settings.ShardId, push.Worker, factors.Length, _kfac.PackedLength);
            return;
        }
        _kfac.AddFactors(factors);
    }

    private void RecordStaleness(long staleness)
    {
        _applied++;
        _staleness[Math.Min(staleness, ShardCounters.HistogramBuckets - 1)]++;
        RunTelemetry.Staleness.Record(staleness, _shardTag);
        _stalenessSum += staleness;
        _stalenessMax = Math.Max(_stalenessMax, staleness);
    }

    /// <summary>Snapshots at evaluation steps; true when the run's last step has been reached.</summary>
    private bool AfterVersion()
    {
        if (_version % _versionsPerStep != 0) return false;
        if (Step >= _settings.MaxSteps)
        {
            Finish();
            return true;
        }
        if (_settings.CheckpointEvery > 0 && Step % _settings.CheckpointEvery == 0)
            Link.Send(_coordinator, new ShardCheckpoint(_settings.ShardId, Step, _version, (float[])_weights.Clone(), _optimizer.Steps,
                _optimizer.State.Select(s => (float[])s.Clone()).ToArray(), _workerClocks.ToArray(), Counters()), 0, TrafficClass.Control, Self);
        if (Step % _settings.SnapshotEvery == 0) SendSnapshot(final: false);
        return false;
    }

    /// <summary>SSP: answer every parked worker now within s clocks of the slowest; ASP: everyone.</summary>
    private void ReleaseParked()
    {
        long limit = _settings.Policy.Kind == SyncPolicyKind.Ssp ? SlowestClock() + _settings.Policy.Staleness : long.MaxValue;
        for (int i = 0; i < _parked.Count; i++)
        {
            var (id, clock) = _parked[i];
            if (clock > limit) continue;
            SendSlice(id);
            _parked.RemoveAt(i--);
        }
    }

    private void Finish()
    {
        SendSnapshot(final: true);
        Become(Finished);
    }

    /// <summary>The current weights for one worker, as the downlink encodes them; the payload is never written again.</summary>
    private void SendSlice(int workerId, bool first = false) => SendSlice(workerId, _weights, _version, first);

    private void SendSlice(int workerId, float[] weights, long version, bool first)
    {
        // a restarted worker holds nothing: its next slice is full, whatever the downlink mode
        first |= _fresh[workerId];
        _fresh[workerId] = false;
        long started = Stopwatch.GetTimestamp();
        var (payload, delta) = _downlink.Encode(weights, version, workerId, first);
        // re-encoding for the downlink: a codec's change per worker (encoded, then decoded into the mirror), FP16 once per version
        if (delta)
            Link.Spend(_downlinkTimer.Encode(_settings.Length, payload.Memory.Length, Stopwatch.GetElapsedTime(started).TotalSeconds, _settings.Blocks)
                + _downlinkTimer.Decode(_settings.Length, payload.Memory.Length, 0, _settings.Blocks));
        else if (_settings.Compression?.Downlink == DownlinkMode.Fp16 && version != _fp16Version)
        {
            _fp16Version = version;
            Link.Spend(_downlinkTimer.Encode(_settings.Length, _sliceBytes ?? payload.Memory.Length, Stopwatch.GetElapsedTime(started).TotalSeconds));
        }
        var slice = new ParameterSlice(_settings.ShardId, version, payload.Memory, delta, _workerClocks[workerId], Link.Now - _requestAt[workerId], _lastApply,
            payload) { Declared = _sliceBytes };
        RunTelemetry.Bytes.Add(slice.WireBytes, new KeyValuePair<string, object?>("actortrain.direction", "shard_to_worker"), _shardTag);
        _bytesOut += slice.WireBytes;
        _denseOut += ParameterSlice.DenseBytes(_settings.Length);
        Link.Send(_workerRefs[workerId], slice, slice.WireBytes, TrafficClass.ShardToWorker, Self);
    }

    private void SendSnapshot(bool final) =>
        Link.Send(_coordinator, new ShardSnapshot(_settings.ShardId, Step, _weights.AsSpan().ToArray(), Counters(), final), 0, TrafficClass.Control, Self);

    private ShardCounters Counters() => new(_optimizer.Steps, _applied, _skipped, _dropped, _samples, _bytesIn, _bytesOut, _denseIn, _denseOut, _recentScale,
        (long[])_staleness.Clone(), _stalenessSum, _stalenessMax, _maxLead, _busy.Elapsed.TotalSeconds) { FactorBytesIn = _factorBytesIn };
}

/// <summary>
/// What a shard sends back. FP32 and FP16 encode the full weights once per version and share that
/// payload among the workers that receive it. The codec mode keeps, per worker, a mirror of the
/// weights that worker holds and an error-feedback compressor: it sends the encoded change
/// weights - mirror and adds what the worker will decode to the mirror, so mirror and worker agree.
/// A worker's first slice is always full FP32. Payloads are pooled (<see cref="SharedPayload"/>):
/// each one returned carries a reference for its recipient; the cache holds one more until the
/// version changes.
/// </summary>
internal sealed class Downlink
{
    private readonly GradientCodec _full;
    private readonly float[][]? _mirrors;
    private readonly IGradientCompressor[]? _compressors;
    private readonly float[] _change;
    private readonly byte[] _scratch;
    private long _cachedVersion = -1;
    private SharedPayload? _cached;

    public Downlink(CompressionSettings settings, int workers, int length, ulong seed, IReadOnlyList<MatrixBlock> blocks)
    {
        _full = settings.Downlink == DownlinkMode.Fp16 ? new Fp16Codec() : new NoneCodec();
        _change = new float[length];
        if (settings.Downlink == DownlinkMode.Codec)
        {
            _mirrors = new float[workers][];
            _compressors = new IGradientCompressor[workers];
            // No error feedback here: the change is taken against the mirror of what the worker
            // holds, so whatever a message leaves out is still in the next change. A residual on top
            // counted it twice, and the downlink overshot until the weights went NaN (issue 15.7).
            // DGC's momentum correction belongs to gradients: its weights go as plain top-k messages.
            for (int w = 0; w < workers; w++)
                _compressors[w] = settings.Codec == "dgc"
                    ? new GradientCompressor(settings.CreateCodec(), length, errorFeedback: false, Rng.Derive(seed, (ulong)w), settings.Lz4)
                    : settings.CreateCompressor(length, Rng.Derive(seed, (ulong)w), errorFeedback: false, blocks);
            _scratch = new byte[_compressors[0].MaxEncodedSize];
        }
        else
        {
            _scratch = [];
        }
    }

    public (SharedPayload Payload, bool Delta) Encode(float[] weights, long version, int worker, bool first)
    {
        if (_mirrors is null || first || _mirrors[worker] is null)
        {
            if (_mirrors is not null)
            {
                _mirrors[worker] = (float[])weights.Clone();
                return (Full(new NoneCodec(), weights), false);
            }
            if (_cachedVersion != version)
            {
                _cached?.Release();
                _cached = Full(_full, weights);
                _cachedVersion = version;
            }
            return (_cached!.Acquire(), false);
        }
        var mirror = _mirrors[worker];
        TensorPrimitives.Subtract(weights, mirror, _change);
        int written = _compressors![worker].Compress(_change, 1f, _scratch);
        var payload = SharedPayload.Create(written, array =>
        {
            _scratch.AsSpan(0, written).CopyTo(array);
            return written;
        });
        GradientCodec.Decode(payload.Memory.Span, _change);
        TensorPrimitives.Add(mirror, _change, mirror);
        return (payload, true);
    }

    private static SharedPayload Full(GradientCodec codec, float[] weights) =>
        SharedPayload.Create(codec.MaxEncodedSize(weights.Length), array => codec.Encode(weights, array, new Rng(0)));
}
