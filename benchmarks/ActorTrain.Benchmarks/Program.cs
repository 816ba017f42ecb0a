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
