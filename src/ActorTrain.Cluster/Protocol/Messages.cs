namespace ActorTrain.Cluster.Protocol;

/// <summary>Marker for every message of the training protocol.</summary>
public interface ITrainingMessage;

/// <summary>Worker -> shard: send me your slice at (at least) this clock.</summary>
public sealed record PullParameters(int Worker, long Clock) : ITrainingMessage
{
    public const int HeaderBytes = 16;
}

/// <summary>
/// Worker -> shard: the worker's gradient for the shard's range, computed on parameters of
/// <paramref name="BaseVersion"/> and multiplied by <paramref name="LossScale"/>; the shard unscales.
/// <paramref name="NonFinite"/> is the worker's verdict on its whole gradient (not just this slice),
/// so every shard skips the same pushes. <paramref name="Samples"/> is the mini-batch size behind it.
/// The payload array is never written after sending.
/// </summary>
public sealed record PushGradient(int Worker, long Clock, long BaseVersion, float LossScale, bool NonFinite, int Samples, ReadOnlyMemory<float> Gradient)
    : ITrainingMessage
{
    public const int HeaderBytes = 36;
    public int WireBytes => HeaderBytes + sizeof(float) * Gradient.Length;
}

/// <summary>Shard -> worker: the shard's FP32 master weights after <paramref name="Version"/> optimizer steps.</summary>
public sealed record ParameterSlice(int Shard, long Version, ReadOnlyMemory<float> Values) : ITrainingMessage
{
    public const int HeaderBytes = 16;
    public int WireBytes => HeaderBytes + sizeof(float) * Values.Length;
}

/// <summary>Shard -> coordinator: a copy of the shard's weights at a version, for evaluation.</summary>
public sealed record ShardSnapshot(int Shard, long Version, ReadOnlyMemory<float> Values, ShardCounters Counters, bool Final) : ITrainingMessage;

/// <summary>
/// What a shard has done up to the version of the snapshot that carries these counters: optimizer
/// steps, pushes applied and skipped, samples behind the pushes, the bytes it received and sent, and
/// the mean loss scale of the pushes of its last step.
/// Counting at the shard, by version, makes every column of an evaluation a function of the step,
/// not of when the coordinator happened to look.
/// </summary>
public sealed record ShardCounters(long Steps, long PushesApplied, long PushesSkippedNonFinite, long Samples, long BytesIn, long BytesOut, double LossScale);

/// <summary>Worker -> coordinator, after each step.</summary>
public sealed record WorkerStepReport(
    int Worker,
    long Clock,
    float Loss,
    int Samples,
    long Flops,
    double ComputeSeconds,
    double WaitSeconds,
    long UnderflowedElements,
    bool NonFinite,
    float LossScale,
    int Epoch) : ITrainingMessage;

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
