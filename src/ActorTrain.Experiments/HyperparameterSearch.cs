using System.Globalization;
using System.Text;
using ActorTrain.Cluster.Actors;
using ActorTrain.Core;
using ScottPlot;

namespace ActorTrain.Experiments;

/// <summary>One candidate of a search, judged on the validation split.</summary>
public sealed record TuneCandidate(string Stage, string Name, double LearningRate, int BatchSize, long Steps, double ValidationLoss,
    double ValidationAccuracy, double Seconds);

public sealed record TuneResult(string Folder, IReadOnlyList<TuneCandidate> Candidates, TuneCandidate Best, RunResult Final);

/// <summary>
/// `actortrain tune`: the learning rate first (each candidate with a linear warm-up over the first
/// tune.warmup-fraction of its steps), then the batch size at the chosen rate with the sample budget
/// held constant, every candidate trained on the training rows minus a validation split and judged
/// by its final validation loss. The chosen setting then runs once on the real train/test split.
/// Folder: lr-*, batch-* (one run folder each), best/ (the final run), tune.csv, best.conf, plots
/// and report.md, written to a .partial folder renamed when complete.
/// </summary>
public static class HyperparameterSearch
{
    public static async Task<TuneResult> RunAsync(string? file, IReadOnlyList<string> overrides, string? outputRoot = null,
        Func<string, IRunObserver?>? observers = null, CancellationToken cancellation = default)
    {
        var baseSpec = ExperimentSpec.Load(file, overrides);
        if (baseSpec.Variants.Count > 0) throw new ActorTrainException("tune searches one experiment: remove its compare block or sweep.values");
        if (baseSpec.Training.BatchSize <= 0) throw new ActorTrainException("training.batch-size = 0 (full partitions) cannot be tuned; set a batch size");
        var tune = baseSpec.Tune;
        var data = ExperimentData.Build(baseSpec);
        var validation = data.HoldOutValidation(tune.ValidationFraction, baseSpec.Seed, baseSpec.Topology.Workers);
        long baseSteps = baseSpec.Training.MaxSteps;
        int baseBatch = baseSpec.Training.BatchSize;

        ExperimentSpec Candidate(double lr, int batch, long steps, bool final) => ExperimentSpec.Load(file, [.. overrides,
            $"optimizer.learning-rate={lr.ToString("R", CultureInfo.InvariantCulture)}",
            $"optimizer.warmup-fraction={tune.WarmupFraction.ToString("R", CultureInfo.InvariantCulture)}",
            $"training.batch-size={batch}", $"training.max-steps={steps}", .. final ? Array.Empty<string>() : ["training.stop-at-target=off"]]);

        string root = outputRoot ?? baseSpec.Output.Directory;
        var folder = RunFolder.Create(root, $"{baseSpec.Name}-tune-{ExperimentRunner.Stamp()}");
        string partial = folder.Partial;
        try
        {
            File.WriteAllText(Path.Combine(partial, "config.conf"), baseSpec.ResolvedConfig);
            var candidates = new List<TuneCandidate>();
            async Task<TuneCandidate> Try(string stage, string name, double lr, int batch, long steps)
            {
                var spec = Candidate(lr, batch, steps, final: false);
                var run = await ExperimentRunner.RunInto(spec, validation, partial, name, observers?.Invoke(name), cancellation);
                cancellation.ThrowIfCancellationRequested(); // an interrupted search has no answer: nothing is kept
                var last = run.Outcome.Evaluations[^1];
                var candidate = new TuneCandidate(stage, name, lr, batch, run.Outcome.FinalStep, last.TestLoss, last.TestAccuracy, run.Outcome.ElapsedSeconds);
                candidates.Add(candidate);
                return candidate;
            }

            var rates = new List<TuneCandidate>();
            foreach (double lr in tune.Candidates(baseSpec.Seed))
                rates.Add(await Try("learning-rate", $"lr-{lr.ToString("R", CultureInfo.InvariantCulture)}", lr, baseBatch, baseSteps));
            var bestRate = Best(rates);

            var batches = new List<TuneCandidate>();
            foreach (int batch in tune.BatchSizes)
            {
                if (batch == baseBatch)
                {
                    batches.Add(bestRate); // already trained in the first stage
                    continue;
                }
                long steps = Math.Max(1, baseSteps * baseBatch / batch);
                batches.Add(await Try("batch-size", $"batch-{batch}", bestRate.LearningRate, batch, steps));
            }
            var best = batches.Count > 0 ? Best(batches) : bestRate;

            var finalSpec = Candidate(best.LearningRate, best.BatchSize, best.Steps, final: true);
            var final = await ExperimentRunner.RunInto(finalSpec, data, partial, "best", observers?.Invoke("best"), cancellation);
            File.WriteAllText(Path.Combine(partial, "best.conf"), finalSpec.ResolvedConfig);
            WriteTable(partial, candidates, best);
            var plots = baseSpec.Output.Plots ? WritePlots(partial, rates, batches) : [];
            WriteReport(partial, baseSpec, tune, candidates, bestRate, best, final, plots);
            string finalFolder = folder.Publish();
            return new TuneResult(finalFolder, candidates, best, final with { Folder = Path.Combine(finalFolder, "best") });
        }
        catch
        {
            folder.Discard();
            throw;
        }
    }

    /// <summary>Lowest validation loss; a diverged (non-finite) candidate never wins; ties go to the first listed.</summary>
    private static TuneCandidate Best(IReadOnlyList<TuneCandidate> candidates) =>
        candidates.Where(c => double.IsFinite(c.ValidationLoss)).MinBy(c => c.ValidationLoss)
        ?? throw new ActorTrainException("every candidate diverged (non-finite validation loss); try smaller tune.learning-rates");

    private static string F(double v) => ResultFormat.Csv(v);

    private static void WriteTable(string folder, IReadOnlyList<TuneCandidate> candidates, TuneCandidate best)
    {
        var sb = new StringBuilder("stage,candidate,learning_rate,batch_size,steps,validation_loss,validation_accuracy,seconds,chosen\n");
        foreach (var c in candidates)
            sb.AppendLine(string.Join(',', c.Stage, c.Name, F(c.LearningRate), c.BatchSize, c.Steps, F(c.ValidationLoss), F(c.ValidationAccuracy), F(c.Seconds),
                c == best ? "yes" : ""));
        File.WriteAllText(Path.Combine(folder, "tune.csv"), sb.ToString());
    }

    private static IReadOnlyList<string> WritePlots(string folder, IReadOnlyList<TuneCandidate> rates, IReadOnlyList<TuneCandidate> batches)
    {
        var files = new List<string>();
        void Draw(string file, string title, string x, IReadOnlyList<TuneCandidate> points, Func<TuneCandidate, double> at)
        {
            var plot = new Plot();
            var finite = points.Where(p => double.IsFinite(p.ValidationLoss)).ToList();
            var line = plot.Add.Scatter(finite.Select(at).ToArray(), finite.Select(p => p.ValidationLoss).ToArray());
            line.LegendText = "final validation loss";
            plot.Title(title);
            plot.XLabel(x);
            plot.YLabel("validation loss");
            plot.SavePng(Path.Combine(folder, file), 800, 500);
            files.Add(file);
        }
        Draw("validation_loss_vs_learning_rate.png", "Learning rate (first stage)", "log10 learning rate", rates, c => Math.Log10(c.LearningRate));
        if (batches.Count > 1) Draw("validation_loss_vs_batch_size.png", "Batch size at the chosen learning rate", "batch size per worker", batches, c => c.BatchSize);
        return files;
    }

    private static void WriteReport(string folder, ExperimentSpec spec, TuneSection tune, IReadOnlyList<TuneCandidate> candidates, TuneCandidate bestRate,
        TuneCandidate best, RunResult final, IReadOnlyList<string> plots)
    {
        var sb = new StringBuilder();
        sb.AppendLine($"# {spec.Name}: hyperparameter search");
        sb.AppendLine();
        sb.AppendLine($"{(tune.Random ? $"Random search ({tune.Samples} log-uniform learning rates)" : "Grid search")}, learning rate first (linear warm-up over " +
                      $"{F(tune.WarmupFraction * 100)}% of the steps), then batch size; every candidate judged by its final loss on a validation split of " +
                      $"{F(tune.ValidationFraction * 100)}% of the training rows. Batch sizes keep the sample budget: {spec.Training.MaxSteps} steps at batch " +
                      $"{spec.Training.BatchSize}, scaled inversely for the others.");
        sb.AppendLine();
        sb.AppendLine("| stage | candidate | learning rate | batch | steps | validation loss | validation accuracy | time (s) |");
        sb.AppendLine("|---|---|---:|---:|---:|---:|---:|---:|");
        foreach (var c in candidates)
            sb.AppendLine($"| {c.Stage} | [{c.Name}]({c.Name}/report.md){(c == best ? " **chosen**" : c == bestRate ? " (best rate)" : "")} | {F(c.LearningRate)} | {c.BatchSize} | {c.Steps} | " +
                          $"{c.ValidationLoss.ToString("0.0000", CultureInfo.InvariantCulture)} | {c.ValidationAccuracy.ToString("0.0000", CultureInfo.InvariantCulture)} | " +
                          $"{c.Seconds.ToString("0.####", CultureInfo.InvariantCulture)} |");
        sb.AppendLine();
        var s = final.Summary;
        sb.AppendLine($"Chosen: learning rate {F(best.LearningRate)}, batch {best.BatchSize} per worker, {best.Steps} steps. On the test split ([best/report.md](best/report.md)): " +
                      $"test loss {s.FinalTestLoss.ToString("0.0000", CultureInfo.InvariantCulture)}, accuracy {s.FinalTestAccuracy.ToString("0.0000", CultureInfo.InvariantCulture)}, " +
                      $"stopped by {s.StopReason} at step {s.Steps}. Its full configuration: [best.conf](best.conf).");
        sb.AppendLine();
        foreach (string png in plots) sb.AppendLine($"![{Path.GetFileNameWithoutExtension(png)}]({png})");
        sb.AppendLine();
        sb.AppendLine("Every candidate as CSV: [tune.csv](tune.csv).");
        File.WriteAllText(Path.Combine(folder, "report.md"), sb.ToString());
    }
}
