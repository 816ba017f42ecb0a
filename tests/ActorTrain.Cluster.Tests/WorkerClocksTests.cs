using ActorTrain.Cluster.Actors;

namespace ActorTrain.Cluster.Tests;

/// <summary>The shard's record of the workers' clocks keeps the slowest active one without a scan per push.</summary>
public class WorkerClocksTests
{
    [Fact]
    public void Slowest_follows_the_last_worker_at_the_minimum_and_ignores_the_inactive()
    {
        var clocks = new WorkerClocks(3);
        Assert.Equal(0, clocks.Slowest);
        clocks.Raise(0, 2);
        clocks.Raise(1, 1);
        Assert.Equal(0, clocks.Slowest); // worker 2 is still at 0
        clocks.Raise(2, 3);
        Assert.Equal(1, clocks.Slowest);
        clocks.Raise(1, 1); // not a raise: nothing changes
        clocks.Raise(1, 0);
        Assert.Equal(1, clocks[1]);
        clocks.Deactivate(1);
        Assert.Equal(2, clocks.Slowest);
        clocks.Deactivate(0);
        clocks.Deactivate(2);
        Assert.Equal(0, clocks.Slowest); // nobody left
        var restored = new WorkerClocks(3);
        restored.Restore([5, 4, 6]);
        Assert.Equal(4, restored.Slowest);
    }

    /// <summary>Against a plain scan after every change of a seeded random sequence.</summary>
    [Fact]
    public void Slowest_equals_a_full_scan_after_every_change()
    {
        const int workers = 50;
        var clocks = new WorkerClocks(workers);
        var reference = new long[workers];
        var active = Enumerable.Repeat(true, workers).ToArray();
        var rng = new Core.Rng(42);
        for (int i = 0; i < 20_000; i++)
        {
            int w = (int)(rng.NextDouble() * workers);
            if (rng.NextDouble() < 0.002) { clocks.Deactivate(w); active[w] = false; }
            else
            {
                long to = reference[w] + (long)(rng.NextDouble() * 3);
                clocks.Raise(w, to);
                reference[w] = Math.Max(reference[w], to);
            }
            long expected = Enumerable.Range(0, workers).Where(k => active[k]).Select(k => reference[k]).DefaultIfEmpty(0).Min();
            Assert.Equal(expected, clocks.Slowest);
        }
    }
}
