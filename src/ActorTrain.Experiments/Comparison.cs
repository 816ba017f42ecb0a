using System.Globalization;
using System.Text;
using System.Text.Json;
using ActorTrain.Cluster.Actors;

namespace ActorTrain.Experiments;

public sealed record ComparisonResult(string Folder, Comparison Comparison);

/// <summary>One variant's line in a comparison. Times are on the run's clock (virtual or wall).</summary>
public sealed record ComparisonRow(
    string Variant,
    string Policy,
    string StopReason,
    long Steps,
    long Updates,
    double ElapsedSeconds,
    double? SecondsToTargetLoss,
    long? UpdatesToTargetLoss,
    double FinalTestLoss,
    double FinalTestAccuracy,
    double MeanStaleness,
    long MaxStaleness,
    double MeanWaitSeconds,
    double MaxWaitSeconds,
    long DroppedLate,
    string Compression,
    long BytesWorkerToShard,
    long BytesShardToWorker,
    double UplinkRatio,
    string Folder,
    IReadOnlyList<KeyValuePair<string, string>> Parameters,
    double? TargetAccuracy = null,
    double? SecondsToTargetAccuracy = null,
    double? TargetLoss = null,
    long? StepsToTargetAccuracy = null,
    long FactorBytesWorkerToShard = 0,
    PipelineReport? Pipeline = null);

/// <summary>
/// The table of a compare block or sweep (comparison.md, comparison.csv, the parent summary.json),
/// with a column per key the variants set; <paramref name="Clock"/> says whether times are virtual
/// or wall-clock seconds.
/// </summary>
public sealed record Comparison(string Name, double? TargetLoss, string Clock, IReadOnlyList<ComparisonRow> Rows)
{
    public static Comparison Create(ExperimentSpec spec, IReadOnlyList<(ExperimentVariant Variant, RunResult Result)> runs)
    {
        double? target = spec.Training.TargetLoss;
        var rows = runs.Select(r =>
        {
            var o = r.Result.Outcome;
            // each variant's own targets (a variant may set its own, as the Fashion-MNIST comparison does)
            var reached = r.Variant.Spec.Training.TargetLoss is { } t ? o.Evaluations.FirstOrDefault(e => e.TestLoss <= t) : null;
            double? accuracyTarget = r.Variant.Spec.Training.TargetAccuracy;
            var accurate = accuracyTarget is { } a ? o.Evaluations.FirstOrDefault(e => e.TestAccuracy >= a) : null;
            var last = o.Evaluations.Count > 0 ? o.Evaluations[^1] : EvaluationPoint.None;
            return new ComparisonRow(
                r.Variant.Name,
                r.Variant.Spec.Sync.Describe(),
                r.Result.Summary.StopReason,
                o.FinalStep,
                last.Updates,
                o.ElapsedSeconds,
                reached?.ElapsedSeconds,
                reached?.Updates,
                last.TestLoss,
                last.TestAccuracy,
                last.MeanStaleness,
                last.MaxStaleness,
                o.Workers.Average(w => w.WaitSeconds),
                o.Workers.Max(w => w.WaitSeconds),
                last.DroppedLate,
                r.Variant.Spec.Compression.Describe(),
                last.BytesWorkerToShard,
                last.BytesShardToWorker,
                last.UplinkRatio,
                Path.GetFileName(r.Result.Folder),
                r.Variant.Parameters,
                accuracyTarget,
                accurate?.ElapsedSeconds,
                r.Variant.Spec.Training.TargetLoss,
                accurate?.Step,
                r.Result.Summary.FactorBytesWorkerToShard,
                r.Result.Summary.Pipeline);
        }).ToList();
        // variants may override the clock; the table says which clock each kind of time is on
        var clocks = runs.Select(r => r.Variant.Spec.Simulation.Virtual ? "virtual" : "wall-clock").Distinct().ToList();
        return new Comparison(spec.Name, target, clocks.Count == 1 ? clocks[0] : "virtual or wall-clock (see each variant's summary.json)", rows);
    }

    public void Write(string folder)
    {
        File.WriteAllText(Path.Combine(folder, "comparison.md"), Markdown());
        File.WriteAllText(Path.Combine(folder, "comparison.csv"), Csv());
        File.WriteAllText(Path.Combine(folder, "summary.json"), JsonSerializer.Serialize(this, ResultFormat.Json) + "\n");
    }

    private static string F(double v, string format = "R") => ResultFormat.Csv(v, format);

    /// <summary>Every key some variant sets, in first-seen order: one column each.</summary>
    public IReadOnlyList<string> ParameterKeys => Rows.SelectMany(r => r.Parameters.Select(p => p.Key)).Distinct().ToList();

    private static string Param(ComparisonRow r, string key) => r.Parameters.FirstOrDefault(p => p.Key == key).Value ?? "";

    public string Markdown()
    {
        var sb = new StringBuilder();
        sb.AppendLine($"# {Name}: comparison");
        sb.AppendLine();
        sb.AppendLine(TargetLoss is { } t
            ? $"Target test loss {F(t)}; times are {Clock} seconds; staleness is in shard versions (updates)."
            : $"No target loss set (training.target-loss = 0); times are {Clock} seconds.");
        sb.AppendLine();
        var keys = ParameterKeys;
        sb.AppendLine("| variant | " + string.Concat(keys.Select(k => k + " | ")) + "policy | compression | stopped by | steps | updates | time (s) | time to target (s) | updates to target | final test loss | final accuracy | mean staleness | max staleness | mean wait / worker (s) | max wait (s) | dropped late | bytes worker->shard | bytes shard->worker | uplink ratio vs fp32 |");
        sb.AppendLine("|---|" + string.Concat(keys.Select(_ => "---|")) + "---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        // columns some comparisons have: each variant's target accuracy, the time and steps to it; K-FAC's factor bytes
        void AddColumns(params string[] names)
        {
            var lines = sb.ToString().TrimEnd('\n').Split('\n');
            sb.Clear();
            foreach (string line in lines[..^2]) sb.AppendLine(line);
            sb.AppendLine(lines[^2].TrimEnd() + string.Concat(names.Select(n => $" {n} |")));
            sb.AppendLine(lines[^1].TrimEnd() + string.Concat(names.Select(_ => "---:|")));
        }
        bool accuracy = Rows.Any(r => r.TargetAccuracy is not null);
        if (accuracy) AddColumns("target accuracy", "time to target accuracy (s)", "steps to target accuracy");
        bool factors = Rows.Any(r => r.FactorBytesWorkerToShard > 0);
        if (factors) AddColumns("factor bytes worker->shard");
        bool pipeline = Rows.Any(r => r.Pipeline is not null);
        if (pipeline) AddColumns("stages x micro-batches", "schedule", "time per step (s)", "bubble", "uniform bubble (P-1)/(M+P-1)", "peak activations (stage 0)");
        foreach (var r in Rows)
            sb.AppendLine($"| {r.Variant} | {string.Concat(keys.Select(k => Param(r, k) + " | "))}{r.Policy} | {r.Compression} | {r.StopReason} | {r.Steps} | {r.Updates} | {F(r.ElapsedSeconds, "0.######")} | " +
                          $"{(r.SecondsToTargetLoss is { } s ? F(s, "0.######") : r.TargetLoss is null ? "-" : "not reached")} | {(r.UpdatesToTargetLoss?.ToString(CultureInfo.InvariantCulture) ?? "-")} | " +
                          $"{F(r.FinalTestLoss, "0.0000")} | {F(r.FinalTestAccuracy, "0.0000")} | {F(r.MeanStaleness, "0.00")} | {r.MaxStaleness} | " +
                          $"{F(r.MeanWaitSeconds, "0.######")} | {F(r.MaxWaitSeconds, "0.######")} | {r.DroppedLate} | {r.BytesWorkerToShard} | {r.BytesShardToWorker} | {F(r.UplinkRatio, "0.0")}x |" +
                          (accuracy ? $" {(r.TargetAccuracy is { } ta ? F(ta, "0.####") : "-")} | {(r.SecondsToTargetAccuracy is { } sa ? F(sa, "0.######") : r.TargetAccuracy is null ? "-" : "not reached")} | " +
                                      $"{(r.StepsToTargetAccuracy?.ToString(CultureInfo.InvariantCulture) ?? (r.TargetAccuracy is null ? "-" : "not reached"))} |" : "") +
                          (factors ? $" {r.FactorBytesWorkerToShard} |" : "") +
                          (pipeline ? (r.Pipeline is { } p
                              ? $" {p.Stages} x {p.MicroBatches} | {p.Schedule} | {F(r.Steps > 0 ? r.ElapsedSeconds / r.Steps : 0, "0.######")} | {F(p.BubbleFraction, "0.####")} | {F(p.UniformBubbleFraction, "0.####")} | {(p.PeakActivations.Count > 0 ? p.PeakActivations[0] : 0)} |"
                              : " - | - | - | - | - | - |") : ""));
        return sb.ToString();
    }

    private string Csv()
    {
        var keys = ParameterKeys;
        static string Quoted(string v) => "\"" + v.Replace("\"", "\"\"") + "\"";
        var sb = new StringBuilder("variant," + string.Concat(keys.Select(k => k + ",")) +
            "policy,compression,stop_reason,steps,updates,elapsed_s,seconds_to_target,updates_to_target,final_test_loss,final_test_accuracy,mean_staleness,max_staleness,mean_wait_s,max_wait_s,dropped_late,bytes_worker_to_shard,bytes_shard_to_worker,uplink_ratio,target_accuracy,seconds_to_target_accuracy,steps_to_target_accuracy,factor_bytes_worker_to_shard\n");
        foreach (var r in Rows)
            sb.AppendLine(string.Join(',', [r.Variant, .. keys.Select(k => Quoted(Param(r, k)))]) + "," + string.Join(',', $"\"{r.Policy}\"", $"\"{r.Compression}\"", r.StopReason, r.Steps, r.Updates, F(r.ElapsedSeconds),
                r.SecondsToTargetLoss is { } s ? F(s) : "", r.UpdatesToTargetLoss?.ToString(CultureInfo.InvariantCulture) ?? "",
                F(r.FinalTestLoss), F(r.FinalTestAccuracy), F(r.MeanStaleness, "0.####"), r.MaxStaleness,
                F(r.MeanWaitSeconds), F(r.MaxWaitSeconds), r.DroppedLate, r.BytesWorkerToShard, r.BytesShardToWorker, F(r.UplinkRatio),
                r.TargetAccuracy is { } ta ? F(ta) : "", r.SecondsToTargetAccuracy is { } sa ? F(sa) : "",
                r.StepsToTargetAccuracy?.ToString(CultureInfo.InvariantCulture) ?? "", r.FactorBytesWorkerToShard));
        return sb.ToString();
    }
}
