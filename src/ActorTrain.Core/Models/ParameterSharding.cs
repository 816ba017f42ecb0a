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
    /// as small as it can be: the layers in order, split where the greatest range is least
    /// (exact, by dynamic programming over the layer boundaries).
    /// </summary>
    public static ParameterRange[] ByLayer(ModelSpec model, int shards)
    {
        var lengths = Enumerable.Range(0, model.LayerCount).Select(l => model.Weight(l).Length + model.Bias(l).Length).ToArray();
        if (shards <= 0) throw new ActorTrainException($"topology.shards must be positive, got {shards}");
        if (shards > lengths.Length)
            throw new ActorTrainException($"topology.shards = {shards} is more than the model's {lengths.Length} layer(s): with optimizer.type = kfac a shard owns whole layers (use at most {lengths.Length} shards)");
        int n = lengths.Length;
        var prefix = new long[n + 1];
        for (int i = 0; i < n; i++) prefix[i + 1] = prefix[i] + lengths[i];
        // best[k, i]: the least largest range splitting the first i layers into k ranges; cut[k, i] where the last range starts
        var best = new long[shards + 1, n + 1];
        var cut = new int[shards + 1, n + 1];
        for (int k = 0; k <= shards; k++)
            for (int i = 0; i <= n; i++) best[k, i] = long.MaxValue;
        best[0, 0] = 0;
        for (int k = 1; k <= shards; k++)
            for (int i = k; i <= n; i++)
                for (int j = k - 1; j < i; j++)
                {
                    if (best[k - 1, j] == long.MaxValue) continue;
                    long largest = Math.Max(best[k - 1, j], prefix[i] - prefix[j]);
                    if (largest < best[k, i]) (best[k, i], cut[k, i]) = (largest, j);
                }
        var ranges = new ParameterRange[shards];
        for (int k = shards, end = n; k >= 1; k--)
        {
            int start = cut[k, end];
            ranges[k - 1] = new ParameterRange((int)prefix[start] + model.Weight(0).Offset, (int)(prefix[end] - prefix[start]));
            end = start;
        }
        return ranges;
    }

    /// <summary>The shards' ranges for a run: whole layers under K-FAC, balanced values otherwise.</summary>
    public static ParameterRange[] For(ModelSpec model, int shards, Optimization.OptimizerKind optimizer) =>
        optimizer == Optimization.OptimizerKind.Kfac ? ByLayer(model, shards) : Balanced(model.ParameterCount, shards);
}
