using ActorTrain.Compute.Ilgpu;
using ActorTrain.Compute.Simd;
using ActorTrain.Core;
using ActorTrain.Core.Engines;
using ActorTrain.Core.Models;

namespace ActorTrain.Compute;

/// <summary>
/// Engine names as the experiment file spells them (compute.engine): auto, simd, ilgpu (best ILGPU
/// accelerator), ilgpu-cuda, ilgpu-opencl, ilgpu-cpu. Auto takes ILGPU CUDA when a CUDA device is
/// present and the SIMD engine otherwise: ILGPU's CPU accelerator is an emulator, far slower than
/// the SIMD engine, meant for testing kernels rather than training.
/// </summary>
public sealed class GradientEngineFactory : IGradientEngineFactory
{
    public static readonly IReadOnlyList<string> Names = ["auto", "simd", "ilgpu", "ilgpu-cuda", "ilgpu-opencl", "ilgpu-cpu"];

    private readonly string _resolved;
    private readonly int _threads;

    /// <param name="threads">SIMD engine threads; 0 = one per core.</param>
    public GradientEngineFactory(string engine, int threads = 0)
    {
        if (!Names.Contains(engine))
            throw new ActorTrainException($"compute.engine = \"{engine}\" is not an engine; choose one of {string.Join(", ", Names)}");
        _resolved = engine == "auto" ? (IlgpuDevices.HasCuda() ? "ilgpu-cuda" : "simd") : engine;
        _threads = threads;
    }

    /// <summary>The engine this factory creates, with auto resolved.</summary>
    public string Name => _resolved;

    public IGradientEngine Create(ModelSpec model, int maxBatch) => _resolved switch
    {
        "simd" => new SimdGradientEngine(model, maxBatch, _threads),
        "ilgpu" => new IlgpuGradientEngine(model, maxBatch, IlgpuTarget.Auto),
        "ilgpu-cuda" => new IlgpuGradientEngine(model, maxBatch, IlgpuTarget.Cuda),
        "ilgpu-opencl" => new IlgpuGradientEngine(model, maxBatch, IlgpuTarget.OpenCL),
        "ilgpu-cpu" => new IlgpuGradientEngine(model, maxBatch, IlgpuTarget.Cpu),
        _ => throw new InvalidOperationException(_resolved),
    };
}
