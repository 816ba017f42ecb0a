using ActorTrain.Cluster.Transport;
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

    protected override bool AroundReceive(Receive receive, object message)
    {
        if (message is not VirtualDelivery delivery) return base.AroundReceive(receive, message);
        delivery.Link.Enter(delivery);
        try
        {
            return base.AroundReceive(receive, delivery.Message);
        }
        finally
        {
            delivery.Link.Exit(Self);
        }
    }
}
