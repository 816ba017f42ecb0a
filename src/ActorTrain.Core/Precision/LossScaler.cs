namespace ActorTrain.Core.Precision;

public enum PrecisionMode
{
    Fp32,
    /// <summary>FP16 storage of weights, activations and gradients; FP32 accumulation.</summary>
    Fp16,
}

/// <summary>
/// Decides the loss scale for each step and whether a step's gradient may be applied. A step whose
/// gradient holds inf or NaN is always skipped and counted.
/// </summary>
public abstract class LossScaler
{
    public abstract float Scale { get; }
    public long SkippedSteps { get; protected set; }
    public long Steps { get; protected set; }

    /// <summary>Records the outcome of a step; true when its gradient should be applied.</summary>
    public abstract bool Update(bool foundNonFinite);

    public static LossScaler Static(float scale) => new StaticLossScaler(scale);
    public static DynamicLossScaler Dynamic() => new();
}

public sealed class StaticLossScaler : LossScaler
{
    public StaticLossScaler(float scale)
    {
        if (!(scale > 0) || !float.IsFinite(scale)) throw new ActorTrainException($"precision.loss-scale must be a positive number, got {scale}");
        Scale = scale;
    }

    public override float Scale { get; }

    public override bool Update(bool foundNonFinite)
    {
        Steps++;
        if (foundNonFinite) SkippedSteps++;
        return !foundNonFinite;
    }
}

/// <summary>
/// PyTorch GradScaler semantics: start at <see cref="InitialScale"/>; on inf/NaN multiply the scale
/// by <see cref="BackoffFactor"/>, skip the step and restart the count of clean steps; after
/// <see cref="GrowthInterval"/> consecutive clean steps multiply it by <see cref="GrowthFactor"/>.
/// </summary>
public sealed class DynamicLossScaler : LossScaler
{
    public DynamicLossScaler(float initialScale = 65536f, float growthFactor = 2f, float backoffFactor = 0.5f, int growthInterval = 2000)
    {
        if (!(initialScale > 0) || !float.IsFinite(initialScale)) throw new ActorTrainException($"precision.initial-scale must be positive, got {initialScale}");
        if (!(growthFactor > 1)) throw new ActorTrainException($"precision.growth-factor must be > 1, got {growthFactor}");
        if (!(backoffFactor is > 0 and < 1)) throw new ActorTrainException($"precision.backoff-factor must be in (0, 1), got {backoffFactor}");
        if (growthInterval <= 0) throw new ActorTrainException($"precision.growth-interval must be positive, got {growthInterval}");
        InitialScale = initialScale;
        GrowthFactor = growthFactor;
        BackoffFactor = backoffFactor;
        GrowthInterval = growthInterval;
        CurrentScale = initialScale;
    }

    public float InitialScale { get; }
    public float GrowthFactor { get; }
    public float BackoffFactor { get; }
    public int GrowthInterval { get; }
    public float CurrentScale { get; private set; }

    /// <summary>Clean steps since the last change of scale.</summary>
    public int GrowthTracker { get; private set; }

    public override float Scale => CurrentScale;

    public override bool Update(bool foundNonFinite)
    {
        Steps++;
        if (foundNonFinite)
        {
            CurrentScale *= BackoffFactor;
            GrowthTracker = 0;
            SkippedSteps++;
            return false;
        }
        if (++GrowthTracker == GrowthInterval)
        {
            float grown = CurrentScale * GrowthFactor;
            // GradScaler keeps the old scale rather than grow into infinity.
            if (float.IsFinite(grown)) CurrentScale = grown;
            GrowthTracker = 0;
        }
        return true;
    }
}
