using ActorTrain.Cluster.Actors;
using ActorTrain.Compute;
using ActorTrain.Core;
using ActorTrain.Core.Compression;
using ActorTrain.Core.Data;
using ActorTrain.Core.Models;
using ActorTrain.Core.Optimization;
using ActorTrain.Core.Precision;
using ActorTrain.Core.Simulation;

namespace ActorTrain.Experiments;

/// <summary>model.*: a model with values (linear, softmax, mlp), or a workload table of sizes only (model.workload).</summary>
public sealed record ModelSection(string Type, int[] Hidden, Activation Activation, string Workload = "")
{
    public bool IsWorkload => Type == "workload";
}

public sealed record DatasetSection(
    string Type, int Samples, int Features, int Classes, double Separation, int Outputs, double Noise,
    double TestFraction, string Path, PixelNormalization Normalization, int Limit)
{
    public bool IsIdx => Type is "fashion-mnist" or "idx";

    /// <summary>Classes of synthetic-blobs: dataset.classes, or 4 for auto.</summary>
    public int BlobClasses => Classes == 0 ? 4 : Classes;
}

/// <summary>topology.*: workers, shards and how gradients are aggregated (ps, or an all-reduce algorithm among the workers).</summary>
public sealed record TopologySection(int Workers, int Shards, string Aggregation = "ps")
{
    public static readonly IReadOnlyList<string> Aggregations = ["ps", .. Core.Collectives.AllReduceAlgorithms.ByName.Keys];

    public bool AllReduce => Aggregation != "ps";

    /// <summary>"4 shards" or the all-reduce algorithm, for banners.</summary>
    public string DescribeAggregation() => AllReduce ? Aggregation : $"{Shards} shard{(Shards == 1 ? "" : "s")}";

    /// <summary>The shards the network and fabric place: none under all-reduce, where workers talk among themselves.</summary>
    public int NetworkShards => AllReduce ? 0 : Shards;
}

public sealed record TrainingSection(int BatchSize, long MaxSteps, double Epochs, int EvalEvery, double? TargetAccuracy, double? TargetLoss, TimeSpan? TimeBudget,
    bool StopAtTarget = true, int CheckpointEvery = 0, OverlapMode Overlap = OverlapMode.Off, long BucketBytes = 25_000_000);

public sealed record ScheduleSection(ScheduleKind Kind, double LearningRate, double Decay, long StepSize, double Gamma, double MinLearningRate, double WarmupFraction);

public sealed record PrecisionSection(PrecisionMode Mode, float? StaticScale, float InitialScale, int GrowthInterval, bool AllReduceFp16 = false)
{
    /// <summary>A static number is used as given; dynamic scaling applies to FP16 only (FP32 gets scale 1).</summary>
    public LossScaler CreateScaler() => StaticScale is { } s
        ? LossScaler.Static(s)
        : Mode == PrecisionMode.Fp16 ? new DynamicLossScaler(InitialScale, growthInterval: GrowthInterval) : LossScaler.Static(1f);
}

public sealed record ComputeSection(string Engine, int Threads);

public sealed record StragglerSection(int[] Workers, double Factor, Distribution? RandomSlowdown = null)
{
    /// <summary>The slowdown of each of <paramref name="workers"/> workers (1 for the others).</summary>
    public double[] Slowdowns(int workers) => Enumerable.Range(0, workers).Select(w => Workers.Contains(w) ? Factor : 1.0).ToArray();
}

/// <summary>
/// One variant of a comparison or sweep: its name, the spec with its overrides applied, and the
/// overridden keys with their values (a sweep point's coordinates).
/// </summary>
public sealed record ExperimentVariant(string Name, ExperimentSpec Spec, IReadOnlyList<KeyValuePair<string, string>> Parameters);

/// <summary>sweep { mode, samples, values { key = [...] } }: the grid or a seeded random sample of it.</summary>
public sealed record SweepSection(bool Random, int Samples, IReadOnlyList<(string Key, string[] Values)> Values)
{
    public long GridSize => Values.Aggregate(1L, (n, v) => checked(n * v.Values.Length));

    /// <summary>The points to run, each as key=value assignments, in grid order (the last key varies fastest).</summary>
    public IReadOnlyList<KeyValuePair<string, string>[]> Points(ulong seed)
    {
        if (Values.Count == 0) return [];
        long size = GridSize;
        IEnumerable<long> indices;
        if (!Random || Samples >= size) indices = LongRange(size);
        else
        {
            // Floyd's algorithm: Samples distinct indices of the grid, then in grid order
            var rng = new Rng(Rng.Derive(seed, 0x5EE9));
            var chosen = new SortedSet<long>();
            for (long j = size - Samples; j < size; j++)
            {
                long t = (long)(rng.NextDouble() * (j + 1));
                if (!chosen.Add(t)) chosen.Add(j);
            }
            indices = chosen;
        }
        return indices.Select(index =>
        {
            var point = new KeyValuePair<string, string>[Values.Count];
            for (int k = Values.Count - 1; k >= 0; k--)
            {
                var (key, values) = Values[k];
                point[k] = new(key, values[index % values.Length]);
                index /= values.Length;
            }
            return point;
        }).ToList();
    }

    private static IEnumerable<long> LongRange(long n)
    {
        for (long i = 0; i < n; i++) yield return i;
    }

    /// <summary>A file-name-safe folder name for a point: last key segment and value, e.g. policy-ssp_learning-rate-0.05.</summary>
    public static string Name(KeyValuePair<string, string>[] point)
    {
        var lastSegments = point.Select(p => p.Key[(p.Key.LastIndexOf('.') + 1)..]).ToList();
        bool unique = lastSegments.Distinct().Count() == lastSegments.Count;
        var parts = point.Select((p, i) => $"{(unique ? lastSegments[i] : p.Key)}-{p.Value.Trim('"')}");
        string name = string.Join('_', parts);
        var invalid = System.IO.Path.GetInvalidFileNameChars();
        return new string(name.Select(ch => invalid.Contains(ch) || ch is ' ' or '(' or ')' or ',' or '"' or '=' ? '-' : ch).ToArray());
    }
}

public sealed record OutputSection(string Directory, bool Plots);

/// <summary>tune { ... }: what `actortrain tune` searches (see hocon/actortrain.conf).</summary>
public sealed record TuneSection(bool Random, int Samples, double[] LearningRates, int[] BatchSizes, double ValidationFraction, double WarmupFraction)
{
    /// <summary>The learning rates to try: the list, or seeded log-uniform draws between its ends, ascending.</summary>
    public double[] Candidates(ulong seed)
    {
        if (!Random) return LearningRates;
        var rng = new Rng(Rng.Derive(seed, 0x7E));
        double lo = Math.Log(LearningRates.Min()), hi = Math.Log(LearningRates.Max());
        return Enumerable.Range(0, Samples).Select(_ => Math.Round(Math.Exp(lo + (hi - lo) * rng.NextDouble()), 6)).Distinct().Order().ToArray();
    }
}

/// <summary>The run's clock and its time models.</summary>
/// <summary>
/// parallelism.*: the model's layers in pipeline stages (each an actor with its layers' weights and
/// optimizer), the step's mini-batch (training.batch-size) in micro-batches, run in schedule order.
/// </summary>
public sealed record ParallelismSection(int Stages, int MicroBatches, Core.Pipeline.PipelineScheduleKind Schedule, int[] Boundaries)
{
    public static readonly ParallelismSection None = new(1, 1, Core.Pipeline.PipelineScheduleKind.GPipe, []);

    /// <summary>A pipeline run: more than one stage, or one stage with micro-batches (gradient accumulation).</summary>
    public bool Active => Stages > 1 || MicroBatches > 1;
}

public sealed record SimulationSection(bool Virtual, ComputeTime ComputeTime, DeviceProfile WorkerDevice, DeviceProfile ShardDevice, TimeSpan StallTimeout,
    CodecCostMode CodecCost = CodecCostMode.Off)
{
    public string Describe() => Virtual ? $"virtual, compute {ComputeTime}" : $"wall, compute {ComputeTime}";
}

/// <summary>
/// An experiment, read once from HOCON into typed, validated settings. Everything a run needs is
/// here; <see cref="ResolvedConfig"/> is the full configuration as written into the run folder.
/// </summary>
public sealed record ExperimentSpec(
    string Name,
    ulong Seed,
    ModelSection Model,
    DatasetSection Dataset,
    TopologySection Topology,
    SyncPolicy Sync,
    CompressionSettings Compression,
    StragglerSection Stragglers,
    NetworkSettings Network,
    SimulationSection Simulation,
    IReadOnlyList<WorkerFault> Faults,
    TrainingSection Training,
    OptimizerSettings Optimizer,
    ScheduleSection Schedule,
    PrecisionSection Precision,
    ComputeSection Compute,
    OutputSection Output,
    IReadOnlyList<ExperimentVariant> Variants,
    SweepSection Sweep,
    TuneSection Tune,
    ActorTrain.Experiments.Telemetry.TelemetrySection Telemetry,
    string ResolvedConfig)
{
    /// <summary>What is allowed but probably not meant (an empty file, likely message losses): run and validate print these first.</summary>
    public IReadOnlyList<string> Warnings { get; init; } = [];

    /// <summary>parallelism.*: pipeline stages and micro-batches (none: data parallelism only).</summary>
    public ParallelismSection Parallelism { get; init; } = ParallelismSection.None;

    /// <summary>The link's shard endpoints: the shards, or a pipeline's stages (every replica's: workers x stages).</summary>
    public int LinkShards => Parallelism.Active ? Parallelism.Stages * Topology.Workers : Topology.NetworkShards;

    /// <summary>Loads an experiment file (or "quickstart" for the embedded default) with --set overrides.</summary>
    public static ExperimentSpec Load(string? path, IEnumerable<string>? overrides = null)
    {
        string text, source;
        if (path is null or "quickstart")
        {
            text = ConfigReader.QuickstartText;
            source = "quickstart (embedded)";
        }
        else
        {
            if (Directory.Exists(path)) throw new ActorTrainException($"{path}: is a folder; give an experiment file (.conf)");
            if (!File.Exists(path)) throw new ActorTrainException($"{path}: experiment file not found");
            try
            {
                text = File.ReadAllText(path);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new ActorTrainException($"{path}: cannot read ({e.Message})", e);
            }
            source = path;
        }
        var spec = Parse(text, source, overrides ?? [], path is null or "quickstart" ? null : Path.GetDirectoryName(Path.GetFullPath(path)));
        return path is null or "quickstart" || !ConfigReader.SetsNoKeys(text)
            ? spec
            : spec with { Warnings = [$"{path} sets no keys: running every default of hocon/actortrain.conf", .. spec.Warnings] };
    }

    /// <summary>
    /// Parses experiment text; a compare block yields one variant per entry, each the experiment with
    /// the command-line overrides and then the variant's own keys applied.
    /// </summary>
    /// <param name="folder">The folder includes are relative to (the experiment file's); null refuses includes.</param>
    public static ExperimentSpec Parse(string text, string source, IEnumerable<string> overrides, string? folder = null)
    {
        var assignments = overrides.ToArray();
        var reader = ConfigReader.Load(text, source, assignments, folder);
        var sweep = ReadSweep(reader);
        var blocks = reader.OverrideBlocks("compare");
        if (blocks.Count > 0 && sweep.Values.Count > 0)
            throw new ActorTrainException($"{source}: has both a compare block and sweep.values; use one of them");
        ExperimentSpec Variant(string name, string[] keys) =>
            FromConfig(ConfigReader.Load(text, $"{source} (variant {name})", [.. assignments, .. keys, "compare=[]"], folder), [], variant: true);
        var variants = blocks
            .Select(v => new ExperimentVariant(v.Name, Variant(v.Name, v.Assignments),
                v.Assignments.Select(a => new KeyValuePair<string, string>(a[..a.IndexOf('=')], a[(a.IndexOf('=') + 1)..].Trim('"'))).ToList()))
            .ToList();
        ulong seed = (ulong)reader.Long("seed", 0);
        foreach (var point in sweep.Points(seed))
        {
            string name = SweepSection.Name(point);
            variants.Add(new ExperimentVariant(name, Variant(name, point.Select(p => $"{p.Key}={p.Value}").ToArray()),
                point.Select(p => new KeyValuePair<string, string>(p.Key, p.Value.Trim('"'))).ToList()));
        }
        if (variants.Select(v => v.Name).Distinct().Count() != variants.Count)
            throw new ActorTrainException($"{source}: two sweep points have the same folder name; sweep fewer keys that end alike");
        return FromConfig(reader, variants);
    }

    private static TuneSection ReadTune(ConfigReader c)
    {
        var rates = c.DoubleList("tune.learning-rates", 0);
        if (rates.Length == 0) throw new ActorTrainException("tune.learning-rates is empty: list at least one learning rate");
        var batches = c.IntList("tune.batch-sizes", 32);
        foreach (int b in batches)
            if (b % 32 != 0) throw new ActorTrainException($"tune.batch-sizes lists {b}: batch sizes are searched in multiples of 32 (32, 64, 96, ...)");
        bool random = c.Choice("tune.method", "grid", "random") == "random";
        int samples = c.Int("tune.samples", 1, 1000);
        if (random && rates.Length < 2) throw new ActorTrainException("tune.method = random draws between the smallest and largest of tune.learning-rates: list two at least");
        return new TuneSection(random, samples, rates, batches, c.Double("tune.validation-fraction", 0, 0.5, minExclusive: true),
            c.Double("tune.warmup-fraction", 0, 1, maxExclusive: true));
    }

    private static SweepSection ReadSweep(ConfigReader c)
    {
        var values = c.Swept();
        bool random = c.Choice("sweep.mode", "grid", "random") == "random";
        int samples = c.Int("sweep.samples", 0);
        if (random && values.Count > 0 && samples < 1) throw new ActorTrainException("sweep.mode = random needs sweep.samples >= 1 (how many points to draw)");
        var sweep = new SweepSection(random, samples, values);
        try
        {
            if (values.Count > 0 && (random ? Math.Min(samples, sweep.GridSize) : sweep.GridSize) > 10_000)
                throw new ActorTrainException($"sweep.values: the grid has {sweep.GridSize} points; use sweep.mode = random with sweep.samples");
        }
        catch (OverflowException)
        {
            throw new ActorTrainException("sweep.values: the grid is too large to count; sweep fewer values");
        }
        return sweep;
    }

    public static ExperimentSpec FromConfig(ConfigReader c, IReadOnlyList<ExperimentVariant> variants, bool variant = false)
    {
        string name = c.String("name");
        if (name.Length == 0 || name.IndexOfAny(System.IO.Path.GetInvalidFileNameChars()) >= 0 || name.Contains('/'))
            throw new ActorTrainException($"name = \"{name}\" must be a non-empty file-name-safe word (it names the run folder)");

        var model = new ModelSection(
            c.Choice("model.type", "linear", "softmax", "mlp", "workload"),
            c.IntList("model.hidden", 1),
            c.Choice("model.activation", "relu", "tanh") == "relu" ? Activation.Relu : Activation.Tanh,
            c.String("model.workload").Trim());
        if (model.Type == "mlp" && model.Hidden.Length == 0)
            throw new ActorTrainException("model.hidden is empty: an mlp needs at least one hidden layer (or use model.type = softmax)");

        var dataset = new DatasetSection(
            c.Choice("dataset.type", "synthetic-blobs", "synthetic-linear", "fashion-mnist", "idx"),
            c.Int("dataset.samples", 2),
            c.Int("dataset.features", 1),
            c.String("dataset.classes").Trim() == "auto" ? 0 : c.Int("dataset.classes", 2),
            c.Double("dataset.separation", 0, minExclusive: true),
            c.Int("dataset.outputs", 1),
            c.Double("dataset.noise", 0),
            c.Double("dataset.test-fraction", 0, 1, minExclusive: true, maxExclusive: true),
            c.String("dataset.path"),
            c.Choice("dataset.normalization", "none", "unit-range", "standardize") switch
            {
                "none" => PixelNormalization.None,
                "unit-range" => PixelNormalization.UnitRange,
                _ => PixelNormalization.Standardize,
            },
            c.Int("dataset.limit", 0));
        bool regression = dataset.Type == "synthetic-linear";
        if (!model.IsWorkload && regression != (model.Type == "linear"))
            throw new ActorTrainException(regression
                ? $"model.type = {model.Type} is a classifier but dataset.type = synthetic-linear is regression data: use model.type = linear"
                : $"model.type = linear is regression but dataset.type = {dataset.Type} is classification data: use softmax or mlp, or dataset.type = synthetic-linear");

        var topology = new TopologySection(c.Int("topology.workers", 1, 100_000), c.Int("topology.shards", 1, 100_000),
            c.Choice("topology.aggregation", [.. TopologySection.Aggregations]));
        // all-reduce has no parameter servers: topology.shards does not apply (worker 0's replica stands for the one range)
        if (topology.AllReduce) topology = topology with { Shards = 1 };
        var sync = new SyncPolicy(
            c.Choice("sync.policy", "bsp", "asp", "ssp") switch
            {
                "bsp" => SyncPolicyKind.Bsp,
                "asp" => SyncPolicyKind.Asp,
                _ => SyncPolicyKind.Ssp,
            },
            c.Int("sync.staleness", 0),
            c.Int("sync.backup-workers", 0),
            c.Bool("sync.staleness-aware-lr"));
        sync.Validate(topology.Workers);
        var compression = new CompressionSettings(
            c.Choice("compression.codec", [.. CompressionSettings.Names]),
            c.Double("compression.ratio", 0, 1, minExclusive: true),
            c.Int("compression.bits", 2, 16),
            c.Double("compression.threshold", 0),
            c.Int("compression.chunk", 1),
            c.Bool("compression.error-feedback"),
            c.Choice("compression.downlink", "fp32", "fp16", "codec") switch
            {
                "fp32" => DownlinkMode.Fp32,
                "fp16" => DownlinkMode.Fp16,
                _ => DownlinkMode.Codec,
            },
            c.Double("compression.dgc-momentum", 0, 1, maxExclusive: true),
            c.Double("compression.dgc-clip", 0),
            c.Int("compression.dgc-warmup-steps", 0),
            c.Int("compression.rank", 1),
            c.Bool("compression.lz4"));
        if (compression.Downlink == DownlinkMode.Codec && compression.Codec == "randomk")
            throw new ActorTrainException("compression.downlink = codec with compression.codec = randomk: random-k scales what it keeps by n/k, and a stream of weight changes scaled so overshoots and diverges; use downlink = fp16 or fp32, or topk");
        string randomSlowdown = c.String("stragglers.random-slowdown");
        var stragglers = new StragglerSection(c.IntList("stragglers.workers", 0), c.Double("stragglers.factor", 1),
            randomSlowdown.Trim().Equals("none", StringComparison.OrdinalIgnoreCase) ? null : Distribution.Parse(randomSlowdown, "stragglers.random-slowdown", timed: false));
        foreach (int w in stragglers.Workers)
            if (w >= topology.Workers)
                throw new ActorTrainException($"stragglers.workers lists worker {w}, but topology.workers = {topology.Workers} (ids 0..{topology.Workers - 1})");

        var simulation = ReadSimulation(c);
        var network = ReadFabric(c, ReadNetwork(c));
        network.Validate(topology.Workers, topology.NetworkShards);
        var faults = ReadFaults(c, topology.Workers);

        double targetAccuracy = c.Double("training.target-accuracy", 0, 1);
        double targetLoss = c.Double("training.target-loss", 0);
        var budget = c.Duration("training.time-budget");
        var training = new TrainingSection(
            c.Int("training.batch-size", 0),
            c.Long("training.max-steps", 1),
            c.Double("training.epochs", 0),
            c.Int("training.eval-every", 1),
            targetAccuracy > 0 ? targetAccuracy : null,
            targetLoss > 0 ? targetLoss : null,
            budget > TimeSpan.Zero ? budget : null,
            c.Bool("training.stop-at-target"),
            c.Int("training.checkpoint-every", 0),
            c.Choice("training.overlap", "off", "layer", "bucket") switch
            {
                "off" => OverlapMode.Off,
                "layer" => OverlapMode.Layer,
                _ => OverlapMode.Bucket,
            },
            Quantity.Bytes(c.String("training.bucket-size"), "training.bucket-size"));

        string epsilon = c.String("optimizer.epsilon");
        var optimizer = new OptimizerSettings
        {
            Kind = c.Choice("optimizer.type", "sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw", "kfac") switch
            {
                "kfac" => OptimizerKind.Kfac,
                "sgd" => OptimizerKind.Sgd,
                "momentum" => OptimizerKind.Momentum,
                "nesterov" => OptimizerKind.Nesterov,
                "adagrad" => OptimizerKind.Adagrad,
                "rmsprop" => OptimizerKind.RmsProp,
                "adam" => OptimizerKind.Adam,
                _ => OptimizerKind.AdamW,
            },
            Momentum = c.Double("optimizer.momentum", 0, 1, maxExclusive: true),
            Beta1 = c.Double("optimizer.beta1", 0, 1, maxExclusive: true),
            Beta2 = c.Double("optimizer.beta2", 0, 1, maxExclusive: true),
            Alpha = c.Double("optimizer.alpha", 0, 1, maxExclusive: true),
            Epsilon = epsilon == "default" ? null : c.Double("optimizer.epsilon", 0, minExclusive: true),
            WeightDecay = c.Double("optimizer.weight-decay", 0),
            BiasCorrection = c.Bool("optimizer.bias-correction"),
            Kfac = new KfacSettings(
                c.Double("optimizer.kfac.factor-decay", 0, 1, maxExclusive: true),
                c.Double("optimizer.kfac.damping", 0, minExclusive: true),
                c.Int("optimizer.kfac.inverse-every", 1),
                c.Double("optimizer.kfac.kl-clip", 0),
                c.Int("optimizer.kfac.factor-every", 1)),
        };
        double lr = c.Double("optimizer.learning-rate", 0, minExclusive: true);
        var schedule = new ScheduleSection(
            c.Choice("optimizer.schedule", "constant", "inverse-time", "step", "cosine") switch
            {
                "constant" => ScheduleKind.Constant,
                "inverse-time" => ScheduleKind.InverseTime,
                "step" => ScheduleKind.Step,
                _ => ScheduleKind.Cosine,
            },
            lr,
            c.Double("optimizer.decay", 0),
            c.Long("optimizer.step-size", 1),
            c.Double("optimizer.gamma", 0, 1, minExclusive: true),
            c.Double("optimizer.min-learning-rate", 0, lr),
            c.Double("optimizer.warmup-fraction", 0, 1, maxExclusive: true));

        string lossScale = c.String("precision.loss-scale");
        var precision = new PrecisionSection(
            c.Choice("precision.mode", "fp32", "fp16") == "fp16" ? PrecisionMode.Fp16 : PrecisionMode.Fp32,
            lossScale == "dynamic" ? null : (float)c.Double("precision.loss-scale", 0, 1e30, minExclusive: true),
            (float)c.Double("precision.initial-scale", 0, 1e30, minExclusive: true),
            c.Int("precision.growth-interval", 1),
            c.Choice("precision.allreduce", "fp32", "fp16") == "fp16");
        ValidateAggregation(topology, sync, compression, precision, faults, network.Placement);
        ValidateTimeline(model, training, simulation, compression);
        ValidateKfac(optimizer, model, topology, sync);
        var parallelism = new ParallelismSection(c.Int("parallelism.pipeline-stages", 1), c.Int("parallelism.micro-batches", 1),
            c.Choice("parallelism.schedule", "gpipe", "1f1b") == "1f1b" ? Core.Pipeline.PipelineScheduleKind.OneFOneB : Core.Pipeline.PipelineScheduleKind.GPipe,
            c.IntList("parallelism.stage-boundaries", 1));
        ValidatePipeline(parallelism, model, topology, sync, compression, optimizer, training, faults);

        var compute = new ComputeSection(c.Choice("compute.engine", [.. GradientEngineFactory.Names]), c.Int("compute.threads", 0, 1024));
        var output = new OutputSection(c.String("output.directory"), c.Bool("output.plots"));
        if (output.Directory.Length == 0) throw new ActorTrainException("output.directory is empty");

        return new ExperimentSpec(name, (ulong)c.Long("seed", 0), model, dataset, topology, sync, compression, stragglers, network, simulation, faults,
            training, optimizer, schedule, precision, compute, output, variants, variant ? new SweepSection(false, 0, []) : ReadSweep(c), ReadTune(c), ActorTrain.Experiments.Telemetry.TelemetrySection.Read(c), c.Render(withSweep: !variant))
        {
            Warnings = LossWarning(network, topology, training) is { } loss ? [loss] : [],
            Parallelism = parallelism,
        };
    }

    /// <summary>What all-reduce cannot do, refused naming the key: it is synchronous, has no shards and no elastic ring.</summary>
    private static void ValidateAggregation(TopologySection topology, SyncPolicy sync, CompressionSettings compression, PrecisionSection precision,
        IReadOnlyList<WorkerFault> faults, Placement placement)
    {
        if (!topology.AllReduce)
        {
            if (precision.AllReduceFp16)
                throw new ActorTrainException("precision.allreduce = fp16 applies to all-reduce, and topology.aggregation = ps; for FP16 on a parameter server's wire use compression.codec = fp16 (and compression.downlink = fp16)");
            return;
        }
        string a = $"topology.aggregation = {topology.Aggregation}";
        if (sync.Kind != SyncPolicyKind.Bsp)
            throw new ActorTrainException($"sync.policy = {sync.Kind.ToString().ToLowerInvariant()} with {a}: all-reduce is synchronous (bsp); asynchronous and stale-synchronous training need topology.aggregation = ps");
        if (sync.BackupWorkers > 0)
            throw new ActorTrainException($"sync.backup-workers = {sync.BackupWorkers} with {a}: every worker's chunk is part of the sum, there is no quorum to drop a slow worker from; use topology.aggregation = ps");
        if (compression.Downlink != DownlinkMode.Fp32)
            throw new ActorTrainException($"compression.downlink = {compression.Downlink.ToString().ToLowerInvariant()} with {a}: there is no downlink, the reduced gradient goes to every worker; for FP16 on the wire use precision.allreduce = fp16");
        if (precision.AllReduceFp16 && !Cluster.Actors.AllReducePeer.Summable(compression))
            throw new ActorTrainException($"precision.allreduce = fp16 with compression.codec = {compression.Codec}{(compression.Lz4 ? " and lz4" : "")}: that codec's messages are all-gathered as encoded, not summed, so there is no FP16 reduction to make; use precision.allreduce = fp32");
        if (faults.Count > 0)
            throw new ActorTrainException($"faults with {a}: a killed worker ends an all-reduce run (the ring is not re-formed without it); simulate faults with topology.aggregation = ps");
        var layout = new Core.Collectives.CollectiveLayout(topology.Workers, placement.WorkersPerHost);
        if (Core.Collectives.AllReduceAlgorithms.ByName[topology.Aggregation].Unsupported(layout) is { } why)
            throw new ActorTrainException($"{a}: {why}");
    }

    /// <summary>
    /// What K-FAC needs, refused naming the key: dense layers with values, shards of whole layers
    /// (at most one per layer), a parameter server that aggregates each step's factors (BSP). Under
    /// ASP or SSP every push would be its own step with one worker's factors: not defined here.
    /// </summary>
    private static void ValidateKfac(OptimizerSettings optimizer, ModelSection model, TopologySection topology, SyncPolicy sync)
    {
        if (optimizer.Kind != OptimizerKind.Kfac) return;
        const string k = "optimizer.type = kfac";
        if (model.IsWorkload)
            throw new ActorTrainException($"{k} with model.type = workload: a workload has sizes, not values, so there are no factors to gather; use model.type = mlp, softmax or linear");
        if (topology.AllReduce)
            throw new ActorTrainException($"{k} with topology.aggregation = {topology.Aggregation}: the factors are kept, inverted and applied by the shard that owns each layer; use topology.aggregation = ps");
        if (sync.Kind != SyncPolicyKind.Bsp)
            throw new ActorTrainException($"{k} with sync.policy = {sync.Kind.ToString().ToLowerInvariant()}: the shards average each step's factor contributions from every worker, which needs sync.policy = bsp");
        if (sync.BackupWorkers > 0)
            throw new ActorTrainException($"{k} with sync.backup-workers = {sync.BackupWorkers}: a step's factors would come from whichever workers made the quorum; use sync.backup-workers = 0");
        int layers = model.Type == "mlp" ? model.Hidden.Length + 1 : 1;
        if (topology.Shards > layers)
            throw new ActorTrainException($"{k} with topology.shards = {topology.Shards}: a shard owns whole layers and the model has {layers}; use topology.shards <= {layers}");
    }

    /// <summary>
    /// What a pipeline run needs, refused naming the key: an MLP or regression model with at least as
    /// many layers as stages, stage boundaries inside it and increasing, a batch the micro-batches
    /// divide. topology.workers = D makes D replicas of the pipeline (hybrid). What is not built yet is
    /// refused too: K-FAC, codecs, ASP/SSP, faults, overlap.
    /// </summary>
    private static void ValidatePipeline(ParallelismSection p, ModelSection model, TopologySection topology, SyncPolicy sync, CompressionSettings compression,
        OptimizerSettings optimizer, TrainingSection training, IReadOnlyList<WorkerFault> faults)
    {
        if (!p.Active)
        {
            if (p.Boundaries.Length > 0) throw new ActorTrainException("parallelism.stage-boundaries is set but parallelism.pipeline-stages = 1: give pipeline-stages too");
            return;
        }
        string k = $"parallelism.pipeline-stages = {p.Stages}";
        if (model.IsWorkload) throw new ActorTrainException($"{k} with model.type = workload: a pipeline stage computes values; use model.type = mlp");
        int layers = model.Type == "mlp" ? model.Hidden.Length + 1 : 1;
        if (p.Stages > layers) throw new ActorTrainException($"{k}: the model has {layers} layer(s), a stage needs at least one; use at most {layers} stages (or more model.hidden layers)");
        if (p.Boundaries.Length > 0 && (p.Boundaries.Length != p.Stages - 1 || p.Boundaries.Where((b, i) => b <= (i == 0 ? 0 : p.Boundaries[i - 1]) || b >= layers).Any()))
            throw new ActorTrainException($"parallelism.stage-boundaries = [{string.Join(", ", p.Boundaries)}]: give the first layer of stages 2..{p.Stages}, increasing, each in 1..{layers - 1} (or [] to balance by FLOPs)");
        if (training.BatchSize <= 0 || training.BatchSize % p.MicroBatches != 0)
            throw new ActorTrainException($"parallelism.micro-batches = {p.MicroBatches} does not divide training.batch-size = {training.BatchSize}: the step's batch is split into equal micro-batches");
        if (topology.AllReduce) throw new ActorTrainException($"{k} with topology.aggregation = {topology.Aggregation}: a single pipeline has no replicas to reduce over; use ps");
        if (sync.Kind != SyncPolicyKind.Bsp || sync.BackupWorkers > 0)
            throw new ActorTrainException($"{k} with sync.policy = {sync.Kind.ToString().ToLowerInvariant()}{(sync.BackupWorkers > 0 ? " and backup workers" : "")}: a pipeline step is a synchronous flush; use sync.policy = bsp");
        if (optimizer.Kind == OptimizerKind.Kfac) throw new ActorTrainException($"{k} with optimizer.type = kfac: K-FAC runs on the parameter server's shards, not on pipeline stages");
        if (compression.Codec != "none" || compression.Lz4) throw new ActorTrainException($"{k} with compression.codec = {compression.Codec}: activations and their gradients travel uncompressed; use none");
        if (faults.Count > 0) throw new ActorTrainException($"{k} with faults: a pipeline has no spare stage to lose; remove faults");
        if (training.Overlap != OverlapMode.Off) throw new ActorTrainException($"{k} with training.overlap: the pipeline's schedule is its overlap; use off");
    }

    /// <summary>What overlap, codec cost and sizes-only workloads need, refused naming the key.</summary>
    private static void ValidateTimeline(ModelSection model, TrainingSection training, SimulationSection simulation, CompressionSettings compression)
    {
        if (training.Overlap != OverlapMode.Off && !simulation.Virtual)
            throw new ActorTrainException($"training.overlap = {training.Overlap.ToString().ToLowerInvariant()} needs simulation.clock = virtual: the layer-wise timeline is modelled time, a wall-clock step is one real computation");
        if (training.Overlap != OverlapMode.Off && simulation.ComputeTime.Kind == ComputeTimeKind.Measured)
            throw new ActorTrainException($"training.overlap = {training.Overlap.ToString().ToLowerInvariant()} with simulation.compute-time = measured: a measured step has no layer-wise split; use profile or a fixed duration");
        if (simulation.CodecCost != CodecCostMode.Off && !simulation.Virtual)
            throw new ActorTrainException($"compression.cost = {simulation.CodecCost.ToString().ToLowerInvariant()} needs simulation.clock = virtual (under the wall clock the codecs take the time they take)");
        if (!model.IsWorkload)
        {
            if (model.Workload.Length > 0)
                throw new ActorTrainException($"model.workload = \"{model.Workload}\" is set but model.type = {model.Type}: set model.type = workload to run a workload table");
            return;
        }
        if (model.Workload.Length == 0)
            throw new ActorTrainException($"model.type = workload needs model.workload: one of {string.Join(", ", Workload.BuiltIn)}, or the path of a JSON layer table");
        string w = $"model.type = workload ({model.Workload})";
        if (!simulation.Virtual)
            throw new ActorTrainException($"{w} needs simulation.clock = virtual: a workload has sizes, not values, so there is nothing to compute in real time");
        if (simulation.ComputeTime.Kind == ComputeTimeKind.Measured)
            throw new ActorTrainException($"{w} with simulation.compute-time = measured: nothing is computed to measure; use profile (the device's time for the layer table) or a fixed duration");
        if (simulation.CodecCost == CodecCostMode.Measured)
            throw new ActorTrainException($"{w} with compression.cost = measured: nothing is encoded to measure; use model or off");
        if (compression.SizesOnlyUnsupported() is { } why)
            throw new ActorTrainException($"{w} with compression.codec = {compression.Codec}{(compression.Lz4 ? " and lz4" : "")}: {why}; use a codec whose size follows from the length (none, fp16, u8bit, qsgd, terngrad, onebit, signsgd, efsignsgd, topk, randomk, dgc)");
        if (compression.Downlink == DownlinkMode.Codec)
            throw new ActorTrainException($"{w} with compression.downlink = codec: the change a shard sends depends on the values; use fp32 or fp16");
        if (training.TargetAccuracy is not null || training.TargetLoss is not null)
            throw new ActorTrainException($"{w} with training.target-accuracy or training.target-loss: a workload computes no loss; stop it with training.max-steps");
        if (training.Epochs > 0)
            throw new ActorTrainException($"{w} with training.epochs = {training.Epochs}: a workload has no dataset to count epochs over; use training.max-steps");
        if (training.BatchSize <= 0)
            throw new ActorTrainException($"{w} with training.batch-size = {training.BatchSize}: give the mini-batch per worker (there is no dataset for a full batch)");
    }

    /// <summary>
    /// A warning when the run is likely to lose a message for good (every attempt dropped), which
    /// stalls BSP and SSP: about 2 x steps x workers x shards messages, each lost with drop^max-attempts.
    /// </summary>
    private static string? LossWarning(NetworkSettings network, TopologySection topology, TrainingSection training)
    {
        double p = network.WorstLossProbability;
        double messages = 2.0 * training.MaxSteps * topology.Workers * topology.Shards;
        double expected = p * messages;
        return expected < 0.01 ? null : FormattableString.Invariant(
            $"network.drop with network.max-attempts = {network.MaxAttempts}: a message is lost for good with probability {p:g3}, about {expected:g3} of the run's ~{messages:g3} messages; a lost message stalls BSP and SSP (raise network.max-attempts or lower network.drop)");
    }

    private static readonly string[] OverrideKeys = ["latency", "bandwidth", "jitter", "drop"];

    private static NetworkSettings ReadNetwork(ConfigReader c)
    {
        var basic = new LinkSpec(
            Distribution.Parse(c.String("network.latency"), "network.latency", timed: true),
            Quantity.BytesPerSecond(c.String("network.bandwidth"), "network.bandwidth"),
            Quantity.Seconds(c.String("network.jitter"), "network.jitter"),
            c.Double("network.drop", 0, 1, maxExclusive: true));
        LinkOverride Section(string section) => Override(OverrideKeys.ToDictionary(k => k, k => c.String($"{section}.{k}")), section);
        var rules = c.BlockList("network.links", ["from", "to", .. OverrideKeys], "[{ from = worker-0, to = shard-0, latency = \"constant(2ms)\" }]")
            .Select((b, i) =>
            {
                string at = $"network.links[{i}]";
                if (!b.ContainsKey("from") || !b.ContainsKey("to")) throw new ActorTrainException($"{at} needs from and to, e.g. from = worker-0, to = shard-0");
                return new LinkRule(Endpoint.Parse(b["from"], at + ".from"), Endpoint.Parse(b["to"], at + ".to"), Override(b, at));
            }).ToList();
        return new NetworkSettings(basic, Section("network.uplink"), Section("network.downlink"), c.Int("network.racks", 1),
            Section("network.cross-rack"), rules, Quantity.Seconds(c.String("network.retransmit-timeout"), "network.retransmit-timeout"),
            c.Int("network.max-attempts", 1, 1_000_000));
    }

    /// <summary>placement.* and fabric.*; a sharing fabric replaces the per-pair link keys, which are then refused.</summary>
    private static NetworkSettings ReadFabric(ConfigReader c, NetworkSettings network)
    {
        var placement = new Placement(c.Int("placement.workers-per-host", 1, 1_000_000), c.Choice("placement.shards", "dedicated", "colocated") == "dedicated",
            c.Int("placement.shards-per-host", 1, 1_000_000));
        var topology = c.Choice("fabric.topology", "none", "switch", "leaf-spine") switch
        {
            "none" => FabricTopology.None,
            "switch" => FabricTopology.Switch,
            _ => FabricTopology.LeafSpine,
        };
        double Finite(string key)
        {
            double v = Quantity.BytesPerSecond(c.String(key), key);
            if (!double.IsFinite(v)) throw new ActorTrainException($"{key} = unlimited: a shared resource needs a finite bandwidth");
            return v;
        }
        var fabric = new FabricSettings(topology, Finite("fabric.nic-bandwidth"), Quantity.Seconds(c.String("fabric.nic-latency"), "fabric.nic-latency"),
            c.Int("fabric.hosts-per-leaf", 1, 1_000_000), c.Double("fabric.oversubscription", 1, 1000),
            Quantity.Seconds(c.String("fabric.spine-latency"), "fabric.spine-latency"), Finite("fabric.intra-host.bandwidth"),
            Quantity.Seconds(c.String("fabric.intra-host.latency"), "fabric.intra-host.latency"));
        if (fabric.Shares)
        {
            var perPair = new List<string>();
            if (network.Racks > 1) perPair.Add("network.racks");
            if (network.CrossRack != LinkOverride.None) perPair.Add("network.cross-rack");
            if (network.Uplink.BytesPerSecond is not null || network.Downlink.BytesPerSecond is not null) perPair.Add("network.uplink/downlink bandwidth");
            if (network.Rules.Count > 0) perPair.Add("network.links");
            if (perPair.Count > 0)
                throw new ActorTrainException($"{string.Join(", ", perPair)}: per-pair link settings do not apply with fabric.topology = {c.String("fabric.topology")}; " +
                    "describe the hardware with fabric.* (leaves for racks: fabric.hosts-per-leaf, fabric.oversubscription) and placement.*");
        }
        return network with { Fabric = fabric, Placement = placement };
    }

    private static LinkOverride Override(IReadOnlyDictionary<string, string> values, string at)
    {
        string? Given(string key) => values.TryGetValue(key, out var v) && !v.Trim().Equals("inherit", StringComparison.OrdinalIgnoreCase) ? v : null;
        double? drop = null;
        if (Given("drop") is { } d)
        {
            if (!double.TryParse(d, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double p) || p < 0 || p >= 1)
                throw new ActorTrainException($"{at}.drop = \"{d}\" must be a probability in [0, 1) (or inherit)");
            drop = p;
        }
        return new LinkOverride(
            Given("latency") is { } l ? Distribution.Parse(l, at + ".latency", timed: true) : null,
            Given("bandwidth") is { } b ? Quantity.BytesPerSecond(b, at + ".bandwidth") : null,
            Given("jitter") is { } j ? Quantity.Seconds(j, at + ".jitter") : null,
            drop);
    }

    private static SimulationSection ReadSimulation(ConfigReader c)
    {
        var custom = new Dictionary<string, DeviceProfile>();
        string[] keys = ["name", "fp32-tflops", "fp16-tflops", "memory-bandwidth", "launch-overhead", "efficiency"];
        var blocks = c.BlockList("simulation.devices", [.. keys, "memory"], "[{ name = l4, fp32-tflops = 30, fp16-tflops = 121, memory-bandwidth = 300GB/s, launch-overhead = 5us, efficiency = 0.5, memory = 24GB }]");
        for (int i = 0; i < blocks.Count; i++)
        {
            var b = blocks[i];
            string at = $"simulation.devices[{i}]";
            foreach (string key in keys)
                if (!b.ContainsKey(key)) throw new ActorTrainException($"{at} lacks {key} (a device takes {string.Join(", ", keys)})");
            double Number(string key, double min, double max)
            {
                if (!double.TryParse(b[key], System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double v) || v <= min || v > max)
                    throw new ActorTrainException($"{at}.{key} = \"{b[key]}\" must be a number in ({min}, {max}]");
                return v;
            }
            string name = b["name"].Trim().ToLowerInvariant();
            if (name.Length == 0 || !custom.TryAdd(name, new DeviceProfile(name, Number("fp32-tflops", 0, 1e6) * 1e12, Number("fp16-tflops", 0, 1e6) * 1e12,
                    Quantity.BytesPerSecond(b["memory-bandwidth"], at + ".memory-bandwidth"), Quantity.Seconds(b["launch-overhead"], at + ".launch-overhead"),
                    Number("efficiency", 0, 1)) { MemoryBytes = b.TryGetValue("memory", out string? memory) ? Quantity.Bytes(memory, at + ".memory") : null }))
                throw new ActorTrainException($"{at}.name = \"{b["name"]}\" is empty or names a second device of that name");
        }
        var worker = DeviceProfile.Resolve(c.String("simulation.worker-device").Trim().ToLowerInvariant(), custom, "simulation.worker-device");
        var shard = DeviceProfile.Resolve(c.String("simulation.shard-device").Trim().ToLowerInvariant(), custom, "simulation.shard-device");
        string computeTime = c.String("simulation.compute-time").Trim().ToLowerInvariant();
        var compute = computeTime switch
        {
            "profile" => new ComputeTime(ComputeTimeKind.Profile, Device: worker),
            "measured" => ComputeTime.Measured,
            _ when computeTime.Length > 0 && (char.IsDigit(computeTime[0]) || computeTime[0] == '.') =>
                new ComputeTime(ComputeTimeKind.Fixed, Quantity.Seconds(computeTime, "simulation.compute-time")),
            _ => throw new ActorTrainException($"simulation.compute-time = \"{computeTime}\" is not one of: profile, measured, or a duration such as 5ms"),
        };
        var stall = c.Duration("simulation.stall-timeout");
        if (stall <= TimeSpan.Zero) throw new ActorTrainException("simulation.stall-timeout must be above zero, e.g. 60s");
        var cost = c.Choice("compression.cost", "off", "model", "measured") switch
        {
            "off" => CodecCostMode.Off,
            "model" => CodecCostMode.Model,
            _ => CodecCostMode.Measured,
        };
        return new SimulationSection(c.Choice("simulation.clock", "virtual", "wall") == "virtual", compute, worker, shard, stall, cost);
    }

    private static IReadOnlyList<WorkerFault> ReadFaults(ConfigReader c, int workers)
    {
        var faults = new List<WorkerFault>();
        var blocks = c.BlockList("faults", ["worker", "at", "at-step", "restart-after"], "[{ worker = 1, at-step = 30, restart-after = 10ms }]");
        for (int i = 0; i < blocks.Count; i++)
        {
            var b = blocks[i];
            string at = $"faults[{i}]";
            if (!b.TryGetValue("worker", out var w) || !int.TryParse(w, out int worker) || worker < 0 || worker >= workers)
                throw new ActorTrainException($"{at}.worker must name a worker id in 0..{workers - 1}");
            if (b.ContainsKey("at") == b.ContainsKey("at-step"))
                throw new ActorTrainException($"{at} needs exactly one of at (a time, e.g. 20ms) and at-step (a step count, e.g. 30)");
            long? atStep = null;
            if (b.TryGetValue("at-step", out var stepText))
            {
                if (!long.TryParse(stepText, out long step) || step < 1) throw new ActorTrainException($"{at}.at-step = \"{stepText}\" must be a whole number >= 1");
                atStep = step;
            }
            faults.Add(new WorkerFault(worker, b.TryGetValue("at", out var time) ? Quantity.Seconds(time, at + ".at") : null, atStep,
                b.TryGetValue("restart-after", out var after) ? Quantity.Seconds(after, at + ".restart-after") : null));
        }
        return faults;
    }

    /// <summary>Threads per SIMD engine when compute.threads = 0: the cores shared among the workers.</summary>
    public int EngineThreads => Compute.Threads > 0 ? Compute.Threads : Math.Max(1, Environment.ProcessorCount / Topology.Workers);
}
