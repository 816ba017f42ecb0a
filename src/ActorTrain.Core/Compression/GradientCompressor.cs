using System.Numerics.Tensors;

namespace ActorTrain.Core.Compression;

/// <summary>
/// One sender's compression of one gradient stream (a worker's slice for one shard): a codec and,
/// with error feedback, the residual memory e, so that each message encodes g + e and
/// e becomes g + e - decode(encode(g + e)). Gradients arrive multiplied by the sender's loss scale;
/// when the scale changes, the residual is rescaled with it so it stays in the same units.
/// Buffers are allocated once; Compress does not allocate.
/// </summary>
public sealed class GradientCompressor : IGradientCompressor
{
    private readonly GradientCodec _codec;
    private readonly Rng _rng;
    private readonly float[]? _residual;
    private readonly float[] _corrected;
    private readonly float[] _decoded;
    private float _scale;

    private readonly byte[] _lz4;

    public GradientCompressor(GradientCodec codec, int length, bool errorFeedback, ulong seed, bool lz4 = false)
    {
        _codec = codec;
        _lz4 = lz4 ? new byte[Lz4Stage.ScratchSize(codec.BodySize(length))] : [];
        Length = length;
        _rng = new Rng(seed);
        _residual = errorFeedback ? new float[length] : null;
        _corrected = errorFeedback ? new float[length] : [];
        _decoded = errorFeedback ? new float[length] : [];
    }

    public int Length { get; }
    public GradientCodec Codec => _codec;
    public bool ErrorFeedback => _residual is not null;
    public int MaxEncodedSize => _codec.MaxEncodedSize(Length);

    /// <summary>The error-feedback memory (empty without error feedback).</summary>
    public ReadOnlySpan<float> Residual => _residual;

    /// <summary>Encodes into <paramref name="destination"/> and returns the bytes written.</summary>
    public int Compress(ReadOnlySpan<float> gradient, float lossScale, Span<byte> destination)
    {
        if (gradient.Length != Length) throw new ArgumentException($"compressor of {Length} values given {gradient.Length}");
        int written = Encode(gradient, lossScale, destination);
        return _lz4.Length > 0 ? Lz4Stage.Apply(destination, written, _lz4) : written;
    }

    private int Encode(ReadOnlySpan<float> gradient, float lossScale, Span<byte> destination)
    {
        if (_residual is null) return _codec.Encode(gradient, destination, _rng);
        if (_scale != 0 && _scale != lossScale) TensorPrimitives.Multiply(_residual, lossScale / _scale, _residual);
        _scale = lossScale;
        TensorPrimitives.Add(gradient, _residual, _corrected);
        int written = _codec.Encode(_corrected, destination, _rng);
        GradientCodec.Decode(destination[..written], _decoded);
        TensorPrimitives.Subtract(_corrected, _decoded, _residual);
        return written;
    }
}
