using System.Buffers.Binary;
using ActorTrain.Core.Models;

namespace ActorTrain.Core.Collectives;

/// <summary>
/// A rank's all-reduce buffer: the unscaled gradient (<see cref="GradientLength"/> elements) followed
/// by <see cref="TallyLength"/> tallies summed along with it (the samples behind the gradient, 1
/// when it is finite, and the loss scale it was computed with), so every rank learns how many
/// finite gradients the sum holds (and the mean loss scale, for the metrics). Segments travel
/// as little-endian FP32, or with <c>fp16</c> the gradient part as FP16 (the tallies stay FP32 so
/// they count exactly); sums are always taken in FP32. A sender rounds what it sends in its own
/// buffer to what the receiver gets, so that the rank which finished a chunk and the ranks it
/// copies the chunk to hold the same bits.
/// </summary>
public sealed class CollectiveBuffer(int gradientLength, bool fp16)
{
    public const int TallyLength = 3;

    public int GradientLength { get; } = gradientLength;
    public bool Fp16 { get; } = fp16;
    public float[] Values { get; } = new float[gradientLength + TallyLength];

    public float Samples => Values[GradientLength];
    public float FiniteCount => Values[GradientLength + 1];
    public float ScaleSum => Values[GradientLength + 2];

    /// <summary>Fills the buffer with gradient * (1 / scale) and its tallies; a non-finite gradient contributes zeros.</summary>
    public void Load(ReadOnlySpan<float> gradient, float scale, bool nonFinite, int samples)
    {
        var g = Values.AsSpan(0, GradientLength);
        if (nonFinite) g.Clear();
        else System.Numerics.Tensors.TensorPrimitives.Multiply(gradient, 1f / scale, g);
        Values[GradientLength] = samples;
        Values[GradientLength + 1] = nonFinite ? 0 : 1;
        Values[GradientLength + 2] = scale;
    }

    /// <summary>The bytes a segment takes on the wire.</summary>
    public int WireBytes(ParameterRange segment) => WireBytes(segment, GradientLength, Fp16);

    /// <summary>The bytes a segment of a buffer over <paramref name="gradientLength"/> gradient elements takes on the wire.</summary>
    public static int WireBytes(ParameterRange segment, int gradientLength, bool fp16)
    {
        int gradient = Math.Max(0, Math.Min(segment.Start + segment.Length, gradientLength) - segment.Start);
        return gradient * (fp16 ? 2 : 4) + (segment.Length - gradient) * 4;
    }

    /// <summary>Writes a segment into <paramref name="destination"/> (at least <see cref="WireBytes"/> long); rounds it in place under FP16.</summary>
    public void Encode(ParameterRange segment, Span<byte> destination)
    {
        int o = 0;
        for (int i = segment.Start; i < segment.Start + segment.Length; i++)
        {
            if (Fp16 && i < GradientLength)
            {
                var h = (Half)Values[i];
                Values[i] = (float)h;
                BinaryPrimitives.WriteHalfLittleEndian(destination[o..], h);
                o += 2;
            }
            else
            {
                BinaryPrimitives.WriteSingleLittleEndian(destination[o..], Values[i]);
                o += 4;
            }
        }
    }

    /// <summary>Adds (reduce) or copies a received segment into the buffer; false when its length does not match.</summary>
    public bool Apply(ParameterRange segment, ReadOnlySpan<byte> payload, bool reduce)
    {
        if (payload.Length != WireBytes(segment)) return false;
        int o = 0;
        for (int i = segment.Start; i < segment.Start + segment.Length; i++)
        {
            float v;
            if (Fp16 && i < GradientLength)
            {
                v = (float)BinaryPrimitives.ReadHalfLittleEndian(payload[o..]);
                o += 2;
            }
            else
            {
                v = BinaryPrimitives.ReadSingleLittleEndian(payload[o..]);
                o += 4;
            }
            // incoming partial sum + own value: the order is the schedule's, the same on every run
            Values[i] = reduce ? v + Values[i] : v;
        }
        return true;
    }
}
