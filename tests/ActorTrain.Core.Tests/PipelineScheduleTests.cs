using ActorTrain.Core.Pipeline;

namespace ActorTrain.Core.Tests;

public sealed class PipelineScheduleTests
{
    [Fact]
    public void Gpipe_runs_every_forward_then_every_backward()
    {
        Assert.Equal("F0 F1 F2 B0 B1 B2", string.Join(' ', PipelineSchedule.Ops(PipelineScheduleKind.GPipe, 1, 4, 3)));
    }

    [Theory]
    [InlineData(0, "F0 F1 F2 F3 B0 F4 B1 F5 B2 B3 B4 B5")]  // stage 0 of 4: three forwards fill the pipeline
    [InlineData(2, "F0 F1 B0 F2 B1 F3 B2 F4 B3 F5 B4 B5")]
    [InlineData(3, "F0 B0 F1 B1 F2 B2 F3 B3 F4 B4 F5 B5")]  // the last stage: one forward, one backward
    public void One_f_one_b_fills_then_alternates_then_drains(int stage, string expected)
    {
        Assert.Equal(expected, string.Join(' ', PipelineSchedule.Ops(PipelineScheduleKind.OneFOneB, stage, 4, 6)));
    }

    [Theory]
    [InlineData(4, 8)]
    [InlineData(4, 2)]
    [InlineData(3, 16)]
    public void One_f_one_b_holds_at_most_p_minus_s_micro_batches_against_gpipes_m(int stages, int micro)
    {
        for (int s = 0; s < stages; s++)
        {
            var gpipe = PipelineSchedule.Ops(PipelineScheduleKind.GPipe, s, stages, micro);
            var oneF = PipelineSchedule.Ops(PipelineScheduleKind.OneFOneB, s, stages, micro);
            Assert.Equal(micro, PipelineSchedule.PeakActivations(gpipe));
            Assert.Equal(Math.Min(micro, stages - s), PipelineSchedule.PeakActivations(oneF));
            // both run every micro-batch's forward before its backward, and the backwards in order
            foreach (var ops in new[] { gpipe, oneF })
            {
                Assert.Equal(Enumerable.Range(0, micro), ops.Where(o => !o.Forward).Select(o => o.MicroBatch));
                Assert.All(ops.Where(o => !o.Forward), b => Assert.True(Array.IndexOf(ops, new PipelineOp(true, b.MicroBatch)) < Array.IndexOf(ops, b)));
            }
        }
    }

    [Fact]
    public void The_uniform_bubble_is_p_minus_1_over_m_plus_p_minus_1()
    {
        Assert.Equal(3.0 / 7, PipelineSchedule.BubbleFraction(4, 4), 15);
        Assert.Equal(0, PipelineSchedule.BubbleFraction(1, 8));
    }

    /// <summary>A step's samples split into contiguous micro-batches in order, sizes differing by at most one (an epoch's short last batch included).</summary>
    [Theory]
    [InlineData(32, 4, "8 8 8 8")]
    [InlineData(30, 4, "8 8 7 7")]
    [InlineData(5, 4, "2 1 1 1")]
    [InlineData(2, 4, "1 1 0 0")]
    [InlineData(1, 1, "1")]
    public void Micro_batches_cover_the_steps_samples_in_order(int samples, int micro, string sizes)
    {
        var split = Enumerable.Range(0, micro).Select(m => PipelineSchedule.MicroBatch(samples, micro, m)).ToList();
        Assert.Equal(sizes, string.Join(" ", split.Select(b => b.Count)));
        int next = 0;
        foreach (var (offset, count) in split)
        {
            Assert.Equal(next, offset);
            next += count;
        }
        Assert.Equal(samples, next);
    }
}
