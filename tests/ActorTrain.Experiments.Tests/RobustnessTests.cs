using System.Globalization;
using System.Text.Json;

namespace ActorTrain.Experiments.Tests;

/// <summary>Nothing a run does to itself (diverging) or that two runs do to each other (same name) loses results.</summary>
public sealed class RobustnessTests() : TempFolderTest("actortrain-robust-")
{
    private static readonly string[] Small = [.. ExperimentRunnerTests.Small, "telemetry.exporter=none"];

    [Fact]
    public async Task A_diverged_run_stops_at_the_first_non_finite_test_loss_and_keeps_its_folder()
    {
        var result = await ExperimentRunner.RunAsync(ExperimentSpec.Load(null, [.. Small, "optimizer.learning-rate=1000"]), Root);

        Assert.Equal("diverged", result.Summary.StopReason);
        Assert.True(double.IsNaN(result.Summary.FinalTestLoss) || double.IsInfinity(result.Summary.FinalTestLoss));
        Assert.True(result.Summary.Steps < 40, $"the run should stop at the first non-finite evaluation, not at step {result.Summary.Steps}");
        foreach (string file in new[] { "summary.json", "metrics.csv", "report.md", "loss_vs_step.png", "config.conf" })
            Assert.True(File.Exists(Path.Combine(result.Folder, file)), file);

        // JSON has no NaN: the loss is null, and the file reads back
        using var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(result.Folder, "summary.json")));
        Assert.Equal(JsonValueKind.Null, json.RootElement.GetProperty("final_test_loss").ValueKind);
        Assert.True(double.IsNaN(RunSummary.Read(Path.Combine(result.Folder, "summary.json")).FinalTestLoss));
        // CSV writes nan / inf, which pandas and numpy read as floats
        string last = File.ReadAllLines(Path.Combine(result.Folder, "metrics.csv"))[^1];
        Assert.Contains(last.Split(',')[4], new[] { "nan", "inf", "-inf" });
    }

    [Fact]
    public async Task A_sweep_with_a_diverging_point_runs_every_point_and_marks_the_diverged_one()
    {
        var spec = ExperimentSpec.Parse("name = s\nsweep.values { optimizer.learning-rate = [0.05, 1000] }", "sweep.conf", Small);
        var result = await ExperimentRunner.RunComparisonAsync(spec, Root);

        Assert.Equal(["max-steps", "diverged"], result.Comparison.Rows.Select(r => r.StopReason));
        Assert.True(double.IsFinite(result.Comparison.Rows[0].FinalTestLoss));
        Assert.Contains("diverged", File.ReadAllText(Path.Combine(result.Folder, "comparison.csv")));
        using var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(result.Folder, "summary.json")));
        Assert.Equal(2, json.RootElement.GetProperty("rows").GetArrayLength());
    }

    /// <summary>
    /// Two runs of one experiment started together get the same timestamped name; each must still
    /// end in a folder of its own whose config, metrics and summary are all its own.
    /// </summary>
    [Fact]
    public async Task Two_runs_with_the_same_name_at_the_same_time_never_share_a_folder()
    {
        var runs = await Task.WhenAll(new[] { 7, 8, 9 }.Select(seed =>
            Task.Run(() => ExperimentRunner.RunAsync(ExperimentSpec.Load(null, [.. Small, "output.plots=off", $"seed={seed}"]), Root))));

        Assert.Equal(3, runs.Select(r => r.Folder).Distinct().Count());
        Assert.Equal(3, Directory.GetDirectories(Root).Length); // no partial folder left behind
        foreach (var (run, seed) in runs.Zip(new[] { 7, 8, 9 }))
        {
            Assert.Equal(seed, ExperimentSpec.Load(Path.Combine(run.Folder, "config.conf")).Seed is var s ? (int)s : -1);
            string lastRow = File.ReadAllLines(Path.Combine(run.Folder, "metrics.csv"))[^1];
            Assert.Equal(run.Summary.FinalTestLoss, double.Parse(lastRow.Split(',')[4], CultureInfo.InvariantCulture));
            Assert.Equal(run.Summary.FinalTestLoss, RunSummary.Read(Path.Combine(run.Folder, "summary.json")).FinalTestLoss);
        }
    }

    private sealed class CancelAt(long step, CancellationTokenSource source) : ActorTrain.Cluster.Actors.IRunObserver
    {
        public void OnEvaluation(ActorTrain.Cluster.Actors.EvaluationPoint point)
        {
            if (point.Step >= step) source.Cancel();
        }
    }

    /// <summary>SIGINT/SIGTERM cancel the command's token: the run ends at once and keeps what it did.</summary>
    [Theory]
    [InlineData("virtual")]
    [InlineData("wall")]
    public async Task An_interrupted_run_keeps_what_was_done_as_an_interrupted_folder(string clock)
    {
        using var cancel = new CancellationTokenSource();
        var spec = ExperimentSpec.Load(null, [.. Small, "training.max-steps=1000000", $"simulation.clock={clock}", "output.plots=off"]);
        var result = await ExperimentRunner.RunAsync(spec, Root, new CancelAt(20, cancel), cancel.Token).WaitAsync(TimeSpan.FromSeconds(30));

        Assert.Equal("interrupted", result.Summary.StopReason);
        Assert.EndsWith("-interrupted", result.Folder);
        Assert.Equal([result.Folder], Directory.GetDirectories(Root)); // no .partial folder left
        var rows = File.ReadAllLines(Path.Combine(result.Folder, "metrics.csv"));
        Assert.True(rows.Length >= 4, "the evaluations up to the interruption are kept"); // header, steps 0, 10, 20
        Assert.Equal("interrupted", RunSummary.Read(Path.Combine(result.Folder, "summary.json")).StopReason);
        Assert.InRange(result.Summary.Steps, 20, 1_000_000 - 1);
    }

    [Fact]
    public async Task Tune_goes_on_past_a_diverging_candidate_and_never_picks_it()
    {
        string[] overrides = [.. Small, "training.max-steps=40", "tune.learning-rates=[0.05, 1000]", "tune.batch-sizes=[32]", "output.plots=off"];
        var result = await HyperparameterSearch.RunAsync(null, overrides, Root);

        var diverged = result.Candidates.Single(c => c.LearningRate == 1000);
        Assert.False(double.IsFinite(diverged.ValidationLoss));
        Assert.Equal(0.05, result.Best.LearningRate);
        Assert.Equal("diverged", RunSummary.Read(Path.Combine(result.Folder, diverged.Name, "summary.json")).StopReason);
        Assert.Contains(File.ReadAllLines(Path.Combine(result.Folder, "tune.csv")), l => l.StartsWith("learning-rate,lr-1000,") && l.Contains(",nan,"));
    }

    /// <summary>
    /// fabric.topology = none (the default) is the first build's network model: a lossy, jittery
    /// BSP run writes the metrics.csv that the build this work started from wrote (Golden/, produced
    /// by commit 41a7570 with the same settings), byte for byte.
    /// </summary>
    [Fact]
    public async Task Fabric_none_reproduces_the_first_builds_metrics_byte_for_byte()
    {
        var spec = ExperimentSpec.Load(null, ["dataset.samples=1200", "training.max-steps=60", "training.eval-every=10",
            "network.latency=\"lognormal(mu=100us, sigma=0.5)\"", "network.jitter=20us", "network.drop=0.05", "network.bandwidth=1Gbps", "seed=3",
            "output.plots=off", "telemetry.exporter=none", "fabric.topology=none"]);
        var run = await ExperimentRunner.RunAsync(spec, Root);
        Assert.Equal(File.ReadAllText(Path.Combine(RepoRoot.Path, "tests", "ActorTrain.Experiments.Tests", "Golden", "first-build-bsp-lossy.metrics.csv")),
            File.ReadAllText(Path.Combine(run.Folder, "metrics.csv")));
    }

    [Theory]
    [InlineData("switch")]
    [InlineData("leaf-spine")]
    public async Task A_sharing_fabric_run_is_deterministic_under_drops_and_keeps_bsp_weights(string topology)
    {
        string[] settings = ["dataset.samples=1200", "training.max-steps=40", "training.eval-every=10", "topology.workers=6", "topology.shards=2",
            "network.latency=\"lognormal(mu=100us, sigma=0.5)\"", "network.jitter=20us", "output.plots=off", "telemetry.exporter=none",
            $"fabric.topology={topology}", "fabric.hosts-per-leaf=2", "fabric.oversubscription=2", "fabric.nic-bandwidth=1Gbps"];
        var lossy = await ExperimentRunner.RunAsync(ExperimentSpec.Load(null, [.. settings, "network.drop=0.1", "seed=4"]), Root);
        var again = await ExperimentRunner.RunAsync(ExperimentSpec.Load(null, [.. settings, "network.drop=0.1", "seed=4"]), Root);
        var clean = await ExperimentRunner.RunAsync(ExperimentSpec.Load(null, [.. settings, "seed=4"]), Root);
        Assert.Equal(File.ReadAllBytes(Path.Combine(lossy.Folder, "metrics.csv")), File.ReadAllBytes(Path.Combine(again.Folder, "metrics.csv")));
        Assert.Equal(clean.Outcome.FinalWeights, lossy.Outcome.FinalWeights); // every push applied once, whatever was dropped
        Assert.True(lossy.Summary.Network.Retransmissions > 0);
        Assert.True(lossy.Summary.ElapsedSeconds > clean.Summary.ElapsedSeconds);
        Assert.NotNull(lossy.Summary.Network.Fabric);
    }

    /// <summary>
    /// Four workers push P bytes into one shard's NIC at once: each flow runs at B / 4, so it takes
    /// 4 P / B of which P / B is sending alone and 3 P / B waiting for bandwidth. The transfer spans say so.
    /// </summary>
    [Fact]
    public async Task Transfer_spans_on_a_sharing_fabric_separate_waiting_for_bandwidth_from_sending()
    {
        var spec = ExperimentSpec.Load(null, ["dataset.samples=1200", "training.max-steps=10", "training.eval-every=10", "topology.workers=4", "topology.shards=1",
            "fabric.topology=switch", "fabric.nic-bandwidth=1Gbps", "simulation.compute-time=1ms", "output.plots=off", "telemetry.exporter=file"]);
        var run = await ExperimentRunner.RunAsync(spec, Root);
        var transfers = Telemetry.TraceFile.Read(run.Folder).Spans.Where(s => s.Name == "transfer").ToList();
        Assert.NotEmpty(transfers);
        double Attr(Telemetry.SpanRecord span, string key) => double.Parse(span.Attributes[key], CultureInfo.InvariantCulture);
        int n = ExperimentData.Build(spec).Model.ParameterCount;
        double alone = Cluster.Protocol.PushGradient.DenseBytes(n) / 1.25e8;
        Assert.All(transfers, t =>
        {
            Assert.Equal(alone, Attr(t, "actortrain.transmission_s"), 9);
            Assert.Equal(3 * alone, Attr(t, "actortrain.queueing_s"), 9);
        });
    }

    /// <summary>
    /// The wall clock drives the same fabric in model time on its delay line: a 4-way incast run
    /// completes, and the shard's NIC carried exactly every push (the bytes are not timing-dependent).
    /// </summary>
    [Fact]
    public async Task A_wall_clock_run_shares_the_fabric_too()
    {
        var spec = ExperimentSpec.Load(null, ["dataset.samples=1200", "training.max-steps=20", "training.eval-every=10", "topology.workers=4", "topology.shards=1",
            "fabric.topology=switch", "fabric.nic-bandwidth=1Gbps", "simulation.clock=wall", "simulation.compute-time=1ms", "output.plots=off",
            "telemetry.exporter=none"]);
        var run = await ExperimentRunner.RunAsync(spec, Root);
        Assert.Equal(20, run.Outcome.FinalStep);
        int n = ExperimentData.Build(spec).Model.ParameterCount;
        var shardIn = run.Summary.Network.Fabric!.Resources.Single(r => r.Name == "host-4.nic-in");
        Assert.Equal(4 * (20 * (double)Cluster.Protocol.PushGradient.DenseBytes(n) + Cluster.Protocol.PullParameters.HeaderBytes), shardIn.Bytes, 0);
    }
}
