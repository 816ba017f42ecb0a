using ActorTrain.Cluster.Actors;
using ActorTrain.Cluster.Protocol;
using ActorTrain.Cluster.Transport;
using ActorTrain.Core;
using ActorTrain.Core.Engines;
using ActorTrain.Core.Optimization;
using ActorTrain.Core.Precision;
using ActorTrain.Core.Simulation;
using Akka.Actor;
using Akka.TestKit.Xunit2;

namespace ActorTrain.Cluster.Tests;

/// <summary>
/// Runs a topology under the virtual clock with every message delayed by a seeded uniform 0-4 ms
/// and a fixed 1 ms of compute per step: the delays reorder deliveries, nothing sleeps, and the
/// seed fixes the whole run whatever the thread timing.
/// </summary>
internal static class Delayed
{
    public static async Task<RunOutcome> Run(ActorSystem system, Coordinator.Settings settings, ulong seed, IGradientEngineFactory? engines = null)
    {
        var network = NetworkSettings.Ideal with { Default = LinkSpec.Ideal with { Latency = new Distribution.Uniform(0, 0.004) } };
        var link = new VirtualLink(network, seed, settings.Partitions.Count, settings.Shards);
        settings = settings with { Timing = new TimingSettings(new ComputeTime(ComputeTimeKind.Fixed, 0.001)) };
        var completion = new TaskCompletionSource<RunOutcome>(TaskCreationOptions.RunContinuationsAsynchronously);
        system.ActorOf(Coordinator.Props(settings, engines ?? new ReferenceEngineFactory(), link, completion));
        return await completion.Task.WaitAsync(TimeSpan.FromSeconds(60));
    }
}

/// <summary>Policies under randomised message delays (<see cref="Delayed"/>).</summary>
public class SyncPolicyTests : TestKit
{
    private Task<RunOutcome> RunWithDelays(Coordinator.Settings settings, ulong delaySeed, IGradientEngineFactory? engines = null) =>
        Delayed.Run(Sys, settings, delaySeed, engines);

    private static Coordinator.Settings Settings(int workers, int shards, long steps, SyncPolicy policy, OptimizerSettings? optimizer = null)
    {
        var (train, test) = BspTrainingTests.Data();
        return BspTrainingTests.Settings(train, test, workers, shards, 10, steps, optimizer ?? new OptimizerSettings(), policy);
    }

    [Fact]
    public async Task Ssp_never_lets_a_worker_run_more_than_s_clocks_ahead_of_the_slowest()
    {
        const int s = 2;
        long tightest = 0;
        for (ulong seed = 1; seed <= 12; seed++)
        {
            var outcome = await RunWithDelays(Settings(4, 2, 25, new SyncPolicy(SyncPolicyKind.Ssp, Staleness: s)), seed);
            long lead = outcome.Shards.Max(c => c.MaxClockLead);
            Assert.True(lead <= s, $"delay schedule {seed}: a worker ran {lead} clocks ahead of the slowest (bound {s})");
            tightest = Math.Max(tightest, lead);
        }
        Assert.Equal(s, tightest); // the delays do push workers up to the bound: the check can fail
    }

    [Fact]
    public async Task Asp_under_the_same_delays_lets_workers_run_further_ahead()
    {
        long widest = 0;
        for (ulong seed = 1; seed <= 6; seed++)
        {
            var outcome = await RunWithDelays(Settings(4, 2, 25, new SyncPolicy(SyncPolicyKind.Asp)), seed);
            widest = Math.Max(widest, outcome.Shards.Max(c => c.MaxClockLead));
            Assert.True(outcome.StalenessHistogram().Skip(1).Sum() > 0, "ASP under delays should apply stale pushes");
        }
        Assert.True(widest > 2, $"ASP's largest lead was only {widest}");
    }

    [Fact]
    public async Task Ssp_with_zero_staleness_gives_the_weights_of_bsp()
    {
        var bsp = await RunWithDelays(Settings(3, 2, 20, SyncPolicy.Bsp), 5);
        foreach (ulong seed in new ulong[] { 5, 6, 7 })
        {
            var ssp = await RunWithDelays(Settings(3, 2, 20, new SyncPolicy(SyncPolicyKind.Ssp, Staleness: 0)), seed);
            Assert.Equal(0, ssp.Shards.Max(c => c.MaxClockLead));
            // every clock's three pushes were computed at the barrier and applied one after another
            Assert.All(ssp.Shards, c => Assert.Equal([20L, 20, 20, 0], c.StalenessHistogram.Take(4)));
            double scale = bsp.FinalWeights.Max(Math.Abs);
            for (int i = 0; i < bsp.FinalWeights.Length; i++)
                Assert.True(Math.Abs(bsp.FinalWeights[i] - ssp.FinalWeights[i]) <= 1e-5 * scale,
                    $"schedule {seed}, parameter {i}: bsp {bsp.FinalWeights[i]}, ssp(0) {ssp.FinalWeights[i]}");
        }
    }

    [Theory]
    [InlineData(OptimizerKind.Sgd)]
    [InlineData(OptimizerKind.Adam)]
    public async Task Asp_with_one_worker_equals_bsp_with_one_worker(OptimizerKind kind)
    {
        var optimizer = new OptimizerSettings { Kind = kind };
        var bsp = await RunWithDelays(Settings(1, 2, 25, SyncPolicy.Bsp, optimizer), 1);
        var asp = await RunWithDelays(Settings(1, 2, 25, new SyncPolicy(SyncPolicyKind.Asp), optimizer), 2);
        Assert.Equal(bsp.FinalWeights, asp.FinalWeights);
    }

    /// <summary>
    /// Adam ignores the gradient's scale: with each ASP push a step on gradient / N, every push
    /// moved a whole learning rate, so a clock of N pushes went up to N times as far as a BSP step. With the
    /// rate divided by N instead, the distance moved over the same clocks is comparable.
    /// </summary>
    [Theory]
    [InlineData(OptimizerKind.Adam)]
    [InlineData(OptimizerKind.RmsProp)]
    [InlineData(OptimizerKind.Adagrad)]
    public async Task Asp_with_n_workers_moves_about_as_far_per_clock_as_bsp_under_adaptive_optimizers(OptimizerKind kind)
    {
        var optimizer = new OptimizerSettings { Kind = kind };
        var bspSettings = Settings(4, 2, 20, SyncPolicy.Bsp, optimizer);
        var bsp = await RunWithDelays(bspSettings, 1);
        var asp = await RunWithDelays(Settings(4, 2, 20, new SyncPolicy(SyncPolicyKind.Asp), optimizer), 1);
        double Distance(float[] w) => Math.Sqrt(w.Select((v, i) => Math.Pow(v - bspSettings.InitialWeights[i], 2)).Sum());
        double ratio = Distance(asp.FinalWeights) / Distance(bsp.FinalWeights);
        Assert.True(ratio is > 0.4 and < 1.6, $"ASP moved {ratio:0.###} times as far as BSP (the old gradient / N rule: 1.9-2.2 for Adam and RMSprop here)");
    }

    public static TheoryData<SyncPolicyKind> Policies => new() { SyncPolicyKind.Bsp, SyncPolicyKind.Asp, SyncPolicyKind.Ssp };

    [Theory]
    [MemberData(nameof(Policies))]
    public async Task A_nan_gradient_is_skipped_and_the_master_weights_stay_finite(SyncPolicyKind kind)
    {
        // every worker's 2nd, 5th, 8th, ... gradient holds a NaN
        var outcome = await RunWithDelays(Settings(3, 2, 12, new SyncPolicy(kind, Staleness: 1)), 3, new PoisonedEngineFactory(period: 3));
        Assert.All(outcome.FinalWeights, v => Assert.True(float.IsFinite(v)));
        Assert.All(outcome.Shards, c => Assert.True(c.PushesSkippedNonFinite >= 3, $"skipped {c.PushesSkippedNonFinite}"));
        Assert.True(outcome.Evaluations[^1].TestLoss < outcome.Evaluations[0].TestLoss, "the other workers should still train the model");
    }

    [Theory]
    [MemberData(nameof(Policies))]
    public async Task The_loss_scale_travels_with_the_push_and_is_divided_out(SyncPolicyKind kind)
    {
        // A power-of-two scale is exact in FP32 and the same delay schedule gives the same order of
        // events, so the scaled run must reproduce the unscaled one bit for bit.
        var plain = Settings(3, 2, 15, new SyncPolicy(kind, Staleness: 1));
        var scaled = plain with { LossScaler = () => LossScaler.Static(1024f) };
        var a = await RunWithDelays(plain, 1);
        var b = await RunWithDelays(scaled, 1);
        Assert.Equal(a.FinalWeights, b.FinalWeights);
        Assert.Equal(1024, b.Evaluations[^1].LossScale);
    }
}

/// <summary>The shard on its own, driven by probes standing in for workers.</summary>
public class ShardTests : TestKit
{
    private static ParameterServerShard.Settings Settings(int workers, SyncPolicy policy, long steps = 100) => new(
        0, 0, [1f, 2f, 3f], workers, policy, new OptimizerSettings(), LearningRateSchedule.Create(ScheduleKind.Constant, 0.5, steps),
        steps, 1000);

    private static PushGradient Push(int worker, long clock, long baseVersion, bool nonFinite = false) =>
        new(worker, clock, baseVersion, 1f, nonFinite, 10, nonFinite ? [] : Wire.Dense(1f, 1f, 1f));

    [Fact]
    public void Bsp_with_b_backup_workers_steps_after_n_minus_b_pushes_and_drops_exactly_b_per_step()
    {
        const int n = 4, b = 1, clocks = 6;
        var coordinator = CreateTestProbe();
        var shard = Sys.ActorOf(ParameterServerShard.Props(Settings(n, new SyncPolicy(SyncPolicyKind.Bsp, BackupWorkers: b)),
            new WallClockLink(), coordinator.Ref));
        shard.Tell(Begin.First);
        coordinator.ExpectMsg<ShardSnapshot>(); // step 0
        var workers = Enumerable.Range(0, n).Select(_ => CreateTestProbe()).ToArray();
        for (int c = 0; c < clocks; c++)
        {
            // a different worker is the straggler each clock
            int late = c % n;
            var onTime = Enumerable.Range(0, n).Where(w => w != late).ToArray();
            foreach (int w in onTime) shard.Tell(Push(w, c, c), workers[w].Ref);
            foreach (int w in onTime) Assert.Equal(c + 1, workers[w].ExpectMsg<ParameterSlice>().Version);
            shard.Tell(Push(late, c, c), workers[late].Ref);
            // the late push is dropped and answered with the current parameters
            Assert.Equal(c + 1, workers[late].ExpectMsg<ParameterSlice>().Version);
        }
        shard.Tell(FinalSnapshotRequest.Instance);
        var final = coordinator.ExpectMsg<ShardSnapshot>();
        Assert.True(final.Final);
        Assert.Equal((long)clocks * b, final.Counters.PushesDroppedLate);
        Assert.Equal((long)clocks * (n - b), final.Counters.PushesApplied);
        Assert.Equal(clocks, final.Counters.Steps);
        // every step averaged (n - b) unit gradients: w = w0 - 0.5 * clocks
        Assert.Equal([1f - 3f, 2f - 3f, 3f - 3f], final.Values.ToArray());
    }

    [Fact]
    public void Ssp_holds_the_answer_to_a_worker_s_clocks_ahead_until_the_slowest_catches_up()
    {
        var coordinator = CreateTestProbe();
        var shard = Sys.ActorOf(ParameterServerShard.Props(Settings(2, new SyncPolicy(SyncPolicyKind.Ssp, Staleness: 1)),
            new WallClockLink(), coordinator.Ref));
        shard.Tell(Begin.First);
        var fast = CreateTestProbe();
        var slow = CreateTestProbe();
        shard.Tell(Push(0, 0, 0), fast.Ref);
        Assert.Equal(1, fast.ExpectMsg<ParameterSlice>().Version);  // wants clock 1, slowest at 0: 1 <= 0 + 1
        shard.Tell(Push(0, 1, 1), fast.Ref);
        fast.ExpectNoMsg(TimeSpan.FromMilliseconds(100));             // wants clock 2 > 0 + 1: held
        shard.Tell(Push(1, 0, 0), slow.Ref);                          // the slowest completes clock 0
        Assert.Equal(3, slow.ExpectMsg<ParameterSlice>().Version);
        Assert.Equal(3, fast.ExpectMsg<ParameterSlice>().Version);   // released with the current weights
        shard.Tell(FinalSnapshotRequest.Instance);
        coordinator.ExpectMsg<ShardSnapshot>();
        var counters = coordinator.ExpectMsg<ShardSnapshot>().Counters;
        Assert.Equal(2, counters.StalenessMax); // the slow push was computed on version 0 and applied at 2
        Assert.Equal([2L, 0, 1], counters.StalenessHistogram.Take(3));
    }

    /// <summary>
    /// The shard sums each push as soon as its predecessors are summed; the result must stay the
    /// worker-order sum. 1 + 1e8 - 1e8 is 0 in that order, 1 in most others (float addition is not associative).
    /// </summary>
    [Theory]
    [InlineData(new[] { 0, 1, 2 })]
    [InlineData(new[] { 2, 1, 0 })]
    [InlineData(new[] { 0, 2, 1 })]
    [InlineData(new[] { 1, 2, 0 })]
    public void Bsp_sums_the_pushes_in_worker_order_whatever_order_they_arrive_in(int[] arrival)
    {
        float[] gradients = [1f, 1e8f, -1e8f];
        var settings = new ParameterServerShard.Settings(0, 0, [0f], 3, new SyncPolicy(SyncPolicyKind.Bsp), new OptimizerSettings(),
            LearningRateSchedule.Create(ScheduleKind.Constant, 1.0, 10), 10, 1000);
        var coordinator = CreateTestProbe();
        var shard = Sys.ActorOf(ParameterServerShard.Props(settings, new WallClockLink(), coordinator.Ref));
        shard.Tell(Begin.First);
        coordinator.ExpectMsg<ShardSnapshot>();
        var workers = gradients.Select(_ => CreateTestProbe()).ToArray();
        foreach (int w in arrival) shard.Tell(new PushGradient(w, 0, 0, 1f, false, 1, Wire.Dense(gradients[w])), workers[w].Ref);
        // w = 0 - 1 x ((1 + 1e8) - 1e8) / 3 = 0
        foreach (var worker in workers) Assert.Equal(0f, Wire.Values(worker.ExpectMsg<ParameterSlice>(), 1)[0]);
    }

    [Fact]
    public void A_second_bsp_push_of_one_clock_from_one_worker_is_dropped_and_the_step_waits_for_the_others()
    {
        var coordinator = CreateTestProbe();
        var shard = Sys.ActorOf(ParameterServerShard.Props(Settings(2, new SyncPolicy(SyncPolicyKind.Bsp)), new WallClockLink(), coordinator.Ref));
        shard.Tell(Begin.First);
        coordinator.ExpectMsg<ShardSnapshot>();
        var (first, second) = (CreateTestProbe(), CreateTestProbe());
        shard.Tell(Push(0, 0, 0), first.Ref);
        shard.Tell(new PushGradient(0, 0, 0, 1f, false, 10, Wire.Dense(100f, 100f, 100f)), first.Ref);
        shard.Tell(Push(1, 0, 0), second.Ref);
        Assert.Equal(1, first.ExpectMsg<ParameterSlice>().Version);
        Assert.Equal(1, second.ExpectMsg<ParameterSlice>().Version);
        shard.Tell(FinalSnapshotRequest.Instance);
        var final = coordinator.ExpectMsg<ShardSnapshot>();
        // the step averaged the two unit pushes (counted twice, worker 0's would have closed it and
        // worker 1's been dropped as late; summed, the 100s would show)
        Assert.Equal([1f - 0.5f, 2f - 0.5f, 3f - 0.5f], final.Values.ToArray());
        Assert.Equal((2L, 0L), (final.Counters.PushesApplied, final.Counters.PushesDroppedLate));
    }

    [Fact]
    public void A_non_finite_push_leaves_the_master_weights_untouched()
    {
        var coordinator = CreateTestProbe();
        var shard = Sys.ActorOf(ParameterServerShard.Props(Settings(1, new SyncPolicy(SyncPolicyKind.Asp)),
            new WallClockLink(), coordinator.Ref));
        shard.Tell(Begin.First);
        coordinator.ExpectMsg<ShardSnapshot>();
        var worker = CreateTestProbe();
        shard.Tell(Push(0, 0, 0, nonFinite: true), worker.Ref);
        worker.ExpectMsg<ParameterSlice>();
        shard.Tell(FinalSnapshotRequest.Instance);
        var final = coordinator.ExpectMsg<ShardSnapshot>();
        Assert.Equal([1f, 2f, 3f], final.Values.ToArray());
        Assert.Equal((1L, 0L), (final.Counters.PushesSkippedNonFinite, final.Counters.Steps));
    }

    /// <summary>
    /// Worker 0's push is summed on arrival; losing worker 1 then closes the step with that one push.
    /// It counts once, and the next step (now of one push, read unsummed) starts from the new weights.
    /// </summary>
    [Fact]
    public void A_bsp_step_closed_by_a_lost_worker_applies_the_push_summed_on_arrival_once()
    {
        var coordinator = CreateTestProbe();
        var shard = Sys.ActorOf(ParameterServerShard.Props(Settings(2, SyncPolicy.Bsp), new WallClockLink(), coordinator.Ref));
        shard.Tell(Begin.First);
        coordinator.ExpectMsg<ShardSnapshot>();
        var worker = CreateTestProbe();
        shard.Tell(Push(0, 0, 0), worker.Ref);
        shard.Tell(new WorkerLost(1));
        // SGD, rate 0.5, gradient (1, 1, 1), one push
        Assert.Equal([0.5f, 1.5f, 2.5f], Wire.Values(worker.ExpectMsg<ParameterSlice>(), 3));
        // and the sum it went through is empty again for the next step
        shard.Tell(Push(0, 1, 1), worker.Ref);
        Assert.Equal([0f, 1f, 2f], Wire.Values(worker.ExpectMsg<ParameterSlice>(), 3));
        shard.Tell(FinalSnapshotRequest.Instance);
        Assert.Equal(2L, coordinator.ExpectMsg<ShardSnapshot>().Counters.Steps);
    }

    public static TheoryData<SyncPolicyKind, string> MalformedPushes()
    {
        var data = new TheoryData<SyncPolicyKind, string>();
        foreach (var kind in new[] { SyncPolicyKind.Asp, SyncPolicyKind.Bsp })
            foreach (string malformed in new[] { "garbage", "two values for three", "cut short", "loss scale 0", "loss scale -1", "loss scale NaN", "loss scale infinity" })
                data.Add(kind, malformed);
        return data;
    }

    /// <summary>
    /// A push whose payload does not decode, or whose loss scale is not a positive finite number (a
    /// stranger's, or corrupted), is skipped and counted like a non-finite one, the weights stay as
    /// they were, the worker is answered, and the next push applies.
    /// </summary>
    [Theory]
    [MemberData(nameof(MalformedPushes))]
    public void A_malformed_push_is_skipped_and_the_next_one_applies(SyncPolicyKind kind, string malformed)
    {
        byte[] bytes = malformed switch
        {
            "garbage" => [1, 2, 3, 4, 5, 6, 7, 8, 9],
            "two values for three" => Wire.Dense(1f, 1f),
            "cut short" => Wire.Dense(1f, 1f, 1f)[..^2],
            _ => Wire.Dense(1f, 1f, 1f),
        };
        float scale = malformed switch
        {
            "loss scale 0" => 0f,
            "loss scale -1" => -1f,
            "loss scale NaN" => float.NaN,
            "loss scale infinity" => float.PositiveInfinity,
            _ => 1f,
        };
        var coordinator = CreateTestProbe();
        var shard = Sys.ActorOf(ParameterServerShard.Props(Settings(1, new SyncPolicy(kind)), new WallClockLink(), coordinator.Ref));
        shard.Tell(Begin.First);
        coordinator.ExpectMsg<ShardSnapshot>();
        var worker = CreateTestProbe();
        shard.Tell(new PushGradient(0, 0, 0, scale, false, 10, bytes), worker.Ref);
        Assert.Equal([1f, 2f, 3f], Wire.Values(worker.ExpectMsg<ParameterSlice>(), 3));
        shard.Tell(Push(0, 1, 1), worker.Ref);
        // SGD, rate 0.5, gradient (1, 1, 1)
        Assert.Equal([0.5f, 1.5f, 2.5f], Wire.Values(worker.ExpectMsg<ParameterSlice>(), 3));
        shard.Tell(FinalSnapshotRequest.Instance);
        var final = coordinator.ExpectMsg<ShardSnapshot>();
        Assert.Equal((1L, 1L), (final.Counters.PushesSkippedNonFinite, final.Counters.Steps));
    }
}

public class StalenessAwareLearningRateTests : TestKit
{
    [Fact]
    public void A_push_of_staleness_tau_steps_with_the_learning_rate_divided_by_tau()
    {
        var settings = new ParameterServerShard.Settings(0, 0, [0f], 1, new SyncPolicy(SyncPolicyKind.Asp, StalenessAwareLearningRate: true),
            new OptimizerSettings(), LearningRateSchedule.Create(ScheduleKind.Constant, 1.0, 100), 100, 1000);
        var coordinator = CreateTestProbe();
        var worker = CreateTestProbe();
        var shard = Sys.ActorOf(ParameterServerShard.Props(settings, new WallClockLink(), coordinator.Ref));
        shard.Tell(Begin.First);
        PushGradient Push(long clock, long baseVersion, float g) => new(0, clock, baseVersion, 1f, false, 1, Wire.Dense(g));
        shard.Tell(Push(0, 0, 1f), worker.Ref);   // staleness 0: w = 0 - 1 * 1
        Assert.Equal(-1f, Wire.Values(worker.ExpectMsg<ParameterSlice>(), 1)[0]);
        shard.Tell(Push(1, 1, 1f), worker.Ref);   // staleness 0: w = -2
        worker.ExpectMsg<ParameterSlice>();
        shard.Tell(Push(2, 0, 4f), worker.Ref);   // computed on version 0, applied at 2: lr / 2 -> w = -2 - 2
        Assert.Equal(-4f, Wire.Values(worker.ExpectMsg<ParameterSlice>(), 1)[0]);
    }
}

public class BspDeterminismTests : TestKit
{
    [Fact]
    public async Task Bsp_weights_do_not_depend_on_the_order_pushes_arrive_in()
    {
        var (train, test) = BspTrainingTests.Data();
        var settings = BspTrainingTests.Settings(train, test, 4, 2, 10, 20, new OptimizerSettings { Kind = OptimizerKind.Adam });
        float[]? first = null;
        foreach (ulong seed in new ulong[] { 1, 2, 3, 4 })
        {
            var weights = (await Delayed.Run(Sys, settings, seed)).FinalWeights;
            if (first is null) first = weights;
            else Assert.Equal(first, weights); // bit for bit, whatever the delays did to the arrival order
        }
    }
}
