using ActorTrain.Core;
using ActorTrain.Core.Compression;
using ActorTrain.Core.Optimization;
using ActorTrain.Core.Simulation;

namespace ActorTrain.Experiments.Tests;

/// <summary>optimizer.type = kfac as a user runs it: its time under the virtual clock, its bytes, and what it refuses.</summary>
public sealed class KfacRunTests() : TempFolderTest("actortrain-kfac-")
{
    private const double T = 2e-3, Nic = 1.25e9, Alpha = 50e-6 + 2e-6;
    private static readonly DeviceProfile Cpu = DeviceProfile.Presets["cpu"];

    // an MLP 8-16-4: layer 0 has A 9x9 and G 16x16, layer 1 A 17x17 and G 4x4; 212 parameters
    private static readonly string[] OneWorker =
    [
        "model.hidden=[16]", "dataset.features=8", "dataset.classes=4", "dataset.samples=400", "training.batch-size=8",
        "training.max-steps=10", "training.eval-every=5", "output.plots=off", "optimizer.type=kfac", "optimizer.learning-rate=0.05",
        "simulation.compute-time=2ms", "network.latency=\"constant(50us)\"", "fabric.topology=switch", "fabric.nic-bandwidth=10Gbps",
        "fabric.nic-latency=2us", "placement.workers-per-host=1", "placement.shards=dedicated", "topology.workers=1", "topology.shards=1",
    ];

    /// <summary>Virtual time per step between the evaluations at steps 5 and 10.</summary>
    private async Task<(double Period, RunResult Result)> Period(params string[] overrides)
    {
        var result = await ExperimentRunner.RunAsync(ExperimentSpec.Load(null, [.. OneWorker, .. overrides]), Root);
        var at = result.Outcome.Evaluations.ToDictionary(e => e.Step, e => e.ElapsedSeconds);
        return ((at[10] - at[5]) / 5, result);
    }

    /// <summary>
    /// One worker, one shard: a step is the fixed compute, two latencies, the push (with the factors)
    /// and the slice at NIC speed, the accumulation, the momentum step, the preconditioning every
    /// step and, once in inverse-every = 5 steps (optimizer steps 6 to 10 hold step 6's), the
    /// inversions, each at the cpu profile's FLOP rate.
    /// </summary>
    [Fact]
    public async Task A_kfac_step_is_its_closed_form_to_1e9_s()
    {
        var layers = new[] { new KfacLayer(0, 8, 16, 0), new KfacLayer(1, 16, 4, 144) };
        const long n = 212;
        long factors = 4L * layers.Sum(l => l.PackedLength);
        double push = 36 + CompressionSettings.Dense.EncodedBytes(n) + factors, slice = 16 + CompressionSettings.Dense.EncodedBytes(n);
        double baseline = T + 2 * Alpha + (push + slice) / Nic + Cpu.AccumulateSeconds(n) + Cpu.ApplySeconds(n, 1);
        double precondition = Cpu.FlopSeconds(layers.Sum(l => l.PreconditionFlops)), inverse = Cpu.FlopSeconds(layers.Sum(l => l.InverseFlops));
        var (period, result) = await Period("optimizer.kfac.inverse-every=5");
        Assert.Equal(baseline + precondition + inverse / 5, period, 9);
        // inverting every step costs the inversion every step; sending factors every other step halves their bytes' time
        Assert.Equal(baseline + precondition + inverse, (await Period("optimizer.kfac.inverse-every=1")).Period, 9);
        // steps 5..9 (clocks) send factors at clocks 6 and 8 with factor-every = 2
        Assert.Equal(baseline - 3 * factors / Nic / 5 + precondition + inverse / 5, (await Period("optimizer.kfac.inverse-every=5", "optimizer.kfac.factor-every=2")).Period, 9);
        // on the cpu profile the worker's compute is the device's step time plus its factor FLOPs, B (d_A^2 + d_A + d_G^2 + d_G), at the profile's rate
        var model = ExperimentData.Build(ExperimentSpec.Load(null, OneWorker)).Model;
        double profiled = Cpu.StepSeconds(model, 8, Core.Precision.PrecisionMode.Fp32) + Cpu.FlopSeconds(layers.Sum(l => l.ContributionFlops(8)));
        Assert.Equal(baseline - T + profiled + precondition + inverse / 5,
            (await Period("optimizer.kfac.inverse-every=5", "simulation.compute-time=profile", "simulation.worker-device=cpu")).Period, 9);
        // summary.json counts the factors apart from the gradients: 10 steps, one worker
        Assert.Equal(10 * factors, result.Summary.FactorBytesWorkerToShard);
        Assert.Equal(10 * (long)(push - factors) + 16, result.Summary.BytesWorkerToShard); // and the first pull's header
    }

    [Fact]
    public async Task Kfac_trains_where_its_factors_say_and_records_its_optimizer()
    {
        var result = await ExperimentRunner.RunAsync(ExperimentSpec.Load(null,
            [.. OneWorker, "topology.workers=2", "training.batch-size=32", "optimizer.kfac.damping=0.03", "training.max-steps=40", "training.eval-every=20"]), Root);
        Assert.Equal("kfac", result.Summary.Optimizer);
        Assert.True(result.Outcome.Evaluations[^1].TestLoss < result.Outcome.Evaluations[0].TestLoss, "the loss falls");
        Assert.True(result.Summary.FactorBytesWorkerToShard > 0);
    }

    public static TheoryData<string[], string> BadInput => new()
    {
        { ["optimizer.type=kfac", "sync.policy=asp"], "optimizer.type = kfac with sync.policy = asp" },
        { ["optimizer.type=kfac", "sync.policy=ssp"], "which needs sync.policy = bsp" },
        { ["optimizer.type=kfac", "sync.backup-workers=1"], "sync.backup-workers = 1" },
        { ["optimizer.type=kfac", "topology.aggregation=ring-allreduce"], "use topology.aggregation = ps" },
        { ["optimizer.type=kfac", "model.type=workload", "model.workload=resnet50", "simulation.compute-time=2ms"], "optimizer.type = kfac with model.type = workload" },
        { ["optimizer.type=kfac", "model.hidden=[16]", "topology.shards=3"], "topology.shards = 3: a shard owns whole layers and the model has 2" },
        { ["optimizer.type=kfac", "optimizer.kfac.damping=0"], "optimizer.kfac.damping" },
        { ["optimizer.type=kfac", "optimizer.kfac.factor-decay=1"], "optimizer.kfac.factor-decay" },
        { ["optimizer.type=kfac", "optimizer.kfac.inverse-every=0"], "optimizer.kfac.inverse-every" },
        { ["optimizer.type=kfac", "optimizer.kfac.factor-every=0"], "optimizer.kfac.factor-every" },
        { ["optimizer.type=kfac", "optimizer.kfac.kl-clip=-1"], "optimizer.kfac.kl-clip" },
        { ["optimizer.kfac.dampening=1"], "unknown key 'optimizer.kfac.dampening'" },
    };

    [Theory]
    [MemberData(nameof(BadInput))]
    public void Bad_kfac_settings_are_refused_naming_the_key(string[] overrides, string message)
    {
        var e = Assert.ThrowsAny<ActorTrainException>(() => ExperimentData.Build(ExperimentSpec.Load(null, overrides)));
        Assert.Contains(message, e.Message);
    }
}
