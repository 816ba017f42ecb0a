using System.Diagnostics;
using ActorTrain.Cluster.Protocol;
using ActorTrain.Cluster.Transport;
using ActorTrain.Core.Compression;
using ActorTrain.Core.Models;
using ActorTrain.Core.Simulation;
using Akka.Actor;

namespace ActorTrain.Cluster.Actors;

/// <summary>
/// The worker's exchange with parameter-server shards: it assembles the full parameter vector
/// from every shard's slice and pushes each shard its range of the gradient, encoded by the run's
/// codec, with the version of that shard's slice it used.
///
/// The worker's clock is the number of steps it has pushed, except under BSP, where it takes the clock of
/// the parameters it received (the lowest shard version): a worker whose push came too late for a
/// step (backup workers) rejoins at the current clock instead of falling further behind. A
/// restarted worker resumes at the clock the shards have seen from it.
///
/// With training.overlap, each shard's push leaves as soon as every bucket its range touches is
/// ready (layer mode: every layer; a shard's range is the unit of a push: the shard takes one per
/// worker and step), and the next forward pass of a layer waits for the slice that holds its parameters.
/// Encoding takes the codec's time (compression.cost), one push after the other. In a sizes-only
/// run (model.type = workload) nothing is encoded: a push carries its size by the codec's formula.
/// </summary>
public sealed class ParameterServerClient : IGradientExchange
{
    private readonly IExchangeHost _host;
    private readonly int _workerId;
    private readonly float[] _weights;
    private readonly IReadOnlyList<ParameterRange> _ranges;
    private readonly IReadOnlyList<IActorRef> _shards;
    private readonly SyncPolicyKind _policy;
    private readonly long[] _shardVersions;
    private readonly bool[] _sliceIn;
    private readonly IGradientCompressor[] _compressors;
    private readonly float[] _decoded;
    private readonly CompressionSettings _compression;
    private readonly CodecTimer _codecTimer;
    private readonly IReadOnlyList<MatrixBlock>[] _blocks;
    private readonly bool _sizesOnly;
    private readonly double[] _sliceAt;
    private readonly int[] _pushOrder;
    private StepTimeline? _orderedFor;
    private int _slicesReceived;
    private bool _rejoining;
    private long _clock;
    private double _held;

    public ParameterServerClient(IExchangeHost host, Worker.Settings settings, float[] weights, IReadOnlyList<IActorRef> shards)
    {
        _host = host;
        _workerId = settings.WorkerId;
        _weights = weights;
        _ranges = settings.Shards;
        _shards = shards;
        _policy = settings.Policy;
        _shardVersions = new long[shards.Count];
        _sliceIn = new bool[shards.Count];
        var compression = settings.Compression ?? CompressionSettings.Dense;
        _compression = compression;
        _codecTimer = settings.CodecTimer ?? CodecTimer.Off;
        _sizesOnly = settings.Model.SizesOnly;
        _sliceAt = new double[shards.Count];
        _pushOrder = Enumerable.Range(0, shards.Count).ToArray();
        _blocks = settings.Shards.Select(r => _sizesOnly ? [] : MatrixBlock.InRange(settings.Model, r.Start, r.Length, compression.Rank)).ToArray();
        _compressors = _sizesOnly ? [] : settings.Shards.Select((r, k) => compression.CreateCompressor(r.Length,
            Core.Rng.Derive(settings.DataSeed, 0xC0DEC, (ulong)k), compression.ErrorFeedback, _blocks[k])).ToArray();
        _decoded = _sizesOnly ? [] : new float[settings.Shards.Max(r => r.Length)];
    }

    private ILink Link => _host.Link;

    public void Begin(Begin begin)
    {
        _rejoining = begin.Rejoin;
        for (int s = 0; s < _shards.Count; s++)
            Link.Send(_shards[s], new PullParameters(_workerId, 0, begin.Rejoin, begin.Trace), PullParameters.HeaderBytes, TrafficClass.WorkerToShard, _host.Self);
    }

    public bool Receive(object message)
    {
        if (message is not ParameterSlice slice) return false;
        OnSlice(slice);
        return true;
    }

    private void OnSlice(ParameterSlice slice)
    {
        if ((uint)slice.Shard >= (uint)_shards.Count || !_host.Authentic(Endpoint.Shard(slice.Shard), slice))
        {
            slice.Owner?.Release();
            return;
        }
        var range = _ranges[slice.Shard];
        _sliceAt[slice.Shard] = Link.Now;
        // a sizes-only slice carries nothing to decode
        if (!_sizesOnly) Decode(slice, range);
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
        if (_policy == SyncPolicyKind.Bsp) _clock = _shardVersions.Min();
        double held = _held;
        _held = 0;
        _host.Ready(_clock, held, _shardVersions.Min());
    }

    private void Decode(ParameterSlice slice, ParameterRange range)
    {
        var target = _weights.AsSpan(range.Start, range.Length);
        if (!slice.Delta)
        {
            GradientCodec.Decode(slice.Payload.Span, target);
            return;
        }
        var change = _decoded.AsSpan(0, range.Length);
        GradientCodec.Decode(slice.Payload.Span, change);
        System.Numerics.Tensors.TensorPrimitives.Add(target, change, target);
    }

    public double ParametersIn(ParameterRange range)
    {
        double arrived = 0;
        for (int s = 0; s < _ranges.Count; s++)
            if (_ranges[s].Start < range.End && range.Start < _ranges[s].End) arrived = Math.Max(arrived, _sliceAt[s]);
        return arrived;
    }

    public long Send(float[] gradient, float lossScale, bool nonFinite, int samples, long clock, ActivityContext trace, StepTimeline? backward = null,
        IReadOnlyList<float[]>? factors = null)
    {
        double backwardFrom = Link.Now;
        // with overlap, the shards whose ranges are ready first (the last layers') are pushed first; the
        // order follows the buckets, not the step's time, so it is sorted once per timeline
        if (backward is not null && !ReferenceEquals(backward, _orderedFor))
        {
            Array.Sort(_pushOrder, (a, b) => backward.ReadyAfter(_ranges[a]).CompareTo(backward.ReadyAfter(_ranges[b])) is var c && c != 0 ? c : a.CompareTo(b));
            _orderedFor = backward;
        }
        long encodedBytes = 0;
        foreach (int s in _pushOrder)
        {
            var range = _ranges[s];
            if (backward is not null) Link.WaitUntil(backwardFrom + backward.ReadyAfter(range));
            var push = nonFinite || _sizesOnly ? Unencoded(s, range, lossScale, nonFinite, samples, clock, trace) : Encode(s, gradient, range, lossScale, samples, clock, trace);
            if (factors is not null) push = push with { Factors = factors[s] };
            encodedBytes += push.WireBytes;
            Link.Send(_shards[s], push, push.WireBytes, TrafficClass.WorkerToShard, _host.Self);
        }
        if (backward is not null) Link.WaitUntil(backwardFrom + backward.BackwardSeconds);
        _clock = clock + 1;
        return encodedBytes;
    }



    /// <summary>A non-finite gradient is not encoded (nor fed to error feedback): the shard skips it unread. A sizes-only push carries its formula size.</summary>
    private PushGradient Unencoded(int s, ParameterRange range, float lossScale, bool nonFinite, int samples, long clock, ActivityContext trace)
    {
        long? declared = null;
        if (!nonFinite)
        {
            declared = _compression.EncodedBytes(range.Length);
            Link.Spend(_codecTimer.Encode(range.Length, declared.Value, 0));
        }
        return new PushGradient(_workerId, clock, _shardVersions[s], lossScale, nonFinite, samples, ReadOnlyMemory<byte>.Empty, Link.Now, trace) { Declared = declared };
    }

    private PushGradient Encode(int s, float[] gradient, ParameterRange range, float lossScale, int samples, long clock, ActivityContext trace)
    {
        long started = System.Diagnostics.Stopwatch.GetTimestamp();
        // Encoded straight into a pooled buffer, which travels as the payload (no copy of the message);
        // the shard returns it once decoded, so steady-state steps allocate no payloads.
        var buffer = System.Buffers.ArrayPool<byte>.Shared.Rent(_compressors[s].MaxEncodedSize);
        int length;
        try
        {
            length = _compressors[s].Compress(gradient.AsSpan(range.Start, range.Length), lossScale, buffer);
        }
        catch
        {
            System.Buffers.ArrayPool<byte>.Shared.Return(buffer);
            throw;
        }
        Link.Spend(_codecTimer.Encode(range.Length, length, System.Diagnostics.Stopwatch.GetElapsedTime(started).TotalSeconds, _blocks[s]));
        var payload = buffer.AsMemory(0, length);
        return new PushGradient(_workerId, clock, _shardVersions[s], lossScale, false, samples, payload, Link.Now, trace, Pooled: true);
    }
}
