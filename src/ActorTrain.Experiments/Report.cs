using System.Globalization;
using System.Text;
using ActorTrain.Cluster.Actors;
using ActorTrain.Core.Simulation;

namespace ActorTrain.Experiments;

/// <summary>
/// report.md: what a run or a comparison found, as markdown that a code-hosting page renders, with
/// its PNGs beside it (relative links, so the folder can be moved or committed as it is).
/// </summary>
public static class Report
{
    private static string F(double v, string format) => v.ToString(format, CultureInfo.InvariantCulture);

    public static void WriteRun(string folder, RunSummary s, RunOutcome o)
    {
        var sb = new StringBuilder();
        string unit = o.VirtualTime ? "virtual s" : "s";
        sb.AppendLine($"# {s.Name}");
        sb.AppendLine();
        string topology = s.Pipeline is { } p
            ? $"{(s.Workers > 1 ? $"{s.Workers} replicas of " : "")}a pipeline of {p.Stages} stages, batch {s.BatchSizePerWorker} in {p.MicroBatches} micro-batches ({p.Schedule})"
            : $"{s.Workers} workers x batch {s.BatchSizePerWorker}, {s.Shards} shards, {s.Policy}";
        sb.AppendLine($"{s.Model} on {s.Dataset} ({s.TrainRows} train / {s.TestRows} test rows); {topology}; {s.Optimizer}, {s.Precision}; compression {s.Compression}; clock {s.Clock}.");
        sb.AppendLine();
        sb.AppendLine("| | |");
        sb.AppendLine("|---|---|");
        void Row(string k, string v) => sb.AppendLine($"| {k} | {v} |");
        Row("stopped by", $"{s.StopReason} at step {s.Steps} ({F(s.Epochs, "0.00")} epochs)");
        Row("time", $"{F(s.ElapsedSeconds, "0.######")} {unit}" + (o.VirtualTime ? $" (simulated in {F(s.WallSeconds, "0.0")} s)" : ""));
        Row("final test loss / accuracy", $"{F(s.FinalTestLoss, "0.0000")} / {F(s.FinalTestAccuracy, "0.0000")} (best accuracy {F(s.BestTestAccuracy, "0.0000")})");
        Row("updates, staleness", $"{s.Updates} updates, mean {F(s.MeanStaleness, "0.00")}, max {s.MaxStaleness}, dropped late {s.DroppedLate}");
        Row("bytes worker -> shard", $"{s.BytesWorkerToShard} ({F(s.UplinkCompressionRatio, "0.0")}x smaller than dense FP32)");
        Row("bytes shard -> worker", $"{s.BytesShardToWorker} ({F(s.DownlinkCompressionRatio, "0.0")}x)");
        Row("skipped gradients (non-finite)", s.SkippedGradients.ToString(CultureInfo.InvariantCulture));
        Row("network", s.Network.Description);
        Row("link", $"{s.Network.Messages} messages, {s.Network.Retransmissions} retransmissions, {s.Network.DuplicatesDiscarded} duplicates discarded, " +
                    $"{s.Network.Lost} lost, {s.Network.LostToStoppedActors} to killed workers");
        if (s.Network.Fabric is { } fabric)
        {
            sb.AppendLine();
            sb.AppendLine($"## The fabric: {fabric.Topology}, {fabric.Hosts} hosts, {fabric.Placement}");
            sb.AppendLine();
            sb.AppendLine("The five most utilised resources (utilisation: bytes over capacity x run time; busy: the share of the run during which at least one flow crossed it; every resource in summary.json).");
            sb.AppendLine();
            sb.AppendLine("| resource | capacity (Gbit/s) | MB carried | utilisation | busy |");
            sb.AppendLine("|---|---:|---:|---:|---:|");
            foreach (var r in fabric.Busiest)
                sb.AppendLine($"| {r.Name} | {F(r.CapacityBytesPerSecond * 8 / 1e9, "0.###")} | {F(r.Bytes / 1e6, "0.00")} | {F(100 * r.Utilisation, "0.0")}% | {F(100 * r.BusyFraction, "0.0")}% |");
        }
        sb.AppendLine();
        sb.AppendLine("## Where each worker's time went");
        sb.AppendLine();
        sb.AppendLine("| worker | slowdown | steps | compute | communication | wait | kills |");
        sb.AppendLine("|---:|---:|---:|---:|---:|---:|---:|");
        foreach (var w in s.WorkerTimes.Take(32))
            sb.AppendLine($"| {w.Worker} | {F(w.Slowdown, "0.##")} | {w.Steps} | {Quantity.FormatSeconds(w.ComputeSeconds)} | {Quantity.FormatSeconds(w.CommunicationSeconds)} | " +
                          $"{Quantity.FormatSeconds(w.WaitSeconds)} | {w.Kills} |");
        if (s.WorkerTimes.Count > 32) sb.AppendLine($"| ... {s.WorkerTimes.Count - 32} more in summary.json | | | | | | |");
        if (o.Faults is { Count: > 0 } faults)
        {
            sb.AppendLine();
            sb.AppendLine("Faults: " + string.Join("; ", faults.Select(f => f.NodeLost
                ? $"worker {f.Worker} lost with its node at {Quantity.FormatSeconds(f.KilledAt)} (the run went on without it)"
                : $"worker {f.Worker} killed at {Quantity.FormatSeconds(f.KilledAt)}" +
                  (f.RestartedAt is { } r ? $", restarted at {Quantity.FormatSeconds(r)}" : ", not restarted"))) + ".");
        }
        sb.AppendLine();
        sb.AppendLine("## Plots");
        sb.AppendLine();
        foreach (string png in Directory.GetFiles(folder, "*.png").Select(f => Path.GetFileName(f)).Order())
            sb.AppendLine($"![{Path.GetFileNameWithoutExtension(png)}]({png})");
        sb.AppendLine();
        sb.AppendLine("Every metric by evaluation: [metrics.csv](metrics.csv); the resolved configuration: [config.conf](config.conf); all figures: [summary.json](summary.json).");
        File.WriteAllText(Path.Combine(folder, "report.md"), sb.ToString());
    }

    public static void WriteComparison(string folder, Comparison c, IReadOnlyList<string> plots, string kind)
    {
        var sb = new StringBuilder();
        sb.AppendLine($"# {c.Name}: {kind} of {c.Rows.Count} variants");
        sb.AppendLine();
        var table = c.Markdown().Split('\n').Skip(2); // the table without its own title
        foreach (string line in table) sb.AppendLine(line.TrimEnd('\r'));
        if (c.TargetLoss is { } target)
        {
            var reached = c.Rows.Where(r => r.SecondsToTargetLoss is not null).OrderBy(r => r.SecondsToTargetLoss).ToList();
            sb.AppendLine(reached.Count == 0
                ? $"No variant reached the target test loss {F(target, "0.####")}."
                : $"First to the target test loss {F(target, "0.####")}: **{reached[0].Variant}** in {F(reached[0].SecondsToTargetLoss!.Value, "0.######")} {c.Clock} s" +
                  (reached.Count > 1 ? $", then {string.Join(", ", reached.Skip(1).Select(r => $"{r.Variant} ({F(r.SecondsToTargetLoss!.Value, "0.######")} s)"))}." : "."));
            sb.AppendLine();
        }
        var best = c.Rows.MinBy(r => r.FinalTestLoss)!;
        sb.AppendLine($"Lowest final test loss: **{best.Variant}** ({F(best.FinalTestLoss, "0.0000")}, accuracy {F(best.FinalTestAccuracy, "0.0000")}).");
        sb.AppendLine();
        sb.AppendLine("## Plots");
        sb.AppendLine();
        foreach (string png in plots) sb.AppendLine($"![{Path.GetFileNameWithoutExtension(png)}]({png})");
        sb.AppendLine();
        sb.AppendLine("## Variants");
        sb.AppendLine();
        foreach (var r in c.Rows) sb.AppendLine($"- [{r.Variant}]({r.Folder}/report.md)");
        sb.AppendLine();
        sb.AppendLine("The table as CSV: [comparison.csv](comparison.csv); as JSON: [summary.json](summary.json).");
        File.WriteAllText(Path.Combine(folder, "report.md"), sb.ToString());
    }
}
