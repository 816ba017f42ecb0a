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
}
