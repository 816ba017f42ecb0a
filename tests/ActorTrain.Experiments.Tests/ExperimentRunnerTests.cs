using System.Buffers.Binary;
using System.Globalization;
using ActorTrain.Cluster.Actors;
using ActorTrain.Core;

namespace ActorTrain.Experiments.Tests;

public sealed class ExperimentRunnerTests() : TempFolderTest("actortrain-runs-")
{
    internal static readonly string[] Small =
    [
        "dataset.samples=1200", "training.max-steps=40", "training.eval-every=10", "compute.engine=simd",
    ];

    /// <summary>
    /// ASP with lognormal latencies, jitter, drops, random slowdowns and a worker fault: everything
    /// that could make the order of events depend on threads. Under the virtual clock a seed must fix
    /// every byte of metrics.csv, and another seed must change it.
    /// </summary>
    [Fact]
    public async Task Virtual_clock_runs_with_the_same_seed_write_byte_identical_metrics()
    {
        string[] busy = [.. Small, "sync.policy=asp", "network.latency=\"lognormal(mu=100us, sigma=0.5)\"", "network.jitter=20us",
            "network.drop=0.05", "stragglers.random-slowdown=\"exponential(mean=0.5)\"", "faults=[{ worker = 2, at-step = 10, restart-after = 1ms }]",
            "output.plots=off"];
        async Task<byte[]> Metrics(ulong seed)
        {
            var result = await ExperimentRunner.RunAsync(ExperimentSpec.Load(null, [.. busy, $"seed={seed}"]), Root);
            Assert.Equal("virtual", result.Summary.Clock.Split(',')[0]);
            return File.ReadAllBytes(Path.Combine(result.Folder, "metrics.csv"));
        }
        var first = await Metrics(7);
        var second = await Metrics(7);
        var other = await Metrics(8);
        Assert.Equal(first, second);
        Assert.NotEqual(first, other);
        Assert.True(File.ReadAllLines(Path.Combine(Directory.GetDirectories(Root)[0], "metrics.csv")).Length > 3);
    }

    [Fact]
    public async Task The_summary_reports_each_worker_s_compute_communication_and_wait()
    {
        var spec = ExperimentSpec.Load(null, [.. Small, "stragglers.workers=[0]", "stragglers.factor=3", "simulation.compute-time=1ms", "output.plots=off"]);
        var result = await ExperimentRunner.RunAsync(spec, Root);
        var workers = result.Summary.WorkerTimes;
        // 40 BSP steps of 1 ms (3 ms for the straggler), the others wait for the straggler at every barrier
        Assert.Equal(0.120, workers[0].ComputeSeconds, 9);
        Assert.All(workers.Skip(1), w => Assert.Equal(0.040, w.ComputeSeconds, 9));
        Assert.All(workers.Skip(1), w => Assert.True(w.WaitSeconds > 39 * 0.002 - 1e-9, $"worker {w.Worker} waited {w.WaitSeconds}"));
        Assert.True(workers[0].WaitSeconds < 1e-3, $"the straggler waited {workers[0].WaitSeconds}");
        Assert.All(workers, w => Assert.True(w.CommunicationSeconds > 0));
        // every worker's time adds up to the run's: compute + communication + wait = elapsed, to within the last step
        Assert.All(workers, w => Assert.InRange(w.ComputeSeconds + w.CommunicationSeconds + w.WaitSeconds, result.Summary.ElapsedSeconds - 0.004, result.Summary.ElapsedSeconds + 1e-9));
        // the real seconds of the work: gradients, the shards' updates and the evaluations (measured, so only their presence and bounds)
        Assert.True(result.Summary.GradientSeconds > 0 && result.Summary.OptimizerSeconds > 0);
        Assert.InRange(result.Summary.EvaluationSeconds, 1e-9, result.Summary.WallSeconds);
        Assert.Equal(result.Summary.EvaluationSeconds, RunSummary.Read(Path.Combine(result.Folder, "summary.json")).EvaluationSeconds);
    }

    [Fact]
    public async Task A_run_writes_config_metrics_summary_and_plots_into_its_own_folder()
    {
        var spec = ExperimentSpec.Load(null, Small);
        var result = await ExperimentRunner.RunAsync(spec, Root);

        Assert.StartsWith(Path.Combine(Root, "quickstart-"), result.Folder);
        Assert.Equal([result.Folder], Directory.GetDirectories(Root)); // nothing else, no .partial left
        string[] expected = ["config.conf", "metrics.csv", "summary.json", "report.md", "traces.jsonl.gz", "metrics.jsonl", NpzWriter.WeightsFile, .. Plots.Files];
        Assert.Equal(expected.Order(), Directory.GetFiles(result.Folder).Select(Path.GetFileName).Order());

        var rows = File.ReadAllLines(Path.Combine(result.Folder, "metrics.csv"));
        Assert.Equal(MetricsCsvWriter.Header, rows[0]);
        Assert.Equal(["0", "10", "20", "30", "40"], rows.Skip(1).Select(r => r.Split(',')[0]));
        double first = double.Parse(rows[1].Split(',')[4], CultureInfo.InvariantCulture);
        double last = double.Parse(rows[^1].Split(',')[4], CultureInfo.InvariantCulture);
        Assert.True(last < first, $"test loss should fall: {first} -> {last}");

        var summary = RunSummary.Read(Path.Combine(result.Folder, "summary.json"));
        Assert.Equal(("quickstart", "max-steps", 40L), (summary.Name, summary.StopReason, summary.Steps));
        Assert.Equal(4, summary.WorkerTimes.Count);
        Assert.All(summary.WorkerTimes, w => Assert.Equal(40, w.Steps));
        Assert.Equal(40L * 4 * 32, summary.WorkerTimes.Sum(w => w.Steps) * 32);

        // the resolved config in the folder is itself a valid experiment with the same settings
        var again = ExperimentSpec.Load(Path.Combine(result.Folder, "config.conf"));
        Assert.Equal(spec.ResolvedConfig, again.ResolvedConfig);
    }

    [Fact]
    public async Task Epochs_bound_the_steps_and_are_reported_as_the_stop_reason()
    {
        // 960 training rows / (4 workers x 32) = 7.5 steps per epoch -> 2 epochs = 15 steps
        var spec = ExperimentSpec.Load(null, [.. Small, "training.epochs=2", "training.max-steps=1000"]);
        var result = await ExperimentRunner.RunAsync(spec, Root);
        Assert.Equal(15, result.Summary.Steps);
        Assert.Equal("epochs", result.Summary.StopReason);
    }

    [Fact]
    public async Task A_time_budget_stops_the_run_and_keeps_a_complete_folder()
    {
        var spec = ExperimentSpec.Load(null, [.. Small, "training.max-steps=100000000", "training.time-budget=300ms"]);
        var result = await ExperimentRunner.RunAsync(spec, Root);
        Assert.Equal(StopReason.TimeBudget, result.Outcome.StopReason);
        Assert.Equal("time-budget", result.Summary.StopReason);
        Assert.True(File.Exists(Path.Combine(result.Folder, "summary.json")));
    }

    [Theory]
    [InlineData("bsp")]
    [InlineData("asp")]
    [InlineData("ssp")]
    public async Task Fp16_with_dynamic_loss_scaling_trains_and_reports_the_scale(string policy)
    {
        var spec = ExperimentSpec.Load(null, [.. Small, "precision.mode=fp16", $"sync.policy={policy}"]);
        var result = await ExperimentRunner.RunAsync(spec, Root);
        Assert.True(result.Outcome.Evaluations[^1].TestLoss < result.Outcome.Evaluations[0].TestLoss);
        // GradScaler semantics: starts at 2^16 and only ever halves or doubles
        double scale = result.Outcome.Evaluations[^1].LossScale;
        Assert.True(scale <= 65536 && Math.Log2(scale) == Math.Round(Math.Log2(scale)), $"loss scale {scale}");
    }

    [Fact]
    public async Task An_unwritable_output_folder_is_a_user_error_and_leaves_nothing()
    {
        string file = Path.Combine(Root, "a-file");
        File.WriteAllText(file, "");
        var spec = ExperimentSpec.Load(null, Small);
        var e = await Assert.ThrowsAsync<ActorTrainException>(() => ExperimentRunner.RunAsync(spec, Path.Combine(file, "runs")));
        Assert.Contains("output.directory: cannot write to", e.Message);
        Assert.Equal([file], Directory.GetFileSystemEntries(Root));
    }

    [Fact]
    public async Task A_failure_during_the_run_leaves_no_folder_that_looks_finished()
    {
        // Fails inside the actors, after the output folder exists: no CUDA device in CI, and where
        // there is one the test still exercises the same path with an OpenCL request on most hosts.
        var spec = ExperimentSpec.Load(null, [.. Small, "compute.engine=ilgpu-opencl"]);
        if (Compute.Ilgpu.IlgpuDevices.List().Any(d => d.Type == ILGPU.Runtime.AcceleratorType.OpenCL)) return;
        var e = await Assert.ThrowsAnyAsync<Exception>(() => ExperimentRunner.RunAsync(spec, Root));
        Assert.Contains("OpenCL", e.ToString());
        // kept for inspection under a name that says it failed, with the error
        string kept = Assert.Single(Directory.GetFileSystemEntries(Root));
        Assert.EndsWith("-failed", kept);
        Assert.Contains("OpenCL", File.ReadAllText(Path.Combine(kept, "error.txt")));
        Assert.Equal(kept, e.Data[ExperimentRunner.KeptFolderKey]);
    }

    [Fact]
    public void Too_many_shards_for_the_model_name_the_key()
    {
        var spec = ExperimentSpec.Load(null, [.. Small, "model.type=softmax", "dataset.features=2", "dataset.classes=2", "topology.shards=7"]);
        var e = Assert.Throws<ActorTrainException>(() => ExperimentData.Build(spec));
        Assert.Contains("topology.shards = 7 is more than the model's 6 parameters", e.Message);
    }

    [Fact]
    public void A_missing_dataset_folder_names_the_key_and_the_package()
    {
        var spec = ExperimentSpec.Load(null, [.. Small, "dataset.type=fashion-mnist", $"dataset.path={Root}/nowhere"]);
        var e = Assert.Throws<ActorTrainException>(() => ExperimentData.Build(spec));
        Assert.Contains("dataset.path", e.Message);
        Assert.Contains("apt-get install dataset-fashion-mnist", e.Message);
    }

    [Fact]
    public void A_corrupt_dataset_file_names_the_file()
    {
        string folder = Directory.CreateDirectory(Path.Combine(Root, "idx")).FullName;
        foreach (string stem in new[] { "train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte" })
        {
            var header = new byte[16];
            header[2] = 8;
            header[3] = 3;
            BinaryPrimitives.WriteInt32BigEndian(header.AsSpan(4), 100);
            BinaryPrimitives.WriteInt32BigEndian(header.AsSpan(8), 28);
            BinaryPrimitives.WriteInt32BigEndian(header.AsSpan(12), 28);
            File.WriteAllBytes(Path.Combine(folder, stem), header); // declares 100 images, holds none
        }
        var spec = ExperimentSpec.Load(null, [.. Small, "dataset.type=idx", $"dataset.path={folder}"]);
        var e = Assert.Throws<ActorTrainException>(() => ExperimentData.Build(spec));
        Assert.Contains(Path.Combine(folder, "train-images-idx3-ubyte"), e.Message);
        Assert.Contains("truncated", e.Message);
    }
}

public sealed class ComparisonRunTests() : TempFolderTest("actortrain-compare-")
{
    [Fact]
    public async Task A_compare_block_runs_every_variant_and_writes_the_table()
    {
        string file = Path.Combine(RepoRoot.Path, "hocon", "experiments", "sync-policies.conf");
        var spec = ExperimentSpec.Load(file, ["dataset.samples=2000", "model.hidden=[16]", "training.max-steps=30", "training.target-loss=0",
            "output.plots=off"]);
        var result = await ExperimentRunner.RunComparisonAsync(spec, Root);

        Assert.Equal(["bsp", "ssp3", "asp"], result.Comparison.Rows.Select(r => r.Variant));
        foreach (string name in new[] { "bsp", "ssp3", "asp" })
            Assert.True(File.Exists(Path.Combine(result.Folder, name, "metrics.csv")), name);
        foreach (string file2 in new[] { "comparison.md", "comparison.csv", "summary.json", "config.conf", "report.md" })
            Assert.True(File.Exists(Path.Combine(result.Folder, file2)), file2);

        var bsp = result.Comparison.Rows[0];
        var asp = result.Comparison.Rows[2];
        Assert.Equal((30L, 30L, 0L), (bsp.Steps, bsp.Updates, bsp.MaxStaleness));
        Assert.Equal(30L * 4, asp.Updates); // one update per push: 4 workers x 30 steps
        // a column per key the variants set (bsp and asp leave sync.staleness empty)
        Assert.Contains("| variant | sync.policy | sync.staleness | policy |", File.ReadAllText(Path.Combine(result.Folder, "comparison.md")));
        Assert.Contains("| ssp3 | ssp | 3 | ssp (staleness 3) |", File.ReadAllText(Path.Combine(result.Folder, "comparison.md")));
        // the straggler (worker 0, 4x) is reported as such in its variant's summary; how much slower
        // it ran is wall-clock time on a shared machine, measured by the experiment, not asserted here
        var summary = RunSummary.Read(Path.Combine(result.Folder, "bsp", "summary.json"));
        Assert.Equal([4.0, 1, 1, 1], summary.WorkerTimes.Select(w => w.Slowdown));
    }
}

public sealed class TargetAccuracyComparisonTests() : TempFolderTest("actortrain-accuracy-")
{
    [Fact]
    public async Task Each_variant_reports_the_time_to_its_own_target_accuracy()
    {
        var spec = ExperimentSpec.Load(null, [.. ExperimentRunnerTests.Small, "output.plots=off",
            "compare=[{ name = a, training.target-accuracy = 0.5 }, { name = b, optimizer.learning-rate = 0.01 }]"]);
        var result = await ExperimentRunner.RunComparisonAsync(spec, Root);
        var a = result.Comparison.Rows[0];
        var b = result.Comparison.Rows[1];
        var evaluations = File.ReadAllLines(Path.Combine(result.Folder, "a", "metrics.csv")).Skip(1).Select(l => l.Split(',')).ToList();
        var first = evaluations.First(e => double.Parse(e[5], CultureInfo.InvariantCulture) >= 0.5);
        Assert.Equal((0.5, double.Parse(first[2], CultureInfo.InvariantCulture)), (a.TargetAccuracy!.Value, Math.Round(a.SecondsToTargetAccuracy!.Value, 9)));
        Assert.Null(b.TargetAccuracy);
        Assert.Null(b.SecondsToTargetAccuracy);
        string table = File.ReadAllText(Path.Combine(result.Folder, "comparison.md"));
        Assert.Contains("| target accuracy | time to target accuracy (s) | steps to target accuracy |", table);
        Assert.EndsWith("| - | - |", table.Split('\n').First(l => l.StartsWith("| b |", StringComparison.Ordinal)));
    }
}

public sealed class SweepTests() : TempFolderTest("actortrain-sweep-")
{
    private static ExperimentSpec Spec(string sweep, params string[] overrides) =>
        ExperimentSpec.Parse("name = s\n" + sweep, "sweep.conf", overrides);

    [Fact]
    public void A_grid_has_every_combination_with_the_last_key_varying_fastest()
    {
        var spec = Spec("sweep.values { sync.policy = [bsp, asp], optimizer.learning-rate = [0.01, 0.05, 0.1] }");
        Assert.Equal(6, spec.Variants.Count);
        Assert.Equal(["policy-bsp_learning-rate-0.01", "policy-bsp_learning-rate-0.05", "policy-bsp_learning-rate-0.1",
            "policy-asp_learning-rate-0.01", "policy-asp_learning-rate-0.05", "policy-asp_learning-rate-0.1"], spec.Variants.Select(v => v.Name));
        var last = spec.Variants[^1].Spec;
        Assert.Equal((SyncPolicyKind.Asp, 0.1), (last.Sync.Kind, last.Schedule.LearningRate));
        Assert.Empty(last.Variants); // a point does not sweep again
        Assert.DoesNotContain("sweep.values", last.ResolvedConfig);
        Assert.Contains("sweep.values.sync.policy = [\"bsp\", \"asp\"]", spec.ResolvedConfig);
    }

    [Fact]
    public void A_random_sweep_draws_distinct_points_fixed_by_the_seed()
    {
        const string sweep = "sweep { mode = random, samples = 5, values { optimizer.learning-rate = [0.01, 0.02, 0.05, 0.1, 0.2], training.batch-size = [32, 64, 96, 128] } }";
        var a = Spec(sweep).Variants.Select(v => v.Name).ToList();
        var b = Spec(sweep).Variants.Select(v => v.Name).ToList();
        var c = Spec(sweep, "seed=99").Variants.Select(v => v.Name).ToList();
        Assert.Equal(5, a.Count);
        Assert.Equal(5, a.Distinct().Count());
        Assert.Equal(a, b);
        Assert.NotEqual(a, c);
        Assert.Equal(20, Spec(sweep).Sweep.GridSize);
    }

    [Theory]
    [InlineData("sweep.values { optimizer.learnin-rate = [0.1] }", "not a key that can be swept; did you mean 'optimizer.learning-rate'?")]
    [InlineData("sweep.values { sync.policy = [] }", "sweep.values.sync.policy is an empty list")]
    [InlineData("sweep.values { sync.policy = [bsp, bsp] }", "lists a value twice")]
    [InlineData("sweep { mode = random, values { sync.policy = [bsp, asp] } }", "sweep.mode = random needs sweep.samples >= 1")]
    [InlineData("sweep.values { sync.policy = [gossip] }", "sync.policy = \"gossip\" is not one of")]
    [InlineData("sweep.values { sync.policy = [bsp] }\ncompare = [{ name = a, sync.policy = asp }]", "has both a compare block and sweep.values")]
    public void Bad_sweeps_are_rejected_naming_the_key(string text, string message)
    {
        var e = Assert.Throws<ActorTrainException>(() => Spec(text));
        Assert.Contains(message, e.Message);
    }

    [Fact]
    public async Task A_sweep_runs_every_point_and_writes_a_table_with_a_column_per_key_plots_and_a_report()
    {
        var spec = Spec("sweep.values { optimizer.learning-rate = [0.01, 0.1], sync.policy = [bsp, asp] }",
            [.. ExperimentRunnerTests.Small, "training.target-loss=1.5"]);
        var result = await ExperimentRunner.RunComparisonAsync(spec, Root);
        Assert.Equal(4, result.Comparison.Rows.Count);
        string csv = File.ReadAllText(Path.Combine(result.Folder, "comparison.csv"));
        Assert.StartsWith("variant,optimizer.learning-rate,sync.policy,policy,", csv);
        Assert.Contains("learning-rate-0.1_policy-asp,\"0.1\",\"asp\",\"asp\"", csv);
        foreach (string file in new[] { "report.md", "loss_vs_time.png", "loss_vs_step.png", "time_to_target.png", "staleness.png" })
            Assert.True(File.Exists(Path.Combine(result.Folder, file)), file);
        string report = File.ReadAllText(Path.Combine(result.Folder, "report.md"));
        Assert.Contains("# s: sweep of 4 variants", report);
        Assert.Contains("![time_to_target](time_to_target.png)", report);
        Assert.Contains("- [learning-rate-0.01_policy-bsp](learning-rate-0.01_policy-bsp/report.md)", report);
        Assert.True(File.Exists(Path.Combine(result.Folder, "learning-rate-0.01_policy-bsp", "report.md")));
        // a larger learning rate gets there sooner at this budget
        var rows = result.Comparison.Rows;
        Assert.True(rows[2].FinalTestLoss < rows[0].FinalTestLoss);
    }
}

public sealed class HyperparameterSearchTests() : TempFolderTest("actortrain-tune-")
{
    [Fact]
    public async Task Tune_picks_the_rate_then_the_batch_by_validation_loss_and_runs_the_choice_on_the_test_split()
    {
        string[] overrides = [.. ExperimentRunnerTests.Small, "training.max-steps=60", "tune.learning-rates=[0.001, 0.05, 0.2]", "tune.batch-sizes=[32, 64]",
            "output.plots=off"];
        var result = await HyperparameterSearch.RunAsync(null, overrides, Root);

        Assert.Equal(["lr-0.001", "lr-0.05", "lr-0.2", "batch-64"], result.Candidates.Select(c => c.Name)); // batch 32 is the first stage's winner
        var rates = result.Candidates.Where(c => c.Stage == "learning-rate").ToList();
        var bestRate = rates.MinBy(c => c.ValidationLoss)!;
        Assert.Equal(bestRate.LearningRate, result.Candidates.Single(c => c.Name == "batch-64").LearningRate);
        Assert.Equal(30, result.Candidates.Single(c => c.Name == "batch-64").Steps); // same samples: 60 x 32 = 30 x 64
        Assert.Equal(Math.Min(bestRate.ValidationLoss, result.Candidates[^1].ValidationLoss), result.Best.ValidationLoss);
        Assert.True(rates[0].ValidationLoss > bestRate.ValidationLoss, "a 0.001 learning rate should lose at 60 steps");

        // candidates never see the test rows: they are judged on 10% of the training rows
        var data = ExperimentData.Build(ExperimentSpec.Load(null, overrides));
        var candidate = RunSummary.Read(Path.Combine(result.Folder, "lr-0.05", "summary.json"));
        Assert.Equal(data.Train.Count - candidate.TrainRows, candidate.TestRows);
        Assert.InRange(candidate.TestRows, data.Train.Count / 10 - 1, data.Train.Count / 10 + 1);
        Assert.Equal(data.Test.Count, result.Final.Summary.TestRows);

        var chosen = ExperimentSpec.Load(Path.Combine(result.Folder, "best.conf"));
        Assert.Equal((result.Best.LearningRate, result.Best.BatchSize, 0.1), (chosen.Schedule.LearningRate, chosen.Training.BatchSize, chosen.Schedule.WarmupFraction));
        foreach (string file in new[] { "report.md", "tune.csv", "best.conf", "config.conf" })
            Assert.True(File.Exists(Path.Combine(result.Folder, file)), file);
        Assert.Contains("**chosen**", File.ReadAllText(Path.Combine(result.Folder, "report.md")));
    }

    [Theory]
    [InlineData("tune.batch-sizes=[32, 48]", "batch sizes are searched in multiples of 32")]
    [InlineData("tune.learning-rates=[]", "tune.learning-rates is empty")]
    [InlineData("tune.validation-fraction=0.7", "tune.validation-fraction = 0.7 is out of range")]
    [InlineData("tune.learning-rates=[0.1, -1]", "tune.learning-rates[1] = \"-1\" must be a number above 0")]
    public void Bad_tune_settings_are_rejected_naming_the_key(string setting, string message)
    {
        var e = Assert.Throws<ActorTrainException>(() => ExperimentSpec.Load(null, [setting]));
        Assert.Contains(message, e.Message);
    }

    [Fact]
    public void A_random_search_draws_log_uniform_rates_between_the_listed_ends()
    {
        var spec = ExperimentSpec.Load(null, ["tune.method=random", "tune.samples=20", "tune.learning-rates=[0.001, 1]"]);
        var rates = spec.Tune.Candidates(spec.Seed);
        Assert.All(rates, r => Assert.InRange(r, 0.001, 1));
        Assert.Equal(rates, spec.Tune.Candidates(spec.Seed));
        // log-uniform: about half the draws below the geometric middle, 0.0316
        Assert.InRange(rates.Count(r => r < 0.0316), 5, 15);
    }
}
