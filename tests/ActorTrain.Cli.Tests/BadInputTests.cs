using System.Buffers.Binary;

namespace ActorTrain.Cli.Tests;

/// <summary>
/// Every bad input a stranger can give the command, as a table: exit code 2, exactly one line on
/// stderr that starts with "error:" and names the key or file, nothing on stdout, no run folder left.
/// Failures during a run (stalls) exit 1, a diverged run exits 0 with one warning.
/// </summary>
public sealed class BadInputTests() : TempFolderTest("actortrain-bad-")
{
    private string Runs => Path.Combine(Root, "runs");

    private static Task<(int Code, string Out, string Err)> Invoke(params string[] args) => Command.Invoke(args);

    private string Write(string name, string text)
    {
        string path = Path.Combine(Root, name);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllText(path, text);
        return path;
    }

    /// <summary>An MNIST-style folder of 8 train and 4 test 2x2 images whose train labels are given.</summary>
    private string IdxFolder(params byte[] trainLabels)
    {
        string folder = Directory.CreateDirectory(Path.Combine(Root, "idx")).FullName;
        void Images(string stem, int count)
        {
            var bytes = new byte[16 + count * 4];
            BinaryPrimitives.WriteInt32BigEndian(bytes, 0x803);
            BinaryPrimitives.WriteInt32BigEndian(bytes.AsSpan(4), count);
            BinaryPrimitives.WriteInt32BigEndian(bytes.AsSpan(8), 2);
            BinaryPrimitives.WriteInt32BigEndian(bytes.AsSpan(12), 2);
            for (int i = 16; i < bytes.Length; i++) bytes[i] = (byte)(i * 37);
            File.WriteAllBytes(Path.Combine(folder, stem), bytes);
        }
        void Labels(string stem, byte[] labels)
        {
            var bytes = new byte[8 + labels.Length];
            BinaryPrimitives.WriteInt32BigEndian(bytes, 0x801);
            BinaryPrimitives.WriteInt32BigEndian(bytes.AsSpan(4), labels.Length);
            labels.CopyTo(bytes, 8);
            File.WriteAllBytes(Path.Combine(folder, stem), bytes);
        }
        Images("train-images-idx3-ubyte", trainLabels.Length);
        Labels("train-labels-idx1-ubyte", trainLabels);
        Images("t10k-images-idx3-ubyte", 4);
        Labels("t10k-labels-idx1-ubyte", [0, 1, 2, 0]);
        return folder;
    }

    private void AssertBadInput((int Code, string Out, string Err) result, string expected)
    {
        Assert.True(result.Code == 2, $"exit {result.Code}; stderr: {result.Err}");
        var lines = result.Err.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(lines.Length == 1, $"expected one line on stderr, got:\n{result.Err}");
        Assert.StartsWith("error: ", lines[0]);
        Assert.True(lines[0].Contains(expected, StringComparison.Ordinal), $"'{expected}' is not in: {lines[0]}");
        Assert.Equal("", result.Out); // no banner, no progress before the error
        Assert.False(Directory.Exists(Runs) && Directory.EnumerateFileSystemEntries(Runs).Any(), "a run folder was left behind");
    }

    public static TheoryData<string, string> Settings => new()
    {
        { "training.batch-size=100000", "training.batch-size = 100000 is more than a worker's partition" },
        { "model.hidden=[64", "--set model.hidden=[64: malformed HOCON" },
        { "model={", "--set model={: malformed HOCON" },
        { "model.hidden=[100000, 100000]", "parameters; one flat vector holds at most" },
        { "network.latency=\"lognormal(mu=100us, sigma=50)\"", "network.latency = \"lognormal(mu=100us, sigma=50)\": sigma = 50" },
        { "network.latency=\"pareto(scale=100us, shape=0.1)\"", "shape = 0.1 has an infinite mean" },
        { "stragglers.random-slowdown=\"pareto(scale=1, shape=1)\"", "stragglers.random-slowdown" },
        { "network.max-attempts=0", "network.max-attempts = 0 is out of range" },
        { "simulation.stall-timeout=0s", "simulation.stall-timeout must be above zero" },
        { "dataset.classes=1", "dataset.classes = 1 is out of range" },
        { "fabric.topology=mesh", "fabric.topology" },
        { "fabric.nic-bandwidth=unlimited", "fabric.nic-bandwidth = unlimited: a shared resource needs a finite bandwidth" },
        { "placement.workers-per-host=0", "placement.workers-per-host = 0 is out of range" },
    };

    /// <summary>2 billion parameters held by 4,096 workers: about 100 TB, more than any machine this runs on.</summary>
    [Fact]
    public async Task A_run_that_cannot_fit_memory_is_refused_naming_the_keys_that_size_it() =>
        AssertBadInput(await Invoke("validate", Write("x.conf", "name = x\n"), "--set", "model.hidden=[50000000]", "--set", "topology.workers=4096"),
            "parameters from model.hidden, held by the shards and each of topology.workers = 4096), but this process can use");

    [Theory]
    [MemberData(nameof(Settings))]
    public async Task A_bad_setting_is_one_error_line_naming_the_key(string setting, string expected)
    {
        AssertBadInput(await Invoke("run", "--set", setting, "--out", Runs), expected);
        AssertBadInput(await Invoke("validate", Write("x.conf", "name = x\n"), "--set", setting), expected);
    }

    public static TheoryData<string, string> CommandLines => new()
    {
        { "foo", "unknown command 'foo'; use one of run, node, sweep" },
        { "", "no command given; use one of run" },
        { "node --role foo", "--role: unknown role 'foo'; use one of coordinator, ps, worker" },
        { "run --checkpoint 5", "--checkpoint 5 picks a checkpoint of the run given with --resume" },
        { "run --nodes 0", "--nodes 0" },
        { "run --nodes 3 --set model.type=workload --set model.workload=resnet50", "run it in one process" },
        { "run --nodes 9 --set parallelism.pipeline-stages=2 --set topology.workers=1", "--nodes 9: 2 stage nodes for 2 pipeline stages (parallelism.pipeline-stages x topology.workers) and 6 worker nodes for 1 driver(s); use at most 4 nodes" },
    };

    [Theory]
    [MemberData(nameof(CommandLines))]
    public async Task A_bad_command_line_is_one_error_line(string args, string expected) =>
        AssertBadInput(await Invoke(args.Split(' ', StringSplitOptions.RemoveEmptyEntries)), expected);

    [Fact]
    public async Task An_idx_label_out_of_range_names_the_file_row_and_value()
    {
        string folder = IdxFolder(0, 1, 2, 200, 1, 0, 2, 1);
        // classes from the labels: 200 leaves 3..199 without a row
        AssertBadInput(await Invoke("validate", Write("x.conf", "name = x\n"), "--set", "dataset.type=idx", "--set", $"dataset.path={folder}", "--set", "training.batch-size=2"),
            $"{Path.Combine(folder, "train-labels-idx1-ubyte")}: no row has label 3, but row 3 has label 200");
        // classes given: the label is named with its row
        AssertBadInput(await Invoke("run", "--set", "dataset.type=idx", "--set", $"dataset.path={folder}", "--set", "dataset.classes=3", "--set", "training.batch-size=2", "--out", Runs),
            "row 3 has label 200, but there are 3 classes (labels 0..2)");
    }

    [Fact]
    public async Task Validate_describes_a_workload_without_a_memory_estimate()
    {
        var (code, output, err) = await Invoke("validate", Write("w.conf", "model { type = workload, workload = vgg16 }\ntopology.workers = 64\ntraining.overlap = bucket\n"));
        Assert.True(code == 0, err);
        output = output.ReplaceLineEndings("");
        Assert.Contains("workload vgg16", output);
        Assert.Contains("138,357,544 parameters", output);
        Assert.Contains("no values held", output);
    }

    [Fact]
    public async Task Validate_says_which_layers_each_kfac_shard_owns_and_what_the_factors_cost()
    {
        // an MLP 32-64-64-8: layer 0 (2,112 values) on shard 0, layers 1 and 2 (4,160 + 520) on shard 1
        var (code, output, err) = await Invoke("validate", Write("k.conf", "optimizer { type = kfac, kfac.factor-every = 5 }\nmodel.hidden = [64, 64]\ndataset { features = 32, classes = 8 }\n"));
        Assert.True(code == 0, err);
        output = output.ReplaceLineEndings("");
        Assert.Contains("K-FAC: shard 0 layers 0, shard 1 layers 1+2", output);
        // upper triangles: 33x34/2 + 64x65/2 + 2 x (65x66/2) + 64x65/2 + 65x66/2 + 8x9/2 floats
        long floats = 33 * 34 / 2 + 64 * 65 / 2 + 65 * 66 / 2 + 64 * 65 / 2 + 65 * 66 / 2 + 8 * 9 / 2;
        Assert.Contains(FormattableString.Invariant($"each worker sends {4 * floats / 1e6:0.###} MB of factors every 5 step(s)"), output);
    }

    [Fact]
    public async Task Validate_describes_a_pipeline_and_each_stages_memory()
    {
        var (code, output, err) = await Invoke("validate", Write("p.conf", "parallelism { pipeline-stages = 2, micro-batches = 4, schedule = 1f1b }\ntopology.workers = 2\n"));
        Assert.True(code == 0, err);
        output = output.ReplaceLineEndings("");
        Assert.Contains("2 replicas of a pipeline of 2 stage(s), 4 micro-batch(es), 1f1b", output);
        // 1F1B: stage 0 holds 2 micro-batches at its peak, stage 1 one
        Assert.Contains("stage 0: layers 0,", output);
        Assert.Contains("(2 micro-batch(es) at its peak)", output);
        Assert.Contains("(1 micro-batch(es) at its peak)", output);
    }

    [Fact]
    public async Task Idx_classes_come_from_the_labels_or_from_dataset_classes()
    {
        string folder = IdxFolder(0, 1, 2, 1, 1, 0, 2, 1);
        var (code, output, err) = await Invoke("validate", Write("idx.conf", $"dataset {{ type = idx, path = \"{folder}\" }}\ntopology.shards = 1\ntraining.batch-size = 2\n"));
        Assert.True(code == 0, err);
        Assert.Contains("mlp 4-64-3", output);
        (code, output, err) = await Invoke("validate", Write("idx.conf", $"dataset {{ type = idx, path = \"{folder}\", classes = 10 }}\ntopology.shards = 1\ntraining.batch-size = 2\n"));
        Assert.True(code == 0, err);
        Assert.Contains("mlp 4-64-10", output);
    }

    [Fact]
    public async Task Include_is_relative_to_the_including_file_and_a_missing_one_is_named()
    {
        Write("exp/net/lossy.conf", "network.drop = 0.01\n");
        Write("exp/base.conf", "include \"net/lossy.conf\"\ntopology.workers = 3\n");
        string main = Write("exp/main.conf", "include \"base.conf\"\nseed = 9\n");
        var (code, output, err) = await Invoke("validate", main);
        Assert.True(code == 0, err);
        Assert.Contains("3 workers", output);
        var spec = Experiments.ExperimentSpec.Load(main);
        Assert.Equal((9UL, 3, 0.01), (spec.Seed, spec.Topology.Workers, spec.Network.Default.Drop));

        AssertBadInput(await Invoke("run", Write("exp/broken.conf", "include \"nowhere.conf\"\n"), "--out", Runs),
            $"include \"nowhere.conf\": {Path.Combine(Root, "exp", "nowhere.conf")} not found");
        AssertBadInput(await Invoke("run", Write("exp/cycle.conf", "include \"cycle.conf\"\n"), "--out", Runs), "an include cycle");
    }

    [Fact]
    public async Task An_empty_experiment_file_runs_the_defaults_with_a_warning_naming_it()
    {
        string empty = Write("empty.conf", "# nothing here yet\n");
        var (code, _, err) = await Invoke("validate", empty);
        Assert.Equal(0, code);
        Assert.Equal($"warning: {empty} sets no keys: running every default of hocon/actortrain.conf", err.Trim());
    }

    [Fact]
    public async Task Validate_warns_when_the_drop_rate_makes_a_lost_message_likely()
    {
        var (code, _, err) = await Invoke("validate", Write("x.conf", "name = x\n"), "--set", "network.drop=0.9");
        Assert.Equal(0, code);
        Assert.Contains("warning: network.drop with network.max-attempts = 64: a message is lost for good", err);
        (code, _, err) = await Invoke("validate", Write("x.conf", "name = x\n"), "--set", "network.drop=0.9", "--set", "network.max-attempts=400");
        Assert.Equal("", err);
    }

    /// <summary>
    /// A stall is a failure of the run, not bad input: exit 1, one line naming the cause and the
    /// folder kept as &lt;name&gt;-failed (what it wrote so far, error.txt, a summary with the error).
    /// </summary>
    [Theory]
    [InlineData("faults=[{ worker = 0, at-step = 3 }]", "worker(s) 0 were killed by faults without restart-after and BSP waits for every worker")]
    [InlineData("network.drop=0.95", "lost for good, every attempt dropped (network.drop; network.max-attempts attempts each; the first: worker-")]
    public async Task A_stalled_run_exits_1_with_one_line_naming_the_cause(string setting, string cause)
    {
        var (code, _, err) = await Invoke("run", "--set", setting, "--set", "training.max-steps=30", "--set", "network.max-attempts=8", "--out", Runs);
        Assert.Equal(1, code);
        var lines = err.Split('\n', StringSplitOptions.RemoveEmptyEntries).Where(l => !l.StartsWith("warning:")).ToList();
        Assert.Single(lines);
        Assert.StartsWith("run failed: the run stalled at virtual time", lines[0]);
        Assert.Contains(cause, lines[0]);
        string kept = Assert.Single(Directory.GetDirectories(Runs));
        Assert.EndsWith("-failed", kept);
        Assert.Contains($"what it wrote is kept in {kept}", lines[0]);
        using var summary = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(kept, "summary.json")));
        Assert.Equal("failed", summary.RootElement.GetProperty("status").GetString());
        Assert.Contains(cause, summary.RootElement.GetProperty("error").GetString());
        // as many evaluations as metrics.csv holds rows (the one at step 0 may or may not be in before the stall)
        Assert.Equal(File.ReadAllLines(Path.Combine(kept, "metrics.csv")).Length - 1, summary.RootElement.GetProperty("evaluations_written").GetInt32());
        foreach (string file in new[] { "config.conf", "metrics.csv", "traces.jsonl.gz", "error.txt" })
            Assert.True(File.Exists(Path.Combine(kept, file)), file);
    }

    [Theory]
    [InlineData("--exporter", "[file, otlp]")]
    [InlineData("--set", "telemetry.exporter=[file, otlp]")]
    public async Task A_dead_otlp_endpoint_warns_once_with_the_count_and_the_run_still_lands(string option, string value)
    {
        // the endpoint does not replace an exporter list given on the command line
        var (code, _, err) = await Invoke("run", option, value, "--otlp-endpoint", "http://127.0.0.1:9", "--set", "training.max-steps=20", "--set", "output.plots=off", "--out", Runs);
        Assert.Equal(0, code);
        string run = Assert.Single(Directory.GetDirectories(Runs));
        Assert.True(File.Exists(Path.Combine(run, "traces.jsonl.gz")));
        using var summary = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(run, "summary.json")));
        var telemetry = summary.RootElement.GetProperty("telemetry");
        long dropped = telemetry.GetProperty("spans_dropped").GetInt64();
        Assert.True(dropped > 0);
        Assert.Equal(0, telemetry.GetProperty("spans_exported").GetInt64());
        var warnings = err.Split('\n').Where(l => l.Contains("warning: telemetry")).ToList();
        Assert.Contains($"{dropped} of {dropped} span(s)", Assert.Single(warnings));
        Assert.Contains("http://127.0.0.1:9", warnings[0]);
    }

    [Fact]
    public async Task A_wall_clock_run_whose_workers_all_die_ends_at_once_with_exit_1()
    {
        var (code, _, err) = await Invoke("run", "--set", "simulation.clock=wall", "--set", "training.max-steps=100000",
            "--set", "faults=[{ worker = 0, at-step = 3 }, { worker = 1, at-step = 3 }, { worker = 2, at-step = 3 }, { worker = 3, at-step = 3 }]", "--out", Runs);
        Assert.Equal(1, code);
        Assert.Contains("every worker was killed by faults without restart-after", err);
    }

    [Fact]
    public async Task A_wall_clock_stall_ends_after_the_stall_timeout_naming_the_dead_worker()
    {
        var (code, _, err) = await Invoke("run", "--set", "simulation.clock=wall", "--set", "simulation.stall-timeout=300ms", "--set", "training.max-steps=100000",
            "--set", "faults=[{ worker = 2, at-step = 3 }]", "--out", Runs);
        Assert.Equal(1, code);
        Assert.Contains("run failed: the run stalled at", err);
        Assert.Contains("simulation.stall-timeout = 300ms", err);
        Assert.Contains("worker(s) 2 were killed", err);
    }

    [Fact]
    public async Task A_diverged_run_exits_0_with_one_warning_and_keeps_its_folder()
    {
        var (code, _, err) = await Invoke("run", "--set", "optimizer.learning-rate=1000", "--set", "training.max-steps=200", "--out", Runs);
        Assert.Equal(0, code);
        string line = Assert.Single(err.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.StartsWith("warning: the run diverged: test loss", line);
        string folder = Assert.Single(Directory.GetDirectories(Runs));
        Assert.Contains("\"stop_reason\": \"diverged\"", File.ReadAllText(Path.Combine(folder, "summary.json")));
    }

    [Fact]
    public async Task A_node_refuses_to_listen_beyond_loopback_without_tls_unless_told_insecure()
    {
        string exposed = Write("exposed.conf", "akka.remote.dot-netty.tcp.hostname = 10.1.2.3\n");
        AssertBadInput(await Invoke("node", "--role", "ps", "--config", exposed),
            "akka.remote.dot-netty.tcp.hostname = 10.1.2.3: a node that listens beyond loopback without TLS takes messages from anyone");
        var config = Experiments.ClusterRunner.LoadConfig(new Experiments.ClusterNodeOptions("ps", exposed, Insecure: true));
        Assert.Equal("10.1.2.3", config.GetString("akka.remote.dot-netty.tcp.hostname"));
    }

    [Fact]
    public void The_coordinator_seeds_itself_at_its_own_port()
    {
        var config = Experiments.ClusterRunner.LoadConfig(new Experiments.ClusterNodeOptions("coordinator", Port: 5123));
        Assert.Equal(["akka.tcp://actortrain@127.0.0.1:5123"], config.GetStringList("akka.cluster.seed-nodes"));
        config = Experiments.ClusterRunner.LoadConfig(new Experiments.ClusterNodeOptions("coordinator", Port: 5123, Seeds: ["127.0.0.1:4999"]));
        Assert.Equal(["akka.tcp://actortrain@127.0.0.1:4999"], config.GetStringList("akka.cluster.seed-nodes"));
    }

    /// <summary>A node whose seed never answers (no coordinator, or a TLS handshake refused) gives up after join-timeout: exit 1, not a retry loop.</summary>
    [Fact]
    public async Task A_node_that_cannot_join_gives_up_after_the_join_timeout()
    {
        string fast = Write("fast.conf", "actortrain.cluster.join-timeout = 2s\n");
        var (code, _, err) = await Invoke("node", "--role", "worker", "--config", fast, "--port", "0",
            "--seed", $"127.0.0.1:{Experiments.LocalCluster.FreePort()}");
        Assert.Equal(1, code);
        Assert.Contains("run failed: this worker node did not join the cluster at", err);
        Assert.Contains("within 2 s (actortrain.cluster.join-timeout)", err);
    }

    [Theory]
    [InlineData("network.uplink.bandwidth=1Gbps", "network.uplink/downlink bandwidth: per-pair link settings do not apply")]
    [InlineData("network.racks=2", "network.racks: per-pair link settings do not apply with fabric.topology = switch")]
    [InlineData("network.links=[{ from = worker-0, to = shard-0, latency = \"constant(1ms)\" }]", "network.links: per-pair link settings")]
    public async Task A_sharing_fabric_refuses_what_it_replaces(string setting, string expected) =>
        AssertBadInput(await Invoke("validate", Write("x.conf", "name = x\n"), "--set", "fabric.topology=switch", "--set", setting), expected);
}
