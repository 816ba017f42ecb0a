using ActorTrain.Core.Models;

namespace ActorTrain.Core.Collectives;

/// <summary>
/// Hierarchical all-reduce (Horovod's hierarchical mode, NCCL's tree-of-rings idea; Jia et al.
/// 2018): with g ranks on each of H hosts, (1) a ring reduce-scatter inside each host over the
/// intra-host bus, after which local rank i holds chunk i + 1 of its host's sum; (2) g ring
/// all-reduces across the hosts at once, one per local rank, each over its own chunk; (3) a ring
/// all-gather inside each host. On a switch with equal NICs (bandwidth B, latency a) and a bus of
/// bandwidth Bb and latency ab shared by the host's g flows:
/// 2(g - 1)(ab + S/Bb) + 2(H - 1)(a + S/(H B)), since each phase-2 step sends g chunks of S/(g H)
/// through one NIC (derivation in docs/architecture.md). Every host must hold the same number of ranks.
/// </summary>
public sealed class HierarchicalAllReduce : IAllReduceAlgorithm
{
    public string Name => "hierarchical-allreduce";

    public string? Unsupported(CollectiveLayout layout) => layout.Ranks % layout.RanksPerHost == 0 ? null
        : $"every host must hold the same number of workers, and topology.workers = {layout.Ranks} is not a multiple of placement.workers-per-host = {layout.RanksPerHost}";

    public IReadOnlyList<CollectiveStep> Schedule(int rank, int length, CollectiveLayout layout)
    {
        int g = Math.Min(layout.RanksPerHost, layout.Ranks), hosts = layout.Ranks / g;
        int host = rank / g, local = rank % g;
        var steps = new List<CollectiveStep>();
        var whole = new ParameterRange(0, length);
        AllReduceAlgorithms.Ring(steps, local, g, p => host * g + p, whole, true, false, reducePhase: "reduce-scatter.intra-host");
        var owned = g > 1 ? AllReduceAlgorithms.OwnedAfterReduceScatter(whole, local, g) : whole;
        AllReduceAlgorithms.Ring(steps, host, hosts, h => h * g + local, owned, true, true, "reduce-scatter.inter-host", "all-gather.inter-host");
        AllReduceAlgorithms.Ring(steps, local, g, p => host * g + p, whole, false, true, gatherPhase: "all-gather.intra-host");
        return steps;
    }
}
