using ActorTrain.Core;

namespace ActorTrain.Cluster.Actors;

public enum SyncPolicyKind
{
    /// <summary>Bulk synchronous: one averaged step per clock, after the first N - b pushes.</summary>
    Bsp,
    /// <summary>Asynchronous: every push applied on arrival, pulls answered at once.</summary>
    Asp,
    /// <summary>Stale synchronous: pushes applied on arrival; no worker more than s clocks ahead of the slowest.</summary>
    Ssp,
}

/// <summary>
/// How shards synchronise workers (sync.* in the experiment file).
///
/// Under ASP and SSP each push is its own optimizer step on gradient / N, so that a clock of N
/// pushes moves the weights as far as one BSP step: with plain SGD, SSP(0) then equals BSP up to
/// the order of float additions, and one ASP worker equals one BSP worker exactly. One global
/// step is one BSP step, or N applied pushes under ASP/SSP; the learning-rate schedule, the
/// evaluation points and max-steps count global steps.
/// </summary>
public sealed record SyncPolicy(SyncPolicyKind Kind, int Staleness = 0, int BackupWorkers = 0, bool StalenessAwareLearningRate = false)
{
    public static readonly SyncPolicy Bsp = new(SyncPolicyKind.Bsp);

    /// <summary>Shard versions per global step: 1 under BSP, N under ASP and SSP.</summary>
    public int VersionsPerStep(int workers) => Kind == SyncPolicyKind.Bsp ? 1 : workers;

    public void Validate(int workers)
    {
        if (Staleness < 0) throw new ActorTrainException($"sync.staleness must be >= 0, got {Staleness}");
        if (BackupWorkers < 0 || BackupWorkers >= workers)
            throw new ActorTrainException($"sync.backup-workers = {BackupWorkers} must be in [0, topology.workers - 1] = [0, {workers - 1}]");
        if (BackupWorkers > 0 && Kind != SyncPolicyKind.Bsp)
            throw new ActorTrainException($"sync.backup-workers applies to bsp only (sync.policy = {Kind.ToString().ToLowerInvariant()})");
    }

    public string Describe() => Kind switch
    {
        SyncPolicyKind.Bsp => BackupWorkers > 0 ? $"bsp (backup workers {BackupWorkers})" : "bsp",
        SyncPolicyKind.Ssp => $"ssp (staleness {Staleness}){(StalenessAwareLearningRate ? ", staleness-aware lr" : "")}",
        _ => StalenessAwareLearningRate ? "asp, staleness-aware lr" : "asp",
    };
}
