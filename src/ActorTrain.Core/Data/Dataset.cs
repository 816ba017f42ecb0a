namespace ActorTrain.Core.Data;

/// <summary>A view of a mini-batch: features row-major (Count x inputs) and either labels or targets.</summary>
public readonly ref struct Batch(ReadOnlySpan<float> features, int count, ReadOnlySpan<int> labels, ReadOnlySpan<float> targets)
{
    public ReadOnlySpan<float> Features { get; } = features;
    public int Count { get; } = count;

    /// <summary>Class index per sample (classification); empty for regression.</summary>
    public ReadOnlySpan<int> Labels { get; } = labels;

    /// <summary>Count x outputs target values (regression); empty for classification.</summary>
    public ReadOnlySpan<float> Targets { get; } = targets;
}

/// <summary>
/// An in-memory dataset: features row-major (Count x Features), with class labels or real-valued
/// targets. Immutable once built; subsets copy the rows they select.
/// </summary>
public sealed class Dataset
{
    public Dataset(string name, float[] features, int featureCount, int[] labels, int classes)
        : this(name, features, featureCount, labels, classes, null, 0) { }

    public Dataset(string name, float[] features, int featureCount, float[] targets, int targetDim)
        : this(name, features, featureCount, null, 0, targets, targetDim) { }

    private Dataset(string name, float[] features, int featureCount, int[]? labels, int classes, float[]? targets, int targetDim)
    {
        if (featureCount <= 0) throw new ArgumentOutOfRangeException(nameof(featureCount));
        if (features.Length % featureCount != 0)
            throw new ArgumentException($"{features.Length} feature values do not divide into rows of {featureCount}");
        Name = name;
        Features = features;
        FeatureCount = featureCount;
        Count = features.Length / featureCount;
        Labels = labels;
        Classes = classes;
        Targets = targets;
        TargetDim = targetDim;
        if (labels is not null)
        {
            if (labels.Length != Count) throw new ArgumentException($"{labels.Length} labels for {Count} rows");
            foreach (int y in labels)
                if ((uint)y >= (uint)classes) throw new ArgumentException($"label {y} outside [0, {classes})");
        }
        if (targets is not null && targets.Length != Count * targetDim)
            throw new ArgumentException($"{targets.Length} targets for {Count} rows of {targetDim}");
    }

    public string Name { get; }
    public int Count { get; }
    public int FeatureCount { get; }
    public float[] Features { get; }
    public int[]? Labels { get; }
    public int Classes { get; }
    public float[]? Targets { get; }
    public int TargetDim { get; }
    public bool IsClassification => Labels is not null;

    /// <summary>Number of model outputs this dataset asks for: classes, or target dimension.</summary>
    public int OutputCount => IsClassification ? Classes : TargetDim;

    public Batch AsBatch() => new(Features, Count, Labels, Targets);

    public Dataset Select(ReadOnlySpan<int> indices, string name)
    {
        var x = new float[indices.Length * FeatureCount];
        for (int i = 0; i < indices.Length; i++)
            Features.AsSpan(indices[i] * FeatureCount, FeatureCount).CopyTo(x.AsSpan(i * FeatureCount));
        if (Labels is not null)
        {
            var y = new int[indices.Length];
            for (int i = 0; i < indices.Length; i++) y[i] = Labels[indices[i]];
            return new Dataset(name, x, FeatureCount, y, Classes);
        }
        var t = new float[indices.Length * TargetDim];
        for (int i = 0; i < indices.Length; i++)
            Targets!.AsSpan(indices[i] * TargetDim, TargetDim).CopyTo(t.AsSpan(i * TargetDim));
        return new Dataset(name, x, FeatureCount, t, TargetDim);
    }

    /// <summary>Seeded random split; the test part gets round(Count * testFraction) rows.</summary>
    public (Dataset Train, Dataset Test) Split(double testFraction, ulong seed)
    {
        if (!(testFraction > 0 && testFraction < 1))
            throw new ActorTrainException($"test fraction must be in (0, 1), got {testFraction}");
        int[] order = Permutation(Count, seed);
        int testCount = (int)Math.Round(Count * testFraction);
        if (testCount == 0 || testCount == Count)
            throw new ActorTrainException($"a test fraction of {testFraction} leaves an empty split of {Count} rows");
        return (Select(order.AsSpan(testCount), Name + "/train"), Select(order.AsSpan(0, testCount), Name + "/test"));
    }

    /// <summary>
    /// N disjoint shards that together hold every row once: a seeded permutation cut into contiguous
    /// blocks whose sizes differ by at most one (the first Count % N shards get the extra row).
    /// </summary>
    public Dataset[] Partition(int parts, ulong seed)
    {
        if (parts <= 0) throw new ActorTrainException($"cannot partition into {parts} shards");
        if (parts > Count) throw new ActorTrainException($"cannot partition {Count} rows into {parts} non-empty shards");
        int[] order = Permutation(Count, seed);
        var shards = new Dataset[parts];
        int start = 0;
        for (int p = 0; p < parts; p++)
        {
            int size = Count / parts + (p < Count % parts ? 1 : 0);
            shards[p] = Select(order.AsSpan(start, size), $"{Name}/part{p}");
            start += size;
        }
        return shards;
    }

    internal static int[] Permutation(int count, ulong seed)
    {
        var order = new int[count];
        for (int i = 0; i < count; i++) order[i] = i;
        new Rng(seed).Shuffle(order.AsSpan());
        return order;
    }
}
