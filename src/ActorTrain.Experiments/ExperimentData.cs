using ActorTrain.Core.Pipeline;
using ActorTrain.Core;
using ActorTrain.Core.Data;
using ActorTrain.Core.Models;

namespace ActorTrain.Experiments;

/// <summary>The data and model of an experiment, built from its spec; all user errors name the key.</summary>
public sealed record ExperimentData(Dataset Train, Dataset Test, Dataset[] Partitions, ModelSpec Model)
{
    /// <param name="oneProcess">The whole topology lives in this process, so its memory estimate must fit here (a
    /// cluster node holds only its part; the estimate is of the whole, so it is not applied there).</param>
    public static ExperimentData Build(ExperimentSpec spec, bool oneProcess = true)
    {
        if (spec.Model.IsWorkload) return Workload(spec);
        var d = spec.Dataset;
        ulong seed = spec.Seed;
        Dataset train, test;
        switch (d.Type)
        {
            case "synthetic-blobs":
                (train, test) = SyntheticData.Blobs(d.Samples, d.Features, d.BlobClasses, d.Separation, Rng.Derive(seed, 1)).Split(d.TestFraction, Rng.Derive(seed, 2));
                break;
            case "synthetic-linear":
                (train, test) = SyntheticData.Linear(d.Samples, d.Features, d.Outputs, d.Noise, Rng.Derive(seed, 1), out _).Split(d.TestFraction, Rng.Derive(seed, 2));
                break;
            default:
                try
                {
                    (train, test) = IdxReader.LoadMnistFolder(d.Path, d.Normalization, d.Classes == 0 ? null : d.Classes);
                }
                catch (DataFormatException e)
                {
                    throw new ActorTrainException($"dataset.path: {e.Message}", e);
                }
                catch (LabelOutOfRangeException e)
                {
                    throw new ActorTrainException($"dataset.classes: {e.Message}", e);
                }
                if (d.Limit > 0 && d.Limit < train.Count)
                    train = train.Select(Enumerable.Range(0, d.Limit).ToArray(), train.Name);
                break;
        }

        int[] layers = spec.Model.Type == "mlp" ? [train.FeatureCount, .. spec.Model.Hidden, train.Classes]
            : [train.FeatureCount, spec.Model.Type == "linear" ? train.TargetDim : train.Classes];
        long parameters = Enumerable.Range(0, layers.Length - 1).Sum(l => ((long)layers[l] + 1) * layers[l + 1]);
        if (parameters > Array.MaxLength)
            throw new ActorTrainException(FormattableString.Invariant(
                $"model.hidden = [{string.Join(", ", spec.Model.Hidden)}] gives {parameters:N0} parameters; one flat vector holds at most {Array.MaxLength:N0}: use smaller layers"));
        if (oneProcess) CheckMemory(spec, parameters, train, test);

        ModelSpec model = spec.Model.Type switch
        {
            "linear" => ModelSpec.LinearRegression(train.FeatureCount, train.TargetDim),
            "softmax" => ModelSpec.SoftmaxRegression(train.FeatureCount, train.Classes),
            _ => ModelSpec.Mlp(train.FeatureCount, spec.Model.Hidden, train.Classes, spec.Model.Activation),
        };
        if (spec.Topology.Shards > model.ParameterCount)
            throw new ActorTrainException($"topology.shards = {spec.Topology.Shards} is more than the model's {model.ParameterCount} parameters; every shard needs at least one");
        if (spec.Topology.Workers > train.Count)
            throw new ActorTrainException($"topology.workers = {spec.Topology.Workers} is more than the {train.Count} training rows; every worker needs at least one");
        if (spec.Parallelism.Active) CheckStageMemory(spec, model);
        var partitions = train.Partition(spec.Topology.Workers, Rng.Derive(seed, 3));
        int smallest = partitions.Min(p => p.Count);
        if (spec.Training.BatchSize > smallest)
            throw new ActorTrainException(
                $"training.batch-size = {spec.Training.BatchSize} is more than a worker's partition ({train.Count} training rows over {spec.Topology.Workers} workers: {smallest} rows); the largest valid value is {smallest} (or 0 for full-batch)");
        return new ExperimentData(train, test, partitions, model);
    }

    /// <summary>Each pipeline stage's memory (weights, gradient, optimizer state, activations at its peak) against simulation.worker-device's.</summary>
    public static StageMemory[] StageMemory(ExperimentSpec spec, ModelSpec model)
    {
        var p = spec.Parallelism;
        int state = Core.Optimization.Optimizer.Create(spec.Optimizer, 1).State.Count;
        return Core.Pipeline.StageMemory.Of(model, StageModel.Boundaries(model, p.Stages, p.Boundaries), p.Schedule, p.MicroBatches,
            spec.Training.BatchSize, state, spec.Precision.Mode == Core.Precision.PrecisionMode.Fp16 ? 2 : 4);
    }

    private static void CheckStageMemory(ExperimentSpec spec, ModelSpec model)
    {
        if (spec.Simulation.WorkerDevice.MemoryBytes is not { } memory) return;
        var worst = StageMemory(spec, model).MaxBy(m => m.Bytes);
        if (worst.Bytes > memory)
            throw new ActorTrainException(FormattableString.Invariant(
                $"pipeline stage {worst.Stage} (layers {worst.Layers}) needs {worst.Bytes / 1e9:0.##} GB ({worst.ParameterBytes / 1e9:0.##} GB of weights, gradient and optimizer state, ") +
                FormattableString.Invariant($"{worst.ActivationBytes / 1e9:0.##} GB of activations for {worst.PeakMicroBatches} micro-batch(es)) but simulation.worker-device = {spec.Simulation.WorkerDevice.Name} has {memory / 1e9:0.##} GB: ") +
                "use more parallelism.pipeline-stages, more parallelism.micro-batches, parallelism.schedule = 1f1b, or a smaller training.batch-size");
    }

    /// <summary>
    /// A workload table (model.workload): sizes only. Its data is a stand-in of one mini-batch of
    /// zeros per worker, which only sets the samples each step counts; the dataset.* keys do not apply.
    /// </summary>
    private static ExperimentData Workload(ExperimentSpec spec)
    {
        var model = ModelSpec.FromWorkload(Core.Models.Workload.Load(spec.Model.Workload));
        if (spec.Topology.Shards > model.ParameterCount)
            throw new ActorTrainException($"topology.shards = {spec.Topology.Shards} is more than the workload's {model.ParameterCount} parameters; every shard needs at least one");
        int batch = spec.Training.BatchSize, workers = spec.Topology.Workers;
        var train = new Dataset(spec.Model.Workload, new float[(long)batch * workers], 1, new int[(long)batch * workers], 2);
        var partitions = train.Partition(workers, Rng.Derive(spec.Seed, 3));
        return new ExperimentData(train, new Dataset(spec.Model.Workload, [0f], 1, [0], 2), partitions, model);
    }

    /// <summary>
    /// Bytes a one-process run holds, roughly: the data, and per parameter 4 bytes in each of the
    /// initial weights, the shards' master weights and optimizer state, the evaluator, and each
    /// worker's weights, gradient and codec residual.
    /// </summary>
    public static long EstimateBytes(ExperimentSpec spec, long parameters, long dataFloats)
    {
        int states = spec.Optimizer.Kind switch
        {
            Core.Optimization.OptimizerKind.Sgd => 0,
            Core.Optimization.OptimizerKind.Adam or Core.Optimization.OptimizerKind.AdamW => 2,
            _ => 1,
        };
        long perWorker = 3;
        return 4 * (dataFloats + parameters * (3 + states + perWorker * spec.Topology.Workers));
    }

    /// <summary>A run that cannot fit this machine's memory is refused before it starts, naming the keys that size it.</summary>
    private static void CheckMemory(ExperimentSpec spec, long parameters, Dataset train, Dataset test)
    {
        long dataFloats = ((long)train.Count + test.Count) * train.FeatureCount;
        long need = EstimateBytes(spec, parameters, dataFloats);
        long have = GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;
        if (need > have * 0.8)
            throw new ActorTrainException(FormattableString.Invariant(
                $"the run needs about {need / 1e9:0.#} GB ({parameters:N0} parameters from model.hidden, held by the shards and each of topology.workers = {spec.Topology.Workers}), but this process can use {have / 1e9:0.#} GB: use smaller model.hidden or fewer topology.workers"));
    }

    /// <summary>
    /// The same experiment with a validation split carved out of the training rows standing in for
    /// the test split (hyperparameter search judges candidates on it and never sees the test rows).
    /// </summary>
    public ExperimentData HoldOutValidation(double fraction, ulong seed, int workers)
    {
        var (train, validation) = Train.Split(fraction, Rng.Derive(seed, 0x7A11D));
        if (workers > train.Count)
            throw new ActorTrainException($"tune.validation-fraction = {fraction} leaves {train.Count} training rows for {workers} workers");
        return new ExperimentData(train, validation, train.Partition(workers, Rng.Derive(seed, 3)), Model);
    }

    /// <summary>The global steps of a run: max-steps, or fewer when training.epochs asks for fewer.</summary>
    public long Steps(ExperimentSpec spec)
    {
        if (spec.Training.Epochs <= 0) return spec.Training.MaxSteps;
        int batch = spec.Training.BatchSize == 0 ? Partitions.Max(p => p.Count) : Math.Min(spec.Training.BatchSize, Partitions.Max(p => p.Count));
        long perStep = (long)batch * spec.Topology.Workers;
        long epochSteps = (long)Math.Ceiling(spec.Training.Epochs * Train.Count / perStep);
        return Math.Max(1, Math.Min(spec.Training.MaxSteps, epochSteps));
    }
}
