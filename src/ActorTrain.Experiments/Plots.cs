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
        if (!classification) return;
        double[] accuracy = points.Select(p => p.TestAccuracy).ToArray();
        Save(Path.Combine(folder, "accuracy_vs_step.png"), "Test accuracy", "global step", "accuracy", plot => Line(plot, steps, accuracy, "test accuracy"));
        Save(Path.Combine(folder, "accuracy_vs_time.png"), "Test accuracy", timeAxis, "accuracy", plot => Line(plot, times, accuracy, "test accuracy"));
    }

    private static void Line(Plot plot, double[] xs, double[] ys, string label)
    {
        if (xs.Length == 0) return;
        var scatter = plot.Add.Scatter(xs, ys);
        scatter.LegendText = label;
        scatter.MarkerSize = 4;
    }

    private static void Save(string path, string title, string x, string y, Action<Plot> draw)
    {
        var plot = new Plot();
        draw(plot);
        plot.Title(title);
        plot.XLabel(x);
        plot.YLabel(y);
        plot.ShowLegend(Alignment.UpperRight);
        plot.SavePng(path, 800, 500);
    }
}
