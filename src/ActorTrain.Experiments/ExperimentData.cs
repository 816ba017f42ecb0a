using ActorTrain.Core;
using ActorTrain.Core.Data;
using ActorTrain.Core.Models;

namespace ActorTrain.Experiments;

/// <summary>The data and model of an experiment, built from its spec; all user errors name the key.</summary>
public sealed record ExperimentData(Dataset Train, Dataset Test, Dataset[] Partitions, ModelSpec Model)
{
    public static ExperimentData Build(ExperimentSpec spec)
    {
        var d = spec.Dataset;
        ulong seed = spec.Seed;
        Dataset train, test;
        switch (d.Type)
        {
            case "synthetic-blobs":
                (train, test) = SyntheticData.Blobs(d.Samples, d.Features, d.Classes, d.Separation, Rng.Derive(seed, 1)).Split(d.TestFraction, Rng.Derive(seed, 2));
                break;
            case "synthetic-linear":
                (train, test) = SyntheticData.Linear(d.Samples, d.Features, d.Outputs, d.Noise, Rng.Derive(seed, 1), out _).Split(d.TestFraction, Rng.Derive(seed, 2));
                break;
            default:
                try
                {
                    (train, test) = IdxReader.LoadMnistFolder(d.Path, d.Normalization);
                }
                catch (DataFormatException e)
                {
                    throw new ActorTrainException($"dataset.path: {e.Message}", e);
                }
                if (d.Limit > 0 && d.Limit < train.Count)
                    train = train.Select(Enumerable.Range(0, d.Limit).ToArray(), train.Name);
                break;
        }

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
        var partitions = train.Partition(spec.Topology.Workers, Rng.Derive(seed, 3));
        return new ExperimentData(train, test, partitions, model);
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
