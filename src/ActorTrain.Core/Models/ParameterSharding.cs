namespace ActorTrain.Core.Models;

/// <summary>A contiguous range [Start, Start + Length) of the flat parameter vector.</summary>
public readonly record struct ParameterRange(int Start, int Length)
{
    public int End => Start + Length;
}

public static class ParameterSharding
{
    /// <summary>
    /// K contiguous ranges covering [0, parameterCount) whose lengths differ by at most one (the
    /// first parameterCount % K get the extra element). Ranges ignore layer boundaries: a shard
    /// owns values, not layers.
    /// </summary>
    public static ParameterRange[] Balanced(int parameterCount, int shards)
    {
        if (shards <= 0) throw new ActorTrainException($"topology.shards must be positive, got {shards}");
        if (shards > parameterCount)
            throw new ActorTrainException($"topology.shards = {shards} is more than the model's {parameterCount} parameters; every shard needs at least one");
        var ranges = new ParameterRange[shards];
        int start = 0;
        for (int k = 0; k < shards; k++)
        {
            int length = parameterCount / shards + (k < parameterCount % shards ? 1 : 0);
            ranges[k] = new ParameterRange(start, length);
            start += length;
        }
        return ranges;
    }

    /// <summary>
    /// K contiguous ranges of whole layers (a K-FAC shard preconditions whole layers), the largest
    /// as small as it can be (<see cref="Partition"/> over the layers' parameter counts).
    /// </summary>
    public static ParameterRange[] ByLayer(ModelSpec model, int shards)
    {
        var lengths = Enumerable.Range(0, model.LayerCount).Select(l => (long)model.Weight(l).Length + model.Bias(l).Length).ToArray();
        if (shards <= 0) throw new ActorTrainException($"topology.shards must be positive, got {shards}");
        if (shards > lengths.Length)
            throw new ActorTrainException($"topology.shards = {shards} is more than the model's {lengths.Length} layer(s): with optimizer.type = kfac a shard owns whole layers (use at most {lengths.Length} shards)");
        var firsts = Partition(lengths, shards, "topology.shards");
        return firsts.Select((first, k) =>
        {
            int last = k + 1 < firsts.Count ? firsts[k + 1] : lengths.Length;
            int start = model.Weight(first).Offset;
            return new ParameterRange(start, model.Bias(last - 1).Offset + model.Bias(last - 1).Length - start);
        }).ToArray();
    }

    /// <summary>
    /// The first item of each of <paramref name="parts"/> contiguous groups of <paramref name="weights"/>
    /// (in order) whose heaviest group is as light as it can be: exact, by dynamic programming over the boundaries.
    /// </summary>
    public static IReadOnlyList<int> Partition(IReadOnlyList<long> weights, int parts, string key)
    {
        int n = weights.Count;
        if (parts < 1 || parts > n) throw new ActorTrainException($"{key} = {parts}: there are {n} layer(s) to split; use 1 to {n}");
        var prefix = new long[n + 1];
        for (int i = 0; i < n; i++) prefix[i + 1] = prefix[i] + weights[i];
        // best[k, i]: the least heaviest group splitting the first i items into k groups; cut[k, i] where the last group starts
        var best = new long[parts + 1, n + 1];
        var cut = new int[parts + 1, n + 1];
        for (int k = 0; k <= parts; k++)
            for (int i = 0; i <= n; i++) best[k, i] = long.MaxValue;
        best[0, 0] = 0;
        for (int k = 1; k <= parts; k++)
            for (int i = k; i <= n; i++)
                for (int j = k - 1; j < i; j++)
                {
                    if (best[k - 1, j] == long.MaxValue) continue;
                    long heaviest = Math.Max(best[k - 1, j], prefix[i] - prefix[j]);
                    if (heaviest < best[k, i]) (best[k, i], cut[k, i]) = (heaviest, j);
                }
        var firsts = new int[parts];
        for (int k = parts, end = n; k >= 1; k--)
        {
            firsts[k - 1] = cut[k, end];
            end = firsts[k - 1];
        }
        return firsts;
    }

    /// <summary>The shards' ranges for a run: whole layers under K-FAC, balanced values otherwise.</summary>
    public static ParameterRange[] For(ModelSpec model, int shards, Optimization.OptimizerKind optimizer) =>
        optimizer == Optimization.OptimizerKind.Kfac ? ByLayer(model, shards) : Balanced(model.ParameterCount, shards);
}
