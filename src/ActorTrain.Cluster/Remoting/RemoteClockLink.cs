using ActorTrain.Cluster.Transport;
using ActorTrain.Core.Simulation;
using Akka.Actor;
using Akka.Event;

namespace ActorTrain.Cluster.Remoting;

/// <summary>
/// The virtual clock on a node that does not hold the scheduler: events arrive from the
/// scheduler's node through the gateway; what the actor sends, schedules or occupies during an
/// event is collected exactly as in one process and handed back with its time as an
/// <see cref="EventDone"/>, which the <see cref="ClockEndpoint"/> passes to
/// <see cref="VirtualLink.Complete"/>. The scheduler orders events by time and sequence number
/// alone, so the run is the same event for event as on one process: same seed, same metrics.
/// </summary>
public sealed class RemoteClockLink(IActorRef clock, DateTimeOffset epoch, IRoute route) : ILink, IEventLink
{
    // who is who (the roster): only for Vouches; the scheduler's node plans the network
    private readonly Attachments _endpoints = new();

    public bool IsVirtual => true;

    public void Attach(IActorRef actor, Endpoint endpoint) => _endpoints.Attach(actor, endpoint);

    public bool Vouches(IActorRef sender, Endpoint claimed) => _endpoints.Vouches(sender, claimed);

    public double Now => VirtualEvent.Current?.Now ?? 0;

    public DateTimeOffset Epoch => epoch;

    public void Send(IActorRef to, object message, long bytes, TrafficClass traffic, IActorRef sender) =>
        Emit(OutKind.Send, to, message, bytes, traffic, sender, 0);

    public void ScheduleOnce(IActorRef to, object message, double delay, IActorRef sender) =>
        Emit(OutKind.Timer, to, message, 0, TrafficClass.Control, sender, delay);

    public void Kill(IActorRef actor) => Emit(OutKind.Kill, actor, Akka.Actor.PoisonPill.Instance, 0, TrafficClass.Control, ActorRefs.Nobody, 0);

    public void Occupy(double modelled, double measured) => VirtualEvent.Occupy(modelled);

    private static void Emit(OutKind kind, IActorRef to, object message, long bytes, TrafficClass traffic, IActorRef sender, double delay)
    {
        if (!VirtualEvent.TryEmit(kind, to, message, bytes, traffic, sender, delay))
            throw new InvalidOperationException($"virtual link: {message.GetType().Name} sent outside an event on a remote node");
    }

    void IEventLink.Enter(VirtualDelivery delivery, double previousEnd) => VirtualEvent.Enter(delivery, previousEnd);

    double IEventLink.Exit(IActorRef self)
    {
        var e = VirtualEvent.Exit();
        route.Tell(clock, new EventDone(self, e.Seq, e.Now, e.Outbox), self);
        return e.Now;
    }
}

/// <summary>The scheduler's door on its own node: outboxes of events handled on other nodes.</summary>
public sealed class ClockEndpoint : ReceiveActor
{
    /// <param name="member">Whether a node's outboxes are heard (a current member the run is placed on): a stranger's forged EventDone would derail the clock.</param>
    public ClockEndpoint(VirtualLink link, Func<Address, bool> member) =>
        Receive<EventDone>(done =>
        {
            if (member(Sender.Path.Address)) link.Complete(done.Actor, done.Seq, done.Now, done.Outbox as List<Outgoing> ?? done.Outbox.ToList());
            else Context.GetLogger().Warning("clock: dropped an EventDone from {0}, which is not a member of this cluster", Sender.Path);
        });

    public static Props Props(VirtualLink link, Func<Address, bool> member) => Akka.Actor.Props.Create(() => new ClockEndpoint(link, member));
}
