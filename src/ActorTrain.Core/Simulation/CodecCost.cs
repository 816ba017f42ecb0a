using ActorTrain.Core.Compression;

namespace ActorTrain.Core.Simulation;

/// <summary>How compression.cost times the codecs under the virtual clock.</summary>
public enum CodecCostMode
{
    /// <summary>Encoding and decoding take no time (the first build's behaviour).</summary>
    Off,
    /// <summary>The device profile's time for the codec's memory traffic and arithmetic (<see cref="CodecCost"/>).</summary>
    Model,
    /// <summary>What the codec really took on this machine (not reproducible).</summary>
    Measured,
}

/// <summary>
/// One element-wise kernel's work: bytes read and written at the device's memory bandwidth,
/// element operations at its element-wise rate, and kernel launches.
/// </summary>
public readonly record struct KernelWork(double BytesRead, double BytesWritten, double Operations, int Launches)
{
    public double Seconds(DeviceProfile device) =>
        (BytesRead + BytesWritten) / device.MemoryBytesPerSecond + Operations / device.ElementOps + Launches * device.LaunchSeconds;

    public static KernelWork operator +(KernelWork a, KernelWork b) =>
        new(a.BytesRead + b.BytesRead, a.BytesWritten + b.BytesWritten, a.Operations + b.Operations, a.Launches + b.Launches);
}

/// <summary>
/// What encoding and decoding n FP32 values costs, per codec: its passes over the input (bytes
/// read), what it writes (the encoded message, or the dense output), and its arithmetic as
/// element operations per value: a conversion, a compare, a random draw, a multiply-add each
/// count as a few. The operation counts follow each codec's inner loop and were calibrated on the
/// cpu profile against the codecs measured in benchmarks/RESULTS.md (one core, 1M values): every
/// codec's modelled time is within 2x of its measurement there (the table is in RESULTS.md,
/// "Codec cost model"). PowerSGD counts its matrix products' FLOPs (8mnr to encode an m x n block
/// at rank r: P = MQ, Q = M^T P, twice each for the orthogonalisation's passes; 2mnr to decode);
/// DGC adds its momentum and accumulation passes to top-k's selection. lz4 on top of a codec is
/// not costed.
/// </summary>
public static class CodecCost
{
    /// <summary>Encoding <paramref name="n"/> values into <paramref name="encodedBytes"/>.</summary>
    public static KernelWork Encode(CompressionSettings codec, long n, long encodedBytes, IReadOnlyList<MatrixBlock>? blocks = null)
    {
        double read = 4.0 * n;
        return codec.Codec switch
        {
            "none" => new(read, encodedBytes, 0, 1),
            "fp16" => new(read, encodedBytes, 4.0 * n, 1),
            // min/max pass, then the quantising pass
            "u8bit" => new(2 * read, encodedBytes, 5.0 * n, 2),
            // norm pass, then scale, draw, round and pack; codes under 8 bits go through the bit writer
            "qsgd" => new(2 * read, encodedBytes, (codec.Bits < 8 ? 24.0 : 12.0) * n, 2),
            "terngrad" => new(2 * read, encodedBytes, 8.5 * n, 2),
            "onebit" => new(2 * read, encodedBytes, 22.0 * n, 2),
            "signsgd" => new(read, encodedBytes, 0.1 * n, 1),
            "efsignsgd" => new(2 * read, encodedBytes, 0.25 * n, 2),
            // a magnitude pass against a sampled threshold, then collecting the candidates
            "topk" => new(2 * read, encodedBytes, 2.5 * n, 2),
            "randomk" => new(codec.Ratio * read, encodedBytes, 0.5 * n, 1),
            "threshold" => new(read, encodedBytes, 8.0 * n, 1),
            // momentum and residual accumulation (read 3 arrays, write 2), then top-k
            "dgc" => new(5 * read, 2 * read + encodedBytes, 5.5 * n, 4),
            "powersgd" => PowerSgd(codec.Rank, n, encodedBytes, blocks, encode: true),
            _ => throw new ActorTrainException($"compression.codec = \"{codec.Codec}\" has no cost model"),
        };
    }

    /// <summary>Decoding <paramref name="encodedBytes"/> back into <paramref name="n"/> dense values.</summary>
    public static KernelWork Decode(CompressionSettings codec, long n, long encodedBytes, IReadOnlyList<MatrixBlock>? blocks = null)
    {
        if (codec.Codec == "powersgd") return PowerSgd(codec.Rank, n, encodedBytes, blocks, encode: false);
        double ops = codec.Codec switch
        {
            "none" or "topk" or "dgc" => 0,
            "fp16" => 0.5,
            "u8bit" => 2,
            "qsgd" => codec.Bits < 8 ? 19 : 16,
            "terngrad" => 10,
            "onebit" => 18,
            "signsgd" or "efsignsgd" => 0.25,
            "randomk" => 0.4,
            "threshold" => 0.25,
            _ => throw new ActorTrainException($"compression.codec = \"{codec.Codec}\" has no cost model"),
        };
        return new(encodedBytes, 4.0 * n, ops * n, 1);
    }

    private static KernelWork PowerSgd(int rank, long n, long encodedBytes, IReadOnlyList<MatrixBlock>? blocks, bool encode)
    {
        double flops = 0, matrix = 0;
        foreach (var b in blocks ?? [])
        {
            flops += (encode ? 8.0 : 2.0) * b.Rows * b.Cols * rank;
            matrix += b.Length;
        }
        // the block's matrix is read twice to encode (MQ, then M^T P); the rest of the range passes as FP32
        return encode
            ? new(8.0 * matrix + 4.0 * (n - matrix), encodedBytes, flops, 2 * Math.Max(1, blocks?.Count ?? 0))
            : new(encodedBytes, 4.0 * n, flops, Math.Max(1, blocks?.Count ?? 0));
    }
}

/// <summary>
/// The time an actor spends in a codec under compression.cost: nothing (off), the device profile's
/// model, or what the call really took (measured).
/// </summary>
public sealed record CodecTimer(CompressionSettings Codec, CodecCostMode Mode, DeviceProfile? Device)
{
    public static readonly CodecTimer Off = new(CompressionSettings.Dense, CodecCostMode.Off, null);

    public double Encode(long n, long encodedBytes, double measured, IReadOnlyList<MatrixBlock>? blocks = null) => Mode switch
    {
        CodecCostMode.Model when Device is { } d => CodecCost.Encode(Codec, n, encodedBytes, blocks).Seconds(d),
        CodecCostMode.Measured => measured,
        _ => 0,
    };

    public double Decode(long n, long encodedBytes, double measured, IReadOnlyList<MatrixBlock>? blocks = null) => Mode switch
    {
        CodecCostMode.Model when Device is { } d => CodecCost.Decode(Codec, n, encodedBytes, blocks).Seconds(d),
        CodecCostMode.Measured => measured,
        _ => 0,
    };
}
