using System.Numerics.Tensors;
using System.Runtime.InteropServices;

namespace ActorTrain.Compute.Ilgpu;

/// <summary>
/// The element type tensors are stored in on the device, as a struct trait so that one generic
/// kernel compiles to an FP32 and an FP16 variant: loads widen to float (all arithmetic and
/// accumulation is FP32), stores narrow to the storage type.
/// </summary>
internal interface IStorage<T> where T : unmanaged
{
    float Load(T value);
    T Store(float value);

    /// <summary>Host-side bulk conversion into storage.</summary>
    static abstract void FromSingle(ReadOnlySpan<float> source, Span<T> destination);

    /// <summary>Host-side bulk conversion out of storage.</summary>
    static abstract void ToSingle(ReadOnlySpan<T> source, Span<float> destination);
}

internal readonly struct SingleStorage : IStorage<float>
{
    public float Load(float value) => value;
    public float Store(float value) => value;
    public static void FromSingle(ReadOnlySpan<float> source, Span<float> destination) => source.CopyTo(destination);
    public static void ToSingle(ReadOnlySpan<float> source, Span<float> destination) => source.CopyTo(destination);
}

/// <summary>ILGPU.Half and System.Half are both IEEE binary16, so host buffers are reinterpreted.</summary>
internal readonly struct HalfStorage : IStorage<ILGPU.Half>
{
    public float Load(ILGPU.Half value) => value;
    public ILGPU.Half Store(float value) => (ILGPU.Half)value;

    public static void FromSingle(ReadOnlySpan<float> source, Span<ILGPU.Half> destination) =>
        TensorPrimitives.ConvertToHalf(source, MemoryMarshal.Cast<ILGPU.Half, System.Half>(destination));

    public static void ToSingle(ReadOnlySpan<ILGPU.Half> source, Span<float> destination) =>
        TensorPrimitives.ConvertToSingle(MemoryMarshal.Cast<ILGPU.Half, System.Half>(source), destination);
}
