using System.Globalization;

namespace ActorTrain.Experiments.Tests;

/// <summary>
/// The reproduction suite (hocon/experiments/reproduce/): each file runs as it is (plots off) and
/// the published claim it states is checked against the result. Every run is on the virtual
/// clock, so these are exact and repeatable, not timing-dependent.
/// </summary>
public sealed class ReproductionTests() : TempFolderTest("actortrain-reproduce-")
{
    private async Task<(ComparisonResult Result, Dictionary<string, ComparisonRow> Rows)> Run(string file)
    {
        var spec = ExperimentSpec.Load(Path.Combine(RepoRoot.Path, "hocon", "experiments", "reproduce", file), ["output.plots=off"]);
        var result = await ExperimentRunner.RunComparisonAsync(spec, Root);
        return (result, result.Comparison.Rows.ToDictionary(r => r.Variant));
    }

    /// <summary>A variant's virtual time per step between the evaluations at steps <paramref name="from"/> and <paramref name="to"/> (metrics.csv's elapsed_s).</summary>
    private static double StepTime(ComparisonResult result, string variant, long from, long to)
    {
        var rows = File.ReadAllLines(Path.Combine(result.Folder, variant, "metrics.csv")).Skip(1).Select(l => l.Split(',')).ToDictionary(
            row => long.Parse(row[0], CultureInfo.InvariantCulture), row => double.Parse(row[2], CultureInfo.InvariantCulture));
        return (rows[to] - rows[from]) / (to - from);
    }

    [Fact]
    public async Task Ho_2013_bsp_follows_the_straggler_asp_needs_more_updates_ssp_wins_with_transient_stragglers()
    {
        var (_, r) = await Run("01-ssp-stragglers.conf");
        // BSP steps at the straggler's pace: 4 x 2 ms of compute, plus under 1 ms of network
        double bspStep = r["bsp-constant"].ElapsedSeconds / r["bsp-constant"].Steps;
        Assert.InRange(bspStep, 0.008, 0.009);
        // ASP needs more gradients than BSP's steps x workers for the same loss
        Assert.True(r["asp-constant"].UpdatesToTargetLoss > 4 * r["bsp-constant"].UpdatesToTargetLoss,
            $"ASP {r["asp-constant"].UpdatesToTargetLoss} pushes vs BSP {4 * r["bsp-constant"].UpdatesToTargetLoss}");
        // SSP(3) reaches BSP's target sooner when stragglers are transient...
        Assert.True(r["ssp3-transient"].SecondsToTargetLoss < 0.9 * r["bsp-transient"].SecondsToTargetLoss,
            $"SSP {r["ssp3-transient"].SecondsToTargetLoss} s vs BSP {r["bsp-transient"].SecondsToTargetLoss} s");
        // ...and gains nothing against one constant straggler (see the file: throughput is bound by it)
        Assert.True(r["ssp3-constant"].SecondsToTargetLoss >= 0.95 * r["bsp-constant"].SecondsToTargetLoss);
    }

    [Fact]
    public async Task Stich_2018_topk_one_percent_with_error_feedback_ends_within_five_percent_of_dense_and_worse_without()
    {
        var (_, r) = await Run("02-topk-error-feedback.conf");
        double dense = r["dense"].FinalTestLoss;
        Assert.True(r["topk1-ef"].FinalTestLoss <= 1.05 * dense, $"top-k with EF {r["topk1-ef"].FinalTestLoss} vs dense {dense}");
        Assert.True(r["topk1"].FinalTestLoss > 1.05 * dense && r["topk1"].FinalTestLoss > 1.03 * r["topk1-ef"].FinalTestLoss,
            $"top-k without EF {r["topk1"].FinalTestLoss} vs with {r["topk1-ef"].FinalTestLoss}");
        Assert.True(r["topk1-ef"].UplinkRatio > 40);
    }

    [Fact]
    public async Task Karimireddy_2019_signsgd_needs_error_feedback_which_ends_within_five_percent_with_30x_fewer_bytes()
    {
        var (_, r) = await Run("03-signsgd-error-feedback.conf");
        double dense = r["dense"].FinalTestLoss;
        Assert.True(r["efsignsgd"].FinalTestLoss <= 1.05 * dense, $"EF-signSGD {r["efsignsgd"].FinalTestLoss} vs dense {dense}");
        Assert.True(r["efsignsgd"].UplinkRatio >= 30, $"uplink ratio {r["efsignsgd"].UplinkRatio}");
        Assert.True((double)r["dense"].BytesWorkerToShard / r["efsignsgd"].BytesWorkerToShard >= 30);
        Assert.True(r["signsgd"].FinalTestLoss > r["efsignsgd"].FinalTestLoss);
    }

    [Fact]
    public async Task Alistarh_2017_qsgd_8_bit_ends_within_two_percent_and_2_bit_wins_time_to_target_at_1_gbit()
    {
        var (_, r) = await Run("04-qsgd-bandwidth.conf");
        Assert.True(r["qsgd8"].FinalTestLoss <= 1.02 * r["dense"].FinalTestLoss);
        Assert.True(r["qsgd2"].SecondsToTargetLoss < r["dense"].SecondsToTargetLoss,
            $"2-bit {r["qsgd2"].SecondsToTargetLoss} s vs dense {r["dense"].SecondsToTargetLoss} s");
        Assert.True(r["qsgd2"].UpdatesToTargetLoss > r["dense"].UpdatesToTargetLoss, "2-bit gets there sooner with more steps, each cheaper");
    }

    [Fact]
    public async Task Micikevicius_2018_fp16_underflows_without_scaling_dynamic_scaling_matches_fp32_and_skips_early()
    {
        var (result, r) = await Run("05-fp16-loss-scaling.conf");
        double fp32 = r["fp32"].FinalTestLoss;
        var unscaled = RunSummary.Read(Path.Combine(result.Folder, "fp16-unscaled", "summary.json"));
        Assert.True(unscaled.WorkerTimes.Sum(w => w.UnderflowedElements) > 1000, "FP16 without scaling must count underflowed gradient elements");
        Assert.True(r["fp16-unscaled"].FinalTestLoss > 1.02 * fp32, $"unscaled {r["fp16-unscaled"].FinalTestLoss} vs FP32 {fp32}");
        Assert.InRange(r["fp16-dynamic"].FinalTestLoss, 0.98 * fp32, 1.02 * fp32);
        // every skipped push of the dynamic scaler happened in the first 5% of the 1000 steps
        var rows = File.ReadAllLines(Path.Combine(result.Folder, "fp16-dynamic", "metrics.csv")).Skip(1).Select(l => l.Split(',')).ToList();
        long Skipped(string[] row) => long.Parse(row[9], CultureInfo.InvariantCulture);
        long total = Skipped(rows[^1]);
        Assert.True(total > 0);
        Assert.Equal(total, Skipped(rows.First(row => long.Parse(row[0], CultureInfo.InvariantCulture) >= 50)));
    }

    [Fact]
    public async Task Li_2014_one_parameter_server_nic_makes_the_bsp_step_grow_linearly_in_workers_spread_shards_keep_it_flat()
    {
        var (result, _) = await Run("06-ps-incast.conf");
        double Period(string variant) => StepTime(result, variant, 5, 10);
        var spec = ExperimentSpec.Load(Path.Combine(RepoRoot.Path, "hocon", "experiments", "reproduce", "06-ps-incast.conf"));
        int n = ExperimentData.Build(spec).Model.ParameterCount;
        double perWorker = (Cluster.Protocol.PushGradient.DenseBytes(n) + Cluster.Protocol.ParameterSlice.DenseBytes(n)) / 1.25e9;
        var shard = spec.Simulation.ShardDevice; // the shard's own time: each push accumulated, one SGD step (no state)
        foreach (int workers in new[] { 1, 4, 16 })
        {
            // one shard: every push in through its NIC at B / N, every slice out: the closed form, exactly
            double closedForm = 0.002 + 2 * 52e-6 + workers * (perWorker + shard.AccumulateSeconds(n)) + shard.ApplySeconds(n, 0);
            Assert.Equal(closedForm, Period($"one-shard-w{workers}"), 9);
            // N dedicated shard hosts: each NIC carries a 1/N share of everything: flat
            Assert.InRange(Period($"dedicated-w{workers}"), 0.99 * Period("dedicated-w1"), 1.01 * Period("dedicated-w1"));
            Assert.True(Period($"colocated-w{workers}") <= Period($"dedicated-w{workers}"));
        }
        Assert.True(Period("one-shard-w16") > 3.5 * Period("dedicated-w16"));
    }

    [Fact]
    public async Task BytePS_2020_ring_beats_a_ps_short_of_server_bandwidth_a_ps_with_enough_matches_it_hierarchical_beats_flat()
    {
        var (result, r) = await Run("07-ps-vs-allreduce.conf");
        double Period(string variant) => StepTime(result, variant, 10, 20);
        Assert.True(Period("ring") < 0.5 * Period("ps-one-shard"), $"ring {Period("ring")} vs one shard {Period("ps-one-shard")}");
        Assert.True(Period("ring") < Period("ps-dedicated"), "4 server hosts for 32 workers on 4 hosts: the worker NICs carry 8 pushes each");
        Assert.True(Period("ps-dedicated-1perhost") <= Period("ring-1perhost"), $"{Period("ps-dedicated-1perhost")} vs {Period("ring-1perhost")}");
        Assert.True(Period("hierarchical") < 0.95 * Period("ring"), $"hierarchical {Period("hierarchical")} vs ring {Period("ring")}");
        // the same training, whatever carried the gradients
        foreach (var variant in new[] { "ps-dedicated", "ring", "hierarchical" })
            Assert.Equal(r["ps-one-shard"].FinalTestLoss, r[variant].FinalTestLoss, 1e-6 * r["ps-one-shard"].FinalTestLoss);
        Assert.Equal(r["ps-dedicated-1perhost"].FinalTestLoss, r["ring-1perhost"].FinalTestLoss, 1e-6 * r["ring-1perhost"].FinalTestLoss);
    }

    /// <summary>Scaling efficiency: one baseline's step over the scaled run's, steps 2 to 4 (per-GPU batch unchanged).</summary>
    private static double Efficiency(ComparisonResult result, string baseline, string scaled) =>
        StepTime(result, baseline, 2, 4) / StepTime(result, scaled, 2, 4);

    [Fact]
    public async Task Horovod_2018_resnet101_and_inception_v3_scale_to_512_gpus_within_15_percent_of_90_percent()
    {
        var (result, _) = await Run("08-horovod-scaling.conf");
        double resnet = Efficiency(result, "resnet101-1", "resnet101-512"), inception = Efficiency(result, "inception-v3-1", "inception-v3-512");
        Assert.InRange(resnet / 0.90, 0.85, 1.15);
        Assert.InRange(inception / 0.90, 0.85, 1.15);
        // the figures the file and the README state
        Assert.Equal(0.944, resnet, 3);
        Assert.Equal(0.940, inception, 3);
        // VGG-16 is the documented miss: predicted 96.4% against the published 68% (the file says why)
        Assert.Equal(0.964, Efficiency(result, "vgg16-1", "vgg16-512"), 3);
    }

    [Fact]
    public async Task Goyal_2017_resnet50_scales_from_8_to_256_gpus_within_15_percent_of_90_percent()
    {
        var (result, _) = await Run("09-goyal-resnet50-256.conf");
        double efficiency = Efficiency(result, "gpus-8", "gpus-256");
        Assert.InRange(efficiency / 0.90, 0.85, 1.15);
        Assert.Equal(0.950, efficiency, 3);
    }
}
