using ActorTrain.Core.Models;

namespace ActorTrain.Core.Collectives;

/// <summary>
/// Ring all-reduce (Patarasuk and Yuan 2009; Baidu's and Horovod's): reduce-scatter then
/// all-gather around the ring 0 -> 1 -> ... -> N-1 -> 0, the buffer in N chunks, 2(N - 1) steps
/// of one chunk each. With equal full-duplex links of latency a and bandwidth B every step takes
/// a + S/(N B): 2(N - 1)(a + S/(N B)) in all, bandwidth-optimal but N-linear in latency.
/// </summary>
public sealed class RingAllReduce : IAllReduceAlgorithm
{
    public string Name => "ring-allreduce";

    public string? Unsupported(CollectiveLayout layout) => null;

    public IReadOnlyList<CollectiveStep> Schedule(int rank, int length, CollectiveLayout layout)
    {
        var steps = new List<CollectiveStep>(2 * layout.Ranks);
        AllReduceAlgorithms.Ring(steps, rank, layout.Ranks, p => p, new ParameterRange(0, length), true, true);
        return steps;
    }
}
