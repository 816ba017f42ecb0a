using Akka.Actor;

namespace ActorTrain.Cluster.Transport;

public enum TrafficClass
{
    WorkerToShard,
    ShardToWorker,
    Control,
}

/// <summary>Bytes and messages per traffic class, shared by every sender of a run; thread-safe.</summary>
public sealed class TrafficCounters
{
    private readonly long[] _bytes = new long[3];
    private readonly long[] _messages = new long[3];

    public void Add(TrafficClass traffic, long bytes)
    {
        Interlocked.Add(ref _bytes[(int)traffic], bytes);
        Interlocked.Increment(ref _messages[(int)traffic]);
    }

    public long Bytes(TrafficClass traffic) => Interlocked.Read(ref _bytes[(int)traffic]);
    public long Messages(TrafficClass traffic) => Interlocked.Read(ref _messages[(int)traffic]);
}

/// <summary>
/// The link layer every piece of simulated traffic goes through (DESIGN.md section 3): actors call
/// Send(to, message, bytes) and never Tell each other directly for training traffic, so latency,
/// bandwidth, drops and a virtual clock can be put behind this interface without touching actors.
/// </summary>
public interface ILink
{
    void Send(IActorRef to, object message, long bytes, TrafficClass traffic, IActorRef sender);
}

/// <summary>Zero-delay delivery: counts the bytes and tells at once.</summary>
public sealed class ImmediateLink(TrafficCounters counters) : ILink
{
    public TrafficCounters Counters { get; } = counters;

    public void Send(IActorRef to, object message, long bytes, TrafficClass traffic, IActorRef sender)
    {
        Counters.Add(traffic, bytes);
        to.Tell(message, sender);
    }
}

/// <summary>
/// Delivery after a delay chosen per message by <paramref name="delay"/> (from the traffic class and
/// the message's bytes), through the actor system's scheduler: real time with the default
/// scheduler, virtual time with a test scheduler. Zero delays are told at once.
/// </summary>
public sealed class DelayedLink(IScheduler scheduler, TrafficCounters counters, Func<TrafficClass, long, TimeSpan> delay) : ILink
{
    public TrafficCounters Counters { get; } = counters;

    public void Send(IActorRef to, object message, long bytes, TrafficClass traffic, IActorRef sender)
    {
        Counters.Add(traffic, bytes);
        var wait = delay(traffic, bytes);
        if (wait <= TimeSpan.Zero) to.Tell(message, sender);
        else scheduler.ScheduleTellOnce(wait, to, message, sender);
    }
}
