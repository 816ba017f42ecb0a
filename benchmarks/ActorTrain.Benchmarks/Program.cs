using System.Diagnostics;
using System.Globalization;
using ActorTrain.Benchmarks;
using ActorTrain.Compute;
using ActorTrain.Core.Data;
using ActorTrain.Core.Engines;
using ActorTrain.Core.Precision;
using BenchmarkDotNet.Running;

// `steps` is the quick measurement the PyTorch comparison script calls; anything else goes to
// BenchmarkDotNet (e.g. --filter '*EngineStep*' --job short).
if (args.Length > 0 && args[0] == "steps")
{
    return StepThroughput.Run(args[1..]);
}
if (args.Length > 0 && args[0] == "simulation")
{
    return SimulationBenchmarks.Run(args[1..]);
}
if (args.Length > 0 && args[0] == "wire")
{
    return WireBenchmarks.Run(args[1..]);
}
if (args.Length > 0 && args[0] == "codec-cost")
{
    return CodecCostTable.Run(args[1..]);
}
if (args.Length > 0 && args[0] == "limits")
{
    return MachineLimits.Run();
}
BenchmarkSwitcher.FromAssembly(typeof(EngineStepBenchmarks).Assembly).Run(args);
return 0;

static class StepThroughput
{
    /// <summary>
    /// steps [--engine simd] [--model mlp] [--precision fp16] [--batch 64] [--seconds 3] [--threads 0]:
    /// forward+backward steps per second after a warm-up, printed as one line of key=value pairs.
    /// </summary>
    public static int Run(string[] args)
    {
        string Get(string key, string fallback)
        {
            int i = Array.IndexOf(args, "--" + key);
            return i >= 0 && i + 1 < args.Length ? args[i + 1] : fallback;
        }
        string engineName = Get("engine", "simd"), modelName = Get("model", "mlp"), precisionName = Get("precision", "fp32");
        int batch = int.Parse(Get("batch", "64"), CultureInfo.InvariantCulture);
        double seconds = double.Parse(Get("seconds", "3"), CultureInfo.InvariantCulture);
        int threads = int.Parse(Get("threads", "0"), CultureInfo.InvariantCulture);
        var precision = precisionName == "fp16" ? PrecisionMode.Fp16 : PrecisionMode.Fp32;

        var spec = BenchmarkModels.Build(modelName);
        using var engine = new GradientEngineFactory(engineName, threads).Create(spec, batch);
        var data = SyntheticData.Blobs(batch, 784, 10, 1.0, 7);
        var w = new float[spec.ParameterCount];
        spec.Initialize(w, 7);
        var g = new float[spec.ParameterCount];
        var request = new GradientRequest(precision, precision == PrecisionMode.Fp16 ? 1024f : 1f);

        var warm = Stopwatch.StartNew();
        while (warm.Elapsed.TotalSeconds < Math.Min(1, seconds / 3)) engine.ComputeGradient(w, data.AsBatch(), g, request);
        long steps = 0;
        var sw = Stopwatch.StartNew();
        while (sw.Elapsed.TotalSeconds < seconds)
        {
            engine.ComputeGradient(w, data.AsBatch(), g, request);
            steps++;
        }
        double elapsed = sw.Elapsed.TotalSeconds;
        double stepsPerSecond = steps / elapsed;
        double gflops = stepsPerSecond * spec.FlopsPerSample * batch / 1e9;
        Console.WriteLine(FormattableString.Invariant(
            $"impl=actortrain engine={engine.Name.Split(' ')[0]} model={modelName} precision={precisionName} batch={batch} steps_per_s={stepsPerSecond:F1} samples_per_s={stepsPerSecond * batch:F0} gflops={gflops:F2} ms_per_step={1000 / stepsPerSecond:F3}"));
        return 0;
    }
}

/// <summary>
/// limits: the machine's measured ceilings the engines are held against: FLOP/s of a
/// TensorPrimitives.Dot loop on L1-resident vectors (2 FLOPs per element) on 1 and all cores, and
/// memcpy bandwidth on a 256 MB buffer (bytes read + written).
/// </summary>
static class MachineLimits
{
    public static int Run()
    {
        foreach (int threads in new[] { 1, Environment.ProcessorCount })
        {
            double flops = Parallel(threads, () =>
            {
                var x = new float[4096];
                var y = new float[4096];
                new Random(1).NextBytes(System.Runtime.InteropServices.MemoryMarshal.AsBytes(x.AsSpan()));
                for (int i = 0; i < x.Length; i++) { x[i] = (i % 7) * 0.1f; y[i] = (i % 5) * 0.2f; }
                float sink = 0;
                long n = 0;
                var sw = Stopwatch.StartNew();
                while (sw.Elapsed.TotalSeconds < 2)
                {
                    for (int r = 0; r < 1000; r++) sink += System.Numerics.Tensors.TensorPrimitives.Dot(x, y);
                    n += 1000;
                }
                GC.KeepAlive(sink);
                return 2.0 * x.Length * n / sw.Elapsed.TotalSeconds;
            });
            Console.WriteLine(FormattableString.Invariant($"peak=dot threads={threads} gflops={flops / 1e9:F1}"));
        }
        var from = new byte[256 << 20];
        var to = new byte[256 << 20];
        from.AsSpan().Fill(1);
        to.AsSpan().Fill(2);
        from.AsSpan().CopyTo(to);
        var clock = Stopwatch.StartNew();
        int copies = 0;
        while (clock.Elapsed.TotalSeconds < 2)
        {
            from.AsSpan().CopyTo(to);
            copies++;
        }
        Console.WriteLine(FormattableString.Invariant($"peak=memcpy threads=1 gbytes_per_s={2.0 * from.Length * copies / clock.Elapsed.TotalSeconds / 1e9:F1} (read + write)"));
        return 0;
    }

    private static double Parallel(int threads, Func<double> work)
    {
        var results = new double[threads];
        var all = Enumerable.Range(0, threads).Select(t => new Thread(() => results[t] = work())).ToList();
        all.ForEach(t => t.Start());
        all.ForEach(t => t.Join());
        return results.Sum();
    }
}
