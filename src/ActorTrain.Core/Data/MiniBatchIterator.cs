namespace ActorTrain.Core.Data;

/// <summary>Reusable storage for one mini-batch, sized once for the largest batch.</summary>
public sealed class BatchBuffer
{
    public BatchBuffer(int capacity, int featureCount, int targetDim)
    {
        Capacity = capacity;
        Features = new float[capacity * featureCount];
        Labels = new int[capacity];
        Targets = new float[capacity * Math.Max(targetDim, 0)];
        FeatureCount = featureCount;
        TargetDim = targetDim;
    }

    public int Capacity { get; }
    public int FeatureCount { get; }
    public int TargetDim { get; }
    public float[] Features { get; }
    public int[] Labels { get; }
    public float[] Targets { get; }
    public int Count { get; internal set; }
    public bool IsClassification { get; internal set; }

    public Batch AsBatch() => IsClassification
        ? new Batch(Features.AsSpan(0, Count * FeatureCount), Count, Labels.AsSpan(0, Count), default)
        : new Batch(Features.AsSpan(0, Count * FeatureCount), Count, default, Targets.AsSpan(0, Count * TargetDim));
}

/// <summary>
/// Walks a dataset in mini-batches with a seeded shuffle per epoch. A batch size of 0 or at least
/// the dataset size gives full-batch gradient descent (no shuffle is needed, the order is kept);
/// 1 gives plain SGD. The last batch of an epoch holds the remainder (as PyTorch's DataLoader with
/// drop_last=False). The permutation of epoch e depends only on (seed, e), so a run can be
/// resumed from (epoch, position).
/// </summary>
public sealed class MiniBatchIterator
{
    private readonly Dataset _data;
    private readonly ulong _seed;
    private readonly int[] _order;

    public MiniBatchIterator(Dataset data, int batchSize, ulong seed)
    {
        if (batchSize < 0) throw new ActorTrainException($"batch size must be >= 0 (0 = full batch), got {batchSize}");
        _data = data;
        _seed = seed;
        BatchSize = batchSize == 0 || batchSize >= data.Count ? data.Count : batchSize;
        _order = new int[data.Count];
        StartEpoch(0);
    }

    public int BatchSize { get; }
    public bool IsFullBatch => BatchSize == _data.Count;
    public int Epoch { get; private set; }

    /// <summary>Index of the next row within the current epoch's order.</summary>
    public int Position { get; private set; }

    public int BatchesPerEpoch => (_data.Count + BatchSize - 1) / BatchSize;

    public BatchBuffer CreateBuffer() => new(BatchSize, _data.FeatureCount, _data.TargetDim);

    /// <summary>Fills <paramref name="buffer"/> with the next batch; moves to a new epoch after the last one.</summary>
    public void Next(BatchBuffer buffer)
    {
        if (Position >= _data.Count) StartEpoch(Epoch + 1);
        int count = Math.Min(BatchSize, _data.Count - Position);
        if (count > buffer.Capacity) throw new ArgumentException("buffer is smaller than the batch size", nameof(buffer));
        int f = _data.FeatureCount;
        for (int i = 0; i < count; i++)
        {
            int row = _order[Position + i];
            _data.Features.AsSpan(row * f, f).CopyTo(buffer.Features.AsSpan(i * f));
            if (_data.Labels is { } labels) buffer.Labels[i] = labels[row];
            else _data.Targets.AsSpan(row * _data.TargetDim, _data.TargetDim).CopyTo(buffer.Targets.AsSpan(i * _data.TargetDim));
        }
        buffer.Count = count;
        buffer.IsClassification = _data.IsClassification;
        Position += count;
    }

    /// <summary>Jumps to a saved position (used to resume).</summary>
    public void Seek(int epoch, int position)
    {
        if (position < 0 || position > _data.Count) throw new ArgumentOutOfRangeException(nameof(position));
        StartEpoch(epoch);
        Position = position;
    }

    private void StartEpoch(int epoch)
    {
        Epoch = epoch;
        Position = 0;
        for (int i = 0; i < _order.Length; i++) _order[i] = i;
        if (!IsFullBatch) new Rng(Rng.Derive(_seed, (ulong)epoch)).Shuffle(_order.AsSpan());
    }
}
