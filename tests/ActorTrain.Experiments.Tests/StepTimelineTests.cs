using ActorTrain.Core;
using ActorTrain.Core.Compression;
using ActorTrain.Core.Simulation;

namespace ActorTrain.Experiments.Tests;

/// <summary>
/// training.overlap, compression.cost and model.type = workload under the virtual clock: step times
/// equal to their closed forms to 1e-9 s, on a two-layer workload table whose sizes make every
/// transfer exact (one worker's flows never share a link unless the formula says so).
/// </summary>
public sealed class StepTimelineTests() : TempFolderTest("actortrain-timeline-")
{
    private const double T = 2e-3, Nic = 1.25e9, Alpha = 50e-6 + 2e-6;
    private static readonly DeviceProfile Cpu = DeviceProfile.Presets["cpu"];

    /// <summary>A two-layer table: layer a (forward first), then layer b; equal forward FLOPs, so each forward is T/6 and each backward T/3.</summary>
    private string Table(long a, long b)
    {
        string path = Path.Combine(Root, $"two-{a}-{b}.json");
        File.WriteAllText(path, $$"""{"name": "two", "layers": [{"name": "a", "parameters": {{a}}, "forward_flops": 1e6, "activation_bytes": 4}, {"name": "b", "parameters": {{b}}, "forward_flops": 1e6, "activation_bytes": 4}]}""");
        return path;
    }

    private string[] Base(string table) =>
    [
        "model.type=workload", $"model.workload=\"{table}\"", "training.batch-size=8", "training.max-steps=10", "training.eval-every=5", "output.plots=off",
        "simulation.compute-time=2ms", "network.latency=\"constant(50us)\"", "fabric.topology=switch", "fabric.nic-bandwidth=10Gbps", "fabric.nic-latency=2us",
        "optimizer.type=sgd", "placement.workers-per-host=1",
    ];

    /// <summary>Virtual time per step between the evaluations at steps 5 and 10.</summary>
    private async Task<double> Period(string table, params string[] overrides)
    {
        var result = await ExperimentRunner.RunAsync(ExperimentSpec.Load(null, [.. Base(table), .. overrides]), Root);
        var at = result.Outcome.Evaluations.ToDictionary(e => e.Step, e => e.ElapsedSeconds);
        return (at[10] - at[5]) / 5;
    }

    [Fact]
    public async Task Parameter_server_push_leaves_when_its_shards_layers_are_done_to_1e9_s()
    {
        // 2 shards, each exactly one layer of 50,000 values: a push of 36 + 16 + 200,000 bytes, a slice of 16 + 16 + 200,000
        string table = Table(50_000, 50_000);
        double push = 36 + 16 + 200_000.0, slice = 16 + 16 + 200_000.0;
        double shard = Cpu.AccumulateSeconds(50_000) + Cpu.ApplySeconds(50_000, 0);
        string[] two = ["topology.workers=1", "topology.shards=2", "placement.shards=dedicated"];
        // off: both pushes leave at the end of the step and share the worker's NIC, so do the two slices coming back
        double off = await Period(table, two);
        Assert.Equal(T + 2 * Alpha + 2 * (push + slice) / Nic + shard, off, 9);
        // layer: layer b's push leaves after its backward (T/3), its slice is back (0.44 ms later) before layer a's push
        // leaves at the end of the backward: every transfer runs alone, and the next forward waits for layer a's slice
        double layer = await Period(table, [.. two, "training.overlap=layer"]);
        Assert.Equal(T + 2 * Alpha + (push + slice) / Nic + shard, layer, 9);
        // buckets of a layer each: as layer; one bucket of the whole model: both pushes wait for the whole backward, as off
        Assert.Equal(layer, await Period(table, [.. two, "training.overlap=bucket", "training.bucket-size=200000B"]), 9);
        Assert.Equal(off, await Period(table, [.. two, "training.overlap=bucket", "training.bucket-size=1MB"]), 9);
    }

    /// <summary>
    /// Ring all-reduce of two workers in buckets: bucket b (layer b, with the 3 tallies) starts when
    /// its backward is done, bucket a when the backward ends and b's collective is done. Period =
    /// forward + max(compute chain, communication chain) + R_a + apply, with
    /// R = 2 (a + (32 + 4 L/2)/B) + the reduction of L/2 values for a bucket of L.
    /// </summary>
    [Theory]
    [InlineData(1_000L, 99_997L)]   // the compute chain dominates: T_b + R_b < T_bwd
    [InlineData(1_000L, 999_997L)]  // the communication chain dominates
    public async Task Ring_all_reduce_buckets_follow_max_of_compute_and_communication_to_1e9_s(long a, long b)
    {
        string table = Table(a, b);
        double R(long length) => 2 * (Alpha + (32 + 4.0 * length / 2) / Nic) + Cpu.AccumulateSeconds((int)(length / 2));
        double apply = Cpu.ApplySeconds((int)(a + b), 0);
        string[] ring = ["topology.workers=2", "topology.aggregation=ring-allreduce"];
        double forward = T / 3, backwardB = T / 3, backward = 2 * T / 3;
        double layer = await Period(table, [.. ring, "training.overlap=layer"]);
        double expected = forward + Math.Max(backward, backwardB + R(b + 3)) + R(a) + apply;
        Assert.Equal(expected, layer, 9);
        Assert.Equal(b == 99_997 ? forward + backward + R(a) + apply : forward + backwardB + R(b + 3) + R(a) + apply, layer, 9);
        // off: one collective of the whole buffer after the whole step
        double off = await Period(table, ring);
        Assert.Equal(T + R(a + b + 3) + apply, off, 9);
        Assert.True(layer < off);
    }

    /// <summary>Overlap moves when gradients leave, not what they are: a real model trains to the same weights.</summary>
    [Fact]
    public async Task Overlap_changes_the_time_not_the_training()
    {
        string[] mlp = [.. ExperimentRunnerTests.Small, "output.plots=off", "topology.workers=4", "topology.shards=2", "model.hidden=[64, 32]",
            "fabric.topology=switch", "simulation.compute-time=2ms"];
        var off = await ExperimentRunner.RunAsync(ExperimentSpec.Load(null, mlp), Root);
        var layer = await ExperimentRunner.RunAsync(ExperimentSpec.Load(null, [.. mlp, "training.overlap=layer", "compression.cost=model"]), Root);
        Assert.Equal(off.Outcome.FinalWeights, layer.Outcome.FinalWeights);
        Assert.NotEqual(off.Summary.ElapsedSeconds, layer.Summary.ElapsedSeconds);
        // all-reduce in buckets sums each bucket in its own chunks: the same to the order of float additions, replicas identical
        var ringOff = await ExperimentRunner.RunAsync(ExperimentSpec.Load(null, [.. mlp, "topology.aggregation=ring-allreduce"]), Root);
        var ringLayer = await ExperimentRunner.RunAsync(ExperimentSpec.Load(null, [.. mlp, "topology.aggregation=ring-allreduce", "training.overlap=layer"]), Root);
        float scale = ringOff.Outcome.FinalWeights.Max(MathF.Abs);
        Assert.All(ringOff.Outcome.FinalWeights.Zip(ringLayer.Outcome.FinalWeights), p => Assert.True(MathF.Abs(p.First - p.Second) <= 1e-6f * scale));
        Assert.Equal(12, ringLayer.Outcome.ReplicaChecks);
        Assert.True(ringLayer.Summary.ElapsedSeconds < ringOff.Summary.ElapsedSeconds);
    }

    [Fact]
    public async Task One_worker_all_reduce_with_overlap_still_waits_for_its_backward_pass()
    {
        string table = Table(1_000, 99_997);
        double off = await Period(table, "topology.workers=1", "topology.aggregation=ring-allreduce");
        Assert.Equal(T + Cpu.ApplySeconds(100_997, 0), off, 9);
        Assert.Equal(off, await Period(table, "topology.workers=1", "topology.aggregation=ring-allreduce", "training.overlap=layer"), 9);
    }

    /// <summary>compression.cost = model: the worker encodes before the push leaves, the shard decodes before it accumulates.</summary>
    [Theory]
    [InlineData("qsgd")]
    [InlineData("topk")]
    [InlineData("fp16")]
    public async Task Codec_time_is_on_the_worker_and_the_shard_to_1e9_s(string codec)
    {
        string table = Table(50_000, 50_000);
        var settings = new CompressionSettings(codec, Ratio: 0.01, Bits: 8, Chunk: 512);
        const long n = 100_000;
        long encoded = settings.EncodedBytes(n);
        double push = 36 + encoded, slice = 16 + 16 + 4.0 * n;
        string[] one = ["topology.workers=1", "topology.shards=1", "placement.shards=dedicated", $"compression.codec={codec}"];
        double encode = CodecCost.Encode(settings, n, encoded).Seconds(Cpu), decode = CodecCost.Decode(settings, n, encoded).Seconds(Cpu);
        Assert.True(encode > 1e-5);
        double off = await Period(table, one);
        double baseline = T + 2 * Alpha + (push + slice) / Nic + Cpu.AccumulateSeconds((int)n) + Cpu.ApplySeconds((int)n, 0);
        Assert.Equal(baseline, off, 9);
        double model = await Period(table, [.. one, "compression.cost=model"]);
        Assert.Equal(baseline + encode + decode, model, 9);
    }

    /// <summary>compression.cost = model with an FP16 downlink: the shard converts its weights once per version, before the slice leaves.</summary>
    [Fact]
    public async Task Fp16_downlink_conversion_is_on_the_shard_once_per_version_to_1e9_s()
    {
        string table = Table(50_000, 50_000);
        const long n = 100_000;
        var fp16 = new CompressionSettings("fp16");
        double push = 36 + CompressionSettings.Dense.EncodedBytes(n), slice = 16 + fp16.EncodedBytes(n);
        string[] one = ["topology.workers=1", "topology.shards=1", "placement.shards=dedicated", "compression.downlink=fp16"];
        double baseline = T + 2 * Alpha + (push + slice) / Nic + Cpu.AccumulateSeconds((int)n) + Cpu.ApplySeconds((int)n, 0);
        Assert.Equal(baseline, await Period(table, one), 9);
        // encoding the dense push (a copy) on the worker, decoding it on the shard, the FP16 conversion of the new version
        double codec = CodecCost.Encode(CompressionSettings.Dense, n, (long)push - 36).Seconds(Cpu) + CodecCost.Decode(CompressionSettings.Dense, n, (long)push - 36).Seconds(Cpu)
            + CodecCost.Encode(fp16, n, (long)slice - 16).Seconds(Cpu);
        Assert.Equal(baseline + codec, await Period(table, [.. one, "compression.cost=model"]), 9);
    }

    /// <summary>
    /// Ring all-reduce of two workers with an FP16 wire and compression.cost = model: each chunk is
    /// converted before it leaves and after it arrives. Rank r sends its chunk c_r (the tallies,
    /// FP32, ride in c_1) and gets it back reduced: chain_r = 2 (encode + a + wire_r/B + decode)(c_r) +
    /// reduce(c_r). Worker 0's step (its snapshots time the evaluations) is T + chain_0 + apply: worker 1's
    /// chunk carries 6 bytes more, so it falls behind by chain_1 - chain_0 (10 ns) a step, which worker 0
    /// only waits for once that adds up to a latency (thousands of steps).
    /// </summary>
    [Fact]
    public async Task Fp16_all_reduce_chunks_are_converted_on_both_sides_to_1e9_s()
    {
        const int p = 100_001, length = p + 3; // 100,004 buffer elements: two chunks of 50,002
        string table = Table(1_001, 99_000);
        var fp16 = new CompressionSettings("fp16");
        double Chain(Core.Models.ParameterRange c)
        {
            long wire = Core.Collectives.CollectiveBuffer.WireBytes(c, p, fp16: true);
            return 2 * (CodecCost.Encode(fp16, c.Length, wire).Seconds(Cpu) + Alpha + (32 + wire) / Nic + CodecCost.Decode(fp16, c.Length, wire).Seconds(Cpu))
                + Cpu.AccumulateSeconds(c.Length);
        }
        var chunks = Core.Collectives.AllReduceAlgorithms.Chunks(new Core.Models.ParameterRange(0, length), 2);
        Assert.True(Chain(chunks[1]) > Chain(chunks[0]));
        double expected = T + Chain(chunks[0]) + Cpu.ApplySeconds(p, 0);
        string[] ring = ["topology.workers=2", "topology.aggregation=ring-allreduce", "precision.allreduce=fp16", "compression.cost=model"];
        Assert.Equal(expected, await Period(table, ring), 9);
    }

    /// <summary>
    /// An all-gathered codec (top-k) on a ring of two workers with compression.cost = model: each
    /// worker encodes its whole gradient once, forwards it, then decodes and adds both messages
    /// (its own too): T + encode + a + (32 + E)/B + 2 (decode + accumulate) + apply.
    /// </summary>
    [Fact]
    public async Task All_gathered_codec_time_is_one_encode_and_a_decode_per_message_to_1e9_s()
    {
        string table = Table(50_000, 50_000);
        const long n = 100_000;
        var topk = new CompressionSettings("topk", Ratio: 0.01);
        long encoded = topk.EncodedBytes(n);
        string[] ring = ["topology.workers=2", "topology.aggregation=ring-allreduce", "compression.codec=topk", "compression.ratio=0.01"];
        double baseline = T + Alpha + (32 + encoded) / Nic + 2 * Cpu.AccumulateSeconds((int)n) + Cpu.ApplySeconds((int)n, 0);
        Assert.Equal(baseline, await Period(table, ring), 9);
        double expected = baseline + CodecCost.Encode(topk, n, encoded).Seconds(Cpu) + 2 * CodecCost.Decode(topk, n, encoded).Seconds(Cpu);
        Assert.Equal(expected, await Period(table, [.. ring, "compression.cost=model"]), 9);
    }

    /// <summary>A sizes-only push and slice carry exactly the codec's formula size: bytes counted = steps x formula.</summary>
    [Fact]
    public async Task Workload_messages_carry_their_formula_sizes_and_no_loss()
    {
        var spec = ExperimentSpec.Load(null, ["model.type=workload", "model.workload=resnet50", "topology.workers=4", "topology.shards=2", "training.batch-size=32",
            "training.max-steps=6", "training.eval-every=3", "output.plots=off", "compression.codec=topk", "compression.ratio=0.01", "simulation.worker-device=v100"]);
        var result = await ExperimentRunner.RunAsync(spec, Root);
        var ranges = Core.Models.ParameterSharding.Balanced(25_557_032, 2);
        long perStep = ranges.Sum(r => 36 + spec.Compression.EncodedBytes(r.Length));
        long pulls = 4 * 2 * 16; // each worker's first pull to each shard
        Assert.Equal(6 * 4 * perStep + pulls, result.Summary.BytesWorkerToShard);
        Assert.Equal(6 * 4 * 32, result.Outcome.Evaluations[^1].SamplesProcessed);
        Assert.All(result.Outcome.Evaluations, e => Assert.True(double.IsNaN(e.TestLoss)));
        Assert.Equal("max-steps", result.Summary.StopReason);
        // the step's compute is the v100 profile's for the ResNet-50 table at batch 32
        double step = DeviceProfile.Presets["v100"].StepSeconds(Core.Models.ModelSpec.FromWorkload(Core.Models.Workload.Load("resnet50")), 32, Core.Precision.PrecisionMode.Fp32);
        Assert.Equal(6 * step, result.Outcome.Workers[0].ComputeSeconds, 9);
    }

    [Theory]
    [InlineData("ring-allreduce")]
    [InlineData("hierarchical-allreduce")]
    public async Task Workload_all_reduce_runs_in_buckets_and_is_faster_with_overlap(string algorithm)
    {
        string[] run = ["model.type=workload", "model.workload=resnet50", "topology.workers=8", $"topology.aggregation={algorithm}", "placement.workers-per-host=4",
            "training.batch-size=32", "training.max-steps=4", "training.eval-every=2", "output.plots=off", "simulation.worker-device=v100",
            "fabric.topology=switch", "fabric.nic-bandwidth=25Gbps"];
        var off = await ExperimentRunner.RunAsync(ExperimentSpec.Load(null, run), Root);
        var bucket = await ExperimentRunner.RunAsync(ExperimentSpec.Load(null, [.. run, "training.overlap=bucket"]), Root);
        Assert.True(bucket.Summary.ElapsedSeconds < off.Summary.ElapsedSeconds, $"{bucket.Summary.ElapsedSeconds} vs {off.Summary.ElapsedSeconds}");
        Assert.Equal(off.Outcome.Evaluations[^1].SamplesProcessed, bucket.Outcome.Evaluations[^1].SamplesProcessed);
    }

    public static TheoryData<string[], string> BadInput => new()
    {
        { ["model.type=workload"], "needs model.workload" },
        { ["model.type=workload", "model.workload=resnet-50"], "neither a built-in workload" },
        { ["model.workload=resnet50"], "set model.type = workload" },
        { ["model.type=workload", "model.workload=resnet50", "simulation.clock=wall"], "needs simulation.clock = virtual" },
        { ["model.type=workload", "model.workload=resnet50", "simulation.compute-time=measured"], "nothing is computed to measure" },
        { ["model.type=workload", "model.workload=resnet50", "compression.cost=measured"], "nothing is encoded to measure" },
        { ["model.type=workload", "model.workload=resnet50", "compression.codec=threshold"], "only real values decide" },
        { ["model.type=workload", "model.workload=resnet50", "compression.codec=powersgd"], "matrix shapes" },
        { ["model.type=workload", "model.workload=resnet50", "compression.lz4=on"], "lz4" },
        { ["model.type=workload", "model.workload=resnet50", "compression.codec=topk", "compression.downlink=codec"], "compression.downlink = codec" },
        { ["model.type=workload", "model.workload=resnet50", "training.target-loss=0.1"], "computes no loss" },
        { ["model.type=workload", "model.workload=resnet50", "training.epochs=2"], "training.epochs" },
        { ["model.type=workload", "model.workload=resnet50", "training.batch-size=0"], "training.batch-size = 0" },
        { ["training.overlap=sometimes"], "training.overlap" },
        { ["training.overlap=layer", "simulation.clock=wall"], "needs simulation.clock = virtual" },
        { ["training.overlap=layer", "simulation.compute-time=measured"], "no layer-wise split" },
        { ["training.bucket-size=25"], "has no unit" },
        { ["training.bucket-size=25XB"], "unknown size unit" },
        { ["training.bucket-size=0MB"], "at least 1 byte" },
        { ["compression.cost=free"], "compression.cost" },
        { ["compression.cost=model", "simulation.clock=wall"], "compression.cost = model needs simulation.clock = virtual" },
    };

    [Theory]
    [MemberData(nameof(BadInput))]
    public void Bad_timeline_and_workload_settings_are_refused_naming_the_key(string[] overrides, string message)
    {
        var e = Assert.ThrowsAny<ActorTrainException>(() => ExperimentData.Build(ExperimentSpec.Load(null, overrides)));
        Assert.Contains(message, e.Message);
    }
}
