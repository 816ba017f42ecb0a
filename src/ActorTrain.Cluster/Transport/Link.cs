using Akka.Actor;

namespace ActorTrain.Cluster.Transport;

public enum TrafficClass
{
    WorkerToShard,
    ShardToWorker,
    Control,
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

/// <summary>
/// Zero-delay delivery: tells at once. Bytes are counted by the shards, per version, so that every
/// counter in the results belongs to a step; the link only needs them to model transfer time.
/// </summary>
public sealed class ImmediateLink : ILink
{
    public static readonly ImmediateLink Instance = new();

    private ImmediateLink() { }

    public void Send(IActorRef to, object message, long bytes, TrafficClass traffic, IActorRef sender) => to.Tell(message, sender);
}

