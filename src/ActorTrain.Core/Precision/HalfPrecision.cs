using System.Numerics.Tensors;
using System.Runtime.Intrinsics;

namespace ActorTrain.Core.Precision;

/// <summary>
/// FP16 storage emulated on FP32 buffers: values are rounded to the nearest System.Half and kept as
/// float, which is exactly what an FP16-storage / FP32-accumulate kernel sees. Vectorised, no
/// allocation (a stack chunk carries the Half values).
/// </summary>
public static class HalfPrecision
{
    private const int Chunk = 512;

    /// <summary>Rounds every element to FP16 and back, in place.</summary>
    public static void Round(Span<float> values)
    {
        Span<Half> tmp = stackalloc Half[Chunk];
        for (int start = 0; start < values.Length; start += Chunk)
        {
            var part = values.Slice(start, Math.Min(Chunk, values.Length - start));
            var h = tmp[..part.Length];
            TensorPrimitives.ConvertToHalf(part, h);
            TensorPrimitives.ConvertToSingle(h, part);
        }
    }

    /// <summary>
    /// Rounds <paramref name="source"/> to FP16 into <paramref name="destination"/> and returns how many
    /// non-zero values became zero: the gradient elements lost to underflow.
    /// </summary>
    public static long RoundCountingUnderflow(ReadOnlySpan<float> source, Span<float> destination)
    {
        Span<Half> tmp = stackalloc Half[Chunk];
        long flushed = 0;
        for (int start = 0; start < source.Length; start += Chunk)
        {
            int n = Math.Min(Chunk, source.Length - start);
            var src = source.Slice(start, n);
            var dst = destination.Slice(start, n);
            var h = tmp[..n];
            TensorPrimitives.ConvertToHalf(src, h);
            TensorPrimitives.ConvertToSingle(h, dst);
            flushed += CountFlushed(src, dst);
        }
        return flushed;
    }

    private static long CountFlushed(ReadOnlySpan<float> before, ReadOnlySpan<float> after)
    {
        long count = 0;
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            for (; i <= before.Length - Vector256<float>.Count; i += Vector256<float>.Count)
            {
                var b = Vector256.Create(before.Slice(i, Vector256<float>.Count));
                var a = Vector256.Create(after.Slice(i, Vector256<float>.Count));
                var lost = Vector256.Equals(a, Vector256<float>.Zero) & ~Vector256.Equals(b, Vector256<float>.Zero);
                count += int.PopCount((int)lost.ExtractMostSignificantBits());
            }
        }
        for (; i < before.Length; i++)
            if (after[i] == 0 && before[i] != 0) count++;
        return count;
    }

    /// <summary>True when no element is inf or NaN (x - x is 0 exactly for finite x, NaN otherwise).</summary>
    public static bool AllFinite(ReadOnlySpan<float> values)
    {
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            var acc = Vector256<float>.Zero;
            for (; i <= values.Length - Vector256<float>.Count; i += Vector256<float>.Count)
            {
                var v = Vector256.Create(values.Slice(i, Vector256<float>.Count));
                acc += v - v;
            }
            if (acc != Vector256<float>.Zero) return false;
        }
        for (; i < values.Length; i++)
            if (!float.IsFinite(values[i])) return false;
        return true;
    }
}
