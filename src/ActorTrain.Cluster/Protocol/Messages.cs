using System.Diagnostics;

namespace ActorTrain.Cluster.Protocol;

/// <summary>Marker for every message of the training protocol.</summary>
public interface ITrainingMessage;

/// <summary>
/// Coordinator -> shard or worker, through the link: the topology is built, begin (a shard sends its
/// first snapshot, a worker its first pulls). <paramref name="Rejoin"/>: a restarted worker, which
/// takes its clock from the shards. <paramref name="Trace"/>: the run span, parent of everything the
/// receiver records. Every message that starts work carries the W3C trace context of its cause
/// (trace id, span id, flags: an ActivityContext), so spans join across actors and nodes.
/// <paramref name="Peers"/>: under all-reduce, every worker of the run by id (a worker's ring).
/// </summary>
public sealed record Begin(bool Rejoin = false, ActivityContext Trace = default, IReadOnlyList<Akka.Actor.IActorRef>? Peers = null) : ITrainingMessage
{
    public static readonly Begin First = new();
}

/// <summary>
/// Worker -> worker under all-reduce: step <paramref name="Step"/> of the collective of clock
/// <paramref name="Clock"/> from worker <paramref name="From"/>. Reduction steps carry a segment of
/// the sender's buffer (<see cref="Core.Collectives.CollectiveBuffer"/>: FP32, or FP16 for the
/// gradient part); an all-gather of encoded gradients (codecs that cannot be summed) carries worker
/// <paramref name="Origin"/>'s encoded message with its loss scale, samples and finite flag.
/// </summary>
public sealed record PeerChunk(int From, long Clock, int Step, int Origin, float LossScale, int Samples, bool NonFinite, ReadOnlyMemory<byte> Payload,
    double SentAt = 0, ActivityContext Trace = default) : ITrainingMessage
{
    public const int HeaderBytes = 32;
    public long WireBytes => HeaderBytes + (Declared ?? Payload.Length);

    /// <summary>Sizes-only runs (model.type = workload): the payload's size by formula; nothing is carried.</summary>
    public long? Declared { get; init; }
}

/// <summary>
/// Worker -> coordinator under all-reduce, at every evaluation step: a hash of the worker's
/// replica of the weights. Every replica applies the same averaged gradient, so all must be equal;
/// the coordinator ends the run if one differs.
/// </summary>
public sealed record ReplicaDigest(int Worker, long Step, ulong Hash) : ITrainingMessage;

/// <summary>
/// Worker -> shard: send me your slice at (at least) this clock. <paramref name="Rejoin"/>: the worker
/// restarted after a fault and lost its state; the shard answers with the current weights and the
/// clock it has seen from that worker.
/// </summary>
public sealed record PullParameters(int Worker, long Clock, bool Rejoin = false, ActivityContext Trace = default) : ITrainingMessage
{
    public const int HeaderBytes = 16;
}

/// <summary>
/// Worker -> shard: the worker's gradient for the shard's range, computed on parameters of
/// <paramref name="BaseVersion"/>, multiplied by <paramref name="LossScale"/> (the shard unscales)
/// and encoded by the run's codec (<see cref="Core.Compression.GradientCodec"/>; dense FP32 is the
/// codec "none"). <paramref name="NonFinite"/> is the worker's verdict on its whole gradient (not
/// just this slice), so every shard skips the same pushes; such a push carries no payload.
/// <paramref name="Samples"/> is the mini-batch size behind it. The payload is never written after sending.
/// <paramref name="SentAt"/> is the run time it left (for the transfer span); <paramref name="Trace"/> the worker's step span.
/// <paramref name="Pooled"/>: the payload was rented from <see cref="System.Buffers.ArrayPool{T}.Shared"/> and
/// belongs to the one shard that receives it, which returns it once decoded (or dropped).
/// </summary>
public sealed record PushGradient(int Worker, long Clock, long BaseVersion, float LossScale, bool NonFinite, int Samples, ReadOnlyMemory<byte> Payload,
    double SentAt = 0, ActivityContext Trace = default, bool Pooled = false) : ITrainingMessage
{
    public const int HeaderBytes = 36;
    public long WireBytes => HeaderBytes + (Declared ?? Payload.Length) + FactorBytes;

    /// <summary>
    /// optimizer.type = kfac: this worker's factor contribution for the shard's layers (upper
    /// triangles of A and G, FP32), every kfac.factor-every steps; null otherwise. Counted apart
    /// from the gradient's bytes.
    /// </summary>
    public float[]? Factors { get; init; }

    public long FactorBytes => Factors is null ? 0 : sizeof(float) * (long)Factors.Length;

    /// <summary>Sizes-only runs (model.type = workload): the payload's size by the codec's formula; nothing is carried.</summary>
    public long? Declared { get; init; }

    /// <summary>A pooled copy of an encoded payload, for <paramref name="Pooled"/> pushes.</summary>
    public static ReadOnlyMemory<byte> Rent(ReadOnlySpan<byte> encoded)
    {
        var array = System.Buffers.ArrayPool<byte>.Shared.Rent(encoded.Length);
        encoded.CopyTo(array);
        return array.AsMemory(0, encoded.Length);
    }

    /// <summary>Gives a pooled payload back; the receiving shard calls it once, after the last read.</summary>
    public void Release()
    {
        if (Pooled && System.Runtime.InteropServices.MemoryMarshal.TryGetArray(Payload, out var segment) && segment.Array is { } array)
            System.Buffers.ArrayPool<byte>.Shared.Return(array);
    }

    /// <summary>What the same push costs as dense FP32: the baseline of compression ratios.</summary>
    public static long DenseBytes(int length) => HeaderBytes + Core.Compression.GradientWire.HeaderSize + sizeof(float) * (long)length;
}

/// <summary>
/// Shard -> worker: the shard's weights at <paramref name="Version"/> (steps under BSP, pushes
/// processed under ASP/SSP), encoded (FP32 or FP16 in full, or with <paramref name="Delta"/> the
/// encoded change since what this worker last received); the worker sends the version back as its
/// push's base version. <paramref name="WorkerClock"/> is the number of clocks the shard has seen
/// the worker complete (a restarted worker resumes there); <paramref name="HeldSeconds"/> how long the
/// shard held the answer after the request reached it (barrier, staleness bound, apply), which the
/// worker reports as wait time, apart from the time its messages spent on the network.
/// </summary>
public sealed record ParameterSlice(int Shard, long Version, ReadOnlyMemory<byte> Payload, bool Delta = false, long WorkerClock = 0, double HeldSeconds = 0,
    ActivityContext Trace = default, SharedPayload? Owner = null) : ITrainingMessage
{
    public const int HeaderBytes = 16;
    public long WireBytes => HeaderBytes + (Declared ?? Payload.Length);

    /// <summary>Sizes-only runs (model.type = workload): the payload's size by formula; nothing is carried.</summary>
    public long? Declared { get; init; }

    public static long DenseBytes(int length) => HeaderBytes + Core.Compression.GradientWire.HeaderSize + sizeof(float) * (long)length;
}

/// <summary>
/// A pooled buffer shared by the slices that carry it (one encoding of a version goes to every
/// worker that asks for it): each holder releases its reference once it has read the payload,
/// and the last one returns the buffer to <see cref="System.Buffers.ArrayPool{T}.Shared"/>. A slice
/// that is never read (its worker was killed) just leaves the buffer to the collector.
/// </summary>
public sealed class SharedPayload
{
    private readonly byte[] _array;
    private readonly int _length;
    private int _references = 1;

    private SharedPayload(byte[] array, int length)
    {
        _array = array;
        _length = length;
    }

    /// <summary>Rents a buffer of at least <paramref name="capacity"/> bytes, fills it, keeps what <paramref name="fill"/> says it wrote; one reference.</summary>
    public static SharedPayload Create(int capacity, Func<byte[], int> fill)
    {
        var array = System.Buffers.ArrayPool<byte>.Shared.Rent(capacity);
        return new SharedPayload(array, fill(array));
    }

    /// <summary>A pooled copy of <paramref name="bytes"/> (a payload received from another node); one reference.</summary>
    public static SharedPayload Copy(ReadOnlySpan<byte> bytes)
    {
        var array = System.Buffers.ArrayPool<byte>.Shared.Rent(bytes.Length);
        bytes.CopyTo(array);
        return new SharedPayload(array, bytes.Length);
    }

    public ReadOnlyMemory<byte> Memory => _array.AsMemory(0, _length);

    public SharedPayload Acquire()
    {
        Interlocked.Increment(ref _references);
        return this;
    }

    public void Release()
    {
        int left = Interlocked.Decrement(ref _references);
        if (left == 0) System.Buffers.ArrayPool<byte>.Shared.Return(_array);
        else if (left < 0) throw new InvalidOperationException("a shared payload was released more often than acquired");
    }
}

/// <summary>Shard -> coordinator: a copy of the shard's weights at a global step, for evaluation.</summary>
public sealed record ShardSnapshot(int Shard, long Step, ReadOnlyMemory<float> Values, ShardCounters Counters, bool Final) : ITrainingMessage;

/// <summary>
/// What a shard has done up to the step of the snapshot that carries these counters: optimizer
/// steps, pushes applied, skipped as non-finite and dropped as late (backup workers), samples behind
/// the pushes, the bytes it received and sent (and what they would have been as dense FP32), the mean loss scale of the recent pushes, the
/// staleness of every applied push (histogram, sum, max; in shard versions) and the largest lead
/// of a pushing worker's clock over the slowest worker's; BusySeconds is the real (wall) time the shard
/// spent decoding, accumulating and stepping the optimizer. Counting at the shard, by step, makes
/// every column of an evaluation a function of the step, not of when the coordinator looked.
/// </summary>
public sealed record ShardCounters(
    long Steps,
    long PushesApplied,
    long PushesSkippedNonFinite,
    long PushesDroppedLate,
    long Samples,
    long BytesIn,
    long BytesOut,
    long DenseBytesIn,
    long DenseBytesOut,
    double LossScale,
    long[] StalenessHistogram,
    long StalenessSum,
    long StalenessMax,
    long MaxClockLead,
    double BusySeconds = 0)
{
    /// <summary>K-FAC factor contributions received (FP32 upper triangles), apart from BytesIn's gradients.</summary>
    public long FactorBytesIn { get; init; }

    /// <summary>A pipeline stage: the most micro-batches whose activations it held at once.</summary>
    public int PeakActivations { get; init; }

    /// <summary>Buckets 0..62 count that staleness exactly; the last counts 63 and more.</summary>
    public const int HistogramBuckets = 64;

    public double MeanStaleness => PushesApplied == 0 ? 0 : (double)StalenessSum / PushesApplied;
}

/// <summary>Worker -> coordinator, after each step.</summary>
public sealed record WorkerStepReport(
    int Worker,
    long Clock,
    float Loss,
    int Samples,
    long Flops,
    double ComputeSeconds,
    double CommunicationSeconds,
    double WaitSeconds,
    long UnderflowedElements,
    bool NonFinite,
    float LossScale,
    int Epoch,
    double GradientSeconds = 0) : ITrainingMessage;

/// <summary>Coordinator -> workers and shards: the run is over, stop now.</summary>
public sealed class StopTraining : ITrainingMessage
{
    public static readonly StopTraining Instance = new();
    private StopTraining() { }
}

/// <summary>Coordinator -> shards: send a final snapshot at your current version and stop stepping.</summary>
public sealed class FinalSnapshotRequest : ITrainingMessage
{
    public static readonly FinalSnapshotRequest Instance = new();
    private FinalSnapshotRequest() { }
}

/// <summary>
/// Shard -> coordinator, every checkpoint-every steps: what the shard needs to go on from this
/// step (its weights, the optimizer's steps and state, its version, the clock it has seen from
/// each worker and its counters). The coordinator writes the run's checkpoint once every shard's
/// part of a step is in; a resumed run builds its shards from it.
/// </summary>
public sealed record ShardCheckpoint(int Shard, long Step, long Version, float[] Weights, long OptimizerSteps, float[][] OptimizerState,
    long[] WorkerClocks, ShardCounters Counters) : ITrainingMessage;

/// <summary>
/// Coordinator -> shards: worker <paramref name="Worker"/>'s node left the cluster. BSP stops
/// waiting for its pushes (the barrier re-forms over the others), SSP stops holding the others to
/// its clock; ASP never waited for it.
/// </summary>
public sealed record WorkerLost(int Worker) : ITrainingMessage;
