using ActorTrain.Core;
using ActorTrain.Core.Compression;
using BenchmarkDotNet.Attributes;

namespace ActorTrain.Benchmarks;

/// <summary>
/// Encode and decode of a 1M-element FP32 gradient per codec (worker side: top-k's selection,
/// error feedback not included), beside a memcpy of the same 4 MB as the ceiling.
/// </summary>
[DenseThroughputColumn]
public class CodecBenchmarks
{
    public const int Length = 1 << 20;

    [Params("none", "fp16", "u8bit", "qsgd8", "qsgd2", "terngrad", "onebit", "signsgd", "efsignsgd", "topk1", "randomk1", "threshold", "powersgd4")]
    public string Codec { get; set; } = "none";

    private GradientCodec _codec = null!;
    private float[] _gradient = null!, _output = null!;
    private byte[] _message = null!;
    private int _length;
    private Rng _rng = null!;

    [GlobalSetup]
    public void Setup()
    {
        var rng = new Rng(1);
        _gradient = Enumerable.Range(0, Length).Select(_ => (float)(0.01 * rng.NextGaussian())).ToArray();
        _output = new float[Length];
        _codec = Codec switch
        {
            "qsgd8" => new QsgdCodec(8),
            "qsgd2" => new QsgdCodec(2, 64),
            "topk1" => new TopKCodec(0.01),
            "randomk1" => new RandomKCodec(0.01),
            "threshold" => new ThresholdCodec(0.02),
            "onebit" => new OneBitCodec(),
            // a 1024 x 1024 matrix, rank 4
            "powersgd4" => new PowerSgdCodec(4, [new MatrixBlock(0, 1024, 1024)]),
            var name => new CompressionSettings(name).CreateCodec(),
        };
        _message = new byte[_codec.MaxEncodedSize(Length)];
        _rng = new Rng(2);
        _length = _codec.Encode(_gradient, _message, _rng);
    }

    [Benchmark]
    public int Encode() => _codec.Encode(_gradient, _message, _rng);

    [Benchmark]
    public void Decode() => GradientCodec.Decode(_message.AsSpan(0, _length), _output);
}

/// <summary>The ceiling: copying the same 4 MB.</summary>
[DenseThroughputColumn]
public class MemcpyBenchmark
{
    private readonly float[] _source = new float[CodecBenchmarks.Length];
    private readonly float[] _target = new float[CodecBenchmarks.Length];

    [Benchmark]
    public void Memcpy() => _source.AsSpan().CopyTo(_target);
}
