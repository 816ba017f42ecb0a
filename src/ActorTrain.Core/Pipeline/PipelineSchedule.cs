namespace ActorTrain.Core.Pipeline;

/// <summary>parallelism.schedule: GPipe (every forward, then every backward) or 1F1B (PipeDream-Flush).</summary>
public enum PipelineScheduleKind
{
    GPipe,
    OneFOneB,
}

/// <summary>One operation of a stage: the forward or backward pass of one micro-batch.</summary>
public readonly record struct PipelineOp(bool Forward, int MicroBatch)
{
    public override string ToString() => (Forward ? "F" : "B") + MicroBatch;
}

/// <summary>
/// The order in which a stage runs its micro-batches within one step (a synchronous flush: every
/// micro-batch's backward is done before the step's optimizer step). GPipe: all M forwards, then all
/// M backwards, in micro-batch order. 1F1B: min(P - s - 1, M) forwards to fill the pipeline, then
/// one forward and one backward in turn, then the remaining backwards; a stage then holds at most
/// P - s micro-batches' activations, against GPipe's M. Backwards run in micro-batch order in both,
/// so the gradient sums its samples in the same order: both schedules give the same bits.
/// </summary>
public static class PipelineSchedule
{
    public static PipelineOp[] Ops(PipelineScheduleKind kind, int stage, int stages, int microBatches)
    {
        if (stages < 1 || (uint)stage >= (uint)stages || microBatches < 1)
            throw new ArgumentException($"stage {stage} of {stages}, {microBatches} micro-batches");
        var ops = new List<PipelineOp>(2 * microBatches);
        if (kind == PipelineScheduleKind.GPipe)
        {
            for (int m = 0; m < microBatches; m++) ops.Add(new(true, m));
            for (int m = 0; m < microBatches; m++) ops.Add(new(false, m));
            return [.. ops];
        }
        int warmup = Math.Min(stages - stage - 1, microBatches), f = 0, b = 0;
        for (; f < warmup; f++) ops.Add(new(true, f));
        while (f < microBatches)
        {
            ops.Add(new(true, f++));
            ops.Add(new(false, b++));
        }
        while (b < microBatches) ops.Add(new(false, b++));
        return [.. ops];
    }

    /// <summary>The most micro-batches whose activations a stage holds at once (forward done, backward not yet).</summary>
    public static int PeakActivations(IEnumerable<PipelineOp> ops)
    {
        int held = 0, peak = 0;
        foreach (var op in ops)
        {
            held += op.Forward ? 1 : -1;
            peak = Math.Max(peak, held);
        }
        return peak;
    }

    /// <summary>The idle share of P uniform stages over one flushed step of M micro-batches: (P - 1) / (M + P - 1), both schedules.</summary>
    public static double BubbleFraction(int stages, int microBatches) => (stages - 1.0) / (microBatches + stages - 1);

    /// <summary>
    /// Micro-batch m of a step's <paramref name="samples"/>: contiguous, in order, as equal as can be
    /// (the first samples mod M micro-batches one sample larger). A full batch splits into M equal
    /// ones; an epoch's short last batch splits too, and with fewer samples than micro-batches the
    /// last ones are empty.
    /// </summary>
    public static (int Offset, int Count) MicroBatch(int samples, int microBatches, int m)
    {
        int size = samples / microBatches, larger = samples % microBatches;
        return (m * size + Math.Min(m, larger), size + (m < larger ? 1 : 0));
    }
}

/// <summary>
/// What one stage holds on its device: weights, gradient and optimizer state (FP32), and the
/// activations of the micro-batches in flight at its peak (each layer's input and pre-activation,
/// 4 bytes a value, 2 in FP16).
/// </summary>
public readonly record struct StageMemory(int Stage, string Layers, long Parameters, int PeakMicroBatches, long ParameterBytes, long ActivationBytesPerMicroBatch)
{
    public long ActivationBytes => PeakMicroBatches * ActivationBytesPerMicroBatch;

    public long Bytes => ParameterBytes + ActivationBytes;

    /// <summary>Every stage's memory for a schedule, before any run: the schedule says how many micro-batches each stage holds at its peak.</summary>
    public static StageMemory[] Of(Models.ModelSpec model, IReadOnlyList<int> firstLayers, PipelineScheduleKind schedule, int microBatches, int batchSize, int stateArrays,
        int activationBytes = 4)
    {
        int stages = firstLayers.Count, micro = batchSize / microBatches;
        return Enumerable.Range(0, stages).Select(s =>
        {
            int first = firstLayers[s], last = s + 1 < stages ? firstLayers[s + 1] : model.LayerCount;
            var stage = new StageModel(model, first, last);
            int peak = PipelineSchedule.PeakActivations(PipelineSchedule.Ops(schedule, s, stages, microBatches));
            return new StageMemory(s, last - first == 1 ? $"{first}" : $"{first}-{last - 1}", stage.Range.Length, peak,
                4L * stage.Range.Length * (2 + stateArrays), (long)activationBytes * micro * stage.HeldFloatsPerSample);
        }).ToArray();
    }
}
