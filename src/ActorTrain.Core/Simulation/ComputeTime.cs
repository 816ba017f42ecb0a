using ActorTrain.Core.Models;
using ActorTrain.Core.Precision;

namespace ActorTrain.Core.Simulation;

public enum ComputeTimeKind
{
    /// <summary>The time the gradient really took on this machine (not reproducible).</summary>
    Measured,
    /// <summary>The same time for every step.</summary>
    Fixed,
    /// <summary>The time the worker's device profile gives for the step.</summary>
    Profile,
}

/// <summary>How long a worker's gradient takes, before its straggler factor.</summary>
public sealed record ComputeTime(ComputeTimeKind Kind, double FixedSeconds = 0, DeviceProfile? Device = null)
{
    public static readonly ComputeTime Measured = new(ComputeTimeKind.Measured);

    public double Seconds(double measured, ModelSpec model, int batch, PrecisionMode precision) => Kind switch
    {
        ComputeTimeKind.Fixed => FixedSeconds,
        ComputeTimeKind.Profile => Device!.StepSeconds(model, batch, precision),
        _ => measured,
    };

    public override string ToString() => Kind switch
    {
        ComputeTimeKind.Fixed => Quantity.FormatSeconds(FixedSeconds),
        ComputeTimeKind.Profile => $"profile {Device!.Name}",
        _ => "measured",
    };
}
