using System.Diagnostics;
using System.Globalization;
using ActorTrain.Core;
using ActorTrain.Core.Compression;
using ActorTrain.Core.Simulation;

namespace ActorTrain.Benchmarks;

/// <summary>
/// codec-cost [--repeat 20]: every codec's encode and decode of 1M FP32 values (N(0, 0.01^2)),
/// measured here on one thread (the median of the repeats), beside compression.cost = model's time
/// for the cpu profile and for the GPU profiles: the calibration table of benchmarks/RESULTS.md.
/// </summary>
public static class CodecCostTable
{
    public static int Run(string[] args)
    {
        int repeat = args.Length >= 2 && args[0] == "--repeat" ? int.Parse(args[1], CultureInfo.InvariantCulture) : 20;
        const int n = 1 << 20;
        var rng = new Rng(7);
        var gradient = new float[n];
        for (int i = 0; i < n; i++) gradient[i] = (float)(rng.NextGaussian() * 0.01);
        var decoded = new float[n];
        var rows = new (string Name, CompressionSettings Settings, MatrixBlock[]? Blocks)[]
        {
            ("none", new("none"), null), ("fp16", new("fp16"), null), ("u8bit", new("u8bit"), null),
            ("qsgd 8-bit (bucket 512)", new("qsgd", Bits: 8, Chunk: 512), null), ("qsgd 2-bit (bucket 64)", new("qsgd", Bits: 2, Chunk: 64), null),
            ("terngrad", new("terngrad"), null), ("onebit (chunk 512)", new("onebit", Chunk: 512), null),
            ("signsgd", new("signsgd"), null), ("efsignsgd", new("efsignsgd"), null), ("topk 1%", new("topk", Ratio: 0.01), null),
            ("randomk 1%", new("randomk", Ratio: 0.01), null), ("threshold 0.02", new("threshold", Threshold: 0.02), null),
            ("powersgd rank 4 (1024 x 1024)", new("powersgd", Rank: 4), [new MatrixBlock(0, 1024, 1024)]),
        };
        var cpu = DeviceProfile.Presets["cpu"];
        Console.WriteLine("| codec | encode measured (us) | encode model cpu (us) | ratio | decode measured (us) | decode model cpu (us) | ratio | encode model v100 / h100 (us) |");
        Console.WriteLine("|---|---:|---:|---:|---:|---:|---:|---:|");
        foreach (var (name, settings, blocks) in rows)
        {
            var compressor = settings.CreateCompressor(n, 11, errorFeedback: false, blocks);
            var encoded = new byte[compressor.MaxEncodedSize];
            int length = 0;
            double encode = Median(repeat, () => length = compressor.Compress(gradient, 1f, encoded));
            double decode = Median(repeat, () => GradientCodec.Decode(encoded.AsSpan(0, length), decoded));
            double modelEncode = CodecCost.Encode(settings, n, length, blocks).Seconds(cpu) * 1e6;
            double modelDecode = CodecCost.Decode(settings, n, length, blocks).Seconds(cpu) * 1e6;
            double v100 = CodecCost.Encode(settings, n, length, blocks).Seconds(DeviceProfile.Presets["v100"]) * 1e6;
            double h100 = CodecCost.Encode(settings, n, length, blocks).Seconds(DeviceProfile.Presets["h100"]) * 1e6;
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"| {name} | {encode:N1} | {modelEncode:N1} | {modelEncode / encode:0.00} | {decode:N1} | {modelDecode:N1} | {modelDecode / decode:0.00} | {v100:N1} / {h100:N1} |"));
        }
        return 0;
    }

    private static double Median(int repeat, Action action)
    {
        action();
        var times = new double[repeat];
        for (int i = 0; i < repeat; i++)
        {
            long start = Stopwatch.GetTimestamp();
            action();
            times[i] = Stopwatch.GetElapsedTime(start).TotalMicroseconds;
        }
        Array.Sort(times);
        return times[repeat / 2];
    }
}
