using System.Diagnostics;
using System.Globalization;
using ActorTrain.Cluster.Actors;
using ActorTrain.Cluster.Transport;
using ActorTrain.Core.Simulation;
using ActorTrain.Experiments;
using Akka.Actor;
using Akka.Configuration;

namespace ActorTrain.Benchmarks;

/// <summary>
/// simulation [events [tokens]|scale|validate|tracing|overhead|all]: the virtual clock's own speed and its accuracy, as
/// markdown tables for benchmarks/RESULTS.md.
///   events   - scheduler events per second with a null model (actors that only forward a token);
///              a second argument (1, 64 or 1024) runs only the row with that many tokens in flight;
///   scale    - 1024 simulated workers x 4 shards on a small model: wall time to simulate;
///   validate - the same run under the virtual and the wall clock with injected latency, bandwidth
///              and a fixed compute time: predicted against measured time per step, BSP / ASP / SSP.
/// </summary>
internal static class SimulationBenchmarks
{
    public static int Run(string[] args)
    {
        string what = args.Length > 0 ? args[0] : "all";
        int? tokens = null;
        if (what == "events" && args.Length > 1)
        {
            if (args[1] is not ("1" or "64" or "1024"))
            {
                Console.Error.WriteLine($"simulation events: '{args[1]}' is not a row's tokens in flight; use 1, 64 or 1024 (or nothing for all three)");
                return 2;
            }
            tokens = int.Parse(args[1], CultureInfo.InvariantCulture);
        }
        if (what is "events" or "all") Events(tokens);
        if (what is "scale" or "all") Scale();
        if (what is "validate" or "all") Validate();
        if (what is "tracing" or "all") Tracing();
        if (what is "overhead" or "all") Overhead();
        return 0;
    }

    private sealed record Token(int Hops);

    /// <summary>Forwards a token to the next actor through the link until its hops run out.</summary>
    private sealed class Relay : LinkedActor
    {
        public IActorRef? Next;

        public Relay(ILink link) : base(link)
        {
            Receive<IActorRef>(next => Next = next);
            Receive<Token>(t =>
            {
                if (t.Hops > 0) Link.Send(Next!, new Token(t.Hops - 1), 64, TrafficClass.WorkerToShard, Self);
            });
        }
    }

    /// <summary><paramref name="onlyTokens"/>: only the row with that many tokens in flight (for a profiler), else all three.</summary>
    private static void Events(int? onlyTokens)
    {
        Console.WriteLine("### Scheduler events per second, null model");
        Console.WriteLine();
        Console.WriteLine("A ring of relay actors passes tokens through the virtual link (constant 10 us latency, unlimited bandwidth); each delivery is one event.");
        Console.WriteLine("Each row: two warm-up runs, not counted, then 5 runs; median and range of events / s. The runtime compiles hot code three times " +
            "(quick, instrumented for profile-guided optimisation, optimised), so the first run is mostly JIT and the second runs instrumented code " +
            "(0.47-0.56 M events / s on 1,024 tokens where the later runs reach 2 M; with DOTNET_TieredPGO=0 it ran at 0.94 M). The column of all seven shows them.");
        Console.WriteLine();
        Console.WriteLine("| actors | tokens in flight | events per run | events / s, median | min - max | all 7 runs in order (2 warm-up, 5 counted), M events / s | bytes allocated / event | gen-0 GCs / run |");
        Console.WriteLine("|---:|---:|---:|---:|---:|---|---:|---:|");
        foreach (var (actors, tokens) in new[] { (2, 1), (64, 64), (1024, 1024) })
        {
            if (onlyTokens is { } only && only != tokens) continue;
            var all = Enumerable.Range(0, 7).Select(_ => RelayRun(actors, tokens)).ToList();
            var runs = all.Skip(2).ToList();
            var rates = runs.Select(r => r.Events / r.Seconds).Order().ToList();
            Console.WriteLine(FormattableString.Invariant(
                $"| {actors} | {tokens} | {runs[0].Events} | {rates[rates.Count / 2]:0} | {rates[0]:0} - {rates[^1]:0} | {string.Join(" / ", all.Select(r => (r.Events / r.Seconds / 1e6).ToString("0.00", CultureInfo.InvariantCulture)))} | {runs.Average(r => r.BytesPerEvent):0} | {runs.Average(r => r.Collections):0.0} |"));
        }
        Console.WriteLine();
    }

    /// <summary>One null-model run: <paramref name="tokens"/> tokens around a ring of <paramref name="actors"/> relays, 400,000 hops in all.</summary>
    private static (long Events, double Seconds, double BytesPerEvent, int Collections) RelayRun(int actors, int tokens)
    {
        const int hops = 400_000;
        using var system = ActorSystem.Create("events", ConfigurationFactory.ParseString("akka.loglevel = WARNING"));
        var network = NetworkSettings.Ideal with { Default = LinkSpec.Ideal with { Latency = new Distribution.Constant(10e-6) } };
        var link = new VirtualLink(network, 1, actors, 1);
        var relays = Enumerable.Range(0, actors).Select(_ => system.ActorOf(Props.Create(() => new Relay(link)))).ToArray();
        for (int i = 0; i < actors; i++)
        {
            relays[i].Tell(relays[(i + 1) % actors]);
            link.Attach(relays[i], Endpoint.Worker(i));
        }
        var done = new TaskCompletionSource();
        var idle = system.ActorOf(Props.Create(() => new IdleListener(done)));
        link.NotifyWhenIdle(idle);
        // every relay must know its successor before the first token moves
        Thread.Sleep(200);
        int perToken = hops / tokens;
        for (int t = 0; t < tokens; t++) link.Send(relays[t % actors], new Token(perToken), 64, TrafficClass.Control, ActorRefs.Nobody);
        long allocated = GC.GetTotalAllocatedBytes(precise: true);
        int collections = GC.CollectionCount(0);
        var clock = Stopwatch.StartNew();
        link.Start();
        done.Task.Wait();
        double seconds = clock.Elapsed.TotalSeconds;
        long events = link.Statistics.Events;
        double perEvent = (GC.GetTotalAllocatedBytes(precise: true) - allocated) / (double)events;
        int gcs = GC.CollectionCount(0) - collections;
        system.Terminate().Wait();
        return (events, seconds, perEvent, gcs);
    }

    private sealed class IdleListener : ReceiveActor
    {
        public IdleListener(TaskCompletionSource done) => Receive<SimulationIdle>(_ => done.TrySetResult());
    }

    private static RunResult RunSpec(string[] overrides)
    {
        string root = Path.Combine(Path.GetTempPath(), "actortrain-bench");
        var spec = ExperimentSpec.Load(null, ["output.plots=off", .. overrides]);
        return ExperimentRunner.RunAsync(spec, root).GetAwaiter().GetResult();
    }

    private static void Scale()
    {
        Console.WriteLine("### 1024 simulated workers");
        Console.WriteLine();
        Console.WriteLine("| workers x shards | model | steps | batch | virtual s | wall s | events | events / wall s |");
        Console.WriteLine("|---|---|---:|---:|---:|---:|---:|---:|");
        foreach (int workers in new[] { 256, 1024 })
        {
            var clock = Stopwatch.StartNew();
            var r = RunSpec([$"topology.workers={workers}", "topology.shards=4", "model.type=softmax", "dataset.samples=60000",
                "training.batch-size=16", "training.max-steps=50", "training.eval-every=25", "network.latency=\"lognormal(mu=200us, sigma=0.5)\"",
                "compute.engine=simd", "compute.threads=1"]);
            double wall = clock.Elapsed.TotalSeconds;
            Console.WriteLine(FormattableString.Invariant(
                $"| {workers} x 4 | {r.Summary.Model} | {r.Summary.Steps} | 16 | {r.Summary.ElapsedSeconds:0.0000} | {wall:0.00} | {r.Summary.Network.Events} | {r.Summary.Network.Events / wall:0} |"));
        }
        Console.WriteLine();
    }

    /// <summary>Wall time of the same whole runs (data, topology, files, trace flush) with telemetry off and on, alternating after a warm-up pair, 11 each: medians and minima (the minimum is the least disturbed by other load).</summary>
    private static void Tracing()
    {
        Console.WriteLine("### Tracing overhead");
        Console.WriteLine();
        Console.WriteLine("| run | trace-every | spans | trace file, bytes per step (gzip / plain) | off: median (min) wall s | on (file): median (min) wall s | overhead, medians | overhead, minima |");
        Console.WriteLine("|---|---:|---:|---:|---:|---:|---:|---:|");
        var runs = new (string Name, string? File, string[] Set)[]
        {
            ("quickstart (MLP 32-64-8, 4 workers, 1000 steps)", null, []),
            ("sync-policies bsp (MLP 64-256-256-10, 4 workers, 160 steps)", "hocon/experiments/sync-policies.conf", ["compare=[]", "training.target-loss=0", "training.max-steps=160"]),
        };
        if (File.Exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"))
            runs = [.. runs, ("fashion-mnist (MLP 784-256-128-10, 4 workers, 300 steps)", "hocon/experiments/fashion-mnist.conf", ["training.max-steps=300", "training.target-accuracy=0"])];
        runs = [.. runs, (runs[0].Name, runs[0].File, ["telemetry.trace-every=10"])];
        foreach (var (name, file, set) in runs)
        {
            var off = new List<double>();
            var on = new List<double>();
            long spans = 0, steps = 1, gzipBytes = 0, plainBytes = 0;
            // the first pair warms up the JIT and the thread pools and is not counted
            for (int i = -1; i < 11; i++)
            {
                foreach (bool tracing in new[] { false, true })
                {
                    string root = Path.Combine(Path.GetTempPath(), "actortrain-bench");
                    var spec = ExperimentSpec.Load(file, ["output.plots=off", $"telemetry.exporter={(tracing ? "file" : "none")}", .. set]);
                    // the whole run: topology, export and the final flush of the trace file
                    var clock = Stopwatch.StartNew();
                    var r = ExperimentRunner.RunAsync(spec, root).GetAwaiter().GetResult();
                    if (i >= 0) (tracing ? on : off).Add(clock.Elapsed.TotalSeconds);
                    if (tracing)
                    {
                        spans = Experiments.Telemetry.TraceFile.Read(r.Folder).Spans.Count;
                        steps = Math.Max(1, r.Summary.Steps);
                        string traces = Experiments.Telemetry.TraceStore.Find(r.Folder)!;
                        gzipBytes = new FileInfo(traces).Length;
                        plainBytes = Experiments.Telemetry.TraceStore.ReadLines(traces).Sum(l => (long)System.Text.Encoding.UTF8.GetByteCount(l) + 1);
                    }
                    Directory.Delete(r.Folder, recursive: true);
                }
            }
            double a = Median(off), b = Median(on), minA = off.Min(), minB = on.Min();
            string every = set.FirstOrDefault(x => x.StartsWith("telemetry.trace-every=", StringComparison.Ordinal))?.Split('=')[1] ?? "1";
            Console.WriteLine(FormattableString.Invariant(
                $"| {name} | {every} | {spans} | {gzipBytes / (double)steps:0} / {plainBytes / (double)steps:0} | {a:0.000} ({minA:0.000}) | {b:0.000} ({minB:0.000}) | {100 * (b - a) / a:+0.0;-0.0}% | {100 * (minB - minA) / minA:+0.0;-0.0}% |"));
        }
        Console.WriteLine();
    }

    /// <summary>
    /// The share of a run's wall time not spent on gradients and optimizer math: 1 - (gradient
    /// seconds + shard seconds) / (wall seconds x cores), all measured (real) times, telemetry off.
    /// </summary>
    /// <summary>How long <see cref="Overhead"/> runs each row before counting: until the runtime's tiered compilation has settled.</summary>
    private const double WarmUpSeconds = 5;

    private static void Overhead()
    {
        Console.WriteLine("### Simulation overhead");
        Console.WriteLine();
        Console.WriteLine($"Cores: {Environment.ProcessorCount}. Gradient = the engines' real time; shard = decoding, accumulating, the optimizer step and encoding the answer; evaluation = the test-split forward passes (eval-every and the final one), off the coordinator's thread. Median of 5 after warming up for {WarmUpSeconds} s of runs (at least one).");
        Console.WriteLine();
        Console.WriteLine("Floor: the first overhead if the cores never idled (wall = all the work / cores), i.e. evaluation / (gradient + shard + evaluation): with these work times no run goes below it. The second overhead's floor is 0. " +
            "Both are shares, so faster work raises them at the same machinery cost; the last column is that cost itself: core time neither on gradients, the shards nor evaluation, per step.");
        Console.WriteLine();
        Console.WriteLine("| run | clock | warm-up runs | wall s | gradient s | shard s | evaluation s | overhead: 1 - (gradient + shard) / (wall x cores) | its floor | overhead, evaluation counted as work | (wall x cores - work) / steps, ms |");
        Console.WriteLine("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        var runs = new (string Name, string? File, string[] Set)[]
        {
            ("quickstart (4 workers, 1000 steps)", null, ["simulation.clock=virtual"]),
            ("quickstart (4 workers, 1000 steps)", null, ["simulation.clock=wall"]),
            ("64 workers x 4 shards, MLP 32-64-8, 100 steps", null, ["simulation.clock=virtual", "topology.workers=64", "topology.shards=4", "training.max-steps=100", "compute.threads=1"]),
        };
        if (File.Exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"))
            runs = [.. runs, ("fashion-mnist MLP (4 workers, 300 steps)", "hocon/experiments/fashion-mnist.conf", ["simulation.clock=wall", "training.max-steps=300", "training.target-accuracy=0"]),
                // the same on an ideal network: under the wall clock the default network's transfers are waited out (modelled time, not machinery)
                ("fashion-mnist MLP (4 workers, 300 steps, ideal network)", "hocon/experiments/fashion-mnist.conf", ["simulation.clock=wall", "training.max-steps=300", "training.target-accuracy=0",
                    "network.latency=\"constant(0us)\"", "network.bandwidth=unlimited"])];
        foreach (var (name, file, set) in runs)
        {
            RunSummary Once()
            {
                string root = Path.Combine(Path.GetTempPath(), "actortrain-bench");
                var r = ExperimentRunner.RunAsync(ExperimentSpec.Load(file, ["output.plots=off", "telemetry.exporter=none", .. set]), root).GetAwaiter().GetResult();
                Directory.Delete(r.Folder, recursive: true);
                return r.Summary;
            }
            // warm up for WarmUpSeconds of runs (at least one): the runtime recompiles hot code twice (instrumented, then
            // optimised) in the background, and a quickstart run (0.05 s warm) settles after about 20 runs, 4 s (medians of runs 0-4 / 5-9 / 10-19 / 20-29: 0.25 / 0.081 / 0.067 / 0.052 s)
            int warmUps = 0;
            for (var warming = Stopwatch.StartNew(); warmUps == 0 || warming.Elapsed.TotalSeconds < WarmUpSeconds; warmUps++) Once();
            var samples = new List<(double Wall, double Gradient, double Shard, double Evaluation, long Steps)>();
            for (int i = 0; i < 5; i++)
            {
                var r = Once();
                samples.Add((r.WallSeconds, r.GradientSeconds, r.OptimizerSeconds, r.EvaluationSeconds, r.Steps));
            }
            var m = samples.OrderBy(x => x.Wall).ElementAt(samples.Count / 2);
            double share = (m.Gradient + m.Shard) / (m.Wall * Environment.ProcessorCount);
            double withEvaluation = (m.Gradient + m.Shard + m.Evaluation) / (m.Wall * Environment.ProcessorCount);
            double floor = m.Evaluation / (m.Gradient + m.Shard + m.Evaluation);
            double machinery = (m.Wall * Environment.ProcessorCount - m.Gradient - m.Shard - m.Evaluation) / Math.Max(1, m.Steps);
            Console.WriteLine(FormattableString.Invariant(
                $"| {name} | {set[0].Split('=')[1]} | {warmUps} | {m.Wall:0.000} | {m.Gradient:0.000} | {m.Shard:0.000} | {m.Evaluation:0.000} | {100 * (1 - share):0.0}% | {100 * floor:0.0}% | {100 * (1 - withEvaluation):0.0}% | {1000 * machinery:0.000} |"));
        }
        Console.WriteLine();
    }

    private static double Median(List<double> values)
    {
        values.Sort();
        return values[values.Count / 2];
    }

    private static void Validate()
    {
        Console.WriteLine("### Virtual clock against the wall clock");
        Console.WriteLine();
        Console.WriteLine("4 workers x 2 shards, MLP 32-64-8, batch 32; every gradient takes a fixed 4 ms (worker 0: 8 ms, a 2x straggler); latency constant 1 ms, bandwidth 100 Mbit/s; 200 global steps.");
        Console.WriteLine("The wall-clock run really waits: the delay line holds each message, each worker sleeps the rest of its 4 ms.");
        Console.WriteLine();
        Console.WriteLine("| policy | predicted (virtual) ms / step | measured (wall) ms / step | measured / predicted |");
        Console.WriteLine("|---|---:|---:|---:|");
        foreach (string policy in new[] { "bsp", "asp", "ssp" })
        {
            string[] common = ["simulation.compute-time=4ms", "network.latency=\"constant(1ms)\"", "network.bandwidth=100Mbps", $"sync.policy={policy}",
                "sync.staleness=2", "stragglers.workers=[0]", "stragglers.factor=2", "training.max-steps=200", "training.eval-every=50",
                "compute.engine=simd", "simulation.shard-device=cpu"];
            var simulated = RunSpec([.. common, "simulation.clock=virtual"]);
            var measured = RunSpec([.. common, "simulation.clock=wall"]);
            double predicted = 1000 * simulated.Summary.ElapsedSeconds / simulated.Summary.Steps;
            double actual = 1000 * measured.Summary.ElapsedSeconds / measured.Summary.Steps;
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| {policy} | {predicted:0.000} | {actual:0.000} | {actual / predicted:0.000} |"));
        }
        Console.WriteLine();
    }
}
