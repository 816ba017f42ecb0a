namespace ActorTrain.Core.Compression;

public enum DownlinkMode
{
    /// <summary>Full FP32 weights.</summary>
    Fp32,
    /// <summary>Full weights rounded to FP16.</summary>
    Fp16,
    /// <summary>The uplink codec applied to the change since what this worker last received, with the shard's own memory.</summary>
    Codec,
}

/// <summary>
/// The compression of an experiment (compression.* keys). The codec is used worker -> shard on every
/// push, with error feedback when <see cref="ErrorFeedback"/> is set; <see cref="Downlink"/> says what
/// shards send back.
/// </summary>
public sealed record CompressionSettings(
    string Codec = "none",
    double Ratio = 0.01,
    int Bits = 8,
    double Threshold = 1e-3,
    int Chunk = 512,
    bool ErrorFeedback = false,
    DownlinkMode Downlink = DownlinkMode.Fp32,
    double DgcMomentum = 0.9,
    double DgcClip = 0,
    int DgcWarmupSteps = 0,
    int Rank = 2,
    bool Lz4 = false)
{
    public static readonly IReadOnlyList<string> Names =
        ["none", "fp16", "u8bit", "qsgd", "terngrad", "onebit", "signsgd", "efsignsgd", "topk", "randomk", "threshold", "dgc", "powersgd"];

    /// <summary>
    /// The compressor of one sender's stream of <paramref name="length"/> values; <paramref name="blocks"/>
    /// are the 2-D matrices inside the stream, used by powersgd.
    /// </summary>
    public IGradientCompressor CreateCompressor(int length, ulong seed, bool errorFeedback, IReadOnlyList<MatrixBlock>? blocks = null) => Codec switch
    {
        "dgc" => new DgcCompressor(length, Ratio, DgcMomentum, DgcClip, DgcWarmupSteps, seed),
        "powersgd" => new GradientCompressor(new PowerSgdCodec(Rank, blocks ?? [], seed), length, errorFeedback, seed, Lz4),
        _ => new GradientCompressor(CreateCodec(), length, errorFeedback, seed, Lz4),
    };

    public static readonly CompressionSettings Dense = new();

    /// <summary>
    /// Why sizes-only runs (model.type = workload) cannot use this codec, or null: the encoded size
    /// must follow from the length alone, without values (threshold keeps what its values decide,
    /// lz4 depends on the bytes, powersgd on the layers' matrix shapes).
    /// </summary>
    public string? SizesOnlyUnsupported() => Codec switch
    {
        "threshold" => "threshold keeps as many values as exceed it, which only real values decide",
        "powersgd" => "powersgd's size follows the layers' matrix shapes, which a workload table does not give",
        _ when Lz4 => "lz4's output size depends on the bytes it compresses",
        _ => null,
    };

    /// <summary>
    /// The encoded size of n values by the codec's formula (the same as its <see cref="GradientCodec.MaxEncodedSize"/>,
    /// which is the exact size for every codec of <see cref="SizesOnlyUnsupported"/> = null), in 64 bits for workloads past 2^29 values.
    /// </summary>
    public long EncodedBytes(long n)
    {
        static long Ceil(long a, long b) => (a + b - 1) / b;
        long kept = n == 0 ? 0 : Math.Clamp((long)Math.Ceiling(Ratio * n), 1, n);
        long body = Codec switch
        {
            "none" => 4 * n,
            "fp16" => 2 * n,
            "u8bit" => 8 + n,
            "qsgd" => 8 + 4 * Ceil(n, Chunk) + Ceil(n * Bits, 8),
            "terngrad" => 4 + Ceil(2 * n, 8),
            "onebit" => 4 + 8 * Ceil(n, Chunk) + Ceil(n, 8),
            "signsgd" => Ceil(n, 8),
            "efsignsgd" => 4 + Ceil(n, 8),
            "topk" or "dgc" => 4 + 8 * kept,
            "randomk" => 12 + 4 * kept,
            _ => throw new ActorTrainException($"compression.codec = {Codec}: {SizesOnlyUnsupported() ?? "no size formula"}"),
        };
        return GradientWire.HeaderSize + body;
    }

    public bool IsDense => Codec == "none";

    public GradientCodec CreateCodec() => Codec switch
    {
        "none" => new NoneCodec(),
        "fp16" => new Fp16Codec(),
        "u8bit" => new U8BitCodec(),
        "qsgd" => new QsgdCodec(Bits, Chunk),
        "terngrad" => new TernGradCodec(),
        "onebit" => new OneBitCodec(Chunk),
        "signsgd" => new SignSgdCodec(),
        "efsignsgd" => new EfSignSgdCodec(),
        "topk" => new TopKCodec(Ratio),
        "randomk" => new RandomKCodec(Ratio),
        "threshold" => new ThresholdCodec(Threshold),
        // DGC's messages are top-k messages; its state lives in DgcCompressor.
        "dgc" => new TopKCodec(Ratio),
        "powersgd" => new PowerSgdCodec(Rank, []),
        _ => throw new ActorTrainException($"compression.codec = \"{Codec}\" is not a codec; choose one of {string.Join(", ", Names)}"),
    };

    public string Describe() => Codec switch
    {
        "none" => "dense fp32",
        "qsgd" => $"qsgd {Bits}-bit",
        "topk" or "randomk" => $"{Codec} {Ratio:0.####}",
        "dgc" => $"dgc {Ratio:0.####} (momentum {DgcMomentum:0.##}{(DgcWarmupSteps > 0 ? $", warm-up {DgcWarmupSteps} steps per stage" : "")})",
        "threshold" => $"threshold {Threshold:G3}",
        "powersgd" => $"powersgd rank {Rank}",
        _ => Codec,
    } + (ErrorFeedback ? " + error feedback" : "") + (Lz4 ? " + lz4" : "") + (Downlink == DownlinkMode.Fp32 ? "" : $", downlink {Downlink.ToString().ToLowerInvariant()}");
}
