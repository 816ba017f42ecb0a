using System.Buffers.Binary;

namespace ActorTrain.Core.Compression;

public enum CodecKind : byte
{
    None = 0,
    Fp16 = 1,
    U8Bit = 2,
    Qsgd = 3,
    TernGrad = 4,
    OneBit = 5,
    SignSgd = 6,
    EfSignSgd = 7,
    TopK = 8,
    RandomK = 9,
    Threshold = 10,
    PowerSgd = 11,
}

/// <summary>A compressed gradient that cannot be decoded: truncated, corrupt, or not a gradient at all.</summary>
public sealed class CompressionFormatException(string message) : ActorTrainException(message);

/// <summary>
/// The 16-byte header in front of every encoded gradient: magic 0xA7, format version 1, codec,
/// flags, dense length (int32 LE), body length (int32 LE), and the body's length before the lossless
/// stage (int32 LE; equal to the body length without it). The body carries whatever the codec needs
/// to decode itself (scales, levels, seeds, indices), so a receiver needs no configuration.
/// Flag bit 0: the body is LZ4-compressed (<see cref="Lz4Stage"/>).
/// </summary>
public static class GradientWire
{
    public const int HeaderSize = 16;
    private const byte Magic = 0xA7;
    private const byte Version = 1;

    public const byte Lz4Flag = 1;

    public static void WriteHeader(Span<byte> destination, CodecKind codec, int denseLength, int bodyLength, byte flags = 0, int rawBodyLength = -1)
    {
        destination[..HeaderSize].Clear();
        destination[0] = Magic;
        destination[1] = Version;
        destination[2] = (byte)codec;
        destination[3] = flags;
        BinaryPrimitives.WriteInt32LittleEndian(destination[4..], denseLength);
        BinaryPrimitives.WriteInt32LittleEndian(destination[8..], bodyLength);
        BinaryPrimitives.WriteInt32LittleEndian(destination[12..], rawBodyLength < 0 ? bodyLength : rawBodyLength);
    }

    public static byte Flags(ReadOnlySpan<byte> message) => message[3];

    public static int RawBodyLength(ReadOnlySpan<byte> message) => BinaryPrimitives.ReadInt32LittleEndian(message[12..]);

    /// <summary>Reads and checks a header; the body is returned exactly as long as the header says.</summary>
    public static (CodecKind Codec, int DenseLength) Read(ReadOnlySpan<byte> message, out ReadOnlySpan<byte> body)
    {
        if (message.Length < HeaderSize)
            throw new CompressionFormatException($"gradient message of {message.Length} bytes is shorter than its {HeaderSize}-byte header");
        if (message[0] != Magic) throw new CompressionFormatException($"not a gradient message (magic 0x{message[0]:x2}, expected 0x{Magic:x2})");
        if (message[1] != Version) throw new CompressionFormatException($"gradient format version {message[1]} is not supported (expected {Version})");
        if (message[2] > (byte)CodecKind.PowerSgd) throw new CompressionFormatException($"unknown codec id {message[2]}");
        if ((message[3] & ~Lz4Flag) != 0) throw new CompressionFormatException($"unknown flags 0x{message[3]:x2}");
        int dense = BinaryPrimitives.ReadInt32LittleEndian(message[4..]);
        int length = BinaryPrimitives.ReadInt32LittleEndian(message[8..]);
        if (dense < 0 || length < 0) throw new CompressionFormatException($"negative length in header (dense {dense}, body {length})");
        if (message.Length - HeaderSize != length)
            throw new CompressionFormatException($"header announces a {length}-byte body, message carries {message.Length - HeaderSize}");
        body = message.Slice(HeaderSize, length);
        return ((CodecKind)message[2], dense);
    }
}

/// <summary>
/// The optional lossless stage after a lossy codec: LZ4 over the body, kept only when it is smaller
/// (dense float gradients barely shrink; sparse indices and low-entropy codes do).
/// </summary>
public static class Lz4Stage
{
    /// <summary>Compresses the body of the message in place; returns the new message length.</summary>
    public static int Apply(Span<byte> message, int length, Span<byte> scratch)
    {
        int body = length - GradientWire.HeaderSize;
        var raw = message.Slice(GradientWire.HeaderSize, body);
        int packed = K4os.Compression.LZ4.LZ4Codec.Encode(raw, scratch, K4os.Compression.LZ4.LZ4Level.L00_FAST);
        if (packed <= 0 || packed >= body) return length;
        scratch[..packed].CopyTo(raw);
        var (codec, dense) = ((CodecKind)message[2], BinaryPrimitives.ReadInt32LittleEndian(message[4..]));
        GradientWire.WriteHeader(message, codec, dense, packed, GradientWire.Lz4Flag, body);
        return GradientWire.HeaderSize + packed;
    }

    public static int ScratchSize(int bodyLength) => K4os.Compression.LZ4.LZ4Codec.MaximumOutputSize(bodyLength);

    /// <summary>The message with its body decompressed, into <paramref name="destination"/>; returns its length.</summary>
    public static int Undo(ReadOnlySpan<byte> message, ReadOnlySpan<byte> body, Span<byte> destination)
    {
        int raw = GradientWire.RawBodyLength(message);
        if (raw < 0 || raw > destination.Length - GradientWire.HeaderSize)
            throw new CompressionFormatException($"LZ4 stage announces a {raw}-byte body");
        int decoded = K4os.Compression.LZ4.LZ4Codec.Decode(body, destination.Slice(GradientWire.HeaderSize, raw));
        if (decoded != raw) throw new CompressionFormatException($"LZ4 stage: corrupt body (decoded {decoded} of {raw} bytes)");
        GradientWire.WriteHeader(destination, (CodecKind)message[2], BinaryPrimitives.ReadInt32LittleEndian(message[4..]), raw);
        return GradientWire.HeaderSize + raw;
    }
}
