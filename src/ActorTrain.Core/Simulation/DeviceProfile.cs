using ActorTrain.Core.Models;
using ActorTrain.Core.Precision;

namespace ActorTrain.Core.Simulation;

/// <summary>
/// What a device takes for the work of a step, for the virtual clock: a roofline (the slower of
/// arithmetic at <see cref="Efficiency"/> x peak and memory traffic at peak bandwidth) plus a fixed
/// cost per kernel launch. Peaks are the vendors' dense datasheet figures; FP16 uses the tensor
/// cores where the device has them.
/// </summary>
public sealed record DeviceProfile(
    string Name,
    double Fp32Flops,
    double Fp16Flops,
    double MemoryBytesPerSecond,
    double LaunchSeconds,
    double Efficiency)
{
    public static readonly IReadOnlyDictionary<string, DeviceProfile> Presets = new Dictionary<string, DeviceProfile>
    {
        // A two-socket-class server CPU running AVX-512 GEMMs; no FP16 arithmetic advantage.
        ["cpu"] = new("cpu", 1.0e12, 1.0e12, 100e9, 0, 0.5),
        ["v100"] = new("v100", 15.7e12, 125e12, 900e9, 5e-6, 0.5),
        ["a100"] = new("a100", 19.5e12, 312e12, 1555e9, 4e-6, 0.5),
        ["h100"] = new("h100", 67e12, 989e12, 3350e9, 3e-6, 0.5),
    };

    /// <summary>Forward and backward of one mini-batch: GEMM FLOPs, tensors read and written, 3 kernels per layer + the loss.</summary>
    public double StepSeconds(ModelSpec model, int batch, PrecisionMode precision)
    {
        double flops = (double)model.FlopsPerSample * batch;
        int element = precision == PrecisionMode.Fp16 ? 2 : 4;
        long activations = 0;
        foreach (int width in model.LayerSizes) activations += width;
        // weights read twice (forward, backward) and the gradient written; every activation written
        // once and read twice (its layer's backward and the next layer).
        double bytes = element * (3.0 * model.ParameterCount + 3.0 * batch * activations);
        double peak = precision == PrecisionMode.Fp16 ? Fp16Flops : Fp32Flops;
        return Math.Max(flops / (peak * Efficiency), bytes / MemoryBytesPerSecond) + (3 * model.LayerCount + 1) * LaunchSeconds;
    }

    /// <summary>
    /// One optimizer step over <paramref name="parameters"/> FP32 weights with
    /// <paramref name="stateArrays"/> arrays of optimizer state: memory-bound, every array read and
    /// written once, plus the gradient read.
    /// </summary>
    public double ApplySeconds(long parameters, int stateArrays) =>
        4.0 * parameters * (1 + 2 * (1 + stateArrays)) / MemoryBytesPerSecond + LaunchSeconds;

    /// <summary>Adding one decoded FP32 push into the running sum: two arrays read, one written.</summary>
    public double AccumulateSeconds(long parameters) => 12.0 * parameters / MemoryBytesPerSecond + LaunchSeconds;

    public static DeviceProfile Resolve(string name, IReadOnlyDictionary<string, DeviceProfile> custom, string key)
    {
        if (custom.TryGetValue(name, out var own)) return own;
        if (Presets.TryGetValue(name, out var preset)) return preset;
        throw new ActorTrainException($"{key} = \"{name}\" is not a device profile: use one of {string.Join(", ", Presets.Keys.Concat(custom.Keys))} (or define it under simulation.devices)");
    }
}
