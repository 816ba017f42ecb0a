using System.Buffers;
using System.Buffers.Binary;
using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;

namespace ActorTrain.Cluster.Remoting;

/// <summary>
/// Little-endian writer (float arrays are copied as their in-memory bytes: the serializer refuses to
/// start on a big-endian machine) over a growable pooled buffer: the body of every message the
/// <see cref="WireSerializer"/> writes. Lengths are written before variable parts, so a reader can
/// check them against what is left before it allocates anything.
/// </summary>
internal sealed class WireWriter : IDisposable
{
    private byte[] _buffer;
    private int _length;

    public WireWriter(int capacity = 256) => _buffer = ArrayPool<byte>.Shared.Rent(capacity);

    public int Length => _length;

    private Span<byte> Take(int count)
    {
        if (_length + count > _buffer.Length)
        {
            var larger = ArrayPool<byte>.Shared.Rent(Math.Max(_buffer.Length * 2, _length + count));
            _buffer.AsSpan(0, _length).CopyTo(larger);
            ArrayPool<byte>.Shared.Return(_buffer);
            _buffer = larger;
        }
        var span = _buffer.AsSpan(_length, count);
        _length += count;
        return span;
    }

    public void Bool(bool value) => Take(1)[0] = value ? (byte)1 : (byte)0;
    public void Int(int value) => BinaryPrimitives.WriteInt32LittleEndian(Take(4), value);
    public void Long(long value) => BinaryPrimitives.WriteInt64LittleEndian(Take(8), value);
    public void Float(float value) => BinaryPrimitives.WriteSingleLittleEndian(Take(4), value);
    public void Double(double value) => BinaryPrimitives.WriteDoubleLittleEndian(Take(8), value);

    /// <summary>Overwrites the int at <paramref name="offset"/> (a length written before the body it measures).</summary>
    public void PatchInt(int offset, int value) => BinaryPrimitives.WriteInt32LittleEndian(_buffer.AsSpan(offset, 4), value);

    public void Bytes(ReadOnlySpan<byte> value)
    {
        Int(value.Length);
        value.CopyTo(Take(value.Length));
    }

    public void String(string value)
    {
        int count = Encoding.UTF8.GetByteCount(value);
        Int(count);
        Encoding.UTF8.GetBytes(value, Take(count));
    }

    public void Floats(ReadOnlySpan<float> values)
    {
        Int(values.Length);
        MemoryMarshal.AsBytes(values).CopyTo(Take(values.Length * sizeof(float)));
    }

    public void Ints(ReadOnlySpan<int> values)
    {
        Int(values.Length);
        MemoryMarshal.AsBytes(values).CopyTo(Take(values.Length * sizeof(int)));
    }

    public void Longs(ReadOnlySpan<long> values)
    {
        Int(values.Length);
        foreach (long v in values) Long(v);
    }

    /// <summary>W3C trace context: a presence byte, then trace id (16), span id (8) and flags (1).</summary>
    public void Trace(ActivityContext context)
    {
        bool present = context != default;
        Bool(present);
        if (!present) return;
        var span = Take(25);
        context.TraceId.CopyTo(span[..16]);
        context.SpanId.CopyTo(span.Slice(16, 8));
        span[24] = (byte)context.TraceFlags;
    }

    public byte[] ToArray() => _buffer.AsSpan(0, _length).ToArray();

    public ReadOnlySpan<byte> Written => _buffer.AsSpan(0, _length);

    public void Dispose()
    {
        ArrayPool<byte>.Shared.Return(_buffer);
        _buffer = [];
    }
}

/// <summary>
/// Reads what <see cref="WireWriter"/> wrote. Every read is bounds-checked and every declared
/// length is checked against the bytes left and the configured maximum before anything is
/// allocated, so a malformed or hostile message fails with a <see cref="WireFormatException"/>
/// instead of an out-of-memory or a half-read object.
/// </summary>
internal ref struct WireReader(ReadOnlySpan<byte> data, int maxLength)
{
    private readonly ReadOnlySpan<byte> _data = data;
    private int _position;

    public int Remaining => _data.Length - _position;

    private ReadOnlySpan<byte> Take(int count)
    {
        if (count < 0 || count > Remaining)
            throw new WireFormatException($"truncated message: {count} bytes needed at offset {_position}, {Remaining} left");
        var span = _data.Slice(_position, count);
        _position += count;
        return span;
    }

    public bool Bool() => Take(1)[0] switch
    {
        0 => false,
        1 => true,
        var b => throw new WireFormatException($"invalid boolean byte {b} at offset {_position - 1}"),
    };

    public int Int() => BinaryPrimitives.ReadInt32LittleEndian(Take(4));
    public long Long() => BinaryPrimitives.ReadInt64LittleEndian(Take(8));
    public float Float() => BinaryPrimitives.ReadSingleLittleEndian(Take(4));
    public double Double() => BinaryPrimitives.ReadDoubleLittleEndian(Take(8));

    /// <summary>A non-negative count of elements of <paramref name="size"/> bytes that fits in what is left and under the maximum.</summary>
    public int Count(int size, string what)
    {
        int count = Int();
        if (count < 0) throw new WireFormatException($"{what}: negative length {count}");
        if ((long)count * size > maxLength)
            throw new WireFormatException($"{what}: {(long)count * size} bytes exceed the maximum message size of {maxLength} bytes (actortrain.cluster.max-message-size)");
        if ((long)count * size > Remaining) throw new WireFormatException($"{what}: declares {(long)count * size} bytes, only {Remaining} left");
        return count;
    }

    public ReadOnlySpan<byte> Bytes(string what) => Take(Count(1, what));

    public string String(string what) => Encoding.UTF8.GetString(Bytes(what));

    public float[] Floats(string what)
    {
        int count = Count(sizeof(float), what);
        var values = new float[count];
        Take(count * sizeof(float)).CopyTo(MemoryMarshal.AsBytes(values.AsSpan()));
        return values;
    }

    public int[] Ints(string what)
    {
        int count = Count(sizeof(int), what);
        var values = new int[count];
        Take(count * sizeof(int)).CopyTo(MemoryMarshal.AsBytes(values.AsSpan()));
        return values;
    }

    public long[] Longs(string what)
    {
        int count = Count(sizeof(long), what);
        var values = new long[count];
        for (int i = 0; i < count; i++) values[i] = Long();
        return values;
    }

    public ActivityContext Trace()
    {
        if (!Bool()) return default;
        var span = Take(25);
        return new ActivityContext(ActivityTraceId.CreateFromBytes(span[..16]), ActivitySpanId.CreateFromBytes(span.Slice(16, 8)),
            (ActivityTraceFlags)span[24], isRemote: true);
    }

    public void End(string manifest)
    {
        if (Remaining != 0) throw new WireFormatException($"{manifest}: {Remaining} bytes left over after the message");
    }
}

/// <summary>A message on the wire that cannot be read: truncated, oversized, or of an unknown kind.</summary>
public sealed class WireFormatException(string message) : System.Runtime.Serialization.SerializationException(message);
