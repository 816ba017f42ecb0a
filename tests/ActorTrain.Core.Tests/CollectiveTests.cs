using ActorTrain.Core.Collectives;
using ActorTrain.Core.Models;

namespace ActorTrain.Core.Tests;

/// <summary>
/// The all-reduce schedules run by a reference executor (every rank's steps in lock-step, messages
/// as copies of the sender's segment): every rank must end with the exact element-wise sum
/// (integer-valued floats, so any order gives the same bits), and send what the closed forms count.
/// </summary>
public class CollectiveTests
{
    public static TheoryData<string, int, int, int> Layouts => new()
    {
        { "ring-allreduce", 1, 1, 10 }, { "ring-allreduce", 2, 1, 10 }, { "ring-allreduce", 5, 1, 23 }, { "ring-allreduce", 8, 1, 3 },
        { "halving-doubling", 1, 1, 7 }, { "halving-doubling", 2, 1, 7 }, { "halving-doubling", 8, 1, 29 }, { "halving-doubling", 16, 1, 5 },
        { "hierarchical-allreduce", 8, 4, 37 }, { "hierarchical-allreduce", 6, 3, 11 }, { "hierarchical-allreduce", 4, 1, 9 }, { "hierarchical-allreduce", 4, 4, 9 },
    };

    [Theory]
    [MemberData(nameof(Layouts))]
    public void Every_rank_ends_with_the_sum(string name, int ranks, int perHost, int length)
    {
        var algorithm = AllReduceAlgorithms.ByName[name];
        var layout = new CollectiveLayout(ranks, perHost);
        Assert.Null(algorithm.Unsupported(layout));
        var buffers = Enumerable.Range(0, ranks).Select(r => Enumerable.Range(0, length).Select(i => (float)((r + 1) * 1000 + i)).ToArray()).ToArray();
        var expected = Enumerable.Range(0, length).Select(i => Enumerable.Range(0, ranks).Sum(r => (float)((r + 1) * 1000 + i))).ToArray();
        Run(algorithm, layout, buffers);
        foreach (var b in buffers) Assert.Equal(expected, b);
    }

    [Fact]
    public void Ring_sends_2_n_minus_1_chunks_per_rank()
    {
        var steps = new RingAllReduce().Schedule(2, 40, new CollectiveLayout(5, 1));
        Assert.Equal(8, steps.Count);
        Assert.All(steps, s => Assert.Equal((3, 1, 8), (s.SendTo, s.ReceiveFrom, s.Send.Length)));
        Assert.Equal(4, steps.Count(s => s.Reduce));
    }

    [Fact]
    public void Halving_doubling_sends_n_minus_1_over_n_per_phase_in_log2_n_steps()
    {
        var steps = new HalvingDoublingAllReduce().Schedule(5, 64, new CollectiveLayout(8, 1));
        Assert.Equal(6, steps.Count);
        Assert.Equal(new[] { 32, 16, 8 }, steps.Where(s => s.Reduce).Select(s => s.Send.Length));
        Assert.Equal(new[] { 8, 16, 32 }, steps.Where(s => !s.Reduce).Select(s => s.Send.Length));
        Assert.Equal(new[] { 1, 7, 4, 4, 7, 1 }, steps.Select(s => s.SendTo)); // 5 ^ 4, 5 ^ 2, 5 ^ 1, then back
        Assert.Contains("power-of-two", new HalvingDoublingAllReduce().Unsupported(new CollectiveLayout(6, 1)));
    }

    [Fact]
    public void Hierarchical_rings_inside_hosts_then_across()
    {
        var steps = new HierarchicalAllReduce().Schedule(5, 48, new CollectiveLayout(8, 4)); // host 1, local 1
        Assert.Equal(new[] { "reduce-scatter.intra-host", "reduce-scatter.intra-host", "reduce-scatter.intra-host",
            "reduce-scatter.inter-host", "all-gather.inter-host", "all-gather.intra-host", "all-gather.intra-host", "all-gather.intra-host" },
            steps.Select(s => s.Phase));
        Assert.All(steps.Take(3), s => Assert.Equal((6, 4, 12), (s.SendTo, s.ReceiveFrom, s.Send.Length)));
        Assert.All(steps.Skip(3).Take(2), s => Assert.Equal((1, 1, 6), (s.SendTo, s.ReceiveFrom, s.Send.Length)));
        Assert.Contains("multiple of placement.workers-per-host", new HierarchicalAllReduce().Unsupported(new CollectiveLayout(6, 4)));
    }

    [Fact]
    public void Fp16_wire_rounds_the_gradient_keeps_tallies_exact_and_replicas_identical()
    {
        const int n = 4, length = 10;
        var layout = new CollectiveLayout(n, 1);
        var algorithm = new RingAllReduce();
        var buffers = Enumerable.Range(0, n).Select(_ => new CollectiveBuffer(length, fp16: true)).ToArray();
        for (int r = 0; r < n; r++)
            buffers[r].Load(Enumerable.Range(0, length).Select(i => 1f / (3 + i + r)).ToArray(), 1f, nonFinite: r == 2, samples: 100 + r);
        var schedules = Enumerable.Range(0, n).Select(r => algorithm.Schedule(r, length + CollectiveBuffer.TallyLength, layout)).ToArray();
        for (int k = 0; k < schedules[0].Count; k++)
        {
            var sent = new byte[n][];
            for (int r = 0; r < n; r++)
            {
                var s = schedules[r][k];
                sent[r] = new byte[buffers[r].WireBytes(s.Send)];
                buffers[r].Encode(s.Send, sent[r]);
            }
            for (int r = 0; r < n; r++)
            {
                var s = schedules[r][k];
                Assert.True(buffers[r].Apply(s.Receive, sent[s.ReceiveFrom], s.Reduce));
            }
        }
        for (int r = 1; r < n; r++) Assert.Equal(buffers[0].Values, buffers[r].Values);
        Assert.Equal(3f, buffers[0].FiniteCount);
        Assert.Equal(406f, buffers[0].Samples);
        Assert.Equal(4f, buffers[0].ScaleSum);
        for (int i = 0; i < length; i++)
        {
            float exact = 1f / (3 + i) + 1f / (4 + i) + 1f / (6 + i);
            Assert.InRange(buffers[0].Values[i], exact * (1 - 3e-3f), exact * (1 + 3e-3f)); // a few FP16 roundings
            Assert.Equal(buffers[0].Values[i], (float)(Half)buffers[0].Values[i]);           // what went over the wire last
        }
        Assert.Equal(2 * 3 + 4 * 2, buffers[0].WireBytes(new ParameterRange(7, 5))); // 3 gradient elements as FP16, 2 tallies as FP32
        Assert.False(buffers[0].Apply(new ParameterRange(0, 3), new byte[5], reduce: true));
    }

    /// <summary>Every rank's step k in lock-step: the sends read the buffers before any receive writes them.</summary>
    private static void Run(IAllReduceAlgorithm algorithm, CollectiveLayout layout, float[][] buffers)
    {
        int length = buffers[0].Length;
        var schedules = Enumerable.Range(0, layout.Ranks).Select(r => algorithm.Schedule(r, length, layout)).ToArray();
        int steps = schedules[0].Count;
        Assert.All(schedules, s => Assert.Equal(steps, s.Count));
        for (int k = 0; k < steps; k++)
        {
            var messages = new Dictionary<(int From, int To), float[]>();
            for (int r = 0; r < layout.Ranks; r++)
            {
                var s = schedules[r][k];
                messages[(r, s.SendTo)] = buffers[r].AsSpan(s.Send.Start, s.Send.Length).ToArray();
            }
            for (int r = 0; r < layout.Ranks; r++)
            {
                var s = schedules[r][k];
                var incoming = messages[(s.ReceiveFrom, r)];
                Assert.Equal(s.Receive.Length, incoming.Length);
                // the sender's view of the step agrees: it sends the segment this rank expects
                Assert.Equal(s.Receive, schedules[s.ReceiveFrom][k].Send);
                for (int i = 0; i < incoming.Length; i++)
                    buffers[r][s.Receive.Start + i] = s.Reduce ? incoming[i] + buffers[r][s.Receive.Start + i] : incoming[i];
            }
        }
    }
}
