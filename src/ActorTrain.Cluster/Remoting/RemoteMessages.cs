using ActorTrain.Cluster.Transport;
using Akka.Actor;

namespace ActorTrain.Cluster.Remoting;

/// <summary>Marker for the messages of the cluster's own plumbing (gateways, hosting, the distributed virtual clock).</summary>
public interface IRemotingMessage;

/// <summary>
/// Gateway -> gateway: part <paramref name="Index"/> of <paramref name="Count"/> of one serialized
/// envelope (<see cref="Gateway"/>). Frames of one transfer travel in order on one association.
/// </summary>
public sealed record Frame(long Transfer, int Index, int Count, ReadOnlyMemory<byte> Data) : IRemotingMessage;

/// <summary>Under the virtual clock: event <paramref name="Seq"/> for an actor on another node, starting at <paramref name="Start"/>.</summary>
public sealed record RemoteEvent(object Message, long Seq, double Start) : IRemotingMessage;

/// <summary>Node proxy -> scheduler: the actor finished event <paramref name="Seq"/> at virtual time <paramref name="Now"/>, having sent <paramref name="Outbox"/>.</summary>
public sealed record EventDone(IActorRef Actor, long Seq, double Now, IReadOnlyList<Outgoing> Outbox) : IRemotingMessage;

/// <summary>
/// Coordinator node -> a ps or worker node's host: build these shards (role "ps") or workers
/// (role "worker") of the experiment <paramref name="Config"/> (the resolved HOCON of the run, so
/// every node derives the same data, seeds and settings). <paramref name="Shards"/> are the shard
/// actors (for workers); <paramref name="Clock"/> is the scheduler's endpoint under the virtual
/// clock, <paramref name="EpochTicks"/> the wall instant run time 0 stands for (UTC ticks);
/// <paramref name="Resume"/> the checkpoint a resumed run goes on from. It can be large (every
/// shard's weights), so hosts are asked through the gateways (<see cref="GatewayAsk"/>).
/// </summary>
public sealed record HostRun(string Config, string Role, int[] Ids, IActorRef Coordinator, IActorRef[] Shards, IActorRef? Clock, long EpochTicks,
    Actors.RunCheckpoint? Resume = null) : IRemotingMessage;

/// <summary>Node host -> coordinator: the actors it built, in the order of the request's ids.</summary>
public sealed record Hosted(string Role, IActorRef[] Actors) : IRemotingMessage;

/// <summary>Node host -> coordinator: the request could not be carried out (bad config on that node, say).</summary>
public sealed record HostFailed(string Reason) : IRemotingMessage;

/// <summary>
/// Coordinator -> every host once all are built: who is who, so each node's link knows the network
/// endpoint of every actor it may send to. Answered with an empty <see cref="Hosted"/>.
/// </summary>
public sealed record Roster(IActorRef Coordinator, IActorRef[] Shards, IActorRef[] Workers) : IRemotingMessage;

/// <summary>Coordinator -> host, once the run is over: send the spans and metrics this node recorded (file exporter).</summary>
public sealed class CollectTelemetry : IRemotingMessage
{
    public static readonly CollectTelemetry Instance = new();
    private CollectTelemetry() { }
}

/// <summary>
/// Host -> coordinator: this node's span and metric lines (OTLP JSON, uncompressed), empty when
/// it recorded none; large, so it travels through the gateways.
/// </summary>
public sealed record NodeTelemetry(string Node, string Traces, string Metrics) : IRemotingMessage;

/// <summary>Coordinator node -> hosts: the run is over; stop its actors and release the link.</summary>
public sealed class EndRun : IRemotingMessage
{
    public static readonly EndRun Instance = new();
    private EndRun() { }
}
