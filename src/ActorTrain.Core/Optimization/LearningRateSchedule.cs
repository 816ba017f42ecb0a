namespace ActorTrain.Core.Optimization;

public enum ScheduleKind
{
    Constant,
    /// <summary>eta_t = eta_0 / (1 + lambda t).</summary>
    InverseTime,
    /// <summary>eta_t = eta_0 gamma^floor(t / step_size).</summary>
    Step,
    /// <summary>eta_t = eta_min + (eta_0 - eta_min) (1 + cos(pi t / T)) / 2.</summary>
    Cosine,
}

/// <summary>Learning rate as a function of the update count t (0 for the first update).</summary>
public abstract class LearningRateSchedule
{
    public abstract double Rate(long step);

    /// <summary>
    /// Builds a schedule; a positive <paramref name="warmupFraction"/> prepends a linear warm-up over
    /// W = round(fraction * totalSteps) updates, eta_t = eta(0) (t + 1) / W, after which the inner
    /// schedule runs from its own step 0 over the remaining totalSteps - W updates.
    /// </summary>
    public static LearningRateSchedule Create(ScheduleKind kind, double baseRate, long totalSteps,
        double warmupFraction = 0, double decay = 0, long stepSize = 1, double gamma = 0.1, double minRate = 0)
    {
        if (!(baseRate > 0)) throw new ActorTrainException($"optimizer.learning-rate must be positive, got {baseRate}");
        if (warmupFraction is < 0 or >= 1) throw new ActorTrainException($"optimizer.warmup-fraction must be in [0, 1), got {warmupFraction}");
        long warmup = (long)Math.Round(warmupFraction * totalSteps);
        long remaining = Math.Max(1, totalSteps - warmup);
        LearningRateSchedule inner = kind switch
        {
            ScheduleKind.Constant => new ConstantSchedule(baseRate),
            ScheduleKind.InverseTime => decay >= 0
                ? new InverseTimeSchedule(baseRate, decay)
                : throw new ActorTrainException($"optimizer.decay must be >= 0, got {decay}"),
            ScheduleKind.Step => stepSize > 0 && gamma is > 0 and <= 1
                ? new StepSchedule(baseRate, stepSize, gamma)
                : throw new ActorTrainException($"optimizer.step-size must be > 0 and optimizer.gamma in (0, 1], got {stepSize} and {gamma}"),
            ScheduleKind.Cosine => minRate >= 0 && minRate <= baseRate
                ? new CosineSchedule(baseRate, remaining, minRate)
                : throw new ActorTrainException($"optimizer.min-learning-rate must be in [0, learning-rate], got {minRate}"),
            _ => throw new ArgumentOutOfRangeException(nameof(kind)),
        };
        return warmup > 0 ? new WarmupSchedule(inner, warmup) : inner;
    }
}

public sealed class ConstantSchedule(double rate) : LearningRateSchedule
{
    public override double Rate(long step) => rate;
}

public sealed class InverseTimeSchedule(double baseRate, double decay) : LearningRateSchedule
{
    public override double Rate(long step) => baseRate / (1 + decay * step);
}

public sealed class StepSchedule(double baseRate, long stepSize, double gamma) : LearningRateSchedule
{
    public override double Rate(long step) => baseRate * Math.Pow(gamma, step / stepSize);
}

public sealed class CosineSchedule(double baseRate, long totalSteps, double minRate) : LearningRateSchedule
{
    public override double Rate(long step) =>
        minRate + (baseRate - minRate) * (1 + Math.Cos(Math.PI * Math.Min(step, totalSteps) / totalSteps)) / 2;
}

public sealed class WarmupSchedule(LearningRateSchedule inner, long warmupSteps) : LearningRateSchedule
{
    public override double Rate(long step) =>
        step < warmupSteps ? inner.Rate(0) * (step + 1) / warmupSteps : inner.Rate(step - warmupSteps);
}
