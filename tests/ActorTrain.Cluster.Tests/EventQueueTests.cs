using ActorTrain.Cluster.Transport;

namespace ActorTrain.Cluster.Tests;

/// <summary>The scheduler's queue (a sorted run beside a heap) against .NET's heap alone: the same items in the same order.</summary>
public class EventQueueTests
{
    /// <summary>
    /// Seeded random interleavings of enqueues and dequeues: keys in order (the run), out of order
    /// (the heap), equal times told apart by the sequence number, a queue drained to empty and
    /// refilled, long runs taken from while they grow (the run's compaction).
    /// </summary>
    [Theory]
    [InlineData(1, 0.0)]
    [InlineData(2, 0.1)]
    [InlineData(3, 0.5)]
    [InlineData(4, 1.0)]
    public void Items_leave_in_key_order_whatever_way_they_came_in(int seed, double outOfOrder)
    {
        var random = new Random(seed);
        var queue = new EventQueue<long, (double, long)>();
        var reference = new PriorityQueue<long, (double, long)>();
        long seq = 0;
        double time = 0;
        for (int step = 0; step < 200_000; step++)
        {
            if (random.NextDouble() < 0.52)
            {
                // mostly later times (a plan's arrivals), sometimes earlier ones, often the same time
                double at = random.NextDouble() < outOfOrder ? time - random.NextDouble() : time + (random.Next(4) == 0 ? 0 : random.NextDouble());
                time = Math.Max(time, at);
                var key = (at, seq);
                queue.Enqueue(seq, key);
                reference.Enqueue(seq, key);
                seq++;
            }
            else
            {
                Assert.Equal(reference.TryPeek(out long expected, out var expectedKey), queue.TryPeek(out long item, out var key));
                if (reference.Count == 0) continue;
                Assert.Equal((expected, expectedKey), (item, key));
                Assert.Equal(reference.Dequeue(), queue.Dequeue());
            }
            Assert.Equal(reference.Count, queue.Count);
        }
        while (reference.Count > 0) Assert.Equal(reference.Dequeue(), queue.Dequeue());
        Assert.Equal(0, queue.Count);
        Assert.False(queue.TryPeek(out _, out _));
        Assert.Throws<InvalidOperationException>(() => queue.Dequeue());
    }

    [Fact]
    public void Clear_empties_both_the_run_and_the_heap()
    {
        var queue = new EventQueue<int, (double, long)>();
        queue.Enqueue(1, (1.0, 0));
        queue.Enqueue(2, (2.0, 1));
        queue.Enqueue(3, (0.5, 2)); // out of order: the heap
        queue.Clear();
        Assert.Equal(0, queue.Count);
        queue.Enqueue(4, (3.0, 3));
        Assert.Equal(4, queue.Dequeue());
    }
}
