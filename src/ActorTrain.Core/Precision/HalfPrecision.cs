using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace ActorTrain.Core.Precision;

/// <summary>
/// FP16 storage emulated on FP32 buffers: values are rounded to the nearest FP16 value and kept as
/// float, which is exactly what an FP16-storage / FP32-accumulate kernel sees. The rounding is done
/// in the float bit pattern (round-to-nearest-even on the top 10 mantissa bits; subnormals by
/// adding and subtracting 0.5, whose float ulp is FP16's subnormal step 2^-24), which gives the same
/// values as a System.Half round trip at several times its speed and without any allocation.
/// </summary>
public static class HalfPrecision
{
    private const int SignMask = int.MinValue;
    private const int AbsMask = 0x7FFFFFFF;
    private const int SmallestNormal = 0x38800000;   // 2^-14, FP16's smallest normal
    private const int Overflow = 0x47800000;         // 65536: anything rounding here is inf in FP16
    private const int Infinity = 0x7F800000;

    /// <summary>Rounds every element to FP16 and back, in place.</summary>
    public static void Round(Span<float> values) => Round(values, values);

    /// <summary><paramref name="source"/> rounded to FP16 into <paramref name="destination"/> (one pass: a copy and the rounding together).</summary>
    public static void Round(ReadOnlySpan<float> source, Span<float> destination)
    {
        if (destination.Length < source.Length) throw new ArgumentException("destination is shorter than source");
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            for (; i <= source.Length - Vector512<float>.Count; i += Vector512<float>.Count)
                Round(Vector512.Create<float>(source.Slice(i, Vector512<float>.Count))).CopyTo(destination.Slice(i));
        }
        if (Vector256.IsHardwareAccelerated)
        {
            for (; i <= source.Length - Vector256<float>.Count; i += Vector256<float>.Count)
            {
                var v = Vector256.Create(source.Slice(i, Vector256<float>.Count));
                Round(v).CopyTo(destination.Slice(i));
            }
        }
        for (; i < source.Length; i++) destination[i] = (float)(Half)source[i];
    }

    /// <summary>
    /// Rounds <paramref name="source"/> to FP16 into <paramref name="destination"/> and returns how many
    /// non-zero values became zero: the gradient elements lost to underflow.
    /// </summary>
    public static long RoundCountingUnderflow(ReadOnlySpan<float> source, Span<float> destination)
    {
        if (destination.Length < source.Length) throw new ArgumentException("destination is shorter than source");
        long flushed = 0;
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            for (; i <= source.Length - Vector512<float>.Count; i += Vector512<float>.Count)
            {
                var before = Vector512.Create<float>(source.Slice(i, Vector512<float>.Count));
                var after = Round(before);
                after.CopyTo(destination.Slice(i));
                var lost = Vector512.Equals(after, Vector512<float>.Zero) & ~Vector512.Equals(before, Vector512<float>.Zero);
                flushed += (long)ulong.PopCount(lost.ExtractMostSignificantBits());
            }
        }
        if (Vector256.IsHardwareAccelerated)
        {
            for (; i <= source.Length - Vector256<float>.Count; i += Vector256<float>.Count)
            {
                var before = Vector256.Create(source.Slice(i, Vector256<float>.Count));
                var after = Round(before);
                after.CopyTo(destination.Slice(i));
                var lost = Vector256.Equals(after, Vector256<float>.Zero) & ~Vector256.Equals(before, Vector256<float>.Zero);
                flushed += int.PopCount((int)lost.ExtractMostSignificantBits());
            }
        }
        for (; i < source.Length; i++)
        {
            float r = (float)(Half)source[i];
            if (r == 0 && source[i] != 0) flushed++;
            destination[i] = r;
        }
        return flushed;
    }

    /// <summary>Eight floats rounded to their nearest FP16 values (ties to even; inf and NaN kept).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Round(Vector256<float> x)
    {
        var bits = x.AsInt32();
        var sign = bits & Vector256.Create(SignMask);
        var abs = bits & Vector256.Create(AbsMask);
        var lsb = Vector256.ShiftRightLogical(abs, 13) & Vector256<int>.One;
        var normal = (abs + Vector256.Create(0xFFF) + lsb) & Vector256.Create(unchecked((int)0xFFFFE000));
        normal = Vector256.ConditionalSelect(Vector256.GreaterThanOrEqual(normal, Vector256.Create(Overflow)), Vector256.Create(Infinity), normal);
        var half = Vector256.Create(0.5f);
        var subnormal = ((abs.AsSingle() + half) - half).AsInt32();
        var result = Vector256.ConditionalSelect(Vector256.LessThan(abs, Vector256.Create(SmallestNormal)), subnormal, normal);
        result = Vector256.ConditionalSelect(Vector256.GreaterThanOrEqual(abs, Vector256.Create(Infinity)), abs, result);
        return (result | sign).AsSingle();
    }

    /// <summary>The same rounding, sixteen floats at a time (AVX-512): the same integer operations per lane, so the same bits.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Round(Vector512<float> x)
    {
        var bits = x.AsInt32();
        var sign = bits & Vector512.Create(SignMask);
        var abs = bits & Vector512.Create(AbsMask);
        var lsb = Vector512.ShiftRightLogical(abs, 13) & Vector512<int>.One;
        var normal = (abs + Vector512.Create(0xFFF) + lsb) & Vector512.Create(unchecked((int)0xFFFFE000));
        normal = Vector512.ConditionalSelect(Vector512.GreaterThanOrEqual(normal, Vector512.Create(Overflow)), Vector512.Create(Infinity), normal);
        var half = Vector512.Create(0.5f);
        var subnormal = ((abs.AsSingle() + half) - half).AsInt32();
        var result = Vector512.ConditionalSelect(Vector512.LessThan(abs, Vector512.Create(SmallestNormal)), subnormal, normal);
        result = Vector512.ConditionalSelect(Vector512.GreaterThanOrEqual(abs, Vector512.Create(Infinity)), abs, result);
        return (result | sign).AsSingle();
    }

    /// <summary>True when no element is inf or NaN (x - x is 0 exactly for finite x, NaN otherwise).</summary>
    public static bool AllFinite(ReadOnlySpan<float> values)
    {
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            var acc = Vector512<float>.Zero;
            for (; i <= values.Length - Vector512<float>.Count; i += Vector512<float>.Count)
            {
                var v = Vector512.Create<float>(values.Slice(i, Vector512<float>.Count));
                acc += v - v;
            }
            if (acc != Vector512<float>.Zero) return false;
        }
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
