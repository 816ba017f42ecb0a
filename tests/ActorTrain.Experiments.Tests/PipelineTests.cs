using ActorTrain.Core;
using ActorTrain.Core.Pipeline;
using ActorTrain.Core.Simulation;

namespace ActorTrain.Experiments.Tests;

/// <summary>Pipeline stages under the virtual clock: the step's closed form, the bubble, the activations held, and what is refused.</summary>
public sealed class PipelineTests() : TempFolderTest("actortrain-pipeline-")
{
    private static readonly DeviceProfile Cpu = DeviceProfile.Presets["cpu"];

    // four uniform layers (64 -> 64 -> 64 -> 64 -> 64): a stage each; an ideal network, so a step is its operations
    private static readonly string[] Uniform =
    [
        "model.hidden=[64, 64, 64]", "dataset.features=64", "dataset.classes=64", "dataset.samples=6400", "topology.workers=1",
        "parallelism.pipeline-stages=4", "training.batch-size=32", "training.max-steps=10", "training.eval-every=5", "simulation.compute-time=8ms",
        "network.latency=\"constant(0s)\"", "network.bandwidth=unlimited", "output.plots=off", "optimizer.type=sgd",
    ];

    /// <summary>
    /// P = 4 uniform stages, M micro-batches: each operation takes its share of the fixed 8 ms step
    /// (a quarter of the FLOPs, forward a third and backward two thirds, over M micro-batches), and a
    /// step is (M + P - 1)(t_f + t_b) plus stage 0's optimizer step, whose end starts the next: the
    /// same for GPipe and 1F1B. Stage s holds M micro-batches' activations under GPipe, P - s under 1F1B.
    /// </summary>
    [Theory]
    [InlineData("gpipe", 1)]
    [InlineData("gpipe", 4)]
    [InlineData("1f1b", 4)]
    [InlineData("1f1b", 8)]
    public async Task A_flushed_step_is_its_closed_form_to_1e9_s_and_the_bubble_is_p_minus_1_over_m_plus_p_minus_1(string schedule, int micro)
    {
        const int P = 4;
        var result = await ExperimentRunner.RunAsync(ExperimentSpec.Load(null, [.. Uniform, $"parallelism.micro-batches={micro}", $"parallelism.schedule={schedule}"]), Root);
        var at = result.Outcome.Evaluations.ToDictionary(e => e.Step, e => e.ElapsedSeconds);
        double tf = 8e-3 / P / 3 / micro, tb = 2 * tf;
        double apply = Cpu.ApplySeconds(64 * 64 + 64, 0);
        Assert.Equal((micro + P - 1) * (tf + tb) + apply, (at[10] - at[5]) / 5, 9);
        var pipeline = result.Summary.Pipeline!;
        Assert.Equal(PipelineSchedule.BubbleFraction(P, micro), pipeline.UniformBubbleFraction, 12);
        // measured: what the stages did not compute, the optimizer steps included (1e-3 of the step)
        Assert.InRange(pipeline.BubbleFraction, pipeline.UniformBubbleFraction, pipeline.UniformBubbleFraction + 1e-3);
        Assert.Equal(schedule == "gpipe" ? [micro, micro, micro, micro] : Enumerable.Range(0, P).Select(s => Math.Min(micro, P - s)).ToArray(), pipeline.PeakActivations);
        Assert.Equal(["0", "1", "2", "3"], pipeline.StageLayers);
        // the bytes held: peak x micro-batch x (input + pre-activation) x 4
        Assert.Equal(4L * (32 / micro) * (64 + 64) * pipeline.PeakActivations[0], pipeline.PeakActivationBytes[0]);
    }

    // the quickstart MLP 32-64-8 (2,632 parameters) on 10 Gbit/s links with 50 us latency; a fixed 2 ms step
    private static readonly string[] Linked =
    [
        "training.batch-size=32", "training.max-steps=10", "training.eval-every=5", "simulation.compute-time=2ms", "optimizer.type=sgd", "output.plots=off",
        "network.latency=\"constant(50us)\"", "network.bandwidth=10Gbps",
    ];

    private const double Alpha = 50e-6, Bandwidth = 1.25e9;

    private async Task<double> Period(params string[] overrides)
    {
        var result = await ExperimentRunner.RunAsync(ExperimentSpec.Load(null, [.. Linked, .. overrides]), Root);
        var at = result.Outcome.Evaluations.ToDictionary(e => e.Step, e => e.ElapsedSeconds);
        return (at[10] - at[5]) / 5;
    }

    /// <summary>
    /// Two stages, one micro-batch: the batch reaches stage 0 (a control message: the link's least
    /// latency), its 32 x 64 activations go forward and their delta comes back (each alpha + 8,192
    /// bytes / B), the stages' compute adds up to the fixed step, stage 0 steps its optimizer and its
    /// done goes back to the driver (alpha again). A dynamic FP16 scale adds the round trip to the driver for its verdict.
    /// </summary>
    [Fact]
    public async Task Activations_and_deltas_between_stages_cost_latency_plus_bytes_over_bandwidth_to_1e9_s()
    {
        double transfer = Alpha + 32 * 64 * 4 / Bandwidth;
        double expected = 2e-3 + 2 * transfer + Cpu.ApplySeconds(32 * 64 + 64, 0) + 2 * Alpha;
        Assert.Equal(expected, await Period("topology.workers=1", "parallelism.pipeline-stages=2"), 9);
        // FP16: two bytes a value on the wire
        double half = Alpha + 32 * 64 * 2 / Bandwidth;
        Assert.Equal(2e-3 + 2 * half + Cpu.ApplySeconds(32 * 64 + 64, 0) + 2 * Alpha,
            await Period("topology.workers=1", "parallelism.pipeline-stages=2", "precision.mode=fp16", "precision.loss-scale=1024"), 9);
        // a dynamic scale: after its backward each stage asks the driver (alpha) and waits for the verdict (alpha) before its optimizer step
        Assert.Equal(2e-3 + 2 * half + Cpu.ApplySeconds(32 * 64 + 64, 0) + 4 * Alpha,
            await Period("topology.workers=1", "parallelism.pipeline-stages=2", "precision.mode=fp16", "precision.loss-scale=dynamic", "precision.initial-scale=1024"), 9);
    }

    /// <summary>
    /// Two replicas of a one-stage pipeline (two micro-batches): replica 1's gradient goes to replica
    /// 0 (alpha + 4n / B), replica 0 steps, the weights go back (alpha + 4n / B); replica 1 then starts
    /// alpha + 4n / B after replica 0, so in steady state a step is the compute, the optimizer step,
    /// both transfers and the four control messages that hand each replica its done and its next batch.
    /// </summary>
    [Fact]
    public async Task Replicas_average_through_replica_0_at_latency_plus_bytes_over_bandwidth_to_1e9_s()
    {
        const int n = 2632;
        double expected = 2e-3 + Cpu.ApplySeconds(n, 0) + 2 * (Alpha + 4.0 * n / Bandwidth) + 2 * Alpha;
        Assert.Equal(expected, await Period("topology.workers=2", "parallelism.micro-batches=2"), 9);
    }

    /// <summary>On a device profile each operation takes its share of the profile's time for the whole batch on the whole model.</summary>
    [Fact]
    public async Task On_a_profile_an_operation_is_its_flop_share_of_the_profiles_step_to_1e9_s()
    {
        var spec = ExperimentSpec.Load(null, [.. Uniform, "parallelism.micro-batches=4", "simulation.compute-time=profile", "simulation.worker-device=v100"]);
        var result = await ExperimentRunner.RunAsync(spec, Root);
        var at = result.Outcome.Evaluations.ToDictionary(e => e.Step, e => e.ElapsedSeconds);
        double step = DeviceProfile.Presets["v100"].StepSeconds(ExperimentData.Build(spec).Model, 32, Core.Precision.PrecisionMode.Fp32);
        // four uniform stages, four micro-batches: (M + P - 1) operations pairs of step / P / M each, then stage 0's optimizer step
        Assert.Equal(7 * step / 4 / 4 + Cpu.ApplySeconds(64 * 64 + 64, 0), (at[10] - at[5]) / 5, 9);
    }

    [Fact]
    public async Task Gpipe_and_1f1b_train_to_the_same_weights_and_stage_spans_nest_in_the_trace()
    {
        string[] run = [.. Uniform, "parallelism.micro-batches=4", "model.hidden=[48, 24]", "parallelism.pipeline-stages=3"];
        var gpipe = await ExperimentRunner.RunAsync(ExperimentSpec.Load(null, [.. run, "parallelism.schedule=gpipe"]), Root);
        var oneF = await ExperimentRunner.RunAsync(ExperimentSpec.Load(null, [.. run, "parallelism.schedule=1f1b"]), Root);
        Assert.Equal(gpipe.Outcome.FinalWeights, oneF.Outcome.FinalWeights);
        Assert.True(gpipe.Outcome.Evaluations[^1].TestLoss < gpipe.Outcome.Evaluations[0].TestLoss);
        var trace = Telemetry.TraceFile.Read(oneF.Folder);
        Assert.Empty(trace.Problems());
        // a forward and a backward span per micro-batch and stage, every step
        Assert.Equal(10 * 4 * 3, trace.Spans.Count(s => s.Name == "stage.forward"));
        Assert.Equal(10 * 4 * 3, trace.Spans.Count(s => s.Name == "stage.backward"));
        // the Chrome export draws the pipeline diagram: a track per stage, slices that never overlap on it
        using var buffer = new MemoryStream();
        trace.WriteChrome(buffer);
        using var doc = System.Text.Json.JsonDocument.Parse(buffer.ToArray());
        var slices = doc.RootElement.GetProperty("traceEvents").EnumerateArray()
            .Where(e => e.GetProperty("ph").GetString() == "X" && e.GetProperty("pid").GetInt32() == 6).ToList();
        Assert.Equal(2 * 10 * 4 * 3, slices.Count);
        foreach (var track in slices.GroupBy(e => e.GetProperty("tid").GetInt32()))
        {
            var ordered = track.Select(e => (Start: e.GetProperty("ts").GetDouble(), End: e.GetProperty("ts").GetDouble() + e.GetProperty("dur").GetDouble())).OrderBy(x => x.Start).ToList();
            for (int i = 1; i < ordered.Count; i++) Assert.True(ordered[i].Start >= ordered[i - 1].End - 1e-6, $"stage {track.Key}: slices overlap");
        }
        Assert.Equal([0, 1, 2], slices.Select(e => e.GetProperty("tid").GetInt32()).Distinct().Order());
        // two replicas: a track per stage of each, none overlapping
        var hybrid = await ExperimentRunner.RunAsync(ExperimentSpec.Load(null, [.. run, "parallelism.schedule=1f1b", "topology.workers=2"]), Root);
        using var hybridBuffer = new MemoryStream();
        Telemetry.TraceFile.Read(hybrid.Folder).WriteChrome(hybridBuffer);
        using var hybridDoc = System.Text.Json.JsonDocument.Parse(hybridBuffer.ToArray());
        var hybridSlices = hybridDoc.RootElement.GetProperty("traceEvents").EnumerateArray()
            .Where(e => e.GetProperty("ph").GetString() == "X" && e.GetProperty("pid").GetInt32() == 6).ToList();
        Assert.Equal([0, 1, 2, 1000, 1001, 1002], hybridSlices.Select(e => e.GetProperty("tid").GetInt32()).Distinct().Order());
        foreach (var track in hybridSlices.GroupBy(e => e.GetProperty("tid").GetInt32()))
        {
            var ordered = track.Select(e => (Start: e.GetProperty("ts").GetDouble(), End: e.GetProperty("ts").GetDouble() + e.GetProperty("dur").GetDouble())).OrderBy(x => x.Start).ToList();
            for (int i = 1; i < ordered.Count; i++) Assert.True(ordered[i].Start >= ordered[i - 1].End - 1e-6, $"track {track.Key}: slices overlap");
        }
    }

    [Fact]
    public async Task Fp16_stages_send_two_bytes_per_activation_and_gradient()
    {
        string[] run = [.. Uniform, "parallelism.micro-batches=4"];
        var fp32 = await ExperimentRunner.RunAsync(ExperimentSpec.Load(null, run), Root);
        var fp16 = await ExperimentRunner.RunAsync(ExperimentSpec.Load(null, [.. run, "precision.mode=fp16", "precision.loss-scale=1024"]), Root);
        Assert.Equal(fp32.Summary.BytesWorkerToShard, 2 * fp16.Summary.BytesWorkerToShard);
        Assert.Equal("fp16", fp16.Summary.Precision);
        Assert.All(fp16.Summary.WorkerTimes, w => Assert.Equal(1024f, w.LossScale));
        // activations held: half the bytes of FP32's
        Assert.Equal(fp32.Summary.Pipeline!.PeakActivationBytes.Select(b => b / 2), fp16.Summary.Pipeline!.PeakActivationBytes);
        Assert.NotEqual(fp32.Outcome.FinalWeights, fp16.Outcome.FinalWeights);
    }

    public static TheoryData<string[], string> BadInput => new()
    {
        { ["parallelism.pipeline-stages=3"], "the model has 2 layer(s)" },
        { ["parallelism.pipeline-stages=2", "topology.workers=1", "parallelism.micro-batches=5"], "does not divide training.batch-size = 32" },
        { ["parallelism.pipeline-stages=2", "topology.workers=1", "parallelism.stage-boundaries=[2]"], "parallelism.stage-boundaries = [2]" },
        { ["parallelism.pipeline-stages=2", "topology.workers=1", "parallelism.stage-boundaries=[1, 1]"], "parallelism.stage-boundaries = [1, 1]" },
        { ["parallelism.stage-boundaries=[1]"], "pipeline-stages = 1" },
        { ["parallelism.pipeline-stages=2", "topology.workers=1", "sync.policy=asp"], "synchronous flush" },
        { ["parallelism.pipeline-stages=2", "topology.workers=1", "compression.codec=qsgd"], "travel uncompressed" },
        { ["parallelism.pipeline-stages=2", "topology.workers=1", "optimizer.type=kfac"], "not on pipeline stages" },
        { ["parallelism.pipeline-stages=2", "topology.workers=1", "model.type=workload", "model.workload=resnet50", "simulation.compute-time=2ms"], "a pipeline stage computes values" },
        { ["parallelism.schedule=zigzag"], "parallelism.schedule" },
        // stage 0 holds 100,000 samples x (32 + 65,536) floats of activations: 26 GB against a P100's 16
        { ["parallelism.pipeline-stages=2", "topology.workers=1", "model.hidden=[65536]", "dataset.samples=125000", "training.batch-size=100000", "simulation.worker-device=p100"],
          "pipeline stage 0 (layers 0) needs 26.25 GB" },
        { ["parallelism.pipeline-stages=0"], "parallelism.pipeline-stages" },
    };

    [Theory]
    [MemberData(nameof(BadInput))]
    public void Bad_pipeline_settings_are_refused_naming_the_key(string[] overrides, string message)
    {
        var e = Assert.ThrowsAny<ActorTrainException>(() => ExperimentData.Build(ExperimentSpec.Load(null, overrides)));
        Assert.Contains(message, e.Message);
    }

    [Fact]
    public void Stage_memory_is_weights_gradient_state_and_the_activations_held_at_the_peak()
    {
        var spec = ExperimentSpec.Load(null, [.. Uniform, "parallelism.micro-batches=8", "parallelism.schedule=1f1b", "optimizer.type=adam"]);
        var memory = ExperimentData.StageMemory(spec, ExperimentData.Build(spec).Model);
        Assert.Equal([4, 3, 2, 1], memory.Select(m => m.PeakMicroBatches));
        // 4,160 parameters x 4 bytes x (weights, gradient, Adam's two moments); 4 samples per micro-batch x (64 + 64) floats x 4 bytes
        Assert.All(memory, m => Assert.Equal(4L * 4160 * 4, m.ParameterBytes));
        Assert.Equal(memory.Select(m => 4L * m.PeakMicroBatches * 4 * 128), memory.Select(m => m.ActivationBytes));
    }

    /// <summary>run --nodes N with a pipeline: one worker node for the drivers, the other children stage nodes (at most one per stage).</summary>
    [Theory]
    [InlineData(4, 2, 1, 2)] // coordinator, 2 stage nodes, 1 driver node
    [InlineData(3, 2, 1, 1)] // both stages on one node
    [InlineData(6, 2, 2, 4)] // 2 replicas x 2 stages: a node each
    [InlineData(6, 2, 3, 4)] // 3 replicas x 2 stages on 4 nodes: stage-grid index k on node k mod 4
    public void A_local_cluster_for_a_pipeline_puts_the_stages_on_all_but_one_of_its_children(int nodes, int stages, int replicas, int stageNodes)
    {
        var spec = ExperimentSpec.Load(null, [$"parallelism.pipeline-stages={stages}", $"topology.workers={replicas}"]);
        var cluster = LocalCluster.Plan(nodes, spec, "actortrain.dll", null, Root);
        Assert.Equal((stageNodes, nodes - 1 - stageNodes), (cluster.PsNodes, cluster.WorkerNodes));
    }
}
