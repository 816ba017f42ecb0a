using System.Text.Json;
using ActorTrain.Cluster.Actors;

namespace ActorTrain.Experiments;

/// <summary>A worker's time on the run's clock: compute (modelled under the virtual clock), communication, wait; restarts after faults.</summary>
public sealed record WorkerReport(int Worker, double Slowdown, long Steps, double ComputeSeconds, double CommunicationSeconds, double WaitSeconds,
    double Gflops, long UnderflowedElements, long NonFiniteSteps, float LossScale, int Kills);

/// <summary>
/// What the link did: messages, retransmissions after drops, duplicates the receivers discarded,
/// losses; on a sharing fabric, its resources. Under the virtual clock, the events delivered and the
/// batches they were released in (events / batches: how many ran side by side on average).
/// </summary>
public sealed record NetworkReport(string Description, long Messages, long WireBytes, long Retransmissions, long DuplicatesDiscarded, long Lost,
    long LostToStoppedActors, long Events, FabricReport? Fabric = null, long Batches = 0);

/// <summary>
/// One fabric resource over the run: bytes carried; utilisation, bytes over capacity x run time;
/// busy fraction, the share of the run during which at least one flow crossed it (a NIC feeding a
/// congested receiver is busy but barely used).
/// </summary>
public sealed record ResourceReport(string Name, double CapacityBytesPerSecond, double Bytes, double Utilisation, double BusySeconds, double BusyFraction);

/// <summary>The fabric's resources: the five most utilised first, then every NIC, leaf link and bus that carried anything.</summary>
public sealed record FabricReport(string Topology, string Placement, int Hosts, long RateRecomputations, IReadOnlyList<ResourceReport> Busiest,
    IReadOnlyList<ResourceReport> Resources)
{
    public static FabricReport? Create(Core.Simulation.NetworkSettings network, Cluster.Transport.LinkStatistics? link, double elapsed, int workers, int shards)
    {
        if (link?.Fabric is not { } usage || !network.Fabric.Shares) return null;
        var resources = usage.Select(u => new ResourceReport(u.Name, u.Capacity, u.Bytes, elapsed > 0 ? u.Bytes / (u.Capacity * elapsed) : 0, u.BusySeconds,
            elapsed > 0 ? u.BusySeconds / elapsed : 0)).ToList();
        var p = network.Placement;
        string placement = FormattableString.Invariant(
            $"{p.WorkersPerHost} worker(s) per host, shards {(p.DedicatedShards ? $"dedicated ({p.ShardsPerHost} per host)" : "colocated")}");
        return new FabricReport(network.Fabric.Topology == Core.Simulation.FabricTopology.Switch ? "switch" : "leaf-spine", placement,
            p.Hosts(workers, shards), link.FabricRecomputations, resources.OrderByDescending(r => r.Utilisation).ThenBy(r => r.Name, StringComparer.Ordinal).Take(5).ToList(), resources);
    }
}

/// <summary>
/// A pipeline run (parallelism.*): its stages (the layers each owns), micro-batches and schedule;
/// per stage the most micro-batches whose activations it held at once and their bytes (each layer's
/// input and pre-activation, FP32), and the bytes of its weights, gradient and optimizer state; and the bubble: the share of the run's time a stage was not
/// computing, on average over the stages (idle waiting for activations or gradients, the optimizer
/// step, the pipeline's fill and drain), beside the uniform-stage formula (P - 1) / (M + P - 1).
/// </summary>
public sealed record PipelineReport(int Stages, int MicroBatches, string Schedule, IReadOnlyList<string> StageLayers, IReadOnlyList<int> PeakActivations,
    IReadOnlyList<long> PeakActivationBytes, double BubbleFraction, double UniformBubbleFraction, IReadOnlyList<long> ParameterBytes)
{
    public static PipelineReport? Create(ExperimentSpec spec, ExperimentData data, RunOutcome outcome)
    {
        var p = spec.Parallelism;
        if (!p.Active) return null;
        var memory = ExperimentData.StageMemory(spec, data.Model);
        // the peaks the stages measured (their snapshots' counters), at the bytes a micro-batch holds
        var peaks = outcome.Shards.Select(c => c.PeakActivations).ToList();
        // each replica's driver reports each step's compute averaged over its stages
        double compute = outcome.Workers.Count > 0 ? outcome.Workers.Average(w => w.ComputeSeconds) : 0;
        return new PipelineReport(p.Stages, p.MicroBatches, p.Schedule == Core.Pipeline.PipelineScheduleKind.OneFOneB ? "1f1b" : "gpipe",
            memory.Select(m => m.Layers).ToList(), peaks, memory.Select((m, s) => (s < peaks.Count ? peaks[s] : 0) * m.ActivationBytesPerMicroBatch).ToList(),
            outcome.ElapsedSeconds > 0 ? 1 - compute / outcome.ElapsedSeconds : 0, Core.Pipeline.PipelineSchedule.BubbleFraction(p.Stages, p.MicroBatches),
            memory.Select(m => m.ParameterBytes).ToList());
    }
}

/// <summary>Where this build came from: its informational version and git commit (AssemblyMetadata "GitCommit", set by the build).</summary>
public static class Provenance
{
    private static readonly System.Reflection.Assembly Assembly = typeof(Provenance).Assembly;

    public static string Version { get; } =
        Assembly.GetCustomAttributes(typeof(System.Reflection.AssemblyInformationalVersionAttribute), false) is [System.Reflection.AssemblyInformationalVersionAttribute v, ..] ? v.InformationalVersion : "unknown";

    public static string? GitCommit { get; } = Assembly.GetCustomAttributes(typeof(System.Reflection.AssemblyMetadataAttribute), false)
        .OfType<System.Reflection.AssemblyMetadataAttribute>().FirstOrDefault(a => a.Key == "GitCommit")?.Value is { Length: 40 } commit ? commit : null;
}

/// <summary>summary.json: what the run was and how it ended.</summary>
public sealed record RunSummary(
    string Name,
    string Model,
    int Parameters,
    string Dataset,
    int TrainRows,
    int TestRows,
    int Workers,
    int Shards,
    string Policy,
    string Compression,
    int BatchSizePerWorker,
    string Optimizer,
    string Precision,
    string Engine,
    string Clock,
    string StopReason,
    long Steps,
    double Epochs,
    double ElapsedSeconds,
    double WallSeconds,
    double SamplesPerSecond,
    double? FinalTrainLoss,
    double FinalTestLoss,
    double FinalTestAccuracy,
    double BestTestAccuracy,
    long BytesWorkerToShard,
    long BytesShardToWorker,
    double UplinkCompressionRatio,
    double DownlinkCompressionRatio,
    long SkippedGradients,
    long Updates,
    double MeanStaleness,
    long MaxStaleness,
    IReadOnlyList<long> StalenessHistogram,
    long DroppedLate,
    NetworkReport Network,
    double GradientSeconds,
    double OptimizerSeconds,
    IReadOnlyList<WorkerReport> WorkerTimes,
    IReadOnlyList<int>? LostWorkers = null)
{
    /// <summary>
    /// topology.aggregation. Under all-reduce there are no shards: bytes_worker_to_shard counts what
    /// the workers sent each other for the collectives, bytes_shard_to_worker is 0.
    /// </summary>
    public string Aggregation { get; init; } = "ps";

    /// <summary>
    /// Measured seconds of the test-split evaluations (training.eval-every, and the final one), run
    /// off the coordinator's thread: real work of the run beside gradient_seconds and
    /// optimizer_seconds, not the simulation's machinery. 0 in files written before it existed.
    /// </summary>
    public double EvaluationSeconds { get; init; }

    /// <summary>Under all-reduce: how many times a replica's weights were checked bit-equal to another's (every worker at every evaluation).</summary>
    public int ReplicaChecks { get; init; }

    /// <summary>
    /// The version of this file's layout (docs/summary.schema.json); raised when a field changes
    /// meaning or goes. Files written before it read as 0, and their provenance fields as null:
    /// <see cref="Create"/> sets them, reading an old file does not invent them.
    /// </summary>
    public int SchemaVersion { get; init; }

    public const int CurrentSchemaVersion = 2;

    /// <summary>The tool's version, and the commit it was built from (null when not built from a git checkout).</summary>
    [System.Text.Json.Serialization.JsonPropertyName("actortrain_version")]
    public string? ActorTrainVersion { get; init; }

    public string? GitCommit { get; init; }

    /// <summary>The experiment's seed, and the command line of the process that ran it (reproduce: same commit, same config.conf, same seed).</summary>
    public ulong Seed { get; init; }

    public string? CommandLine { get; init; }

    /// <summary>parallelism.*: the pipeline's stages, activations held and bubble; null for data parallelism only.</summary>
    public PipelineReport? Pipeline { get; init; }

    /// <summary>optimizer.type = kfac: the factor contributions the shards received, bytes (not in bytes_worker_to_shard); 0 otherwise.</summary>
    public long FactorBytesWorkerToShard { get; init; }

    /// <summary>With telemetry.exporter = otlp: what reached the collector (spans exported and dropped, failed metric exports); null otherwise.</summary>
    public Telemetry.OtlpDelivery? Telemetry { get; init; }

    public static RunSummary Create(ExperimentSpec spec, ExperimentData data, string engine, long plannedSteps, RunOutcome outcome)
    {
        // an interrupted run may end before its first evaluation: no loss to report
        var last = outcome.Evaluations.Count > 0 ? outcome.Evaluations[^1] : EvaluationPoint.None;
        var slowdowns = spec.Stragglers.Slowdowns(spec.Topology.Workers);
        return new RunSummary(
            spec.Name,
            data.Model.Describe(),
            data.Model.ParameterCount,
            data.Train.Name.Split('/')[0],
            data.Train.Count,
            data.Test.Count,
            spec.Topology.Workers,
            spec.Topology.Shards,
            spec.Sync.Describe(),
            spec.Compression.Describe(),
            spec.Training.BatchSize,
            spec.Optimizer.Kind.ToString().ToLowerInvariant(),
            spec.Precision.Mode.ToString().ToLowerInvariant(),
            engine,
            spec.Simulation.Describe(),
            outcome.StopReason switch
            {
                Cluster.Actors.StopReason.MaxSteps => plannedSteps < spec.Training.MaxSteps ? "epochs" : "max-steps",
                Cluster.Actors.StopReason.TargetAccuracy => "target-accuracy",
                Cluster.Actors.StopReason.TargetLoss => "target-loss",
                Cluster.Actors.StopReason.Diverged => "diverged",
                Cluster.Actors.StopReason.Interrupted => "interrupted",
                _ => "time-budget",
            },
            outcome.FinalStep,
            last.Epoch,
            outcome.ElapsedSeconds,
            outcome.WallSeconds,
            last.SamplesProcessed / Math.Max(outcome.ElapsedSeconds, 1e-9),
            outcome.Evaluations.LastOrDefault(e => e.TrainLoss is not null)?.TrainLoss,
            last.TestLoss,
            last.TestAccuracy,
            outcome.Evaluations.Count > 0 ? outcome.Evaluations.Max(e => e.TestAccuracy) : double.NaN,
            last.BytesWorkerToShard,
            last.BytesShardToWorker,
            last.UplinkRatio,
            last.DownlinkRatio,
            last.SkippedGradients,
            last.Updates,
            last.MeanStaleness,
            last.MaxStaleness,
            TrimmedHistogram(outcome.StalenessHistogram()),
            last.DroppedLate,
            Describe(spec.Network, outcome.Link ?? new()) with
            {
                Fabric = FabricReport.Create(spec.Network, outcome.Link, outcome.ElapsedSeconds, spec.Topology.Workers, spec.LinkShards),
            },
            outcome.Workers.Sum(w => w.GradientSeconds),
            outcome.Shards.Sum(c => c.BusySeconds),
            outcome.Workers.Select(w => new WorkerReport(w.Worker, slowdowns[w.Worker], w.Steps, w.ComputeSeconds, w.CommunicationSeconds, w.WaitSeconds,
                w.ComputeSeconds > 0 ? w.Flops / w.ComputeSeconds / 1e9 : 0, w.UnderflowedElements, w.NonFiniteSteps, w.LastLossScale, w.Kills)).ToList(),
            (outcome.Faults ?? []).Where(f => f.NodeLost).Select(f => f.Worker).Order().ToList())
        {
            Aggregation = spec.Topology.Aggregation,
            ReplicaChecks = outcome.ReplicaChecks,
            EvaluationSeconds = outcome.EvaluationSeconds,
            FactorBytesWorkerToShard = outcome.Shards.Sum(c => c.FactorBytesIn),
            Pipeline = PipelineReport.Create(spec, data, outcome),
            SchemaVersion = CurrentSchemaVersion,
            ActorTrainVersion = Provenance.Version,
            GitCommit = Provenance.GitCommit,
            Seed = spec.Seed,
            CommandLine = string.Join(' ', Environment.GetCommandLineArgs().Select(a => a.Contains(' ') ? $"\"{a}\"" : a)),
        };
    }

    private static NetworkReport Describe(Core.Simulation.NetworkSettings n, Cluster.Transport.LinkStatistics s)
    {
        var d = n.Default;
        string bandwidth = double.IsPositiveInfinity(d.BytesPerSecond) ? "unlimited" : FormattableString.Invariant($"{d.BytesPerSecond * 8 / 1e9:0.###} Gbit/s");
        if (n.Fabric.Shares)
            bandwidth = FormattableString.Invariant($"{(n.Fabric.Topology == Core.Simulation.FabricTopology.Switch ? "switch" : "leaf-spine")}, NIC {n.Fabric.NicBytesPerSecond * 8 / 1e9:0.###} Gbit/s shared");
        string description = FormattableString.Invariant($"latency {d.Latency}, bandwidth {bandwidth}, jitter {Core.Simulation.Quantity.FormatSeconds(d.Jitter)}, drop {d.Drop}") +
            (n.Racks > 1 ? $", {n.Racks} racks" : "") + (n.Rules.Count > 0 ? $", {n.Rules.Count} link rules" : "");
        return new NetworkReport(description, s.Messages, s.WireBytes, s.Retransmissions, s.DuplicatesDiscarded, s.Lost, s.LostToStoppedActors, s.Events, Batches: s.Batches);
    }

    /// <summary>Counts of applied pushes by staleness 0, 1, 2, ... up to the largest seen (the last bucket is 63+).</summary>
    private static long[] TrimmedHistogram(long[] histogram)
    {
        int last = Array.FindLastIndex(histogram, c => c > 0);
        return histogram[..(last + 1)];
    }

    public void Write(string path) => File.WriteAllText(path, JsonSerializer.Serialize(this, ResultFormat.Json) + "\n");

    public static RunSummary Read(string path) => JsonSerializer.Deserialize<RunSummary>(File.ReadAllText(path), ResultFormat.Json)!;
}
