using System.Buffers.Binary;
using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace ActorTrain.Core.Compression;

/// <summary>
/// A gradient codec (names as in the GRACE and BytePS compressor sets). Encoding writes the 16-byte
/// header of <see cref="GradientWire"/> and a self-describing body; <see cref="Decode"/> needs no
/// settings. <see cref="BodySize"/> is each codec's size formula: encoded size = header + body,
/// exactly. Stochastic codecs draw from the <see cref="Rng"/> they are given, so a seeded worker
/// encodes reproducibly. Every decoder checks lengths and indices before it writes anything.
/// </summary>
public abstract class GradientCodec
{
    public abstract CodecKind Kind { get; }

    /// <summary>Body bytes for a dense length n (for threshold, the count of kept elements decides: this is the upper bound).</summary>
    public abstract int BodySize(int n);

    public int MaxEncodedSize(int n) => GradientWire.HeaderSize + BodySize(n);

    public int Encode(ReadOnlySpan<float> gradient, Span<byte> destination, Rng rng)
    {
        if (destination.Length < MaxEncodedSize(gradient.Length))
            throw new ArgumentException($"destination holds {destination.Length} bytes, {Kind} needs up to {MaxEncodedSize(gradient.Length)}");
        int body = EncodeBody(gradient, destination[GradientWire.HeaderSize..], rng);
        GradientWire.WriteHeader(destination, Kind, gradient.Length, body);
        return GradientWire.HeaderSize + body;
    }

    protected abstract int EncodeBody(ReadOnlySpan<float> g, Span<byte> body, Rng rng);

    /// <summary>Writes the dense gradient; the body length has been checked against the header, not the codec.</summary>
    protected abstract void DecodeBody(ReadOnlySpan<byte> body, Span<float> output);

    private static readonly GradientCodec[] Decoders =
    [
        new NoneCodec(), new Fp16Codec(), new U8BitCodec(), new QsgdCodec(8), new TernGradCodec(), new OneBitCodec(),
        new SignSgdCodec(), new EfSignSgdCodec(), new TopKCodec(0.01), new RandomKCodec(0.01), new ThresholdCodec(0),
        new PowerSgdCodec(),
    ];

    /// <summary>Decodes any encoded gradient into <paramref name="output"/>, whose length must be the dense length.</summary>
    public static void Decode(ReadOnlySpan<byte> message, Span<float> output)
    {
        var (kind, dense) = GradientWire.Read(message, out var body);
        if ((GradientWire.Flags(message) & GradientWire.Lz4Flag) != 0)
        {
            int raw = GradientWire.RawBodyLength(message);
            if (raw < 0 || raw > 64 * (output.Length + 1024L)) throw new CompressionFormatException($"LZ4 stage announces a {raw}-byte body for {output.Length} values");
            var rented = System.Buffers.ArrayPool<byte>.Shared.Rent(GradientWire.HeaderSize + raw);
            try
            {
                int length = Lz4Stage.Undo(message, body, rented);
                Decode(rented.AsSpan(0, length), output);
            }
            finally
            {
                System.Buffers.ArrayPool<byte>.Shared.Return(rented);
            }
            return;
        }
        if (dense != output.Length)
            throw new CompressionFormatException($"message holds a gradient of {dense} values, the receiver expects {output.Length}");
        Decoders[(int)kind].DecodeBody(body, output);
    }

    /// <summary>
    /// A dense FP32 message's values where they lie in it, without a copy (the body is the floats,
    /// little-endian); false for any other codec or an LZ4 stage, which must be decoded. A header
    /// that does not parse throws <see cref="CompressionFormatException"/>, as in <see cref="Decode(ReadOnlySpan{byte}, Span{float})"/>.
    /// </summary>
    public static bool TryViewDense(ReadOnlySpan<byte> message, int length, out ReadOnlySpan<float> values)
    {
        values = default;
        var (kind, dense) = GradientWire.Read(message, out var body);
        if (kind != CodecKind.None || (GradientWire.Flags(message) & GradientWire.Lz4Flag) != 0 || dense != length || body.Length != 4 * length) return false;
        values = MemoryMarshal.Cast<byte, float>(body);
        return true;
    }

    protected static void RequireBody(ReadOnlySpan<byte> body, int expected, string what)
    {
        if (body.Length != expected)
            throw new CompressionFormatException($"{what}: body of {body.Length} bytes, expected {expected}");
    }

    protected static int Bytes(long bits) => (int)((bits + 7) / 8);

    /// <summary>1 when u &lt; p, else 0, from the sign bit of u - p (no branch).</summary>
    protected static int Below(float u, float p) => (int)((uint)BitConverter.SingleToInt32Bits(u - p) >> 31);

    protected static double CheckRatio(double ratio) =>
        ratio is > 0 and <= 1 ? ratio : throw new ActorTrainException($"compression.ratio = {ratio} must be in (0, 1]");

    /// <summary>k = max(1, ceil(ratio n)) elements of n (0 of 0).</summary>
    protected static int KeptOf(int n, double ratio) => n == 0 ? 0 : Math.Clamp((int)Math.Ceiling(ratio * n), 1, n);

    /// <summary>Writes <paramref name="width"/>-bit codes LSB first.</summary>
    protected ref struct BitWriter(Span<byte> destination)
    {
        private readonly Span<byte> _dst = destination;
        private ulong _acc;
        private int _bits, _pos;

        public void Write(uint code, int width)
        {
            _acc |= (ulong)code << _bits;
            _bits += width;
            while (_bits >= 8)
            {
                _dst[_pos++] = (byte)_acc;
                _acc >>= 8;
                _bits -= 8;
            }
        }

        public int Flush()
        {
            if (_bits > 0) _dst[_pos++] = (byte)_acc;
            _acc = 0;
            _bits = 0;
            return _pos;
        }
    }

    protected ref struct BitReader(ReadOnlySpan<byte> source)
    {
        private readonly ReadOnlySpan<byte> _src = source;
        private ulong _acc;
        private int _bits, _pos;

        public uint Read(int width)
        {
            while (_bits < width)
            {
                _acc |= (ulong)_src[_pos++] << _bits;
                _bits += 8;
            }
            uint code = (uint)(_acc & ((1UL << width) - 1));
            _acc >>= width;
            _bits -= width;
            return code;
        }
    }
}

/// <summary>Dense FP32: 4n bytes.</summary>
public sealed class NoneCodec : GradientCodec
{
    public override CodecKind Kind => CodecKind.None;
    public override int BodySize(int n) => 4 * n;

    protected override int EncodeBody(ReadOnlySpan<float> g, Span<byte> body, Rng rng)
    {
        MemoryMarshal.AsBytes(g).CopyTo(body);
        return 4 * g.Length;
    }

    protected override void DecodeBody(ReadOnlySpan<byte> body, Span<float> output)
    {
        RequireBody(body, BodySize(output.Length), "none");
        MemoryMarshal.Cast<byte, float>(body).CopyTo(output);
    }
}

/// <summary>FP16, round to nearest: 2n bytes; relative error at most 2^-11 within FP16's normal range.</summary>
public sealed class Fp16Codec : GradientCodec
{
    public override CodecKind Kind => CodecKind.Fp16;
    public override int BodySize(int n) => 2 * n;

    protected override int EncodeBody(ReadOnlySpan<float> g, Span<byte> body, Rng rng)
    {
        TensorPrimitives.ConvertToHalf(g, MemoryMarshal.Cast<byte, Half>(body[..(2 * g.Length)]));
        return 2 * g.Length;
    }

    protected override void DecodeBody(ReadOnlySpan<byte> body, Span<float> output)
    {
        RequireBody(body, BodySize(output.Length), "fp16");
        TensorPrimitives.ConvertToSingle(MemoryMarshal.Cast<byte, Half>(body), output);
    }
}

/// <summary>8-bit linear quantisation between min and max: 8 + n bytes; error at most (max - min) / 510.</summary>
public sealed class U8BitCodec : GradientCodec
{
    public override CodecKind Kind => CodecKind.U8Bit;
    public override int BodySize(int n) => 8 + n;

    protected override int EncodeBody(ReadOnlySpan<float> g, Span<byte> body, Rng rng)
    {
        float min = g.IsEmpty ? 0 : TensorPrimitives.Min(g), max = g.IsEmpty ? 0 : TensorPrimitives.Max(g);
        BinaryPrimitives.WriteSingleLittleEndian(body, min);
        BinaryPrimitives.WriteSingleLittleEndian(body[4..], max);
        float scale = max > min ? 255f / (max - min) : 0f;
        var q = body.Slice(8, g.Length);
        for (int i = 0; i < g.Length; i++) q[i] = (byte)Math.Clamp(MathF.Round((g[i] - min) * scale), 0, 255);
        return 8 + g.Length;
    }

    protected override void DecodeBody(ReadOnlySpan<byte> body, Span<float> output)
    {
        RequireBody(body, BodySize(output.Length), "u8bit");
        float min = BinaryPrimitives.ReadSingleLittleEndian(body), max = BinaryPrimitives.ReadSingleLittleEndian(body[4..]);
        float step = (max - min) / 255f;
        var q = body[8..];
        for (int i = 0; i < output.Length; i++) output[i] = min + q[i] * step;
    }
}

/// <summary>
/// QSGD with s = 2^(bits-1) - 1 levels and buckets of B elements (Alistarh et al. quantise per
/// bucket to bound the variance): each element is sign x norm_b x level / s, with norm_b the 2-norm
/// of its bucket and level the stochastic rounding of |g| s / norm_b, so the decoded gradient is
/// unbiased; per-element error at most norm_b / s. Body: bits (1 byte), 3 spare, B (4), one norm
/// per bucket (4 each), then bits per element.
/// </summary>
public sealed class QsgdCodec : GradientCodec
{
    public QsgdCodec(int bits, int bucket = 512)
    {
        if (bits is < 2 or > 16) throw new ActorTrainException($"compression.bits = {bits}: qsgd needs 2..16 bits (1 sign bit + level bits)");
        if (bucket <= 0) throw new ActorTrainException($"compression.chunk = {bucket}: qsgd buckets need at least one element");
        Bits = bits;
        Bucket = bucket;
    }

    public int Bits { get; }
    public int Bucket { get; }
    public int Levels => (1 << (Bits - 1)) - 1;
    public override CodecKind Kind => CodecKind.Qsgd;
    public override int BodySize(int n) => 8 + 4 * Buckets(n, Bucket) + Bytes((long)n * Bits);

    private static int Buckets(int n, int bucket) => (n + bucket - 1) / bucket;

    protected override int EncodeBody(ReadOnlySpan<float> g, Span<byte> body, Rng rng)
    {
        body[..8].Clear();
        body[0] = (byte)Bits;
        BinaryPrimitives.WriteInt32LittleEndian(body[4..], Bucket);
        int buckets = Buckets(g.Length, Bucket);
        var codes = body[(8 + 4 * buckets)..];
        var writer = new BitWriter(codes);
        int s = Levels;
        var uniform = new Rng.FloatStream(rng);
        for (int b = 0; b < buckets; b++)
        {
            int start = b * Bucket;
            var part = g.Slice(start, Math.Min(Bucket, g.Length - start));
            float norm = TensorPrimitives.Norm(part);
            BinaryPrimitives.WriteSingleLittleEndian(body[(8 + 4 * b)..], norm);
            float k = norm > 0 ? s / norm : 0;
            for (int i = 0; i < part.Length; i++)
            {
                float v = part[i];
                float r = MathF.Abs(v) * k;
                int level = (int)r;
                // round up with probability r - level, without a branch: the coin is random, so a
                // branch on it mispredicts half the time (measured: the encode's main cost)
                level = Math.Min(s, level + Below(uniform.Next(), r - level));
                uint code = (uint)(level << 1) | (v < 0 ? 1u : 0u);
                // 8-bit codes are whole bytes: stored directly, without the bit writer
                if (Bits == 8) codes[start + i] = (byte)code;
                else writer.Write(code, Bits);
            }
        }
        return 8 + 4 * buckets + (Bits == 8 ? g.Length : writer.Flush());
    }

    protected override void DecodeBody(ReadOnlySpan<byte> body, Span<float> output)
    {
        if (body.Length < 8) throw new CompressionFormatException($"qsgd: body of {body.Length} bytes is shorter than its 8-byte prefix");
        int bits = body[0];
        int bucket = BinaryPrimitives.ReadInt32LittleEndian(body[4..]);
        if (bits is < 2 or > 16) throw new CompressionFormatException($"qsgd: {bits} bits per element is not valid");
        if (bucket <= 0) throw new CompressionFormatException($"qsgd: bucket size {bucket}");
        int buckets = Buckets(output.Length, bucket);
        long expected = 8 + 4L * buckets + Bytes((long)output.Length * bits);
        RequireBody(body, expected <= int.MaxValue ? (int)expected : -1, "qsgd");
        int s = (1 << (bits - 1)) - 1;
        var codes = body[(8 + 4 * buckets)..];
        var reader = new BitReader(codes);
        for (int b = 0; b < buckets; b++)
        {
            float unit = BinaryPrimitives.ReadSingleLittleEndian(body[(8 + 4 * b)..]) / s;
            int end = Math.Min(output.Length, (b + 1) * bucket);
            for (int i = b * bucket; i < end; i++)
            {
                uint code = bits == 8 ? codes[i] : reader.Read(bits);
                int level = (int)(code >> 1);
                if (level > s) throw new CompressionFormatException($"qsgd: level {level} at element {i} exceeds {s}");
                output[i] = ((code & 1) != 0 ? -unit : unit) * level;
            }
        }
    }
}

/// <summary>
/// TernGrad: s = max |g|, each element s x sign x Bernoulli(|g| / s): unbiased, values in {-s, 0, s}.
/// Body: s (4 bytes) then 2 bits per element.
/// </summary>
public sealed class TernGradCodec : GradientCodec
{
    public override CodecKind Kind => CodecKind.TernGrad;
    public override int BodySize(int n) => 4 + Bytes(2L * n);

    protected override int EncodeBody(ReadOnlySpan<float> g, Span<byte> body, Rng rng)
    {
        float s = g.IsEmpty ? 0 : TensorPrimitives.MaxMagnitude(g);
        s = MathF.Abs(s);
        BinaryPrimitives.WriteSingleLittleEndian(body, s);
        var writer = new BitWriter(body[4..]);
        var uniform = new Rng.FloatStream(rng);
        float inv = s > 0 ? 1 / s : 0;
        for (int i = 0; i < g.Length; i++)
        {
            int keep = Below(uniform.Next(), MathF.Abs(g[i]) * inv);
            writer.Write((uint)(keep << (g[i] < 0 ? 1 : 0)), 2);
        }
        return 4 + writer.Flush();
    }

    protected override void DecodeBody(ReadOnlySpan<byte> body, Span<float> output)
    {
        RequireBody(body, BodySize(output.Length), "terngrad");
        float s = BinaryPrimitives.ReadSingleLittleEndian(body);
        var reader = new BitReader(body[4..]);
        for (int i = 0; i < output.Length; i++)
        {
            output[i] = reader.Read(2) switch
            {
                0 => 0f,
                1 => s,
                2 => -s,
                var c => throw new CompressionFormatException($"terngrad: code {c} at element {i}"),
            };
        }
    }
}

/// <summary>
/// 1-bit SGD (Seide et al.): per chunk of C elements, the mean of the non-negative and of the
/// negative elements; one bit per element picks one. Body: C (4 bytes), 2 floats per chunk, n bits.
/// </summary>
public sealed class OneBitCodec(int chunk = 512) : GradientCodec
{
    public int Chunk { get; } = chunk > 0 ? chunk : throw new ActorTrainException($"onebit chunk must be positive, got {chunk}");
    public override CodecKind Kind => CodecKind.OneBit;
    public override int BodySize(int n) => 4 + 8 * ((n + Chunk - 1) / Chunk) + Bytes(n);

    protected override int EncodeBody(ReadOnlySpan<float> g, Span<byte> body, Rng rng)
    {
        int chunks = (g.Length + Chunk - 1) / Chunk;
        BinaryPrimitives.WriteInt32LittleEndian(body, Chunk);
        var scales = body.Slice(4, 8 * chunks);
        var writer = new BitWriter(body[(4 + 8 * chunks)..]);
        for (int c = 0; c < chunks; c++)
        {
            var part = g.Slice(c * Chunk, Math.Min(Chunk, g.Length - c * Chunk));
            double pos = 0, neg = 0;
            int np = 0;
            foreach (float v in part)
            {
                if (v >= 0) { pos += v; np++; }
                else neg += v;
            }
            BinaryPrimitives.WriteSingleLittleEndian(scales[(8 * c)..], np > 0 ? (float)(pos / np) : 0f);
            BinaryPrimitives.WriteSingleLittleEndian(scales[(8 * c + 4)..], np < part.Length ? (float)(neg / (part.Length - np)) : 0f);
            foreach (float v in part) writer.Write(v >= 0 ? 1u : 0u, 1);
        }
        return 4 + 8 * chunks + writer.Flush();
    }

    protected override void DecodeBody(ReadOnlySpan<byte> body, Span<float> output)
    {
        if (body.Length < 4) throw new CompressionFormatException("onebit: body shorter than its chunk size");
        int chunk = BinaryPrimitives.ReadInt32LittleEndian(body);
        if (chunk <= 0) throw new CompressionFormatException($"onebit: chunk size {chunk}");
        int chunks = (output.Length + chunk - 1) / chunk;
        RequireBody(body, 4 + 8L * chunks + Bytes(output.Length) is var size and <= int.MaxValue ? (int)size : -1, "onebit");
        var reader = new BitReader(body[(4 + 8 * chunks)..]);
        for (int i = 0; i < output.Length; i++)
        {
            int c = i / chunk;
            int at = 4 + 8 * c + (reader.Read(1) == 1 ? 0 : 4);
            output[i] = BinaryPrimitives.ReadSingleLittleEndian(body[at..]);
        }
    }
}

/// <summary>signSGD: one bit per element, decoded as +1 or -1 (zero as +1). Body: n bits.</summary>
public sealed class SignSgdCodec : GradientCodec
{
    public override CodecKind Kind => CodecKind.SignSgd;
    public override int BodySize(int n) => Bytes(n);

    protected override int EncodeBody(ReadOnlySpan<float> g, Span<byte> body, Rng rng) => SignBits.Write(g, body);

    protected override void DecodeBody(ReadOnlySpan<byte> body, Span<float> output)
    {
        RequireBody(body, BodySize(output.Length), "signsgd");
        SignBits.Read(body, output, 1f);
    }
}

/// <summary>
/// EF-signSGD's scaled sign (Karimireddy et al.): (||g||_1 / n) x sign(g), meant to run with residual
/// error feedback. Body: the scale (4 bytes) then n bits.
/// </summary>
public sealed class EfSignSgdCodec : GradientCodec
{
    public override CodecKind Kind => CodecKind.EfSignSgd;
    public override int BodySize(int n) => 4 + Bytes(n);

    protected override int EncodeBody(ReadOnlySpan<float> g, Span<byte> body, Rng rng)
    {
        BinaryPrimitives.WriteSingleLittleEndian(body, g.IsEmpty ? 0 : TensorPrimitives.SumOfMagnitudes(g) / g.Length);
        return 4 + SignBits.Write(g, body[4..]);
    }

    protected override void DecodeBody(ReadOnlySpan<byte> body, Span<float> output)
    {
        RequireBody(body, BodySize(output.Length), "efsignsgd");
        SignBits.Read(body[4..], output, BinaryPrimitives.ReadSingleLittleEndian(body));
    }
}

internal static class SignBits
{
    /// <summary>Bit i set when g[i] >= 0, LSB first; 8 elements per byte from one vector compare.</summary>
    public static int Write(ReadOnlySpan<float> g, Span<byte> body)
    {
        int bytes = (g.Length + 7) / 8;
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            var zero = Vector256<float>.Zero;
            for (; i + 8 <= g.Length; i += 8)
            {
                var v = Vector256.Create(g.Slice(i, 8));
                body[i >> 3] = (byte)Vector256.GreaterThanOrEqual(v, zero).ExtractMostSignificantBits();
            }
        }
        if (i < g.Length)
        {
            body[i >> 3] = 0;
            for (; i < g.Length; i++)
                if (g[i] >= 0) body[i >> 3] |= (byte)(1 << (i & 7));
        }
        return bytes;
    }

    public static void Read(ReadOnlySpan<byte> bits, Span<float> output, float scale)
    {
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            var lanes = Vector256.Create(1, 2, 4, 8, 16, 32, 64, 128);
            var plus = Vector256.Create(scale);
            var minus = Vector256.Create(-scale);
            for (; i + 8 <= output.Length; i += 8)
            {
                var set = Vector256.Create((int)bits[i >> 3]) & lanes;
                var mask = Vector256.Equals(set, lanes).AsSingle();
                Vector256.ConditionalSelect(mask, plus, minus).CopyTo(output.Slice(i, 8));
            }
        }
        for (; i < output.Length; i++) output[i] = (bits[i >> 3] & (1 << (i & 7))) != 0 ? scale : -scale;
    }
}

/// <summary>Sparse body shared by top-k and threshold: count (4 bytes), count int32 indices, count float values.</summary>
internal static class SparseBody
{
    public static int Size(int count) => 4 + 8 * count;

    public static void Decode(ReadOnlySpan<byte> body, Span<float> output, string codec)
    {
        if (body.Length < 4) throw new CompressionFormatException($"{codec}: body shorter than its count");
        int count = BinaryPrimitives.ReadInt32LittleEndian(body);
        if (count < 0 || count > output.Length) throw new CompressionFormatException($"{codec}: {count} entries for a gradient of {output.Length}");
        if (body.Length != Size(count)) throw new CompressionFormatException($"{codec}: body of {body.Length} bytes, expected {Size(count)} for {count} entries");
        var indices = MemoryMarshal.Cast<byte, int>(body.Slice(4, 4 * count));
        var values = MemoryMarshal.Cast<byte, float>(body.Slice(4 + 4 * count, 4 * count));
        foreach (int index in indices)
            if ((uint)index >= (uint)output.Length) throw new CompressionFormatException($"{codec}: index {index} outside [0, {output.Length})");
        output.Clear();
        for (int j = 0; j < count; j++) output[indices[j]] = values[j];
    }
}

/// <summary>
/// Top-k: exactly the k = max(1, ceil(ratio n)) largest magnitudes (ties to the lower index), as
/// (index, value) pairs. Body: 4 + 8k bytes.
/// </summary>
public sealed class TopKCodec : GradientCodec
{
    private const int Sample = 8192;
    private float[] _magnitudes = [];
    private int[] _candidates = [];
    private readonly float[] _sample = new float[Sample];

    public TopKCodec(double ratio) => Ratio = CheckRatio(ratio);

    public double Ratio { get; }
    public override CodecKind Kind => CodecKind.TopK;
    public int K(int n) => KeptOf(n, Ratio);
    public override int BodySize(int n) => SparseBody.Size(K(n));

    /// <summary>
    /// Finds the k-th largest magnitude without selecting over all n: a strided sample of 8192
    /// magnitudes gives a threshold a little below it (1.5x the expected rank, plus 8), one vector
    /// pass collects every element at or above that threshold, and quickselect runs on those
    /// candidates only. Every element tied with or above the k-th is a candidate, so the result is
    /// exact; if the sample overshoots (fewer than k candidates) the full quickselect runs instead.
    /// Output indices ascend, ties go to the lower index.
    /// </summary>
    protected override int EncodeBody(ReadOnlySpan<float> g, Span<byte> body, Rng rng)
    {
        int n = g.Length, k = K(n);
        BinaryPrimitives.WriteInt32LittleEndian(body, k);
        var indices = MemoryMarshal.Cast<byte, int>(body.Slice(4, 4 * k));
        var values = MemoryMarshal.Cast<byte, float>(body.Slice(4 + 4 * k, 4 * k));
        if (k == 0) return 4;
        if (_magnitudes.Length < n)
        {
            _magnitudes = new float[n];
            _candidates = new int[n];
        }
        int count = n > 4 * Sample ? Candidates(g, k) : 0;
        if (count < k)
        {
            for (int i = 0; i < n; i++) _candidates[i] = i;
            count = n;
        }
        var mags = _magnitudes.AsSpan(0, count);
        for (int c = 0; c < count; c++) mags[c] = MathF.Abs(g[_candidates[c]]);
        float kth = Select.KthLargest(mags, k);
        int above = 0;
        for (int c = 0; c < count; c++)
            if (MathF.Abs(g[_candidates[c]]) > kth) above++;
        int ties = k - above, j = 0;
        for (int c = 0; c < count && j < k; c++)
        {
            int i = _candidates[c];
            float a = MathF.Abs(g[i]);
            if (a > kth || (a == kth && ties-- > 0))
            {
                indices[j] = i;
                values[j++] = g[i];
            }
        }
        return SparseBody.Size(k);
    }

    /// <summary>Indices (ascending) of the elements at or above a sampled threshold; their count.</summary>
    private int Candidates(ReadOnlySpan<float> g, int k)
    {
        int n = g.Length, stride = n / Sample;
        for (int s = 0; s < Sample; s++) _sample[s] = MathF.Abs(g[s * stride]);
        int rank = Math.Min(Sample, (int)Math.Ceiling(1.5 * k * Sample / n) + 8);
        float low = Select.KthLargest(_sample, rank);
        int count = 0, i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            var threshold = Vector256.Create(low);
            for (; i + 8 <= n; i += 8)
            {
                uint mask = Vector256.GreaterThanOrEqual(Vector256.Abs(Vector256.Create(g.Slice(i, 8))), threshold).ExtractMostSignificantBits();
                while (mask != 0)
                {
                    _candidates[count++] = i + System.Numerics.BitOperations.TrailingZeroCount(mask);
                    mask &= mask - 1;
                }
            }
        }
        for (; i < n; i++)
            if (MathF.Abs(g[i]) >= low) _candidates[count++] = i;
        return count;
    }

    protected override void DecodeBody(ReadOnlySpan<byte> body, Span<float> output) => SparseBody.Decode(body, output, "topk");
}

/// <summary>Threshold: every element with |g| >= tau, as (index, value) pairs. Body: 4 + 8m bytes for m kept.</summary>
public sealed class ThresholdCodec : GradientCodec
{
    public ThresholdCodec(double tau)
    {
        if (!(tau >= 0)) throw new ActorTrainException($"compression.threshold = {tau} must be >= 0");
        Tau = (float)tau;
    }

    public float Tau { get; }
    public override CodecKind Kind => CodecKind.Threshold;
    public override int BodySize(int n) => SparseBody.Size(n);

    protected override int EncodeBody(ReadOnlySpan<float> g, Span<byte> body, Rng rng)
    {
        int m = 0;
        foreach (float v in g) if (MathF.Abs(v) >= Tau) m++;
        BinaryPrimitives.WriteInt32LittleEndian(body, m);
        var indices = MemoryMarshal.Cast<byte, int>(body.Slice(4, 4 * m));
        var values = MemoryMarshal.Cast<byte, float>(body.Slice(4 + 4 * m, 4 * m));
        int j = 0;
        for (int i = 0; i < g.Length; i++)
            if (MathF.Abs(g[i]) >= Tau) { indices[j] = i; values[j++] = g[i]; }
        return SparseBody.Size(m);
    }

    protected override void DecodeBody(ReadOnlySpan<byte> body, Span<float> output) => SparseBody.Decode(body, output, "threshold");
}

/// <summary>
/// Random-k: k = max(1, ceil(ratio n)) indices chosen uniformly without replacement from a seed that
/// travels in the message (Floyd's algorithm on a bitmap, read out in ascending order); values
/// scaled by n / k, so the decoded gradient is unbiased. Body: seed (8), k (4), k floats.
/// </summary>
public sealed class RandomKCodec : GradientCodec
{
    public RandomKCodec(double ratio) => Ratio = CheckRatio(ratio);

    public double Ratio { get; }
    public override CodecKind Kind => CodecKind.RandomK;
    public int K(int n) => KeptOf(n, Ratio);
    public override int BodySize(int n) => 12 + 4 * K(n);

    protected override int EncodeBody(ReadOnlySpan<float> g, Span<byte> body, Rng rng)
    {
        int k = K(g.Length);
        ulong seed = rng.NextUInt64();
        BinaryPrimitives.WriteUInt64LittleEndian(body, seed);
        BinaryPrimitives.WriteInt32LittleEndian(body[8..], k);
        var values = MemoryMarshal.Cast<byte, float>(body.Slice(12, 4 * k));
        float scale = k == 0 ? 0 : (float)g.Length / k;
        var indices = System.Buffers.ArrayPool<int>.Shared.Rent(Math.Max(k, 1));
        try
        {
            Indices(seed, g.Length, k, indices);
            for (int j = 0; j < k; j++) values[j] = g[indices[j]] * scale;
        }
        finally
        {
            System.Buffers.ArrayPool<int>.Shared.Return(indices);
        }
        return 12 + 4 * k;
    }

    protected override void DecodeBody(ReadOnlySpan<byte> body, Span<float> output)
    {
        if (body.Length < 12) throw new CompressionFormatException("randomk: body shorter than its seed and count");
        ulong seed = BinaryPrimitives.ReadUInt64LittleEndian(body);
        int k = BinaryPrimitives.ReadInt32LittleEndian(body[8..]);
        if (k < 0 || k > output.Length) throw new CompressionFormatException($"randomk: {k} entries for a gradient of {output.Length}");
        RequireBody(body, 12 + 4 * k, "randomk");
        var values = MemoryMarshal.Cast<byte, float>(body.Slice(12, 4 * k));
        output.Clear();
        var indices = System.Buffers.ArrayPool<int>.Shared.Rent(Math.Max(k, 1));
        try
        {
            Indices(seed, output.Length, k, indices);
            for (int j = 0; j < k; j++) output[indices[j]] = values[j];
        }
        finally
        {
            System.Buffers.ArrayPool<int>.Shared.Return(indices);
        }
    }

    /// <summary>Floyd's sampling of k distinct indices of n into a bitmap, written out ascending.</summary>
    private static void Indices(ulong seed, int n, int k, Span<int> destination)
    {
        int words = (n + 63) / 64;
        var bitmap = System.Buffers.ArrayPool<ulong>.Shared.Rent(Math.Max(words, 1));
        try
        {
            var bits = bitmap.AsSpan(0, words);
            bits.Clear();
            var rng = new Rng(seed);
            for (int j = n - k; j < n; j++)
            {
                int t = rng.NextInt(j + 1);
                int pick = (bits[t >> 6] & (1UL << (t & 63))) != 0 ? j : t;
                bits[pick >> 6] |= 1UL << (pick & 63);
            }
            int count = 0;
            for (int w = 0; w < words; w++)
            {
                ulong word = bits[w];
                while (word != 0)
                {
                    destination[count++] = (w << 6) + System.Numerics.BitOperations.TrailingZeroCount(word);
                    word &= word - 1;
                }
            }
        }
        finally
        {
            System.Buffers.ArrayPool<ulong>.Shared.Return(bitmap);
        }
    }
}

internal static class Select
{
    /// <summary>The k-th largest value (1-based) of <paramref name="values"/>, which it reorders (quickselect).</summary>
    public static float KthLargest(Span<float> values, int k)
    {
        int target = values.Length - k; // index of the k-th largest in ascending order
        int lo = 0, hi = values.Length - 1;
        // a fixed xorshift stream picks the pivots: deterministic, and no allocation on the encode path
        ulong state = 0x9E3779B97F4A7C15UL;
        while (lo < hi)
        {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            float pivot = values[lo + (int)(state % (ulong)(hi - lo + 1))];
            int i = lo, j = hi;
            while (i <= j)
            {
                while (values[i] < pivot) i++;
                while (values[j] > pivot) j--;
                if (i <= j)
                {
                    (values[i], values[j]) = (values[j], values[i]);
                    i++;
                    j--;
                }
            }
            if (target <= j) hi = j;
            else if (target >= i) lo = i;
            else return values[target];
        }
        return values[target];
    }
}
