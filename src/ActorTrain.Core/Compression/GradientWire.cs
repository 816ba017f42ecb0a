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
/// flags (reserved, 0), dense length (int32 LE), body length (int32 LE), 4 reserved bytes. The body
/// carries whatever the codec needs to decode itself (scales, levels, seeds, indices), so a receiver
/// needs no configuration to decode a message.
/// </summary>
public static class GradientWire
{
    public const int HeaderSize = 16;
    private const byte Magic = 0xA7;
    private const byte Version = 1;

    public static void WriteHeader(Span<byte> destination, CodecKind codec, int denseLength, int bodyLength)
    {
        destination[..HeaderSize].Clear();
        destination[0] = Magic;
        destination[1] = Version;
        destination[2] = (byte)codec;
        BinaryPrimitives.WriteInt32LittleEndian(destination[4..], denseLength);
        BinaryPrimitives.WriteInt32LittleEndian(destination[8..], bodyLength);
    }

    /// <summary>Reads and checks a header; the body is returned exactly as long as the header says.</summary>
    public static (CodecKind Codec, int DenseLength) Read(ReadOnlySpan<byte> message, out ReadOnlySpan<byte> body)
    {
        if (message.Length < HeaderSize)
            throw new CompressionFormatException($"gradient message of {message.Length} bytes is shorter than its {HeaderSize}-byte header");
        if (message[0] != Magic) throw new CompressionFormatException($"not a gradient message (magic 0x{message[0]:x2}, expected 0x{Magic:x2})");
        if (message[1] != Version) throw new CompressionFormatException($"gradient format version {message[1]} is not supported (expected {Version})");
        if (message[2] > (byte)CodecKind.PowerSgd) throw new CompressionFormatException($"unknown codec id {message[2]}");
        int dense = BinaryPrimitives.ReadInt32LittleEndian(message[4..]);
        int length = BinaryPrimitives.ReadInt32LittleEndian(message[8..]);
        if (dense < 0 || length < 0) throw new CompressionFormatException($"negative length in header (dense {dense}, body {length})");
        if (message.Length - HeaderSize != length)
            throw new CompressionFormatException($"header announces a {length}-byte body, message carries {message.Length - HeaderSize}");
        body = message.Slice(HeaderSize, length);
        return ((CodecKind)message[2], dense);
    }
}
