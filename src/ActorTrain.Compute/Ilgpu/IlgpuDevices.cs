using ActorTrain.Core;
using ILGPU;
using ILGPU.Runtime;

namespace ActorTrain.Compute.Ilgpu;

public enum IlgpuTarget
{
    /// <summary>CUDA, else OpenCL, else the CPU accelerator.</summary>
    Auto,
    Cuda,
    OpenCL,
    Cpu,
}

public sealed record IlgpuDeviceInfo(string Name, AcceleratorType Type, long MemoryBytes, int Multiprocessors);

/// <summary>Which accelerators ILGPU sees, and the choice CUDA > OpenCL > CPU.</summary>
public static class IlgpuDevices
{
    internal static Context CreateContext() => Context.Create(builder => builder.Default().EnableAlgorithms());

    public static IReadOnlyList<IlgpuDeviceInfo> List()
    {
        using var context = CreateContext();
        return context.Devices.Select(d => new IlgpuDeviceInfo(d.Name, d.AcceleratorType, d.MemorySize, d.NumMultiprocessors)).ToList();
    }

    public static bool HasCuda()
    {
        using var context = CreateContext();
        return context.Devices.Any(d => d.AcceleratorType == AcceleratorType.Cuda);
    }

    internal static Device Select(Context context, IlgpuTarget target)
    {
        AcceleratorType? wanted = target switch
        {
            IlgpuTarget.Cuda => AcceleratorType.Cuda,
            IlgpuTarget.OpenCL => AcceleratorType.OpenCL,
            IlgpuTarget.Cpu => AcceleratorType.CPU,
            _ => null,
        };
        if (wanted is { } type)
        {
            return context.Devices.FirstOrDefault(d => d.AcceleratorType == type)
                ?? throw new ActorTrainException($"compute.engine asks for an ILGPU {type} accelerator, but none is present (found: {string.Join(", ", context.Devices.Select(d => d.AcceleratorType))}); `actortrain devices` lists them");
        }
        foreach (var type2 in new[] { AcceleratorType.Cuda, AcceleratorType.OpenCL, AcceleratorType.CPU })
            if (context.Devices.FirstOrDefault(d => d.AcceleratorType == type2) is { } device)
                return device;
        throw new ActorTrainException("ILGPU found no accelerator at all");
    }
}
