using ActorTrain.Core.Models;

namespace ActorTrain.Core.Collectives;

/// <summary>
/// One step of a rank's collective: send <see cref="Send"/> of its buffer to rank
/// <see cref="SendTo"/>, then wait for <see cref="Receive"/> from rank <see cref="ReceiveFrom"/> and
/// add it into the buffer (<see cref="Reduce"/>) or copy it over (all-gather). A step's send only
/// starts once the previous step's receive is in: every schedule here is a chain of data
/// dependencies, so a rank runs its steps strictly in order. <see cref="Phase"/> names the step's
/// part of the algorithm for telemetry (reduce-scatter, all-gather, and for the hierarchical
/// algorithm intra-host / inter-host variants).
/// </summary>
public readonly record struct CollectiveStep(string Phase, int SendTo, ParameterRange Send, int ReceiveFrom, ParameterRange Receive, bool Reduce);

/// <summary>
/// Where the ranks live: rank r sits on host r / <see cref="RanksPerHost"/> (placement.workers-per-host),
/// as the fabric places workers.
/// </summary>
public readonly record struct CollectiveLayout(int Ranks, int RanksPerHost)
{
    public int Hosts => (Ranks + RanksPerHost - 1) / RanksPerHost;
}

/// <summary>
/// An all-reduce algorithm as a per-rank schedule of point-to-point steps over a buffer of
/// <c>length</c> elements: after every rank has run its schedule on its own buffer, every buffer
/// holds the element-wise sum, bit-identical on every rank (each element is summed once, on one
/// rank, in an order fixed by the schedule, then copied). A new algorithm is one new class.
/// </summary>
public interface IAllReduceAlgorithm
{
    /// <summary>The name in topology.aggregation.</summary>
    string Name { get; }

    /// <summary>Null when the algorithm runs on this layout, else why not (for the error message).</summary>
    string? Unsupported(CollectiveLayout layout);

    IReadOnlyList<CollectiveStep> Schedule(int rank, int length, CollectiveLayout layout);
}

public static class AllReduceAlgorithms
{
    public static readonly IReadOnlyDictionary<string, IAllReduceAlgorithm> ByName = new IAllReduceAlgorithm[]
    {
        new RingAllReduce(), new HierarchicalAllReduce(), new HalvingDoublingAllReduce(),
    }.ToDictionary(a => a.Name);

    /// <summary>
    /// A ring over the positions 0..n-1 (rank of position p: <paramref name="rankAt"/>(p)) on the
    /// segment <paramref name="whole"/>, cut in n balanced chunks. Reduce-scatter: at step k position
    /// p sends chunk p - k to p + 1 and adds chunk p - k - 1 from p - 1; after n - 1 steps p holds
    /// chunk p + 1 complete (summed in the order p + 2, ..., p + 1 around the ring). All-gather:
    /// at step k p sends chunk p + 1 - k on and copies chunk p - k.
    /// </summary>
    public static void Ring(List<CollectiveStep> steps, int position, int n, Func<int, int> rankAt, ParameterRange whole,
        bool reduceScatter, bool allGather, string reducePhase = "reduce-scatter", string gatherPhase = "all-gather")
    {
        if (n <= 1) return;
        var chunks = Chunks(whole, n);
        int next = rankAt((position + 1) % n), previous = rankAt((position + n - 1) % n);
        if (reduceScatter)
            for (int k = 0; k < n - 1; k++)
                steps.Add(new CollectiveStep(reducePhase, next, chunks[Mod(position - k, n)], previous, chunks[Mod(position - k - 1, n)], true));
        if (allGather)
            for (int k = 0; k < n - 1; k++)
                steps.Add(new CollectiveStep(gatherPhase, next, chunks[Mod(position + 1 - k, n)], previous, chunks[Mod(position - k, n)], false));
    }

    /// <summary>The chunk a ring position holds complete after a reduce-scatter over n positions.</summary>
    public static ParameterRange OwnedAfterReduceScatter(ParameterRange whole, int position, int n) => Chunks(whole, n)[(position + 1) % n];

    /// <summary><paramref name="whole"/> in n contiguous chunks whose lengths differ by at most one (possibly empty).</summary>
    public static ParameterRange[] Chunks(ParameterRange whole, int n)
    {
        var chunks = new ParameterRange[n];
        int start = whole.Start;
        for (int k = 0; k < n; k++)
        {
            int length = whole.Length / n + (k < whole.Length % n ? 1 : 0);
            chunks[k] = new ParameterRange(start, length);
            start += length;
        }
        return chunks;
    }

    public static int Mod(int a, int n) => ((a % n) + n) % n;
}
