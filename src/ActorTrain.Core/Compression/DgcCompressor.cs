using System.Numerics.Tensors;

namespace ActorTrain.Core.Compression;

/// <summary>What a sender needs from a compressor: the largest message and the encoding of one gradient.</summary>
public interface IGradientCompressor
{
    int MaxEncodedSize { get; }

    /// <summary>Encodes a gradient multiplied by <paramref name="lossScale"/>; returns the bytes written.</summary>
    int Compress(ReadOnlySpan<float> gradient, float lossScale, Span<byte> destination);
}

/// <summary>
/// Deep Gradient Compression (Lin et al. 2018) on one gradient stream: local gradient clipping
/// (to <paramref name="clip"/> x loss scale in 2-norm, off when 0), momentum correction
/// (u = m u + g; v = v + u, the accumulation is what gets sparsified), top-k of v at the current
/// density, then momentum factor masking (u and v cleared where sent). The density warms up
/// exponentially: 25%, 6.25%, 1.5625%, 0.4%, then the final density, each stage
/// <paramref name="warmupSteps"/> messages long (0 = no warm-up). The message is an ordinary top-k
/// message. Momentum lives here, so the shard's optimizer should be plain SGD.
/// </summary>
public sealed class DgcCompressor : IGradientCompressor
{
    public static readonly double[] WarmupDensities = [0.25, 0.0625, 0.015625, 0.004];

    private readonly float[] _u, _v, _sent;
    private readonly TopKCodec[] _stages;
    private readonly TopKCodec _final;
    private readonly float _momentum, _clip;
    private readonly int _warmupSteps;
    private readonly Rng _rng;
    private long _messages;
    private float _scale;

    public DgcCompressor(int length, double finalDensity, double momentum, double clip, int warmupSteps, ulong seed)
    {
        if (momentum is < 0 or >= 1) throw new ActorTrainException($"compression.dgc-momentum = {momentum} must be in [0, 1)");
        if (clip < 0) throw new ActorTrainException($"compression.dgc-clip = {clip} must be >= 0");
        if (warmupSteps < 0) throw new ActorTrainException($"compression.dgc-warmup-steps = {warmupSteps} must be >= 0");
        Length = length;
        _u = new float[length];
        _v = new float[length];
        _sent = new float[length];
        _final = new TopKCodec(finalDensity);
        _stages = WarmupDensities.Where(d => d > finalDensity).Select(d => new TopKCodec(d)).ToArray();
        _momentum = (float)momentum;
        _clip = (float)clip;
        _warmupSteps = warmupSteps;
        _rng = new Rng(seed);
    }

    public int Length { get; }

    /// <summary>The largest message is the first warm-up stage's.</summary>
    public int MaxEncodedSize => (_warmupSteps > 0 && _stages.Length > 0 ? _stages[0] : _final).MaxEncodedSize(Length);

    /// <summary>The density the next message will use.</summary>
    public double CurrentDensity => Codec.Ratio;

    private TopKCodec Codec
    {
        get
        {
            long stage = _warmupSteps > 0 ? _messages / _warmupSteps : long.MaxValue;
            return stage < _stages.Length ? _stages[stage] : _final;
        }
    }

    public ReadOnlySpan<float> Momentum => _u;
    public ReadOnlySpan<float> Accumulation => _v;

    public int Compress(ReadOnlySpan<float> gradient, float lossScale, Span<byte> destination)
    {
        if (gradient.Length != Length) throw new ArgumentException($"compressor of {Length} values given {gradient.Length}");
        if (_scale != 0 && _scale != lossScale)
        {
            TensorPrimitives.Multiply(_u, lossScale / _scale, _u);
            TensorPrimitives.Multiply(_v, lossScale / _scale, _v);
        }
        _scale = lossScale;
        float factor = 1;
        if (_clip > 0)
        {
            float norm = TensorPrimitives.Norm(gradient);
            if (norm > _clip * lossScale) factor = _clip * lossScale / norm;
        }
        // u = m u + factor g ; v += u
        TensorPrimitives.Multiply(_u, _momentum, _u);
        TensorPrimitives.MultiplyAdd(gradient, factor, _u, _u);
        TensorPrimitives.Add(_v, _u, _v);
        var codec = Codec;
        int written = codec.Encode(_v, destination, _rng);
        GradientCodec.Decode(destination[..written], _sent);
        for (int i = 0; i < Length; i++)
        {
            if (_sent[i] == 0) continue;
            _v[i] = 0;
            _u[i] = 0;
        }
        _messages++;
        return written;
    }
}
