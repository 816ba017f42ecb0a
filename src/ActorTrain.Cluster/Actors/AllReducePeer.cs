using System.Diagnostics;
using System.Numerics.Tensors;
using ActorTrain.Cluster.Protocol;
using ActorTrain.Cluster.Telemetry;
using ActorTrain.Cluster.Transport;
using ActorTrain.Core.Collectives;
using ActorTrain.Core.Compression;
using ActorTrain.Core.Models;
using ActorTrain.Core.Optimization;
using ActorTrain.Core.Simulation;
using Akka.Actor;
using Akka.Event;

namespace ActorTrain.Cluster.Actors;

/// <summary>
/// The worker's exchange under all-reduce (topology.aggregation = ring-allreduce,
/// hierarchical-allreduce, halving-doubling): no shards; every worker holds a replica of the FP32
/// master weights and the optimizer state, as PyTorch DDP does, and is a peer of the others.
///
/// Each step the worker's unscaled gradient (plus its tallies: samples, 1 if finite, its loss
/// scale; see <see cref="CollectiveBuffer"/>) is summed across the workers by the algorithm's
/// schedule, every step one message through the link layer and the fabric. Codecs that cannot be
/// summed (everything but none and fp16) are instead all-gathered around the ring as encoded
/// messages, as GRACE does, and every worker decodes and sums them in worker order. Every replica
/// then takes one optimizer step on the mean of the finite gradients, at the learning rate of the
/// step, exactly as a BSP parameter server does (a step with none finite is skipped); the sums are
/// bit-identical on every worker, so the replicas are too, which the coordinator checks at every
/// evaluation (<see cref="ReplicaDigest"/>). Worker 0 stands for the replicas: it sends the
/// snapshots and checkpoints. All-reduce is synchronous: the next step starts when the sum is in.
/// Under the virtual clock each reduction of a received segment, and the optimizer step, take the
/// device profile's time.
///
/// training.overlap = layer or bucket: the gradient is reduced in buckets (<see cref="StepTimeline"/>),
/// one collective after the other in the order they become ready, as NCCL runs DDP's buckets on
/// one stream: a bucket's collective starts once its gradients are ready and the previous
/// bucket's collective is done. The tallies ride with the first bucket. All-gathered codecs
/// encode the whole gradient, so they leave at the end of the backward pass. In a sizes-only run
/// (model.type = workload) nothing is summed: chunks carry their sizes, and the reductions and the
/// optimizer step still take their modelled time.
/// </summary>
public sealed class AllReducePeer : IGradientExchange
{
    public sealed record Settings(
        IAllReduceAlgorithm Algorithm,
        CollectiveLayout Layout,
        bool Fp16,
        float[] InitialWeights,
        OptimizerSettings Optimizer,
        LearningRateSchedule Schedule,
        long MaxSteps,
        int SnapshotEvery,
        DeviceProfile? Device = null,
        int CheckpointEvery = 0,
        ShardCheckpoint? Restore = null);

    /// <summary>Whether gradients encoded by this codec are summed by the reduction (FP32 or FP16 on the wire) rather than all-gathered.</summary>
    public static bool Summable(CompressionSettings c) => (c.Codec == "none" || (c.Codec == "fp16" && !c.ErrorFeedback)) && !c.Lz4;

    private readonly IExchangeHost _host;
    private readonly Settings _settings;
    private readonly int _rank, _ranks;
    private readonly IActorRef _coordinator;
    private readonly float[] _weights;
    private readonly Optimizer _optimizer;
    private readonly double _applySeconds;
    private readonly string _codec;
    // reduction
    private readonly CollectiveBuffer? _buffer;
    private readonly IReadOnlyList<CollectiveStep> _steps = [];
    // all-gather of encoded gradients
    private readonly IGradientCompressor? _compressor;
    private readonly byte[] _encoded = [];
    private readonly PeerChunk?[] _gathered = [];
    private readonly float[] _decoded = [], _sum = [];
    private readonly Dictionary<(long Clock, int Step), PeerChunk> _pending = new();
    private readonly bool _sizesOnly, _summable, _fp16;
    private readonly int _length;
    private readonly CompressionSettings _compression;
    private readonly CodecTimer _codecTimer;
    // a sizes-only worker's tallies (there is no buffer to carry them; every worker's are alike)
    private float _ownScale = 1;
    private int _ownSamples;
    private bool _ownNonFinite;
    // overlap: the bucket of each step of the schedule, and the buckets' ranges in the order they are ready
    // (the order of every step's StepTimeline.Buckets: ranges depend on the model and the settings, not the step)
    private readonly int[] _stepBucket = [];
    private readonly ParameterRange[] _buckets = [];
    private StepTimeline? _backward;
    private double _backwardFrom;
    private readonly long[] _staleness = new long[ShardCounters.HistogramBuckets];
    private readonly Stopwatch _busy = new();
    private readonly long _stepBytes, _denseStepBytes;
    private IActorRef[] _peers = [];
    private long _step, _clock, _applied, _skipped, _samples, _bytes, _dense;
    private int _next, _sentUpTo = -1;
    private bool _active, _finished;
    private double _recentScale = 1;
    private ActivityContext _run;
    private Activity? _span;
    private string? _phase;
    private double _phaseFrom, _spanFrom;

    public AllReducePeer(IExchangeHost host, Settings settings, Worker.Settings worker, float[] weights, IActorRef coordinator)
    {
        _host = host;
        _settings = settings;
        _rank = worker.WorkerId;
        _ranks = settings.Layout.Ranks;
        _coordinator = coordinator;
        _weights = weights;
        _sizesOnly = worker.Model.SizesOnly;
        settings.InitialWeights.CopyTo(weights, 0);
        int length = _length = worker.Model.ParameterCount;
        _optimizer = Optimizer.Create(settings.Optimizer, weights.Length);
        _applySeconds = settings.Device?.ApplySeconds(length, _optimizer.State.Count) ?? 0;
        var compression = _compression = worker.Compression ?? CompressionSettings.Dense;
        _codec = compression.Codec;
        _codecTimer = worker.CodecTimer ?? CodecTimer.Off;
        if (Summable(compression))
        {
            bool fp16 = settings.Fp16 || compression.Codec == "fp16";
            // the codec's time is FP16's conversion, when the wire is FP16 (an FP32 chunk is sent from the buffer as it is)
            _codecTimer = fp16 ? _codecTimer with { Codec = new CompressionSettings("fp16") } : CodecTimer.Off;
            _buffer = _sizesOnly ? null : new CollectiveBuffer(length, fp16);
            _fp16 = fp16;
            // the timeline's buckets (one, the whole vector, without overlap): their ranges follow the model and the settings, not the step
            _buckets = StepTimeline.Build(worker.Model, 1, worker.Overlap, worker.BucketBytes).Buckets.Select(b => b.Range).ToArray();
            (_steps, _stepBucket) = Schedule(_rank);
            _denseStepBytes = ScheduleBytes(fp16: false);
            _stepBytes = fp16 ? ScheduleBytes(fp16: true) : _denseStepBytes;
            _summable = true;
        }
        else if (_sizesOnly)
        {
            _gathered = new PeerChunk?[_ranks];
            _denseStepBytes = ScheduleBytes(fp16: false);
        }
        else
        {
            _denseStepBytes = ScheduleBytes(fp16: false);
            // the same stream and seed as a one-shard parameter-server client's: the same messages
            _compressor = compression.CreateCompressor(length, Core.Rng.Derive(worker.DataSeed, 0xC0DEC, 0), compression.ErrorFeedback,
                MatrixBlock.InRange(worker.Model, 0, length, compression.Rank));
            _encoded = new byte[_compressor.MaxEncodedSize];
            _gathered = new PeerChunk?[_ranks];
            _decoded = new float[length];
            _sum = new float[length];
        }
        if (settings.Restore is { } restore) Restore(restore);
    }

    private ILink Link => _host.Link;
    private int StepCount => _summable ? _steps.Count : _ranks - 1;

    /// <summary>
    /// A rank's schedule: one collective per bucket, in the order the buckets are ready (one bucket,
    /// the whole buffer, without overlap); the tallies ride with the first. Each step's bucket beside it.
    /// </summary>
    private (IReadOnlyList<CollectiveStep> Steps, int[] Buckets) Schedule(int rank)
    {
        var steps = new List<CollectiveStep>();
        var buckets = new List<int>();
        for (int b = 0; b < _buckets.Length; b++)
        {
            var range = _buckets[b];
            int length = range.Length + (b == 0 ? CollectiveBuffer.TallyLength : 0);
            foreach (var s in _settings.Algorithm.Schedule(rank, length, _settings.Layout))
            {
                steps.Add(s with { Send = Shift(s.Send, range.Start), Receive = Shift(s.Receive, range.Start) });
                buckets.Add(b);
            }
        }
        return (steps, buckets.ToArray());
    }

    private static ParameterRange Shift(ParameterRange r, int by) => new(r.Start + by, r.Length);

    /// <summary>What every worker together sends for one collective of this run's algorithm (rank 0 counts it for the run).</summary>
    private long ScheduleBytes(bool fp16)
    {
        if (_rank != 0) return 0;
        if (!_summable && _buckets.Length == 0)
        {
            // the whole buffer in one collective (the all-gathered codecs' dense baseline)
            long dense = 0;
            for (int r = 0; r < _ranks; r++)
                foreach (var s in _settings.Algorithm.Schedule(r, _length + CollectiveBuffer.TallyLength, _settings.Layout))
                    dense += PeerChunk.HeaderBytes + CollectiveBuffer.WireBytes(s.Send, _length, false);
            return dense;
        }
        long bytes = 0;
        for (int r = 0; r < _ranks; r++)
            foreach (var s in Schedule(r).Steps)
                bytes += PeerChunk.HeaderBytes + CollectiveBuffer.WireBytes(s.Send, _length, fp16);
        return bytes;
    }

    private void Restore(ShardCheckpoint c)
    {
        if (c.Weights.Length != _weights.Length)
            throw new Core.ActorTrainException($"checkpoint holds {c.Weights.Length} weights; this run's model has {_weights.Length}");
        c.Weights.CopyTo(_weights, 0);
        _optimizer.Restore(c.OptimizerSteps, c.OptimizerState);
        _step = c.Version;
        var k = c.Counters;
        (_applied, _skipped, _samples, _bytes, _dense, _recentScale) = (k.PushesApplied, k.PushesSkippedNonFinite, k.Samples, k.BytesIn, k.DenseBytesIn, k.LossScale);
        k.StalenessHistogram.CopyTo(_staleness, 0);
    }

    public void Begin(Begin begin)
    {
        if (begin.Peers is not { } peers || peers.Count != _ranks)
            throw new InvalidOperationException($"worker {_rank}: an all-reduce run needs its {_ranks} peers in Begin, got {begin.Peers?.Count ?? 0}");
        _peers = peers.ToArray();
        _run = begin.Trace;
        if (_rank == 0) SendSnapshot(final: false);
        _host.Ready(_step, 0, _step);
    }

    public double ParametersIn(ParameterRange range) => Link.Now;

    public long Send(float[] gradient, float lossScale, bool nonFinite, int samples, long clock, ActivityContext trace, StepTimeline? backward = null,
        IReadOnlyList<float[]>? factors = null)
    {
        _clock = clock;
        _active = true;
        _next = 0;
        _sentUpTo = -1;
        _backward = backward;
        _backwardFrom = Link.Now;
        if (trace != _run)
        {
            _spanFrom = Link.Now;
            _span = RunTelemetry.Begin("allreduce", _run, Link, _spanFrom, [new ActivityLink(trace)]);
            _span?.SetTag("actortrain.worker", _rank);
            _span?.SetTag("actortrain.clock", clock);
            _span?.SetTag("actortrain.algorithm", _summable ? _settings.Algorithm.Name : "ring-allgather");
            _span?.SetTag("actortrain.buckets", _buckets.Length);
        }
        long bytes = 0;
        if (_summable)
        {
            _buffer?.Load(gradient, lossScale, nonFinite, samples);
            if (_sizesOnly) (_ownScale, _ownSamples, _ownNonFinite) = (lossScale, samples, nonFinite);
            foreach (var s in _steps) bytes += PeerChunk.HeaderBytes + CollectiveBuffer.WireBytes(s.Send, _length, _fp16);
        }
        else
        {
            // the whole gradient is encoded at once: it leaves at the end of the backward pass
            if (backward is not null) Link.WaitUntil(_backwardFrom + backward.BackwardSeconds);
            // A non-finite gradient is not encoded (nor fed to error feedback): every worker skips it unread.
            long started = Stopwatch.GetTimestamp();
            byte[] payload = nonFinite || _sizesOnly ? [] : _encoded.AsSpan(0, _compressor!.Compress(gradient, lossScale, _encoded)).ToArray();
            long? declared = _sizesOnly && !nonFinite ? _compression.EncodedBytes(_length) : null;
            Link.Spend(nonFinite ? 0 : _codecTimer.Encode(_length, declared ?? payload.Length, Stopwatch.GetElapsedTime(started).TotalSeconds));
            var own = new PeerChunk(_rank, clock, -1, _rank, lossScale, samples, nonFinite, payload) { Declared = declared };
            _gathered[_rank] = own;
            bytes = own.WireBytes * (_ranks - 1); // forwarded around the whole ring
        }
        Advance();
        return bytes;
    }



    public bool Receive(object message)
    {
        switch (message)
        {
            case PeerChunk chunk:
                OnChunk(chunk);
                return true;
            case FinalSnapshotRequest when _rank == 0:
                if (!_finished) SendSnapshot(final: true);
                _finished = true;
                return true;
            default:
                return false;
        }
    }

    private void OnChunk(PeerChunk chunk)
    {
        if ((uint)chunk.From >= (uint)_ranks || !_host.Authentic(Endpoint.Worker(chunk.From), chunk) || _finished) return;
        // a duplicate of an old step; or one no peer of this run can send (a forged or corrupted chunk)
        // (_step is the clock of the collective in progress, or of the next one)
        if (chunk.Clock < _step) return;
        if (chunk.Clock > _step + 1 || (uint)chunk.Step >= (uint)StepCount || chunk.From != ExpectedSender(chunk.Step)
            || (!_summable && chunk.Origin != Origin(chunk.Step + 1)))
        {
            _host.Log.Warning("worker {0}: dropped a chunk of clock {1}, step {2} from worker {3} at clock {4}: no peer sends that",
                _rank, chunk.Clock, chunk.Step, chunk.From, _step);
            return;
        }
        _pending.TryAdd((chunk.Clock, chunk.Step), chunk);
        if (RunTelemetry.Tracing && _span is not null && chunk.Clock == _clock)
        {
            var t = Link.Transfer;
            // a chunk sent before this worker's own collective began (a faster peer) shows from there
            RunTelemetry.Record("transfer", _span.Context, Link, Math.Max(chunk.SentAt, _spanFrom), Link.Now,
                [new("actortrain.worker", chunk.From), new("actortrain.to", _rank), new("actortrain.step", chunk.Step), new("actortrain.encoded_bytes", (long)chunk.WireBytes),
                 new("actortrain.queueing_s", t?.Queueing), new("actortrain.transmission_s", t?.Uncontended)]);
        }
        if (_active && chunk.Clock == _clock) Advance();
    }

    private int ExpectedSender(int step) => _summable ? _steps[step].ReceiveFrom : (_rank + _ranks - 1) % _ranks;

    /// <summary>All-gather around the ring: at step k worker r forwards the message of worker r - k.</summary>
    private int Origin(int step) => AllReduceAlgorithms.Mod(_rank - step, _ranks);

    /// <summary>Runs the schedule as far as the chunks in hand allow.</summary>
    private void Advance()
    {
        while (_next < StepCount)
        {
            if (_sentUpTo < _next)
            {
                // overlap: a bucket's collective waits for its gradients
                if (_backward is not null && _summable) Link.WaitUntil(_backwardFrom + _backward.Buckets[_stepBucket[_next]].ReadyAfter);
                EnterPhase(_summable ? _steps[_next].Phase : "all-gather");
                SendStep(_next);
                _sentUpTo = _next;
            }
            if (!_pending.Remove((_clock, _next), out var chunk)) return;
            _busy.Start();
            ApplyStep(_next, chunk);
            _busy.Stop();
            _next++;
        }
        Complete();
    }

    private void SendStep(int k)
    {
        PeerChunk chunk;
        int to;
        var trace = _span?.Context ?? _run;
        if (_summable)
        {
            var s = _steps[k];
            long wire = CollectiveBuffer.WireBytes(s.Send, _length, _fp16);
            long started = Stopwatch.GetTimestamp();
            byte[] payload = [];
            if (_buffer is not null)
            {
                payload = new byte[wire];
                _buffer.Encode(s.Send, payload);
            }
            Link.Spend(_codecTimer.Encode(s.Send.Length, wire, Stopwatch.GetElapsedTime(started).TotalSeconds));
            chunk = new PeerChunk(_rank, _clock, k, _rank, 0, 0, false, payload, Link.Now, trace) { Declared = _sizesOnly ? wire : null };
            to = s.SendTo;
        }
        else
        {
            var own = _gathered[Origin(k)]!;
            chunk = own with { From = _rank, Step = k, SentAt = Link.Now, Trace = trace };
            to = (_rank + 1) % _ranks;
        }
        Link.Send(_peers[to], chunk, chunk.WireBytes, TrafficClass.WorkerToWorker, _host.Self);
    }

    private void ApplyStep(int k, PeerChunk chunk)
    {
        if (!_summable)
        {
            _gathered[chunk.Origin] = chunk;
            return;
        }
        var s = _steps[k];
        if (_buffer is not null && !_buffer.Apply(s.Receive, chunk.Payload.Span, s.Reduce))
            throw new InvalidOperationException($"worker {_rank}: step {k} of clock {_clock} from worker {chunk.From} holds {chunk.Payload.Length} bytes, not the {_buffer.WireBytes(s.Receive)} its segment takes");
        // the receiver converts while it adds, in one pass: measured has no separate conversion time to take (the model's is its FP16 decode)
        Link.Spend(_codecTimer.Mode == CodecCostMode.Measured ? 0 : _codecTimer.Decode(s.Receive.Length, CollectiveBuffer.WireBytes(s.Receive, _length, _fp16), 0));
        if (s.Reduce && Link.IsVirtual && _settings.Device is { } device) Link.Occupy(device.AccumulateSeconds(s.Receive.Length), 0);
    }

    private void EnterPhase(string phase)
    {
        if (_span is null || phase == _phase) return;
        if (_phase is not null) RunTelemetry.Record(_phase, _span.Context, Link, _phaseFrom, Link.Now);
        _phase = phase;
        _phaseFrom = Link.Now;
    }

    /// <summary>The sum is in: one optimizer step on the mean of the finite gradients, the same on every replica.</summary>
    private void Complete()
    {
        _active = false;
        // the step is not over before its backward pass (a collective with no steps, one worker, waits for nothing else)
        if (_backward is not null) Link.WaitUntil(_backwardFrom + _backward.BackwardSeconds);
        if (_span is not null && _phase is not null) RunTelemetry.Record(_phase, _span.Context, Link, _phaseFrom, Link.Now);
        _phase = null;
        _busy.Start();
        float[] sum;
        int finite;
        double scaleSum;
        if (_buffer is not null)
        {
            sum = _buffer.Values;
            finite = (int)_buffer.FiniteCount;
            _samples += (long)_buffer.Samples;
            scaleSum = _buffer.ScaleSum;
            _bytes += _stepBytes;
        }
        else if (_summable)
        {
            sum = _sum;
            finite = _ownNonFinite ? 0 : _ranks;
            _samples += (long)_ownSamples * _ranks;
            scaleSum = _ownScale * _ranks;
            _bytes += _stepBytes;
        }
        else
        {
            sum = _sum;
            finite = 0;
            scaleSum = 0;
            // decoded and summed in worker order, exactly as a one-shard parameter server sums the pushes
            for (int w = 0; w < _ranks; w++)
            {
                var g = _gathered[w]!;
                _gathered[w] = null;
                _samples += g.Samples;
                scaleSum += g.LossScale;
                _bytes += g.WireBytes * (_ranks - 1);
                if (g.NonFinite) continue;
                if (!_sizesOnly)
                {
                    long started = Stopwatch.GetTimestamp();
                    GradientCodec.Decode(g.Payload.Span, _decoded);
                    Link.Spend(_codecTimer.Decode(_length, g.Payload.Length, Stopwatch.GetElapsedTime(started).TotalSeconds));
                    TensorPrimitives.MultiplyAdd(_decoded, 1f / g.LossScale, _sum, _sum);
                }
                else Link.Spend(_codecTimer.Decode(_length, g.Declared ?? 0, 0));
                if (Link.IsVirtual && _settings.Device is { } device) Link.Occupy(device.AccumulateSeconds(_length), 0);
                finite++;
            }
        }
        _dense += _denseStepBytes;
        _recentScale = scaleSum / _ranks;
        var gradient = sum.AsSpan(0, Math.Min(sum.Length, _weights.Length));
        if (finite > 0 && IsFinite(gradient))
        {
            _optimizer.Step(_weights, gradient, _settings.Schedule.Rate(_step), finite != 1 ? 1f / finite : 1f);
            _applied += finite;
            _staleness[0] += finite;
            _skipped += _ranks - finite;
            if (Link.IsVirtual) Link.Occupy(_applySeconds, 0);
        }
        else
        {
            // no finite gradient, or the FP16 wire overflowed: every replica skips the step alike
            _skipped += _ranks;
        }
        if (!_summable) Array.Clear(_sum);
        _busy.Stop();
        _step++;
        if (_span is not null)
        {
            _span.SetTag("actortrain.finite", finite);
            RunTelemetry.End(_span, Link, Link.Now);
            _span = null;
        }
        if (AfterStep()) return;
        _host.Ready(_step, 0, _step);
    }

    private static bool IsFinite(ReadOnlySpan<float> values)
    {
        foreach (float v in values)
            if (!float.IsFinite(v)) return false;
        return true;
    }

    /// <summary>Digests, snapshots and checkpoints at their steps; true when the run's last step is done.</summary>
    private bool AfterStep()
    {
        bool last = _step >= _settings.MaxSteps;
        if (last || _step % _settings.SnapshotEvery == 0)
            Link.Send(_coordinator, new ReplicaDigest(_rank, _step, Digest(_weights)), 0, TrafficClass.Control, _host.Self);
        if (_rank == 0)
        {
            if (!last && _settings.CheckpointEvery > 0 && _step % _settings.CheckpointEvery == 0)
                Link.Send(_coordinator, new ShardCheckpoint(0, _step, _step, (float[])_weights.Clone(), _optimizer.Steps,
                    _optimizer.State.Select(s => (float[])s.Clone()).ToArray(), Enumerable.Repeat(_step, _ranks).ToArray(), Counters()), 0, TrafficClass.Control, _host.Self);
            if (last || _step % _settings.SnapshotEvery == 0) SendSnapshot(final: last);
        }
        _finished = last;
        return last;
    }

    private void SendSnapshot(bool final) =>
        Link.Send(_coordinator, new ShardSnapshot(0, _step, _weights.AsSpan().ToArray(), Counters(), final), 0, TrafficClass.Control, _host.Self);

    private ShardCounters Counters() => new(_optimizer.Steps, _applied, _skipped, 0, _samples, _bytes, 0, _dense, 0, _recentScale,
        (long[])_staleness.Clone(), 0, 0, 0, _busy.Elapsed.TotalSeconds);

    /// <summary>FNV-1a over the weights' bits: the same on every node, unlike string.GetHashCode.</summary>
    public static ulong Digest(ReadOnlySpan<float> weights)
    {
        ulong hash = 14695981039346656037;
        foreach (byte b in System.Runtime.InteropServices.MemoryMarshal.AsBytes(weights))
            hash = (hash ^ b) * 1099511628211;
        return hash;
    }
}
