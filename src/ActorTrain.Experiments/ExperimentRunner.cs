using ActorTrain.Core.Collectives;
using System.Globalization;
using ActorTrain.Cluster.Actors;
using ActorTrain.Cluster.Telemetry;
using ActorTrain.Cluster.Transport;
using ActorTrain.Compute;
using ActorTrain.Core;
using ActorTrain.Core.Optimization;
using ActorTrain.Experiments.Telemetry;
using Akka.Actor;
using Akka.Configuration;

namespace ActorTrain.Experiments;

/// <summary>What a finished run left behind.</summary>
public sealed record RunResult(string Folder, RunSummary Summary, RunOutcome Outcome);

/// <summary>
/// Runs one experiment in one process: one ActorSystem holding the coordinator, shards and workers.
/// Results are written into a hidden ".partial" folder that is renamed to runs/name-timestamp only
/// when everything is written, and removed on failure, so a folder that looks finished is finished.
/// </summary>
public static class ExperimentRunner
{
    /// <summary>
    /// Wall clock: a thread per worker (a worker blocks its thread for compute and for modelled
    /// time it sleeps; Akka's ForkJoinDispatcher with 4 threads was measured running only 2 of 4
    /// such workers at a time). Virtual clock: nothing sleeps, so a pool of one thread per core.
    /// </summary>
    public const string PinnedDispatcher = "actortrain.pinned-dispatcher";
    public const string ComputeDispatcher = "actortrain.compute-dispatcher";

    public static async Task<RunResult> RunAsync(ExperimentSpec spec, string? outputRoot = null, IRunObserver? observer = null,
        CancellationToken cancellation = default)
    {
        string root = outputRoot ?? spec.Output.Directory;
        return await RunInto(spec, ExperimentData.Build(spec), root, $"{spec.Name}-{Stamp()}", observer, cancellation);
    }

    /// <summary>
    /// Runs every variant of a compare block one after another into one run folder (a subfolder per
    /// variant) and writes the comparison table beside them: comparison.md, comparison.csv, summary.json.
    /// </summary>
    public static async Task<ComparisonResult> RunComparisonAsync(ExperimentSpec spec, string? outputRoot = null,
        Func<ExperimentVariant, IRunObserver?>? observers = null, CancellationToken cancellation = default)
    {
        if (spec.Variants.Count == 0) throw new ArgumentException("the experiment has no compare block", nameof(spec));
        // Every variant's input is checked before any runs. Variants that agree on data, model and
        // topology share one ExperimentData (a sweep over learning rates holds one copy of the data).
        var cache = new Dictionary<string, ExperimentData>();
        var data = spec.Variants.Select(v =>
        {
            var s = v.Spec;
            // a workload's stand-in data holds one mini-batch per worker
            string key = string.Join('|', s.Dataset, s.Seed, s.Topology, s.Model.Type, string.Join(',', s.Model.Hidden), s.Model.Activation, s.Model.Workload,
                s.Model.IsWorkload ? s.Training.BatchSize : 0);
            if (!cache.TryGetValue(key, out var built)) cache[key] = built = ExperimentData.Build(s);
            return (ExperimentData?)built;
        }).ToList();
        cache.Clear();
        string root = outputRoot ?? spec.Output.Directory;
        var folder = RunFolder.Create(root, $"{spec.Name}-{Stamp()}");
        string partial = folder.Partial;
        try
        {
            File.WriteAllText(Path.Combine(partial, "config.conf"), spec.ResolvedConfig);
            var results = new List<(ExperimentVariant, RunResult)>();
            for (int v = 0; v < spec.Variants.Count; v++)
            {
                var variant = spec.Variants[v];
                results.Add((variant, await RunInto(variant.Spec, data[v]!, partial, variant.Name, observers?.Invoke(variant), cancellation)));
                data[v] = null; // a variant's data is not needed once it has run
                if (cancellation.IsCancellationRequested) break; // interrupted: the table holds the variants run so far
            }
            var comparison = Comparison.Create(spec, results);
            comparison.Write(partial);
            var plots = spec.Output.Plots
                ? Plots.WriteComparison(partial, results.Select(r => (r.Item1.Name, r.Item2.Outcome)).ToList(), spec.Training.TargetLoss)
                : [];
            Report.WriteComparison(partial, comparison, plots, spec.Sweep.Values.Count > 0 ? "sweep" : "comparison");
            string final = folder.Publish(cancellation.IsCancellationRequested ? "-interrupted" : "");
            return new ComparisonResult(final, comparison);
        }
        catch
        {
            folder.Discard();
            throw;
        }
    }

    internal static string Stamp() => DateTime.Now.ToString("yyyyMMdd-HHmmss", CultureInfo.InvariantCulture);

    /// <summary>
    /// Goes on with a run from one of its checkpoints (the last unless <paramref name="step"/> is
    /// given) into a new run folder, name-resumed-timestamp: its config is the original's, its
    /// metrics.csv starts with the original's rows before the checkpoint.
    /// </summary>
    public static Task<RunResult> ResumeAsync(string runFolder, long? step = null, string? outputRoot = null, IRunObserver? observer = null,
        CancellationToken cancellation = default) => Resume(Resumption.Read(runFolder, step), outputRoot, observer, cancellation);

    internal static Task<RunResult> Resume(Resumption resumption, string? outputRoot, IRunObserver? observer, CancellationToken cancellation,
        ITopologyHost? host = null)
    {
        var spec = resumption.Spec;
        string root = outputRoot ?? Path.GetDirectoryName(Path.GetFullPath(resumption.Folder))!;
        return RunInto(spec, ExperimentData.Build(spec, oneProcess: host is null), root, $"{spec.Name}-resumed-{Stamp()}", observer, cancellation, host,
            resumption.Checkpoint, resumption.EarlierMetrics);
    }

    /// <summary>The key of <see cref="Exception.Data"/> that names the folder a failed run was kept in.</summary>
    public const string KeptFolderKey = "actortrain.kept_folder";

    /// <summary>
    /// Publishes a failed run's folder as &lt;name&gt;-failed: error.txt (the whole exception) and a
    /// summary.json with status failed, the error and the evaluations metrics.csv holds, beside what
    /// the run wrote so far. The folder's name goes into the exception's Data for the command's message.
    /// </summary>
    private static void KeepFailed(RunFolder folder, Exception e)
    {
        try
        {
            string partial = folder.Partial;
            var inner = e is AggregateException { InnerException: { } i } ? i : e;
            File.WriteAllText(Path.Combine(partial, "error.txt"), e + "\n");
            string metrics = Path.Combine(partial, "metrics.csv");
            int rows = File.Exists(metrics) ? Math.Max(0, File.ReadLines(metrics).Count() - 1) : 0;
            using (var stream = File.Create(Path.Combine(partial, "summary.json")))
            using (var json = new System.Text.Json.Utf8JsonWriter(stream, new System.Text.Json.JsonWriterOptions { Indented = true }))
            {
                json.WriteStartObject();
                json.WriteString("status", "failed");
                json.WriteString("error", inner.Message);
                json.WriteString("error_type", inner.GetType().Name);
                json.WriteNumber("evaluations_written", rows);
                json.WriteEndObject();
            }
            e.Data[KeptFolderKey] = folder.Publish("-failed");
        }
        catch (Exception keeping) when (keeping is IOException or UnauthorizedAccessException)
        {
            folder.Discard();
        }
    }

    /// <summary>Runs <paramref name="spec"/> into a new folder <paramref name="name"/> (or the first free name after it) under <paramref name="root"/>.</summary>
    internal static async Task<RunResult> RunInto(ExperimentSpec spec, ExperimentData data, string root, string name, IRunObserver? observer,
        CancellationToken cancellation, ITopologyHost? host = null, RunCheckpoint? resume = null, IReadOnlyList<string>? earlierMetrics = null)
    {
        long steps = data.Steps(spec);
        var engines = new GradientEngineFactory(spec.Compute.Engine, spec.EngineThreads);

        var folder = RunFolder.Create(root, name);
        string partial = folder.Partial;
        try
        {
            File.WriteAllText(Path.Combine(partial, "config.conf"), spec.ResolvedConfig);
            var settings = CoordinatorSettings(spec, data, resume) with { OnCheckpoint = c => Checkpoints.Write(partial, c) };

            RunOutcome outcome;
            var telemetry = TelemetrySession.Start(spec.Telemetry, partial, "actortrain", new Dictionary<string, object>
            {
                ["actortrain.experiment"] = spec.Name,
                ["actortrain.run"] = name,
            });
            try
            {
                using var metrics = new MetricsCsvWriter(Path.Combine(partial, "metrics.csv"), observer, telemetry, earlierMetrics);
                outcome = await (host ?? LocalHost.Instance).Run(spec, settings, engines, metrics, partial, cancellation);
            }
            finally
            {
                telemetry?.Dispose(); // flushes the exporters before the folder is renamed
                if (telemetry?.Delivery?.Warning is { } warning) (observer ?? NoObserver.Instance).OnWarning(warning);
            }
            var summary = RunSummary.Create(spec, data, engines.Name, steps, outcome) with { Telemetry = telemetry?.Delivery };
            summary.Write(Path.Combine(partial, "summary.json"));
            if (spec.Output.Plots) Plots.Write(partial, outcome, data.Model.Loss == Core.Models.LossKind.CrossEntropy);
            Report.WriteRun(partial, summary, outcome);
            // the final weights, for numpy (a workload has none; a run interrupted before its first evaluation has the initial ones)
            if (!data.Model.SizesOnly && outcome.FinalWeights.Length == data.Model.ParameterCount)
                NpzWriter.Write(Path.Combine(partial, NpzWriter.WeightsFile), data.Model, outcome.FinalWeights);
            if (host is not null) await host.Finish(partial, spec);
            string final = folder.Publish(outcome.StopReason == StopReason.Interrupted ? "-interrupted" : "");
            return new RunResult(final, summary, outcome);
        }
        catch (Exception e) when (Checkpoints.Steps(partial).Count > 0)
        {
            // What the failed run wrote up to its last checkpoint is kept, under a name that says it is not finished.
            File.WriteAllText(Path.Combine(partial, "error.txt"), e + "\n");
            string kept = folder.Publish("-incomplete");
            throw new RunFailedWithCheckpointException(
                $"{(e is AggregateException { InnerException: { } inner } ? inner.Message : e.Message)}; the run folder is kept as {kept} with checkpoints up to step " +
                $"{Checkpoints.Steps(kept)[^1]}: go on with `actortrain run --resume {kept}`", kept, e);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            // What the failed run wrote (metrics so far, traces, config) is kept, named as failed, with the error.
            KeepFailed(folder, e);
            throw;
        }
        catch
        {
            folder.Discard();
            throw;
        }
    }

    /// <summary>The coordinator's settings for a spec: what every node of a cluster run derives from the same config.</summary>
    public static Coordinator.Settings CoordinatorSettings(ExperimentSpec spec, ExperimentData data, RunCheckpoint? resume = null)
    {
        long steps = data.Steps(spec);
        var schedule = LearningRateSchedule.Create(spec.Schedule.Kind, spec.Schedule.LearningRate, steps, spec.Schedule.WarmupFraction,
            spec.Schedule.Decay, spec.Schedule.StepSize, spec.Schedule.Gamma, spec.Schedule.MinLearningRate);
        // a workload has no values: nothing to initialise, and nothing the size of the model is allocated
        var initial = data.Model.SizesOnly ? [] : new float[data.Model.ParameterCount];
        if (!data.Model.SizesOnly) data.Model.Initialize(initial, Rng.Derive(spec.Seed, 4));
        var p = spec.Parallelism;
        var pipeline = p.Active
            ? new PipelineSettings(p.Stages, p.MicroBatches, p.Schedule, Core.Pipeline.StageModel.Boundaries(data.Model, p.Stages, p.Boundaries))
            : null;
        return new Coordinator.Settings(data.Model, initial, data.Partitions, data.Test, data.Train.Count,
            spec.Training.BatchSize, spec.Seed, spec.Precision.Mode, spec.Precision.CreateScaler, pipeline?.Stages ?? spec.Topology.Shards,
            spec.Sync, spec.Stragglers.Slowdowns(spec.Topology.Workers), spec.Optimizer, schedule, steps, spec.Training.EvalEvery,
            spec.Training.StopAtTarget ? spec.Training.TargetAccuracy : null, spec.Training.StopAtTarget ? spec.Training.TargetLoss : null,
            spec.Training.TimeBudget, spec.Simulation.Virtual ? ComputeDispatcher : PinnedDispatcher, spec.Compression, Timing: new TimingSettings(spec.Simulation.ComputeTime,
                spec.Simulation.ShardDevice, spec.Stragglers.RandomSlowdown, spec.Faults, spec.Simulation.WorkerDevice,
                spec.Training.Overlap, spec.Training.BucketBytes, spec.Simulation.CodecCost), TraceEvery: spec.Telemetry.TraceEvery,
            CheckpointEvery: spec.Training.CheckpointEvery, Resume: resume, StallTimeout: spec.Simulation.StallTimeout,
            AllReduce: spec.Topology.AllReduce
                ? new AllReduceSettings(AllReduceAlgorithms.ByName[spec.Topology.Aggregation], spec.Network.Placement.WorkersPerHost, spec.Precision.AllReduceFp16)
                : null,
            Pipeline: pipeline);
    }

    /// <summary>The run's link: the virtual clock, or the wall clock with the network's delays (none at all on an ideal network).</summary>
    public static ILink CreateLink(ExperimentSpec spec, IRoute? route = null, DateTimeOffset? epoch = null)
    {
        ulong seed = Rng.Derive(spec.Seed, 6);
        int shards = spec.LinkShards;
        if (spec.Simulation.Virtual) return new VirtualLink(spec.Network, seed, spec.Topology.Workers, shards, route);
        return new WallClockLink(spec.Network, seed, spec.Network.MinLatency(spec.Topology.Workers, shards), route, epoch, spec.Topology.Workers, shards);
    }

    /// <summary>Akka settings of every ActorTrain actor system: logging and the workers' and shards' dispatchers.</summary>
    public static string ActorSystemConfig => $$"""
        akka {
          loglevel = WARNING
          stdout-loglevel = WARNING
          log-dead-letters = off
          log-dead-letters-during-shutdown = off
          actor.default-dispatcher.fork-join-executor.parallelism-max = 4
        }
        {{ComputeDispatcher}} {
          type = ForkJoinDispatcher
          throughput = 1
          dedicated-thread-pool.thread-count = {{Math.Max(2, Environment.ProcessorCount)}}
        }
        {{PinnedDispatcher}} {
          type = PinnedDispatcher
        }
        """;

    /// <summary>One process holds the whole topology in an actor system of its own.</summary>
    private sealed class LocalHost : ITopologyHost
    {
        public static readonly LocalHost Instance = new();

        public async Task<RunOutcome> Run(ExperimentSpec spec, Coordinator.Settings settings, GradientEngineFactory engines, IRunObserver observer,
            string folder, CancellationToken cancellation)
        {
            var config = ConfigurationFactory.ParseString(FileLogger.Config(Path.Combine(folder, "akka.log")))
                .WithFallback(ConfigurationFactory.ParseString(ActorSystemConfig));
            var system = ActorSystem.Create("actortrain", config);
            try
            {
                return await RunCoordinator(system, settings, engines, CreateLink(spec), observer, cancellation);
            }
            finally
            {
                await system.Terminate();
            }
        }
    }

    /// <summary>Starts the run's coordinator in <paramref name="system"/> and waits for its outcome; the link is released whatever happens.</summary>
    internal static async Task<RunOutcome> RunCoordinator(ActorSystem system, Coordinator.Settings settings, GradientEngineFactory engines, ILink link,
        IRunObserver observer, CancellationToken cancellation)
    {
        var completion = new TaskCompletionSource<RunOutcome>(TaskCreationOptions.RunContinuationsAsynchronously);
        var coordinator = system.ActorOf(Coordinator.Props(settings, engines, link, completion, observer), "coordinator");
        try
        {
            // Cancelled (SIGINT/SIGTERM): the coordinator ends the run with what it has; should it not
            // answer within a second and a half, the run is given up (the command must stop within 2 s).
            using var registration = cancellation.Register(() =>
            {
                coordinator.Tell(Coordinator.Interrupt.Instance);
                _ = Task.Delay(1500).ContinueWith(_ => completion.TrySetCanceled(cancellation), TaskScheduler.Default);
            });
            return await completion.Task;
        }
        finally
        {
            link.Stop();
            (link as IDisposable)?.Dispose();
            system.Stop(coordinator);
        }
    }
}

/// <summary>What a resumed run goes on from: the run folder's experiment, one of its checkpoints, its metrics rows before it.</summary>
public sealed record Resumption(string Folder, ExperimentSpec Spec, RunCheckpoint Checkpoint, IReadOnlyList<string> EarlierMetrics)
{
    /// <summary>
    /// `actortrain export --format npz --checkpoint N`: the weights of a run's checkpoint as a .npz
    /// (the shards' ranges in order; under all-reduce worker 0's replica). Returns the file written.
    /// </summary>
    public static string ExportCheckpoint(string runFolder, long step, string? output)
    {
        var r = Read(runFolder, step, "export --checkpoint");
        var model = ExperimentData.Build(r.Spec).Model;
        var weights = r.Checkpoint.Shards.OrderBy(s => s.Shard).SelectMany(s => s.Weights).ToArray();
        string to = output ?? Path.Combine(runFolder, $"weights-step{r.Checkpoint.Step}.npz");
        NpzWriter.Write(to, model, weights);
        return to;
    }

    public static Resumption Read(string runFolder, long? step, string option = "--resume")
    {
        if (!Directory.Exists(runFolder)) throw new ActorTrainException($"{option}: run folder '{runFolder}' not found");
        string config = Path.Combine(runFolder, "config.conf");
        if (!File.Exists(config)) throw new ActorTrainException($"{option}: {runFolder} has no config.conf; is it a run folder?");
        var spec = ExperimentSpec.Load(config);
        var checkpoint = Checkpoints.Read(runFolder, step, option);
        string metrics = Path.Combine(runFolder, "metrics.csv");
        var earlier = File.Exists(metrics)
            ? File.ReadLines(metrics).Skip(1).Where(l => long.TryParse(l.Split(',')[0], CultureInfo.InvariantCulture, out long s) && s < checkpoint.Step).ToList()
            : [];
        return new Resumption(runFolder, spec, checkpoint, earlier);
    }
}

/// <summary>A run failed after writing checkpoints: its folder is kept for `run --resume`.</summary>
public sealed class RunFailedWithCheckpointException(string message, string folder, Exception inner) : RunFailedException(message, inner)
{
    public string Folder { get; } = folder;
}

/// <summary>Where a run's topology lives: this process (the default), or the nodes of a cluster (<see cref="ClusterRunner"/>).</summary>
internal interface ITopologyHost
{
    /// <param name="folder">The run folder being written (Akka's log goes there).</param>
    Task<RunOutcome> Run(ExperimentSpec spec, Coordinator.Settings settings, GradientEngineFactory engines, IRunObserver observer, string folder,
        CancellationToken cancellation);

    /// <summary>Adds what the host keeps (other nodes' spans, say) to the finished run folder before it is renamed.</summary>
    Task Finish(string folder, ExperimentSpec spec) => Task.CompletedTask;
}

/// <summary>metrics.csv, a row per evaluation, flushed as each row arrives so a long run can be followed.</summary>
/// <summary>What a run without an observer reports to: nothing, but warnings (to stderr, the interface's default).</summary>
internal sealed class NoObserver : IRunObserver
{
    public static readonly NoObserver Instance = new();

    public void OnEvaluation(EvaluationPoint point)
    {
    }
}

internal sealed class MetricsCsvWriter : IRunObserver, IDisposable
{
    public const string Header = "step,epoch,elapsed_s,train_loss,test_loss,test_accuracy,samples,bytes_worker_to_shard,bytes_shard_to_worker,skipped_gradients,loss_scale,updates,mean_staleness,max_staleness,dropped_late,dense_bytes_worker_to_shard,dense_bytes_shard_to_worker";

    private readonly StreamWriter _writer;
    private readonly IRunObserver? _next;
    private readonly TelemetrySession? _telemetry;

    /// <param name="earlier">Rows of the run this one resumes, before its checkpoint.</param>
    public MetricsCsvWriter(string path, IRunObserver? next, TelemetrySession? telemetry = null, IReadOnlyList<string>? earlier = null)
    {
        _writer = new StreamWriter(path) { NewLine = "\n" };
        _writer.WriteLine(Header);
        foreach (string row in earlier ?? []) _writer.WriteLine(row);
        _next = next;
        _telemetry = telemetry;
    }

    public void OnStart(long plannedSteps) => _next?.OnStart(plannedSteps);

    public void OnTrace(System.Diagnostics.ActivityTraceId traceId)
    {
        _telemetry?.OwnTrace(traceId);
        _next?.OnTrace(traceId);
    }

    public void OnEvaluation(EvaluationPoint p)
    {
        _writer.WriteLine(Format(p));
        _writer.Flush();
        _next?.OnEvaluation(p);
    }

    internal static string Format(EvaluationPoint p) => string.Join(',',
        p.Step.ToString(CultureInfo.InvariantCulture),
        p.Epoch.ToString("0.####", CultureInfo.InvariantCulture),
        p.ElapsedSeconds.ToString("0.#########", CultureInfo.InvariantCulture),
        p.TrainLoss is { } train ? ResultFormat.Csv(train) : "",
        ResultFormat.Csv(p.TestLoss),
        ResultFormat.Csv(p.TestAccuracy),
        p.SamplesProcessed.ToString(CultureInfo.InvariantCulture),
        p.BytesWorkerToShard.ToString(CultureInfo.InvariantCulture),
        p.BytesShardToWorker.ToString(CultureInfo.InvariantCulture),
        p.SkippedGradients.ToString(CultureInfo.InvariantCulture),
        ResultFormat.Csv(p.LossScale),
        p.Updates.ToString(CultureInfo.InvariantCulture),
        p.MeanStaleness.ToString("0.####", CultureInfo.InvariantCulture),
        p.MaxStaleness.ToString(CultureInfo.InvariantCulture),
        p.DroppedLate.ToString(CultureInfo.InvariantCulture),
        p.DenseBytesWorkerToShard.ToString(CultureInfo.InvariantCulture),
        p.DenseBytesShardToWorker.ToString(CultureInfo.InvariantCulture));

    public void Dispose() => _writer.Dispose();
}
