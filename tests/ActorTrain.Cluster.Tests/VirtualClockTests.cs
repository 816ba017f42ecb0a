using ActorTrain.Cluster.Actors;
using ActorTrain.Cluster.Protocol;
using ActorTrain.Cluster.Transport;
using ActorTrain.Core;
using ActorTrain.Core.Data;
using ActorTrain.Core.Optimization;
using ActorTrain.Core.Simulation;
using Akka.TestKit.Xunit2;

namespace ActorTrain.Cluster.Tests;

/// <summary>Runs under the virtual clock: closed-form step times, drops, faults, scale.</summary>
public class VirtualClockTests : TestKit
{
    private static NetworkSettings Network(string latency = "constant(100us)", string bandwidth = "1Gbps", double drop = 0) => NetworkSettings.Ideal with
    {
        Default = new LinkSpec(Distribution.Parse(latency, "network.latency", true), Quantity.BytesPerSecond(bandwidth, "network.bandwidth"), 0, drop),
        RetransmitTimeout = 0.002,
    };

    private async Task<(RunOutcome Outcome, VirtualLink Link)> Run(Coordinator.Settings settings, NetworkSettings network, ulong seed = 1)
    {
        var link = new VirtualLink(network, seed, settings.Partitions.Count, settings.Shards);
        var completion = new TaskCompletionSource<RunOutcome>(TaskCreationOptions.RunContinuationsAsynchronously);
        Sys.ActorOf(Coordinator.Props(settings, new ReferenceEngineFactory(), link, completion));
        return (await completion.Task.WaitAsync(TimeSpan.FromSeconds(120)), link);
    }

    private static Coordinator.Settings Settings(int workers, int shards, long steps, SyncPolicy? policy = null, double computeSeconds = 0.001,
        IReadOnlyList<WorkerFault>? faults = null, (Dataset, Dataset)? data = null)
    {
        var (train, test) = data ?? BspTrainingTests.Data();
        return BspTrainingTests.Settings(train, test, workers, shards, 10, steps, new OptimizerSettings(), policy) with
        {
            Timing = new TimingSettings(new ComputeTime(ComputeTimeKind.Fixed, computeSeconds), Faults: faults),
        };
    }

    /// <summary>
    /// One worker, one shard, no shard cost: a step is compute, the push on the wire (size /
    /// bandwidth + latency), then the slice back (size / bandwidth + latency). Evaluations every 5
    /// steps must be exactly 5 such periods apart in virtual time.
    /// </summary>
    [Fact]
    public async Task Bsp_step_time_is_compute_plus_latency_plus_size_over_bandwidth()
    {
        var settings = Settings(1, 1, 20, computeSeconds: 0.001);
        var (outcome, _) = await Run(settings, Network("constant(100us)", "1Gbps"));
        int n = settings.Model.ParameterCount;
        double bytesPerSecond = 1e9 / 8;
        double period = 0.001 + 2 * 100e-6 + (PushGradient.DenseBytes(n) + ParameterSlice.DenseBytes(n)) / bytesPerSecond;
        var times = outcome.Evaluations.Select(e => e.ElapsedSeconds).ToArray();
        Assert.Equal(5, times.Length); // steps 0, 5, 10, 15, 20
        for (int i = 1; i < times.Length - 1; i++) Assert.Equal(5 * period, times[i + 1] - times[i], 12);
        Assert.True(outcome.VirtualTime);

        var worker = outcome.Workers[0];
        Assert.Equal(worker.Steps * 0.001, worker.ComputeSeconds, 12);
        // before each step the worker waited one round trip on the network (its first: the pull and
        // the slice; later ones: the push and the slice), and never on the shard
        double firstTrip = 2 * 100e-6 + (PullParameters.HeaderBytes + ParameterSlice.DenseBytes(n)) / bytesPerSecond;
        Assert.Equal(firstTrip + (worker.Steps - 1) * (period - 0.001), worker.CommunicationSeconds, 12);
        Assert.True(worker.WaitSeconds < 1e-12);
    }

    /// <summary>
    /// Parameter-server incast on one switch: N workers push P bytes each into the one shard's NIC
    /// at once (B / N each, all done at N P / B), then the shard sends N slices of L bytes out of it
    /// (N L / B). A step: compute + 2 x (latency + NIC hop) + N (P + L) / B, exactly. With each
    /// pair its own link (topology none) the same step costs (P + L) / B whatever N.
    /// </summary>
    [Theory]
    [InlineData(1)]
    [InlineData(4)]
    [InlineData(16)]
    public async Task Bsp_step_time_on_a_switch_grows_with_the_workers_pushing_into_one_shard_nic(int workers)
    {
        var settings = Settings(workers, 1, 20, computeSeconds: 0.001);
        var network = Network("constant(100us)", "1Gbps") with
        {
            Fabric = new FabricSettings(FabricTopology.Switch, 1e9 / 8, 5e-6, 16, 1, 0, 1e11, 0),
        };
        var (outcome, link) = await Run(settings, network);
        int n = settings.Model.ParameterCount;
        double b = 1e9 / 8;
        double period = 0.001 + 2 * (100e-6 + 5e-6) + workers * (PushGradient.DenseBytes(n) + ParameterSlice.DenseBytes(n)) / b;
        var times = outcome.Evaluations.Select(e => e.ElapsedSeconds).ToArray();
        for (int i = 1; i < times.Length - 1; i++) Assert.Equal(5 * period, times[i + 1] - times[i], 9);

        // the shard's NIC carried every push in and every slice out; each worker's NIC only its own
        var usage = link.FabricUsage!;
        var shardIn = usage.Single(u => u.Name == $"host-{workers}.nic-in");
        Assert.Equal(workers * (20 * (double)PushGradient.DenseBytes(n) + PullParameters.HeaderBytes), shardIn.Bytes, 0); // and each first pull
        Assert.True(link.FabricRecomputations > 0);

        var (unshared, _) = await Run(settings, Network("constant(100us)", "1Gbps"));
        var flat = unshared.Evaluations.Select(e => e.ElapsedSeconds).ToArray();
        Assert.Equal(5 * (0.001 + 2 * 100e-6 + (PushGradient.DenseBytes(n) + ParameterSlice.DenseBytes(n)) / b), flat[3] - flat[2], 9);
        Assert.Equal(unshared.FinalWeights, outcome.FinalWeights); // the network changes when, never what
    }

    /// <summary>Colocated shards: worker 0 shares a host with the shard, so its push crosses the bus and the NIC takes N - 1 pushes.</summary>
    [Fact]
    public async Task A_colocated_shard_hears_its_own_host_over_the_bus()
    {
        const int workers = 4;
        var settings = Settings(workers, 1, 10, computeSeconds: 0.001);
        var network = Network("constant(100us)", "1Gbps") with
        {
            Fabric = new FabricSettings(FabricTopology.Switch, 1e9 / 8, 5e-6, 16, 1, 0, 1e11, 1e-6),
            Placement = new Placement(1, DedicatedShards: false, 1),
        };
        var (_, link) = await Run(settings, network);
        var usage = link.FabricUsage!;
        int n = settings.Model.ParameterCount;
        // host 0 holds worker 0 and shard 0: its NIC takes in the other three workers' pushes
        Assert.Equal((workers - 1) * (10 * (double)PushGradient.DenseBytes(n) + PullParameters.HeaderBytes), usage.Single(u => u.Name == "host-0.nic-in").Bytes, 0);
        Assert.True(usage.Single(u => u.Name == "host-0.bus").Bytes >= 10 * (double)PushGradient.DenseBytes(n));
    }

    [Fact]
    public async Task Bandwidth_and_latency_slow_the_run_as_modelled()
    {
        var settings = Settings(2, 1, 10);
        var (fast, _) = await Run(settings, Network("constant(10us)", "100Gbps"));
        var (slow, _) = await Run(settings, Network("constant(1ms)", "100Mbps"));
        Assert.Equal(fast.FinalWeights, slow.FinalWeights); // BSP: the same updates, later
        Assert.True(slow.ElapsedSeconds > fast.ElapsedSeconds + 10 * 2 * (0.001 - 10e-6),
            $"slow network {slow.ElapsedSeconds} s vs fast {fast.ElapsedSeconds} s");
    }

    /// <summary>
    /// BSP sums a step's pushes in worker order, so its weights are a function of which pushes were
    /// applied: a lost or twice-applied push would change them. With 20% of attempts (and of acks)
    /// lost, the weights must equal the loss-free run's bit for bit, with retransmissions and
    /// discarded duplicates on the record.
    /// </summary>
    [Fact]
    public async Task Dropped_pushes_are_retransmitted_and_applied_exactly_once()
    {
        var settings = Settings(4, 2, 20);
        var (clean, _) = await Run(settings, Network(drop: 0));
        var (lossy, link) = await Run(settings, Network(drop: 0.2), seed: 3);
        Assert.Equal(clean.FinalWeights, lossy.FinalWeights);
        var stats = link.Statistics;
        Assert.True(stats.Retransmissions > 0 && stats.DuplicatesDiscarded > 0, $"{stats}");
        Assert.Equal(0, stats.Lost);
        Assert.All(lossy.Shards, c => Assert.Equal(20 * 4, c.PushesApplied));
        Assert.True(lossy.ElapsedSeconds > clean.ElapsedSeconds, "retransmissions cost time");
    }

    [Fact]
    public async Task Asp_applies_each_push_once_under_drops()
    {
        var settings = Settings(4, 2, 15, new SyncPolicy(SyncPolicyKind.Asp));
        var (outcome, link) = await Run(settings, Network("uniform(50us, 300us)", "1Gbps", drop: 0.2), seed: 5);
        Assert.True(link.Statistics.DuplicatesDiscarded > 0);
        // ASP: one version per push; the run stops at 15 global steps = 60 pushes per shard
        Assert.All(outcome.Shards, c => Assert.Equal(15 * 4, c.PushesApplied));
    }

    public static TheoryData<SyncPolicyKind> Policies => new() { SyncPolicyKind.Bsp, SyncPolicyKind.Asp, SyncPolicyKind.Ssp };

    [Theory]
    [MemberData(nameof(Policies))]
    public async Task A_killed_worker_restarts_on_schedule_and_the_run_completes(SyncPolicyKind kind)
    {
        var policy = new SyncPolicy(kind, Staleness: kind == SyncPolicyKind.Ssp ? 2 : 0);
        var faults = new[] { new WorkerFault(1, null, AtStep: 5, RestartAfter: 0.003), new WorkerFault(2, AtSeconds: 0.012, null, RestartAfter: 0.002) };
        var (outcome, _) = await Run(Settings(4, 2, 30, policy, faults: faults), Network());
        Assert.Equal(StopReason.MaxSteps, outcome.StopReason);
        Assert.Equal(30, outcome.FinalStep);
        Assert.Equal(2, outcome.Faults!.Count);
        foreach (var (fault, expected) in outcome.Faults.Zip(new[] { 0.003, 0.002 }))
            Assert.Equal(expected, fault.RestartedAt!.Value - fault.KilledAt, 9);
        var timed = outcome.Faults.Single(f => f.Worker == 2);
        Assert.True(timed.KilledAt >= 0.012 && timed.KilledAt < 0.013, $"killed at {timed.KilledAt}");
        Assert.Equal(1, outcome.Workers[1].Kills);
        Assert.True(outcome.Evaluations[^1].TestLoss < outcome.Evaluations[0].TestLoss);
        Assert.All(outcome.FinalWeights, w => Assert.True(float.IsFinite(w)));
    }

    [Fact]
    public async Task A_worker_that_never_restarts_stalls_bsp_with_a_clear_error()
    {
        var faults = new[] { new WorkerFault(0, null, AtStep: 3, RestartAfter: null) };
        var e = await Assert.ThrowsAsync<RunFailedException>(() => Run(Settings(3, 1, 20, faults: faults), Network()));
        Assert.Contains("stalled", e.Message);
        Assert.Contains("worker(s) 0 were killed by faults without restart-after and BSP waits", e.Message);
    }

    [Fact]
    public async Task A_time_budget_is_virtual_time_and_stops_every_run_at_the_same_step()
    {
        var settings = Settings(3, 2, 100_000) with { TimeBudget = TimeSpan.FromMilliseconds(20) };
        var (first, _) = await Run(settings, Network());
        var (second, _) = await Run(settings, Network());
        Assert.Equal(StopReason.TimeBudget, first.StopReason);
        Assert.Equal(first.FinalStep, second.FinalStep);
        Assert.Equal(first.FinalWeights, second.FinalWeights);
        // the budget fires at 20 ms; the final snapshots take one more control hop
        Assert.InRange(first.ElapsedSeconds, 0.020, 0.0205);
        // a budget that outlives the run leaves max-steps in charge
        var (done, _) = await Run(Settings(3, 2, 10) with { TimeBudget = TimeSpan.FromSeconds(10) }, Network());
        Assert.Equal(StopReason.MaxSteps, done.StopReason);
    }

    [Fact]
    public async Task Two_hundred_fifty_six_workers_and_four_shards_complete()
    {
        var data = SyntheticData.Blobs(256 * 12, 6, 3, 1.5, 5).Split(0.25, 6);
        var (outcome, link) = await Run(Settings(256, 4, 8, data: data), Network("lognormal(mu=200us, sigma=0.5)", "10Gbps"));
        Assert.Equal(8, outcome.FinalStep);
        Assert.All(outcome.Shards, c => Assert.Equal(8 * 256, c.PushesApplied));
        Assert.True(link.Statistics.Events > 8 * 256 * 4 * 2);
    }

    private sealed record Note(int Id);

    /// <summary>Records where each event began on the virtual clock, then is busy for 30 us.</summary>
    private sealed class Busy : LinkedActor
    {
        public Busy(ILink link, List<(int Id, double Start)> starts) : base(link) => Receive<Note>(n =>
        {
            lock (starts) starts.Add((n.Id, Link.Now));
            Link.Occupy(30e-6, 0);
        });
    }

    private sealed class Idle : Akka.Actor.ReceiveActor
    {
        public Idle(TaskCompletionSource<double> done) => Receive<SimulationIdle>(i => done.TrySetResult(i.Time));
    }

    /// <summary>
    /// All of an actor's events of one lookahead window go out in one batch, in order, and each
    /// begins at max(its arrival, the end of the one before): timers at 10, 20, 90 and 150 us, a
    /// 100 us lookahead, 30 us per event: starts 10, 40, 90 (one batch), then 150 (the next).
    /// </summary>
    [Fact]
    public async Task An_actor_s_events_of_one_window_run_in_one_batch_each_after_the_one_before()
    {
        var link = new VirtualLink(Network(), 1, 1, 1);
        var starts = new List<(int Id, double Start)>();
        var busy = Sys.ActorOf(Akka.Actor.Props.Create(() => new Busy(link, starts)));
        var done = new TaskCompletionSource<double>(TaskCreationOptions.RunContinuationsAsynchronously);
        link.NotifyWhenIdle(Sys.ActorOf(Akka.Actor.Props.Create(() => new Idle(done))));
        // seeded out of order: the clock orders them
        foreach (var (id, at) in new[] { (3, 90e-6), (1, 10e-6), (4, 150e-6), (2, 20e-6) })
            link.ScheduleOnce(busy, new Note(id), at, Akka.Actor.ActorRefs.Nobody);
        link.Start();
        await done.Task.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal([1, 2, 3, 4], starts.Select(s => s.Id));
        double[] expected = [10e-6, 40e-6, 90e-6, 150e-6];
        for (int i = 0; i < 4; i++) Assert.Equal(expected[i], starts[i].Start, 1e-9);
        Assert.Equal(4, link.Statistics.Events);
        Assert.Equal(2, link.Statistics.Batches);
    }
}
