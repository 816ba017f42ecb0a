using System.Globalization;
using ActorTrain.Core;
using ActorTrain.Core.Collectives;

namespace ActorTrain.Experiments.Tests;

/// <summary>
/// topology.aggregation = ring-allreduce | hierarchical-allreduce | halving-doubling against the
/// parameter server on the same data, model and seeds: the same weights (to the order of float
/// additions), bit-identical replicas and reruns, and step times equal to the closed forms.
/// </summary>
public sealed class AllReduceTests() : TempFolderTest("actortrain-allreduce-")
{
    private static readonly string[] Base =
    [
        .. ExperimentRunnerTests.Small, "output.plots=off", "topology.workers=4", "topology.shards=1", "placement.workers-per-host=2",
        "network.latency=\"constant(50us)\"", "optimizer.type=momentum",
    ];

    private async Task<RunResult> Run(params string[] overrides) => await ExperimentRunner.RunAsync(ExperimentSpec.Load(null, [.. Base, .. overrides]), Root);

    [Theory]
    [InlineData("ring-allreduce")]
    [InlineData("hierarchical-allreduce")]
    [InlineData("halving-doubling")]
    public async Task All_reduce_gives_the_parameter_server_s_weights_and_every_replica_the_same_bits(string algorithm)
    {
        var ps = await Run();
        var first = await Run($"topology.aggregation={algorithm}");
        var again = await Run($"topology.aggregation={algorithm}");
        var expected = ps.Outcome.FinalWeights;
        var actual = first.Outcome.FinalWeights;
        float scale = expected.Max(MathF.Abs);
        for (int i = 0; i < expected.Length; i++)
            Assert.True(MathF.Abs(actual[i] - expected[i]) <= 1e-6f * scale, $"weight {i}: {actual[i]} vs the parameter server's {expected[i]}");
        Assert.NotEqual(expected, actual); // the summation order differs: equal bits would mean the same code path
        Assert.Equal(actual, again.Outcome.FinalWeights);
        Assert.Equal(File.ReadAllBytes(Path.Combine(first.Folder, "metrics.csv")), File.ReadAllBytes(Path.Combine(again.Folder, "metrics.csv")));
        // 5 evaluations (steps 0, 10, ..., 40 less step 0, which no worker has stepped to) x 3 workers compared with the first
        Assert.Equal(4 * 3, first.Outcome.ReplicaChecks);
        Assert.Equal(algorithm, first.Summary.Aggregation);
        Assert.Equal(1, first.Summary.Shards);
        // topology.shards does not apply to all-reduce: the reference's 2 (or any number) is read as 1
        Assert.Equal(1, ExperimentSpec.Load(null, [$"topology.aggregation={algorithm}", "topology.workers=4", "topology.shards=3"]).Topology.Shards);
        Assert.Equal(ps.Summary.Updates, first.Summary.Updates);
        Assert.Equal(ps.Outcome.Evaluations[^1].SamplesProcessed, first.Outcome.Evaluations[^1].SamplesProcessed);
    }

    [Fact]
    public async Task Codecs_that_cannot_be_summed_are_all_gathered_and_equal_a_one_shard_parameter_server_bit_for_bit()
    {
        string[] topk = ["compression.codec=topk", "compression.ratio=0.05", "compression.error-feedback=on"];
        var ps = await Run(topk);
        var ring = await Run([.. topk, "topology.aggregation=ring-allreduce"]);
        Assert.Equal(ps.Outcome.FinalWeights, ring.Outcome.FinalWeights);
        // each worker's message is forwarded by the 3 others: 3 x what the workers pushed, header sizes aside
        double ratio = (double)ring.Summary.BytesWorkerToShard / ps.Summary.BytesWorkerToShard;
        Assert.InRange(ratio, 2.9, 3.0);
    }

    [Fact]
    public async Task Fp16_on_the_wire_halves_the_bytes_and_stays_close()
    {
        var fp32 = await Run("topology.aggregation=ring-allreduce");
        var fp16 = await Run("topology.aggregation=ring-allreduce", "precision.allreduce=fp16");
        // and with FP16 compute and dynamic loss scaling (the scale travels in the tallies)
        var mixed = await Run("topology.aggregation=ring-allreduce", "precision.allreduce=fp16", "precision.mode=fp16");
        Assert.Equal(12, mixed.Outcome.ReplicaChecks);
        Assert.InRange(mixed.Summary.FinalTestLoss, 0.98 * fp32.Summary.FinalTestLoss, 1.02 * fp32.Summary.FinalTestLoss);
        Assert.InRange((double)fp16.Summary.BytesWorkerToShard / fp32.Summary.BytesWorkerToShard, 0.5, 0.52);
        Assert.InRange(fp16.Summary.FinalTestLoss, 0.99 * fp32.Summary.FinalTestLoss, 1.01 * fp32.Summary.FinalTestLoss);
        Assert.Equal(12, fp16.Outcome.ReplicaChecks);
    }

    // MLP 16-253-4: 5,317 parameters + 3 tallies = 5,320 = 8 x 665, so every chunk below is the same size.
    private static readonly string[] Timed =
    [
        "dataset.samples=1200", "training.max-steps=10", "training.eval-every=5", "compute.engine=simd", "output.plots=off", "model.type=mlp", "model.hidden=[253]", "dataset.features=16", "dataset.classes=4",
        "simulation.compute-time=2ms", "network.latency=\"constant(50us)\"", "fabric.topology=switch", "fabric.nic-bandwidth=10Gbps", "fabric.nic-latency=2us",
        "fabric.intra-host.bandwidth=40GB/s", "fabric.intra-host.latency=1us", "topology.shards=1", "optimizer.type=sgd",
    ];

    /// <summary>Virtual time per step between the evaluations at steps 5 and 10.</summary>
    private async Task<(double Period, ExperimentSpec Spec)> Period(params string[] overrides)
    {
        var spec = ExperimentSpec.Load(null, [.. Timed, .. overrides]);
        var result = await ExperimentRunner.RunAsync(spec, Root);
        var at = result.Outcome.Evaluations.ToDictionary(e => e.Step, e => e.ElapsedSeconds);
        return ((at[10] - at[5]) / 5, spec);
    }

    private const double Nic = 1.25e9, Alpha = 50e-6 + 2e-6, Bus = 40e9, AlphaBus = 50e-6 + 1e-6;
    private const int Length = 5320; // the buffer: parameters and tallies
    private static double Message(int elements) => PeerChunk + 4.0 * elements;
    private const int PeerChunk = Cluster.Protocol.PeerChunk.HeaderBytes;

    [Fact]
    public async Task Ring_step_is_2_n_minus_1_transfers_of_one_chunk_to_1e9_s()
    {
        const int n = 4, chunk = Length / n;
        var (period, spec) = await Period("topology.workers=4", "topology.aggregation=ring-allreduce", "placement.workers-per-host=1");
        var device = spec.Simulation.WorkerDevice;
        // 2(N - 1)(a + S/(N B)), plus the reduction of each received chunk and the optimizer step on the device
        double closedForm = 2e-3 + 2 * (n - 1) * (Alpha + Message(chunk) / Nic) + (n - 1) * device.AccumulateSeconds(chunk) + device.ApplySeconds(Length - 3, 0);
        Assert.Equal(closedForm, period, 9);
    }

    [Fact]
    public async Task Halving_doubling_step_is_2_log2_n_latencies_and_2_n_minus_1_over_n_of_the_buffer_to_1e9_s()
    {
        var (period, spec) = await Period("topology.workers=4", "topology.aggregation=halving-doubling", "placement.workers-per-host=1");
        var device = spec.Simulation.WorkerDevice;
        // 2 log2(N) a + 2 (N - 1)/N S/B: halves of L/2 then L/4, back up L/4 then L/2
        double closedForm = 2e-3 + 4 * Alpha + 2 * (Message(Length / 2) + Message(Length / 4)) / Nic
            + device.AccumulateSeconds(Length / 2) + device.AccumulateSeconds(Length / 4) + device.ApplySeconds(Length - 3, 0);
        Assert.Equal(closedForm, period, 9);
    }

    [Fact]
    public async Task Hierarchical_step_is_the_intra_host_rings_on_the_bus_and_the_inter_host_ring_on_the_nic_to_1e9_s()
    {
        const int g = 4, hosts = 2;
        var (period, spec) = await Period("topology.workers=8", "topology.aggregation=hierarchical-allreduce", "placement.workers-per-host=4");
        var device = spec.Simulation.WorkerDevice;
        // inside a host the g flows of a step share its bus: each chunk of S/g takes g (S/g)/Bb; across hosts the
        // g rings share each NIC: chunks of S/(g H) at B/g each
        double intra = 2 * (g - 1) * (AlphaBus + g * Message(Length / g) / Bus) + (g - 1) * device.AccumulateSeconds(Length / g);
        double inter = 2 * (hosts - 1) * (Alpha + g * Message(Length / (g * hosts)) / Nic) + (hosts - 1) * device.AccumulateSeconds(Length / (g * hosts));
        double closedForm = 2e-3 + intra + inter + device.ApplySeconds(Length - 3, 0);
        Assert.Equal(closedForm, period, 9);
    }

    public static TheoryData<string[], string> BadInput => new()
    {
        { ["topology.aggregation=ring-allreduce", "sync.policy=asp"], "all-reduce is synchronous" },
        { ["topology.aggregation=ring-allreduce", "sync.policy=ssp"], "all-reduce is synchronous" },
        { ["topology.aggregation=ring-allreduce", "sync.backup-workers=1"], "sync.backup-workers = 1" },
        { ["topology.aggregation=ring-allreduce", "compression.downlink=fp16"], "compression.downlink = fp16" },
        { ["topology.aggregation=ring-allreduce", "faults=[{ worker = 1, at-step = 3 }]"], "not re-formed" },
        { ["topology.aggregation=halving-doubling", "topology.workers=6"], "power-of-two" },
        { ["topology.aggregation=hierarchical-allreduce", "topology.workers=6", "placement.workers-per-host=4"], "placement.workers-per-host = 4" },
        { ["topology.aggregation=tree"], "topology.aggregation" },
        { ["precision.allreduce=fp16"], "precision.allreduce = fp16 applies to all-reduce" },
        { ["topology.aggregation=ring-allreduce", "precision.allreduce=fp16", "compression.codec=topk"], "all-gathered as encoded" },
        { ["topology.aggregation=ring-allreduce", "precision.allreduce=bf16"], "precision.allreduce" },
    };

    [Theory]
    [MemberData(nameof(BadInput))]
    public void What_all_reduce_cannot_do_is_refused_naming_the_key(string[] overrides, string expected)
    {
        var e = Assert.Throws<ActorTrainException>(() => ExperimentSpec.Load(null, [.. ExperimentRunnerTests.Small, "topology.shards=1", .. overrides]));
        Assert.Contains(expected, e.Message);
    }
}
