using ActorTrain.Core.Models;
using ActorTrain.Core.Precision;

namespace ActorTrain.Core.Simulation;

/// <summary>
/// What a device takes for the work of a step, for the virtual clock: a roofline (the slower of
/// arithmetic at <see cref="Efficiency"/> x peak and memory traffic at peak bandwidth) plus a fixed
/// cost per kernel launch. Peaks are the vendors' dense datasheet figures; FP16 uses the tensor
/// cores where the device has them (P100 has none: its FP16 is twice its FP32). Element-wise
/// kernels (codecs) run at <see cref="ElementOps"/> operations per second beside their memory
/// traffic; a GPU's default is its FP32 rate at the efficiency (they stay memory-bound), the cpu
/// profile's is calibrated against the codecs measured in benchmarks/RESULTS.md.
///
/// Sources (dense, boost clock; SXM modules): P100 SXM2 10.6 / 21.2 TFLOP/s, 732 GB/s (NVIDIA
/// Tesla P100 datasheet, 2016); V100 SXM2 15.7 / 125 TFLOP/s, 900 GB/s (Tesla V100 datasheet);
/// A100 SXM4 40GB 19.5 / 312 TFLOP/s, 1,555 GB/s (A100 datasheet, dense tensor FP16); H100 SXM5
/// 67 / 989 TFLOP/s, 3,350 GB/s (H100 datasheet, dense tensor FP16). Memory: P100 16 GB, V100 SXM2
/// 32 GB, A100 40 GB, H100 SXM5 80 GB (the same datasheets).
/// </summary>
public sealed record DeviceProfile(
    string Name,
    double Fp32Flops,
    double Fp16Flops,
    double MemoryBytesPerSecond,
    double LaunchSeconds,
    double Efficiency)
{
    /// <summary>Element-wise operations per second (conversions, compares, random draws); null: FP32 peak x efficiency.</summary>
    public double? ElementOpsPerSecond { get; init; }

    public double ElementOps => ElementOpsPerSecond ?? Fp32Flops * Efficiency;

    /// <summary>The device's memory in bytes (datasheet); null: not limited (the cpu profile, custom devices without memory).</summary>
    public double? MemoryBytes { get; init; }

    public static readonly IReadOnlyDictionary<string, DeviceProfile> Presets = new Dictionary<string, DeviceProfile>
    {
        // A two-socket-class server CPU running AVX-512 GEMMs; no FP16 arithmetic advantage. Its
        // element-wise rate is one core's, as the codecs were measured (CodecCost, calibrated).
        ["cpu"] = new("cpu", 1.0e12, 1.0e12, 100e9, 0, 0.5) { ElementOpsPerSecond = CpuElementOps },
        ["p100"] = new("p100", 10.6e12, 21.2e12, 732e9, 5e-6, 0.5) { MemoryBytes = 16e9 },
        ["v100"] = new("v100", 15.7e12, 125e12, 900e9, 5e-6, 0.5) { MemoryBytes = 32e9 },
        ["a100"] = new("a100", 19.5e12, 312e12, 1555e9, 4e-6, 0.5) { MemoryBytes = 40e9 },
        ["h100"] = new("h100", 67e12, 989e12, 3350e9, 3e-6, 0.5) { MemoryBytes = 80e9 },
    };

    /// <summary>The cpu profile's element-wise operations per second, fitted to the measured codecs (CodecCost).</summary>
    public const double CpuElementOps = 4e9;

    /// <summary>Forward and backward of one mini-batch: GEMM FLOPs, tensors read and written, 3 kernels per layer + the loss.</summary>
    public double StepSeconds(ModelSpec model, int batch, PrecisionMode precision)
    {
        double flops = (double)model.FlopsPerSample * batch;
        int element = precision == PrecisionMode.Fp16 ? 2 : 4;
        double activations = model.ActivationsPerSample;
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

    /// <summary>Compute-bound FP32 work of <paramref name="flops"/> (K-FAC's factors, inversions, preconditioning): at peak x efficiency, one launch.</summary>
    public double FlopSeconds(double flops) => flops / (Fp32Flops * Efficiency) + LaunchSeconds;

    /// <summary>Adding one decoded FP32 push into the running sum: two arrays read, one written.</summary>
    public double AccumulateSeconds(long parameters) => 12.0 * parameters / MemoryBytesPerSecond + LaunchSeconds;

    public static DeviceProfile Resolve(string name, IReadOnlyDictionary<string, DeviceProfile> custom, string key)
    {
        if (custom.TryGetValue(name, out var own)) return own;
        if (Presets.TryGetValue(name, out var preset)) return preset;
        throw new ActorTrainException($"{key} = \"{name}\" is not a device profile: use one of {string.Join(", ", Presets.Keys.Concat(custom.Keys))} (or define it under simulation.devices)");
    }
}
