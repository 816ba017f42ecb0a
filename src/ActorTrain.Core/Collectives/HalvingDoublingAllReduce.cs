using ActorTrain.Core.Models;

namespace ActorTrain.Core.Collectives;

/// <summary>
/// Rabenseifner's all-reduce (Thakur, Rabenseifner and Gropp 2005): reduce-scatter by recursive
/// vector halving (step k: exchange half of the current segment with the rank at distance N/2^(k+1),
/// keep and add the other half), then all-gather by recursive doubling in reverse. 2 log2(N)
/// steps, each rank sending (N - 1)/N of the buffer per phase: 2 log2(N) a + 2 (N - 1)/N S/B,
/// latency-optimal for small buffers. N must be a power of two.
/// </summary>
public sealed class HalvingDoublingAllReduce : IAllReduceAlgorithm
{
    public string Name => "halving-doubling";

    public string? Unsupported(CollectiveLayout layout) =>
        (layout.Ranks & (layout.Ranks - 1)) == 0 ? null : $"it needs a power-of-two number of workers, and topology.workers = {layout.Ranks}; use ring-allreduce";

    public IReadOnlyList<CollectiveStep> Schedule(int rank, int length, CollectiveLayout layout)
    {
        int n = layout.Ranks;
        var steps = new List<CollectiveStep>();
        var held = new Stack<(ParameterRange Whole, ParameterRange Given, int Partner)>();
        var segment = new ParameterRange(0, length);
        for (int distance = n / 2; distance >= 1; distance /= 2)
        {
            int partner = rank ^ distance;
            var lower = new ParameterRange(segment.Start, segment.Length / 2);
            var upper = new ParameterRange(segment.Start + lower.Length, segment.Length - lower.Length);
            bool keepLower = (rank & distance) == 0;
            var (keep, give) = keepLower ? (lower, upper) : (upper, lower);
            steps.Add(new CollectiveStep("reduce-scatter", partner, give, partner, keep, true));
            held.Push((segment, give, partner));
            segment = keep;
        }
        while (held.Count > 0)
        {
            // the partner kept (and completed) the half this rank gave it at that halving
            var (whole, given, partner) = held.Pop();
            steps.Add(new CollectiveStep("all-gather", partner, segment, partner, given, false));
            segment = whole;
        }
        return steps;
    }
}
