using ActorTrain.Core.Simulation;

namespace ActorTrain.Core.Tests;

/// <summary>
/// The fabric against closed forms, to 1e-9 s: one flow, fair halves, incast, full duplex, a share
/// freed by an early end, leaf-spine oversubscription, the host bus.
/// </summary>
public class FabricTests
{
    private const double B = 1.25e9; // 10 Gbit/s in bytes/s
    private const double S = 1e6;

    private static FabricSettings Switch => new(FabricTopology.Switch, B, 0, 1, 1, 0, 1e11, 0);

    /// <summary>Runs transfers (start time, from, to, bytes) to completion, waking the fabric at its next end; returns each one's end time.</summary>
    private static double[] Run(Fabric fabric, params (double At, Endpoint From, Endpoint To, double Bytes)[] transfers)
    {
        var ends = new double[transfers.Length];
        var flows = new Dictionary<Fabric.Flow, int>();
        var starts = transfers.Select((t, i) => (t.At, i)).OrderBy(s => s.At).ThenBy(s => s.i).ToList();
        int next = 0;
        while (next < starts.Count || double.IsFinite(fabric.NextEnd))
        {
            double wake = fabric.NextEnd;
            if (next < starts.Count && starts[next].At <= wake)
            {
                var t = transfers[starts[next].i];
                flows[fabric.Start(t.At, fabric.Route(t.From, t.To), t.Bytes)] = starts[next].i;
                next++;
                continue;
            }
            foreach (var done in fabric.FinishDue(wake)) ends[flows[done]] = wake;
        }
        return ends;
    }

    private static Endpoint W(int i) => Endpoint.Worker(i);
    private static Endpoint K(int i) => Endpoint.Shard(i);

    [Fact]
    public void One_flow_takes_size_over_bandwidth()
    {
        var fabric = new Fabric(Switch, Placement.OneWorkerPerHost, 1, 1);
        Assert.Equal(S / B, Run(fabric, (0, W(0), K(0), S))[0], 9);
    }

    [Fact]
    public void Two_flows_out_of_one_nic_get_half_each()
    {
        var fabric = new Fabric(Switch, Placement.OneWorkerPerHost, 1, 2);
        var ends = Run(fabric, (0, W(0), K(0), S), (0, W(0), K(1), S));
        Assert.Equal(2 * S / B, ends[0], 9);
        Assert.Equal(2 * S / B, ends[1], 9);
    }

    [Theory]
    [InlineData(2)]
    [InlineData(16)]
    [InlineData(64)]
    public void N_way_incast_into_one_nic_ends_at_n_times_size_over_bandwidth(int n)
    {
        var fabric = new Fabric(Switch, Placement.OneWorkerPerHost, n, 1);
        var ends = Run(fabric, Enumerable.Range(0, n).Select(w => (0.0, W(w), K(0), S)).ToArray());
        Assert.All(ends, e => Assert.Equal(n * S / B, e, 9));
    }

    [Fact]
    public void Opposite_directions_do_not_slow_each_other()
    {
        var fabric = new Fabric(Switch, Placement.OneWorkerPerHost, 1, 1);
        var ends = Run(fabric, (0, W(0), K(0), S), (0, K(0), W(0), S));
        Assert.Equal(S / B, ends[0], 9);
        Assert.Equal(S / B, ends[1], 9);
    }

    [Fact]
    public void A_flow_that_ends_early_frees_its_share_for_the_rest()
    {
        var fabric = new Fabric(Switch, Placement.OneWorkerPerHost, 2, 1);
        // both into shard 0's NIC at B/2; the short one ends at 2S/B, the long one has S left, then at B: 3S/B
        var ends = Run(fabric, (0, W(0), K(0), S), (0, W(1), K(0), 2 * S));
        Assert.Equal(2 * S / B, ends[0], 9);
        Assert.Equal(3 * S / B, ends[1], 9);
        // a flow that joins later slows the one in flight from then on
        fabric = new Fabric(Switch, Placement.OneWorkerPerHost, 2, 1);
        ends = Run(fabric, (0, W(0), K(0), 2 * S), (S / B, W(1), K(0), S));
        Assert.Equal(S / B + 2 * S / B, ends[0], 9); // S sent alone, then S at B/2
        Assert.Equal(S / B + 2 * S / B, ends[1], 9);
    }

    [Fact]
    public void Max_min_gives_a_flow_bottlenecked_elsewhere_only_what_it_can_use()
    {
        // w0 sends to k0 and k1; w1 also sends to k0. k0's NIC: two flows, w0's NIC: two flows.
        // Every flow's fair share is B/2 (no one has spare), then each ends at 2S/B.
        // With w1 sending 4 flows to 4 shards, its NIC gives B/4 each; w0 -> k0 then gets B - B/4.
        var fabric = new Fabric(Switch, Placement.OneWorkerPerHost, 2, 4);
        var ends = Run(fabric, (0, W(1), K(0), S), (0, W(1), K(1), S), (0, W(1), K(2), S), (0, W(1), K(3), S), (0, W(0), K(0), 10 * S));
        Assert.All(ends.Take(4), e => Assert.Equal(4 * S / B, e, 9));
        // w0 -> k0 sent 3/4 B for 4S/B (3S), then B for the remaining 7S
        Assert.Equal(4 * S / B + 7 * S / B, ends[4], 9);
    }

    [Theory]
    [InlineData(1.0)]
    [InlineData(4.0)]
    public void Leaf_spine_with_oversubscription_k_gives_cross_leaf_flows_b_over_k_and_intra_leaf_flows_b(double k)
    {
        const int perLeaf = 4;
        var settings = new FabricSettings(FabricTopology.LeafSpine, B, 0, perLeaf, k, 0, 1e11, 0);
        // 8 workers on hosts 0-7: leaf 0 = hosts 0-3, leaf 1 = hosts 4-7; 8 dedicated shards on hosts 8-15 (leaves 2, 3)
        var fabric = new Fabric(settings, Placement.OneWorkerPerHost, 8, 8);
        Assert.Equal(16, fabric.Hosts);
        Assert.Equal(4, fabric.Leaves);
        // every host of leaf 0 sends to a shard under leaf 2: the uplink carries 4B/k, B/k each
        var cross = Run(fabric, Enumerable.Range(0, perLeaf).Select(w => (0.0, W(w), K(w), S)).ToArray());
        Assert.All(cross, e => Assert.Equal(S / Math.Min(B, B / k), e, 9));
        // inside one leaf: worker 4 -> worker 5's host? endpoints are workers and shards; shards 0-3 sit on leaf 2
        var fabric2 = new Fabric(settings, Placement.OneWorkerPerHost, 8, 8);
        var intra = Run(fabric2, (0, K(0), K(1), S), (0, K(2), K(3), S));
        Assert.All(intra, e => Assert.Equal(S / B, e, 9));
    }

    [Fact]
    public void Transfers_inside_a_host_use_its_bus_and_never_its_nic()
    {
        var colocated = new Placement(WorkersPerHost: 2, DedicatedShards: false, ShardsPerHost: 1);
        var settings = Switch with { BusBytesPerSecond = 10 * B, BusLatency = 1e-6 };
        var fabric = new Fabric(settings, colocated, 2, 1);
        Assert.Equal(fabric.HostOf(W(0)), fabric.HostOf(K(0)));
        var path = fabric.Route(W(1), K(0));
        Assert.Equal(1e-6, path.Latency);
        var ends = Run(fabric, (0, W(0), K(0), S), (0, W(1), K(0), S));
        Assert.All(ends, e => Assert.Equal(2 * S / (10 * B), e, 9));
        Assert.All(fabric.Usage(1), u => Assert.EndsWith(".bus", u.Name));
    }

    [Fact]
    public void Usage_counts_bytes_and_busy_time_per_resource()
    {
        var fabric = new Fabric(Switch, Placement.OneWorkerPerHost, 2, 1);
        Run(fabric, (0, W(0), K(0), S), (0, W(1), K(0), S));
        var into = fabric.Usage(1).Single(u => u.Name == $"host-{fabric.HostOf(K(0))}.nic-in");
        Assert.Equal(2 * S, into.Bytes, 3);
        Assert.Equal(2 * S / B, into.BusySeconds, 9);
    }

    [Fact]
    public void The_timeline_holds_every_byte_at_the_rate_it_went()
    {
        var fabric = new Fabric(Switch, Placement.OneWorkerPerHost, 1, 1);
        Run(fabric, (0, W(0), K(0), S)); // 0.8 ms at B: eight full 0.1 ms buckets
        var nic = fabric.Usage(1).Single(u => u.Name == "host-0.nic-out");
        Assert.Equal(1e-4, nic.BucketSeconds);
        Assert.All(nic.Timeline.Take(8), bytes => Assert.Equal(B * 1e-4, bytes, 3));
        Assert.Equal(S, nic.Timeline.Sum(), 3);

        // a run longer than the timeline: buckets double until it fits, no byte lost
        var slow = new Fabric(Switch, Placement.OneWorkerPerHost, 1, 1);
        Run(slow, (0, W(0), K(0), 100 * S), (0.05, W(0), K(0), S));
        var out0 = slow.Usage(1).Single(u => u.Name == "host-0.nic-out");
        Assert.True(out0.BucketSeconds * out0.Timeline.Length >= 101 * S / B);
        Assert.Equal(101 * S, out0.Timeline.Sum(), 1);
        Assert.All(out0.Timeline, bytes => Assert.True(bytes <= B * out0.BucketSeconds * (1 + 1e-9)));
    }
}
