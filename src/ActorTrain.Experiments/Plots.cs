using ActorTrain.Cluster.Actors;
using ScottPlot;

namespace ActorTrain.Experiments;

/// <summary>
/// PNG plots of a run: loss and accuracy against global step and against time on the run's clock, and the
/// staleness histogram of applied pushes when there was any staleness (ASP, SSP).
/// </summary>
public static class Plots
{
    /// <summary>The plots of every classification run; staleness.png is added when any applied push was stale.</summary>
    public static readonly string[] Files = ["loss_vs_step.png", "loss_vs_time.png", "accuracy_vs_step.png", "accuracy_vs_time.png"];

    public static void Write(string folder, RunOutcome outcome, bool classification)
    {
        string timeAxis = outcome.VirtualTime ? "virtual time (s)" : "wall-clock time (s)";
        var points = outcome.Evaluations;
        double[] steps = points.Select(p => (double)p.Step).ToArray();
        double[] times = points.Select(p => p.ElapsedSeconds).ToArray();
        double[] test = points.Select(p => p.TestLoss).ToArray();
        var trained = points.Where(p => p.TrainLoss is not null).ToList();

        Save(Path.Combine(folder, "loss_vs_step.png"), "Loss", "global step", "loss", plot =>
        {
            Line(plot, steps, test, "test loss");
            Line(plot, trained.Select(p => (double)p.Step).ToArray(), trained.Select(p => p.TrainLoss!.Value).ToArray(), "train loss (mini-batch mean)");
        });
        Save(Path.Combine(folder, "loss_vs_time.png"), "Loss", timeAxis, "loss", plot =>
        {
            Line(plot, times, test, "test loss");
            Line(plot, trained.Select(p => p.ElapsedSeconds).ToArray(), trained.Select(p => p.TrainLoss!.Value).ToArray(), "train loss (mini-batch mean)");
        });
        var histogram = outcome.StalenessHistogram();
        int last = Array.FindLastIndex(histogram, c => c > 0);
        if (last > 0)
        {
            var plot = new Plot();
            var bars = plot.Add.Bars(Enumerable.Range(0, last + 1).Select(i => (double)histogram[i]).ToArray());
            bars.LegendText = "applied pushes";
            plot.Title("Staleness of applied pushes");
            plot.XLabel(histogram.Length - 1 == last ? "staleness (shard versions; last bar 63+)" : "staleness (shard versions)");
            plot.YLabel("pushes");
            plot.SavePng(Path.Combine(folder, "staleness.png"), 800, 500);
        }
        if (outcome.Link?.Fabric is { Count: > 0 } fabric) WriteNetwork(folder, fabric, outcome.ElapsedSeconds, timeAxis);
        if (!classification) return;
        double[] accuracy = points.Select(p => p.TestAccuracy).ToArray();
        // accuracy rises to the upper right, where the legend would cover its last points
        Save(Path.Combine(folder, "accuracy_vs_step.png"), "Test accuracy", "global step", "accuracy", plot => Line(plot, steps, accuracy, "test accuracy"), Alignment.LowerRight);
        Save(Path.Combine(folder, "accuracy_vs_time.png"), "Test accuracy", timeAxis, "accuracy", plot => Line(plot, times, accuracy, "test accuracy"), Alignment.LowerRight);
    }

    /// <summary>
    /// The plots of a comparison or sweep: test loss of every variant against time and against step,
    /// time to the target loss as bars (when a target is set), and each variant's staleness
    /// histogram (when any push was stale). Returns the files written.
    /// </summary>
    public static IReadOnlyList<string> WriteComparison(string folder, IReadOnlyList<(string Name, RunOutcome Outcome)> runs, double? targetLoss)
    {
        var files = new List<string>();
        bool virtualTime = runs.All(r => r.Outcome.VirtualTime);
        string timeAxis = virtualTime ? "virtual time (s)" : "time on each variant's clock (s)";
        void Add(string file, string title, string x, string y, Action<Plot> draw)
        {
            Save(Path.Combine(folder, file), title, x, y, draw);
            files.Add(file);
        }
        Add("loss_vs_time.png", "Test loss per variant", timeAxis, "test loss", plot =>
        {
            foreach (var (name, o) in runs) Line(plot, o.Evaluations.Select(e => e.ElapsedSeconds).ToArray(), o.Evaluations.Select(e => e.TestLoss).ToArray(), name);
            if (targetLoss is { } t) plot.Add.HorizontalLine(t).LegendText = "target";
        });
        Add("loss_vs_step.png", "Test loss per variant", "global step", "test loss", plot =>
        {
            foreach (var (name, o) in runs) Line(plot, o.Evaluations.Select(e => (double)e.Step).ToArray(), o.Evaluations.Select(e => e.TestLoss).ToArray(), name);
        });
        if (targetLoss is { } target)
        {
            var plot = new Plot();
            var reached = runs.Select(r => r.Outcome.Evaluations.FirstOrDefault(e => e.TestLoss <= target)?.ElapsedSeconds).ToList();
            // horizontal bars: variant names (often long, for sweeps) read along the left axis
            var bars = plot.Add.Bars(reached.Select(t => t ?? 0).ToArray());
            bars.Horizontal = true;
            plot.Axes.Left.SetTicks(Enumerable.Range(0, runs.Count).Select(i => (double)i).ToArray(),
                runs.Select((r, i) => reached[i] is null ? r.Name + " (not reached)" : r.Name).ToArray());
            plot.Title(FormattableString.Invariant($"Time to test loss {target}"));
            plot.XLabel(timeAxis);
            plot.SavePng(Path.Combine(folder, "time_to_target.png"), 900, Math.Max(300, 120 + 40 * runs.Count));
            files.Add("time_to_target.png");
        }
        var stale = runs.Where(r => r.Outcome.StalenessHistogram().Skip(1).Any(c => c > 0)).ToList();
        if (stale.Count > 0)
        {
            Add("staleness.png", "Staleness of applied pushes per variant", "staleness (shard versions; 63 = 63+)", "share of applied pushes", plot =>
            {
                foreach (var (name, o) in stale)
                {
                    var h = o.StalenessHistogram();
                    int last = Array.FindLastIndex(h, c => c > 0);
                    double total = h.Sum();
                    Line(plot, Enumerable.Range(0, last + 1).Select(i => (double)i).ToArray(), h.Take(last + 1).Select(c => c / total).ToArray(), name);
                }
            });
        }
        return files;
    }

    /// <summary>network.png: utilisation over time (bytes over capacity per interval) of the five most used fabric resources.</summary>
    private static void WriteNetwork(string folder, IReadOnlyList<Core.Simulation.ResourceUsage> usage, double elapsed, string timeAxis)
    {
        var top = usage.Where(u => u.Bytes > 0).OrderByDescending(u => u.Bytes / u.Capacity).ThenBy(u => u.Name, StringComparer.Ordinal).Take(5).ToList();
        if (top.Count == 0) return;
        Save(Path.Combine(folder, "network.png"), "Fabric: utilisation of the five most used resources", timeAxis, "utilisation (%)", plot =>
        {
            foreach (var u in top)
            {
                int buckets = Math.Max(1, Math.Min(u.Timeline.Length, (int)Math.Ceiling(elapsed / u.BucketSeconds)));
                Line(plot, Enumerable.Range(0, buckets).Select(b => (b + 0.5) * u.BucketSeconds).ToArray(),
                    u.Timeline.Take(buckets).Select(bytes => 100 * bytes / (u.Capacity * u.BucketSeconds)).ToArray(), u.Name);
            }
        });
    }

    private static void Line(Plot plot, double[] xs, double[] ys, string label)
    {
        // a diverged run's last points are NaN or infinite: they have no place on an axis
        if (Array.Exists(ys, y => !double.IsFinite(y)))
        {
            var finite = Enumerable.Range(0, ys.Length).Where(i => double.IsFinite(ys[i])).ToArray();
            xs = finite.Select(i => xs[i]).ToArray();
            ys = finite.Select(i => ys[i]).ToArray();
        }
        if (xs.Length == 0) return;
        var scatter = plot.Add.Scatter(xs, ys);
        scatter.LegendText = label;
        scatter.MarkerSize = 4;
    }

    private static void Save(string path, string title, string x, string y, Action<Plot> draw, Alignment legend = Alignment.UpperRight)
    {
        var plot = new Plot();
        draw(plot);
        plot.Title(title);
        plot.XLabel(x);
        plot.YLabel(y);
        plot.ShowLegend(legend);
        plot.SavePng(path, 800, 500);
    }
}
