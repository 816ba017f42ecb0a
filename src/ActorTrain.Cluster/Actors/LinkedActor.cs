using ActorTrain.Cluster.Transport;
using ActorTrain.Core.Simulation;
using Akka.Event;
using Akka.Actor;

namespace ActorTrain.Cluster.Actors;

/// <summary>
/// An actor of the run's topology. Under the virtual clock its messages arrive wrapped in a
/// <see cref="VirtualDelivery"/>: the wrapper is taken off here, so handlers see the plain message
/// (with its original sender), and once the handler returns the link gets the actor's outbox and
/// the virtual time it reached. Under the wall clock messages arrive plain.
/// </summary>
public abstract class LinkedActor(ILink link) : ReceiveActor
{
    protected ILink Link { get; } = link;

    // Under the virtual clock: where this actor's last event ended. The scheduler releases all of an
    // actor's events of a window at once, in order; each starts no earlier than the one before ended.
    private double _eventEnd;

    /// <summary>
    /// True when the message in hand comes from the actor attached for <paramref name="claimed"/>;
    /// otherwise (a forged or misrouted message, a stranger on the network) one log line names the
    /// sender and the caller drops the message, keeping its state.
    /// </summary>
    protected bool Authentic(Endpoint claimed, object message)
    {
        if (Link.Vouches(Sender, claimed)) return true;
        Context.GetLogger().Warning("{0}: dropped a {1} claiming to come from {2}, sent by {3}", Self.Path.Name, message.GetType().Name, claimed, Sender.Path);
        return false;
    }

    /// <summary>
    /// Handles the run's control messages (Begin, WorkerLost, FinalSnapshotRequest, StopTraining)
    /// only when the coordinator sent them: from anyone else they are dropped as
    /// <see cref="Authentic"/> drops them. A stranger's WorkerLost would shrink a BSP barrier, its
    /// StopTraining would take a shard out of the run.
    /// </summary>
    protected void ReceiveFromCoordinator<T>(Action<T> handler) => Receive<T>(message =>
    {
        if (Authentic(Endpoint.Coordinator, message!)) handler(message);
    });

    protected override bool AroundReceive(Receive receive, object message)
    {
        if (message is not VirtualDelivery delivery) return base.AroundReceive(receive, message);
        delivery.Link.Enter(delivery, _eventEnd);
        try
        {
            return base.AroundReceive(receive, delivery.Message);
        }
        finally
        {
            _eventEnd = delivery.Link.Exit(Self);
        }
    }
}
