using System.Buffers.Binary;
using ActorTrain.Cli;

namespace ActorTrain.Cli.Tests;

/// <summary>The command as a new user meets it: exit codes, one-line errors, and what is left on disk.</summary>
public sealed class CommandLineTests() : TempFolderTest("actortrain-cli-")
{
    private string Runs => Path.Combine(Root, "runs");

    private static readonly string[] Small =
    [
        "--set", "dataset.samples=1200", "--set", "training.max-steps=30", "--set", "training.eval-every=10", "--set", "compute.engine=simd",
    ];

    private static Task<(int Code, string Out, string Err)> Invoke(params string[] args) => Command.Invoke(args);

    private string Write(string name, string text)
    {
        string path = Path.Combine(Root, name);
        File.WriteAllText(path, text);
        return path;
    }

    private void AssertBadInput((int Code, string Out, string Err) result, string expected)
    {
        Assert.Equal(ActorTrainCommand.BadInput, result.Code);
        var lines = result.Err.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Single(lines);
        Assert.StartsWith("error: ", lines[0]);
        Assert.Contains(expected, lines[0]);
        Assert.DoesNotContain("   at ", result.Err);
        Assert.False(Directory.Exists(Runs) && Directory.EnumerateFileSystemEntries(Runs).Any(), "a run folder was left behind");
    }

    [Fact]
    public async Task Quickstart_runs_and_writes_its_results()
    {
        var (code, output, err) = await Invoke(["run", "--out", Runs, .. Small]);
        Assert.True(code == 0, err);
        Assert.Contains("run summary", output);
        string folder = Assert.Single(Directory.GetDirectories(Runs));
        foreach (string file in new[] { "metrics.csv", "summary.json", "config.conf", "loss_vs_step.png", "accuracy_vs_time.png" })
            Assert.True(File.Exists(Path.Combine(folder, file)), file);
    }

    [Theory]
    [InlineData("run --nodes 2", "a cluster run needs at least 3 nodes")]
    [InlineData("run --nodes 5 --set topology.workers=2", "3 worker nodes for 2 workers")]
    [InlineData("node --role foo", "unknown role 'foo'")]
    [InlineData("node --role ps --seed localhost", "'localhost' is not host:port")]
    [InlineData("node --role worker --config missing-cluster.conf", "cluster file 'missing-cluster.conf' not found")]
    [InlineData("run --resume no-such-run", "run folder 'no-such-run' not found")]
    public async Task Bad_cluster_and_resume_arguments_are_bad_input(string args, string expected) =>
        AssertBadInput(await Invoke([.. args.Split(' '), "--out", Runs]), expected);

    [Fact]
    public async Task Malformed_hocon_is_bad_input() =>
        AssertBadInput(await Invoke(["run", Write("bad.conf", "model {\n  type = mlp\n"), "--out", Runs]), "malformed HOCON");

    [Fact]
    public async Task Unknown_key_suggests_the_closest() =>
        AssertBadInput(await Invoke(["run", Write("typo.conf", "optimizer { learning_rate = 0.1 }"), "--out", Runs]),
            "unknown key 'optimizer.learning_rate'; did you mean 'optimizer.learning-rate'?");

    [Fact]
    public async Task Negative_learning_rate_is_bad_input() =>
        AssertBadInput(await Invoke(["run", "--set", "optimizer.learning-rate=-1", "--out", Runs]), "optimizer.learning-rate = -1 is out of range");

    [Fact]
    public async Task Zero_workers_is_bad_input() =>
        AssertBadInput(await Invoke(["run", "--set", "topology.workers=0", "--out", Runs]), "topology.workers = 0 is out of range");

    [Fact]
    public async Task More_shards_than_parameters_is_bad_input() =>
        AssertBadInput(await Invoke(["run", "--set", "model.type=softmax", "--set", "dataset.features=1", "--set", "dataset.classes=2",
            "--set", "topology.shards=5", "--out", Runs]), "topology.shards = 5 is more than the model's 4 parameters");

    [Fact]
    public async Task Missing_experiment_file_is_bad_input() =>
        AssertBadInput(await Invoke(["run", Path.Combine(Root, "nope.conf"), "--out", Runs]), "experiment file not found");

    [Fact]
    public async Task Missing_dataset_is_bad_input() =>
        AssertBadInput(await Invoke(["run", "--set", "dataset.type=idx", "--set", $"dataset.path={Root}/no-such-folder", "--out", Runs]),
            "dataset.path");

    [Fact]
    public async Task Corrupt_dataset_file_is_bad_input()
    {
        string folder = Directory.CreateDirectory(Path.Combine(Root, "idx")).FullName;
        foreach (string stem in new[] { "train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte" })
            File.WriteAllBytes(Path.Combine(folder, stem + ".gz"), [0x1f, 0x8b, 8, 0, 1, 2, 3]); // gzip magic, then garbage
        AssertBadInput(await Invoke(["run", "--set", "dataset.type=idx", "--set", $"dataset.path={folder}", "--out", Runs]),
            "train-images-idx3-ubyte.gz");
    }

    [Fact]
    public async Task Unwritable_output_folder_is_bad_input()
    {
        string file = Write("not-a-folder", "");
        AssertBadInput(await Invoke(["run", "--out", Path.Combine(file, "runs"), .. Small]), "cannot write to");
    }

    [Fact]
    public async Task Unknown_option_is_bad_input() =>
        AssertBadInput(await Invoke("run", "--bogus"), "unknown option '--bogus'");

    [Fact]
    public async Task Stray_argument_is_bad_input()
    {
        var (code, _, err) = await Invoke("run", "a.conf", "b.conf");
        Assert.Equal(ActorTrainCommand.BadInput, code);
        Assert.Contains("Unrecognized command or argument 'b.conf'", err);
    }

    [Fact]
    public async Task Validate_checks_without_training()
    {
        var (code, output, _) = await Invoke("validate", Path.Combine(RepoRoot(), "hocon", "experiments", "quickstart.conf"));
        Assert.Equal(0, code);
        Assert.Contains("ok. mlp 32-64-8", output);
        Assert.False(Directory.Exists(Runs));
    }

    [Fact]
    public async Task Devices_lists_the_cpu_accelerator_and_the_auto_choice()
    {
        var (code, output, _) = await Invoke("devices");
        Assert.Equal(0, code);
        Assert.Contains("CPU", output);
        Assert.Contains("compute.engine = auto picks:", output);
    }

    private static string RepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "ActorTrain.sln"))) return dir.FullName;
        throw new InvalidOperationException("ActorTrain.sln not found");
    }
}

public sealed class CompareCommandTests() : TempFolderTest("actortrain-cli-compare-")
{
    [Fact]
    public async Task A_sweep_table_has_a_column_per_swept_key()
    {
        string file = Path.Combine(Root, "sw.conf");
        File.WriteAllText(file, "name = sw\ntraining.max-steps = 10\noutput.plots = off\ndataset.samples = 800\nsweep.values { sync.policy = [bsp, asp], optimizer.learning-rate = [0.05, 0.1] }\n");
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        Assert.Equal(0, await ActorTrainCommand.RunAsync(["run", file, "--out", Root], stdout, stderr));
        string table = stdout.ToString();
        Assert.Contains("sync.policy", table);
        Assert.Contains("learning-rate", table);
        Assert.Contains("0.05", table.Split('\n').First(l => l.Contains("policy-asp_learning-rate-0.05")).Replace("policy-asp_learning-rate-0.05", ""));
    }

    [Fact]
    public async Task The_sync_policy_comparison_prints_its_table_and_writes_it_into_the_run_summary()
    {
        string file = Path.Combine(AppContext.BaseDirectory, "..", "..", "..", "..", "..", "hocon", "experiments", "sync-policies.conf");
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int code = await ActorTrainCommand.RunAsync(["run", file, "--out", Root, "--set", "dataset.samples=2000", "--set", "model.hidden=[16]",
            "--set", "training.max-steps=20", "--set", "output.plots=off"], stdout, stderr);
        Assert.True(code == 0, stderr.ToString());
        string output = stdout.ToString();
        foreach (string variant in new[] { "== bsp: bsp", "== ssp3: ssp (staleness 3)", "== asp: asp", "time to target (virtual)", "mean / max staleness" })
            Assert.Contains(variant, output);
        string folder = Assert.Single(Directory.GetDirectories(Root));
        Assert.Contains("\"variant\": \"ssp3\"", File.ReadAllText(Path.Combine(folder, "summary.json")));
    }
}

public sealed class TraceCommandTests() : TempFolderTest("actortrain-trace-cli-")
{
    [Fact]
    public async Task Trace_summarize_and_export_read_a_run_folder()
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        Assert.Equal(0, await ActorTrainCommand.RunAsync(["run", "--out", Root, "--set", "training.max-steps=20", "--set", "output.plots=off"], stdout, stderr));
        string run = Assert.Single(Directory.GetDirectories(Root));
        stdout = new StringWriter();
        Assert.Equal(0, await ActorTrainCommand.RunAsync(["trace", "summarize", run], stdout, stderr));
        Assert.Contains("| worker | compute | compress | network | wait |", stdout.ToString());
        Assert.Contains("Critical path", stdout.ToString());
        Assert.Equal(0, await ActorTrainCommand.RunAsync(["trace", "export", run, "--format", "chrome"], stdout, stderr));
        Assert.True(File.Exists(Path.Combine(run, "trace.chrome.json")));
    }

    [Fact]
    public async Task Trace_summarize_takes_a_comparison_folder_variant_by_variant_and_notes_a_sampled_trace()
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        string file = Path.Combine(Root, "two.conf");
        File.WriteAllText(file, "name = two\ntraining.max-steps = 10\ntelemetry.trace-every = 2\noutput.plots = off\n" +
            "compare = [{ name = bsp, sync.policy = bsp }, { name = asp, sync.policy = asp }]\n");
        Assert.Equal(0, await ActorTrainCommand.RunAsync(["run", file, "--out", Root], stdout, stderr));
        string comparison = Assert.Single(Directory.GetDirectories(Root));
        stdout = new StringWriter();
        Assert.Equal(0, await ActorTrainCommand.RunAsync(["trace", "summarize", comparison], stdout, stderr));
        string text = stdout.ToString();
        Assert.True(text.IndexOf("== asp", StringComparison.Ordinal) < text.IndexOf("== bsp", StringComparison.Ordinal) && text.Contains("== asp"), text);
        Assert.Contains("telemetry.trace-every = 2", text);
        Assert.Equal(2, System.Text.RegularExpressions.Regex.Matches(text, @"\| worker \| compute \|").Count);
    }

    [Fact]
    public async Task Export_writes_a_checkpoint_s_weights_as_npz_and_names_bad_input()
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        Assert.Equal(0, await ActorTrainCommand.RunAsync(["run", "--out", Root, "--set", "training.max-steps=20", "--set", "training.checkpoint-every=10", "--set", "output.plots=off"], stdout, stderr));
        string run = Assert.Single(Directory.GetDirectories(Root));
        stdout = new StringWriter();
        Assert.Equal(0, await ActorTrainCommand.RunAsync(["export", run, "--checkpoint", "10"], stdout, stderr));
        Assert.Equal(Path.Combine(run, "weights-step10.npz"), stdout.ToString().Trim());
        Assert.True(new FileInfo(Path.Combine(run, "weights-step10.npz")).Length > 1000);
        // the same layout as the final weights (the same arrays, the same sizes)
        using (var final = System.IO.Compression.ZipFile.OpenRead(Path.Combine(run, "weights.npz")))
        using (var step10 = System.IO.Compression.ZipFile.OpenRead(Path.Combine(run, "weights-step10.npz")))
            Assert.Equal(final.Entries.Select(e => (e.FullName, e.Length)), step10.Entries.Select(e => (e.FullName, e.Length)));
        stderr = new StringWriter();
        Assert.Equal(2, await ActorTrainCommand.RunAsync(["export", run, "--format", "csv"], new StringWriter(), stderr));
        Assert.Contains("the only format is npz", stderr.ToString());
        Assert.Equal(2, await ActorTrainCommand.RunAsync(["export", Path.Combine(Root, "nope")], new StringWriter(), stderr));
        Assert.Contains("run folder not found", stderr.ToString());
        stderr = new StringWriter();
        Assert.Equal(2, await ActorTrainCommand.RunAsync(["export", run, "--checkpoint", "7"], new StringWriter(), stderr));
        Assert.Contains("--checkpoint 7: ", stderr.ToString());
        Assert.Contains("has checkpoints at steps 10", stderr.ToString());
    }

    [Fact]
    public async Task Trace_commands_reject_bad_input_with_exit_code_2()
    {
        var stderr = new StringWriter();
        Assert.Equal(2, await ActorTrainCommand.RunAsync(["trace", "summarize", Path.Combine(Root, "missing")], new StringWriter(), stderr));
        Assert.Contains("trace file not found", stderr.ToString());
        string bad = Path.Combine(Root, "bad.jsonl");
        File.WriteAllText(bad, "{not json\n");
        stderr = new StringWriter();
        Assert.Equal(2, await ActorTrainCommand.RunAsync(["trace", "summarize", bad], new StringWriter(), stderr));
        Assert.Contains("bad.jsonl:1: not OTLP JSON spans", stderr.ToString());
        stderr = new StringWriter();
        Assert.Equal(2, await ActorTrainCommand.RunAsync(["trace", "export", bad, "--format", "svg"], new StringWriter(), stderr));
        Assert.Contains("the only format is chrome", stderr.ToString());
    }
}
