using ActorTrain.Core;
using ActorTrain.Core.Optimization;
using ActorTrain.Core.Precision;

namespace ActorTrain.Experiments.Tests;

public class ExperimentSpecTests
{
    private static ExperimentSpec Parse(string text, params string[] overrides) =>
        ExperimentSpec.Parse(text, "test.conf", overrides);

    private static string Error(string text, params string[] overrides) =>
        Assert.Throws<ActorTrainException>(() => Parse(text, overrides)).Message;

    /// <summary>Every shipped experiment file loads: its keys exist and its values pass validation.</summary>
    [Fact]
    public void Every_shipped_experiment_file_loads()
    {
        var files = Directory.GetFiles(Path.Combine(RepoRoot.Path, "hocon", "experiments"), "*.conf", SearchOption.AllDirectories);
        Assert.True(files.Length >= 17, $"{files.Length} files");
        foreach (string file in files)
        {
            var spec = ExperimentSpec.Load(file);
            Assert.False(string.IsNullOrEmpty(spec.Name), file);
        }
    }

    [Fact]
    public void An_empty_file_takes_every_default_from_the_reference()
    {
        var spec = Parse("");
        Assert.Equal("experiment", spec.Name);
        Assert.Equal(("mlp", 64), (spec.Model.Type, spec.Model.Hidden.Single()));
        Assert.Equal((4, 2), (spec.Topology.Workers, spec.Topology.Shards));
        Assert.Equal(OptimizerKind.Sgd, spec.Optimizer.Kind);
        Assert.Equal(PrecisionMode.Fp32, spec.Precision.Mode);
        Assert.Null(spec.Precision.StaticScale);
        Assert.Null(spec.Training.TargetAccuracy);
        Assert.Null(spec.Training.TimeBudget);
        Assert.Equal("auto", spec.Compute.Engine);
    }

    [Fact]
    public void File_values_and_set_overrides_are_applied_in_that_order()
    {
        var spec = Parse("optimizer { type = adam, learning-rate = 0.01 }\ntraining.time-budget = 90s",
            "optimizer.learning-rate=0.002", "model.hidden=[32, 16]", "precision.loss-scale=256");
        Assert.Equal(OptimizerKind.Adam, spec.Optimizer.Kind);
        Assert.Equal(0.002, spec.Schedule.LearningRate);
        Assert.Equal([32, 16], spec.Model.Hidden);
        Assert.Equal(256f, spec.Precision.StaticScale);
        Assert.Equal(TimeSpan.FromSeconds(90), spec.Training.TimeBudget);
    }

    [Fact]
    public void The_resolved_config_loads_back_to_the_same_spec()
    {
        var spec = Parse("name = round-trip\noptimizer.type = rmsprop\nmodel.hidden = [8, 4]\ndataset.path = \"/tmp/some folder\"");
        var again = Parse(spec.ResolvedConfig);
        Assert.Equal(spec.ResolvedConfig, again.ResolvedConfig);
        Assert.Equal(spec.Optimizer, again.Optimizer);
        Assert.Equal(spec.Dataset, again.Dataset);
    }

    [Fact]
    public void The_embedded_quickstart_is_valid() =>
        Assert.Equal("quickstart", ExperimentSpec.Load(null).Name);

    [Theory]
    [InlineData("optimizer.learning-rat = 0.1", "unknown key 'optimizer.learning-rat'; did you mean 'optimizer.learning-rate'?")]
    [InlineData("topology { worker = 3 }", "did you mean 'topology.workers'?")]
    [InlineData("traning.max-steps = 3", "did you mean 'training.max-steps'?")]
    [InlineData("model = mlp", "'model' is a section, not a value")]
    public void Unknown_keys_are_rejected_with_the_closest_valid_key(string text, string expected) =>
        Assert.Contains(expected, Error(text));

    [Fact]
    public void Unknown_keys_in_set_overrides_are_rejected_too() =>
        Assert.Contains("--set optimizer.lr=1: unknown key 'optimizer.lr'", Error("", "optimizer.lr=1"));

    [Theory]
    [InlineData("model { type = mlp", "test.conf: malformed HOCON: '{' opened on line 1 is never closed")]
    [InlineData("model { hidden = [1, 2 }", "test.conf: malformed HOCON: unexpected '}' on line 1")]
    [InlineData("name = \"x\"\n}", "test.conf: malformed HOCON: unexpected '}' on line 2")]
    [InlineData("optimizer.learning-rate = -0.1", "optimizer.learning-rate = -0.1 is out of range")]
    [InlineData("topology.workers = 0", "topology.workers = 0 is out of range")]
    [InlineData("training.batch-size = lots", "training.batch-size = \"lots\" is not a whole number")]
    [InlineData("optimizer.type = lion", "optimizer.type = \"lion\" is not one of: sgd, momentum")]
    [InlineData("training.time-budget = 5 parsecs", "unknown unit 'parsecs'")]
    [InlineData("optimizer.momentum = 1.0", "optimizer.momentum = 1.0 is out of range: must be in [0, 1)")]
    [InlineData("precision.loss-scale = 0", "precision.loss-scale = 0 is out of range")]
    [InlineData("model.hidden = 64", "model.hidden must be a list")]
    [InlineData("model.type = linear", "model.type = linear is regression")]
    [InlineData("compute.engine = tpu", "compute.engine = \"tpu\" is not one of: auto, simd")]
    [InlineData("name = \"a/b\"", "name = \"a/b\" must be a non-empty file-name-safe word")]
    [InlineData("compression.codec = zip", "compression.codec = \"zip\" is not one of: none, fp16")]
    [InlineData("compression.ratio = 0", "compression.ratio = 0 is out of range: must be in (0, 1]")]
    [InlineData("compression.bits = 1", "compression.bits = 1 is out of range: must be in [2, 16]")]
    [InlineData("compression.downlink = int8", "compression.downlink = \"int8\" is not one of: fp32, fp16, codec")]
    [InlineData("sync.policy = gossip", "sync.policy = \"gossip\" is not one of: bsp, asp, ssp")]
    [InlineData("network.bandwidth = 10", "network.bandwidth = \"10\" has no unit")]
    [InlineData("network.latency = \"lognormal(mu=0.5, sigma=0.3)\"", "network.latency = \"0.5\" has no unit")]
    [InlineData("network.latency = \"gamma(1ms)\"", "network.latency = \"gamma(1ms)\": unknown distribution 'gamma'")]
    [InlineData("network.drop = 1", "network.drop = 1 is out of range: must be in [0, 1)")]
    [InlineData("network.uplink.bandwidth = 1 Gbit", "network.uplink.bandwidth = \"1 Gbit\": unknown bandwidth unit 'gbit'")]
    [InlineData("network.links = [{ from = worker-9, to = shard-0, latency = 1ms }]", "network.links names worker-9, but the topology has 4 workers")]
    [InlineData("network.links = [{ from = worker-0, to = shard-0, latncy = 1ms }]", "network.links[0]: unknown key 'latncy'; did you mean 'latency'?")]
    [InlineData("network.links = [{ from = rack-0, to = shard-0 }]", "network.links[0].from = \"rack-0\" is not an endpoint")]
    [InlineData("simulation.clock = lamport", "simulation.clock = \"lamport\" is not one of: virtual, wall")]
    [InlineData("simulation.compute-time = fast", "simulation.compute-time = \"fast\" is not one of: profile, measured, or a duration")]
    [InlineData("simulation.worker-device = tpu", "simulation.worker-device = \"tpu\" is not a device profile: use one of cpu, p100, v100, a100, h100")]
    [InlineData("simulation.devices = [{ name = l4, fp32-tflops = 30 }]", "simulation.devices[0] lacks fp16-tflops")]
    [InlineData("simulation.devices = [{ name = l4, fp32-tflops = 30, fp16-tflops = 121, memory-bandwidth = 300GB/s, launch-overhead = 5us, efficiency = 0.5, memory = 24 }]", "simulation.devices[0].memory")]
    [InlineData("stragglers.random-slowdown = \"exponential(mean=2ms)\"", "stragglers.random-slowdown: \"2ms\" is not a plain number")]
    [InlineData("faults = [{ worker = 9, at-step = 3 }]", "faults[0].worker must name a worker id in 0..3")]
    [InlineData("faults = [{ worker = 1 }]", "faults[0] needs exactly one of at (a time, e.g. 20ms) and at-step")]
    [InlineData("faults = [{ worker = 1, at = 5, restart-after = 1ms }]", "faults[0].at = \"5\" has no unit")]
    public void Bad_values_are_rejected_naming_the_key(string text, string expected) =>
        Assert.Contains(expected, Error(text));

    [Fact]
    public void Network_simulation_and_fault_sections_are_read_into_typed_settings()
    {
        var spec = ExperimentSpec.Parse("""
            network {
              latency = "lognormal(mu=0.5ms, sigma=0.3)"
              bandwidth = 25Gbps
              racks = 2
              cross-rack.bandwidth = 1Gbps
              links = [{ from = worker-3, to = shard-0, latency = "constant(2ms)" }]
            }
            simulation { clock = virtual, compute-time = 3ms, shard-device = h100,
                         devices = [{ name = l4, fp32-tflops = 30, fp16-tflops = 121, memory-bandwidth = 300GB/s, launch-overhead = 5us, efficiency = 0.5, memory = 24GB }],
                         worker-device = l4 }
            stragglers.random-slowdown = "exponential(mean=0.25)"
            faults = [{ worker = 1, at-step = 30, restart-after = 10ms }, { worker = 2, at = 0.5s }]
            """, "test.conf", []);
        Assert.Equal(0.5e-3 * Math.Exp(0.045), spec.Network.Default.Latency.Mean, 12);
        Assert.Equal(25e9 / 8, spec.Network.Default.BytesPerSecond);
        Assert.Equal(1e9 / 8, spec.Network.Resolve(Core.Simulation.Endpoint.Worker(1), Core.Simulation.Endpoint.Shard(0)).BytesPerSecond);
        Assert.Equal(0.002, spec.Network.Resolve(Core.Simulation.Endpoint.Worker(3), Core.Simulation.Endpoint.Shard(0)).Latency.Mean, 12);
        Assert.True(spec.Simulation.Virtual);
        Assert.Equal(0.003, spec.Simulation.ComputeTime.FixedSeconds, 12);
        Assert.Equal(("l4", 300e9), (spec.Simulation.WorkerDevice.Name, spec.Simulation.WorkerDevice.MemoryBytesPerSecond));
        Assert.Equal("h100", spec.Simulation.ShardDevice.Name);
        Assert.Equal(24e9, spec.Simulation.WorkerDevice.MemoryBytes);
        Assert.Equal(80e9, spec.Simulation.ShardDevice.MemoryBytes);
        Assert.Equal(0.25, spec.Stragglers.RandomSlowdown!.Mean, 12);
        Assert.Equal([new Cluster.Actors.WorkerFault(1, null, 30, 0.01), new Cluster.Actors.WorkerFault(2, 0.5, null, null)], spec.Faults);
    }

    [Fact]
    public void Set_without_an_equals_sign_explains_the_form() =>
        Assert.Contains("expected key=value", Error("", "optimizer.learning-rate"));

    [Fact]
    public void Every_reference_key_has_a_comment_above_it()
    {
        string path = Path.Combine(RepoRoot.Path, "hocon", "actortrain.conf");
        var lines = File.ReadAllLines(path);
        var undocumented = new List<string>();
        for (int i = 0; i < lines.Length; i++)
        {
            string line = lines[i].Trim();
            if (!line.Contains(" = ") || line.StartsWith('#')) continue;
            int j = i - 1;
            // a run of keys may share one comment (beta1 / beta2); walk up past them
            while (j >= 0 && lines[j].Trim().Contains(" = ") && !lines[j].Trim().StartsWith('#')) j--;
            if (j < 0 || !lines[j].Trim().StartsWith('#')) undocumented.Add(line);
        }
        Assert.Empty(undocumented);
        Assert.Equal(File.ReadAllText(path), ConfigReader.ReferenceText); // the embedded copy is this file
    }
}

internal static class RepoRoot
{
    public static string Path { get; } = Find();

    private static string Find()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(System.IO.Path.Combine(dir.FullName, "ActorTrain.sln"))) return dir.FullName;
        throw new InvalidOperationException("ActorTrain.sln not found above the test folder");
    }
}

public class CompareBlockTests
{
    [Fact]
    public void Each_variant_applies_its_keys_over_the_experiment_and_the_command_line()
    {
        var spec = ExperimentSpec.Parse("""
            topology.workers = 3
            compare = [
              { name = bsp, sync.policy = bsp }
              { name = ssp2, sync.policy = ssp, sync.staleness = 2, optimizer.learning-rate = 0.5 }
            ]
            """, "test.conf", ["optimizer.learning-rate=0.2"]);
        Assert.Equal(["bsp", "ssp2"], spec.Variants.Select(v => v.Name));
        var ssp = spec.Variants[1].Spec;
        Assert.Equal((Cluster.Actors.SyncPolicyKind.Ssp, 2), (ssp.Sync.Kind, ssp.Sync.Staleness));
        Assert.Equal(0.5, ssp.Schedule.LearningRate);
        Assert.Equal(0.2, spec.Variants[0].Spec.Schedule.LearningRate);
        Assert.All(spec.Variants, v => Assert.Equal(3, v.Spec.Topology.Workers));
        Assert.All(spec.Variants, v => Assert.Empty(v.Spec.Variants));
        Assert.Contains("compare = [{ name = \"bsp\", sync.policy = \"bsp\" }, { name = \"ssp2\", sync.policy = \"ssp\", sync.staleness = 2", spec.ResolvedConfig);
        var again = ExperimentSpec.Parse(spec.ResolvedConfig, "config.conf", []);
        Assert.Equal(spec.Variants.Select(v => v.Spec.ResolvedConfig), again.Variants.Select(v => v.Spec.ResolvedConfig));
    }

    [Theory]
    [InlineData("compare = [ { name = a, sync.polcy = asp } ]", "compare[0]: unknown key 'sync.polcy'; did you mean 'sync.policy'?")]
    [InlineData("compare = [ { sync.policy = asp } ]", "compare[0] needs a file-name-safe name")]
    [InlineData("compare = [ { name = a }, { name = a } ]", "two variants are named 'a'")]
    [InlineData("compare = [ { name = a, sync.backup-workers = 9 } ]", "sync.backup-workers = 9 must be in [0, topology.workers - 1]")]
    [InlineData("stragglers.workers = [7]", "stragglers.workers lists worker 7, but topology.workers = 4")]
    [InlineData("sync { policy = asp, backup-workers = 1 }", "sync.backup-workers applies to bsp only")]
    public void Bad_compare_blocks_and_policies_are_rejected(string text, string expected) =>
        Assert.Contains(expected, Assert.Throws<ActorTrainException>(() => ExperimentSpec.Parse(text, "test.conf", [])).Message);
}
