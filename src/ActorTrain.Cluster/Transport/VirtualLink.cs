using System.Collections.Concurrent;
using ActorTrain.Core.Simulation;
using Akka.Actor;

namespace ActorTrain.Cluster.Transport;

/// <summary>A message handed to an actor by the virtual clock; <see cref="Actors.LinkedActor"/> unwraps it.</summary>
/// <param name="outbox">An empty list for the event's outbox, reused from an earlier event (null: a new one).</param>
/// <param name="slot">Where the scheduler expects the event's outbox among its batch's (-1: none).</param>
/// <remarks>
/// A delivery to an actor of this process is handed back with its event's outbox and reused for a
/// later event (one allocation less per message): nothing may keep it after the event's
/// <see cref="IEventLink.Exit"/>.
/// </remarks>
internal sealed class VirtualDelivery(object message, long seq, double start, IEventLink link, TransferTiming? transfer = null, object? receiver = null,
    List<Outgoing>? outbox = null, int slot = -1)
{
    public object Message { get; private set; } = message;
    public long Seq { get; private set; } = seq;
    public double Start { get; private set; } = start;
    public IEventLink Link { get; } = link;
    public TransferTiming? Transfer { get; private set; } = transfer;
    public object? Receiver { get; private set; } = receiver;
    public List<Outgoing>? Outbox { get; private set; } = outbox;
    public int Slot { get; private set; } = slot;

    /// <summary>The same shell for another event of the same link.</summary>
    public VirtualDelivery Reuse(object message, long seq, double start, TransferTiming? transfer, object? receiver, List<Outgoing>? outbox, int slot)
    {
        (Message, Seq, Start, Transfer, Receiver, Outbox, Slot) = (message, seq, start, transfer, receiver, outbox, slot);
        return this;
    }

    /// <summary>Drops what the event referred to, so a spare shell holds nothing alive.</summary>
    public void Clear() => (Message, Transfer, Receiver, Outbox) = (null!, null, null, null);
}

/// <summary>The side of a virtual clock an actor's event runs against: the scheduler itself, or its proxy on another node.</summary>
internal interface IEventLink
{
    /// <summary>The event begins at max(its delivery's start, <paramref name="previousEnd"/>: where the actor's previous event ended).</summary>
    void Enter(VirtualDelivery delivery, double previousEnd);

    /// <summary>The event is over; returns the time it ended.</summary>
    double Exit(IActorRef self);
}

public enum OutKind { Send, Timer, Kill }

/// <summary>
/// What an actor did during a virtual event: a send, a timer or a kill, departing at
/// <paramref name="At"/> (absolute virtual time once the event is over).
/// </summary>
public readonly record struct Outgoing(OutKind Kind, IActorRef To, object Message, long Bytes, TrafficClass Traffic, IActorRef Sender, double At);

/// <summary>Told to the idle listener when no event is left and nothing is being processed.</summary>
public sealed record SimulationIdle(double Time);

/// <summary>
/// The virtual clock: a conservative discrete-event scheduler (DESIGN.md section 3). Every message
/// is an event ordered by (arrival time, sequence number). The scheduler releases a batch, all
/// events earlier than t_min + lookahead (the least latency any message can have; only events at
/// exactly t_min when that is zero), and waits until each receiving actor has processed its events
/// and handed back their outboxes. Nothing an actor sends can arrive inside the window it was
/// released in, so the actors of a batch run in parallel, and an actor with several events in the
/// window takes them one after the other from its mailbox, in order, without breaking causality.
/// When the batch is done the outboxes are sorted by the sequence number of the event that
/// produced them (not by which thread finished first), planned through the
/// <see cref="NetworkModel"/> in that order and given new sequence numbers: a seed fixes the whole
/// run, whatever the thread timing.
///
/// An actor's time: it starts an event at max(arrival, the end of its previous event; the actor
/// applies that for its second and later events of a window, whose predecessor has not run when
/// the batch goes out) and moves on by what it <see cref="Occupy"/>s (modelled compute, apply);
/// what it sends departs at its time of sending. A killed actor is a barrier event: handled alone, between batches; what was addressed
/// to it, or what it had sent that would only have left after its death, is lost.
///
/// The scheduler is not an actor: the thread that hands back the last outbox of a batch plans it
/// and releases the next one, which saves a message hop per event.
/// </summary>
public sealed class VirtualLink : ILink, IEventLink
{
    private readonly object _lock = new();
    private readonly NetworkModel _network;
    // the shared hardware, when fabric.topology is not none: messages become flows that share it
    private readonly Fabric? _fabric;
    private readonly double _lookahead;
    private readonly Attachments _endpoints = new();
    private readonly PriorityQueue<Event, EventKey> _queue = new();
    // each actor's clock and endpoint, found once per event and carried in its delivery: by reference
    // first (Akka's IActorRef hash walks the whole path), then by Akka's equality (another instance
    // of a ref to the same actor, as deserialized from another node, finds the same record)
    private readonly Dictionary<IActorRef, ActorState> _actors = new();
    private readonly Dictionary<IActorRef, ActorState> _byReference = new(ReferenceEqualityComparer.Instance);
    private readonly Dictionary<IActorRef, double> _deathTime = new();
    private readonly List<(long Seq, List<Outgoing> Items)> _done = [];
    // The outboxes of the batch's events handled in this process, each in the slot its delivery
    // named: written without the lock (one writer per slot), read by the thread whose completion
    // brings _outstanding to 0 (the interlocked decrements order them). Outboxes from other nodes
    // come in through the lock into _remoteDone.
    private (long Seq, List<Outgoing>? Items, VirtualDelivery? Delivery)[] _slots = new (long, List<Outgoing>?, VirtualDelivery?)[64];
    private readonly Stack<VirtualDelivery> _spareDeliveries = new();
    private int _slotsUsed;
    private readonly List<(long Seq, List<Outgoing> Items)> _remoteDone = [];
    private readonly List<Outgoing> _seeds = [];
    private readonly DuplicateFilter _duplicates = new();
    private readonly LinkCounters _counters = new();
    private readonly List<(Event Event, EventKey Key)> _deferred = [];
    private readonly Stack<Event> _spareEvents = new();
    // the last batch's list once its deliveries are told, for the next batch
    private List<Release>? _spareBatch;
    // outbox lists already planned, emptied, for the next events (small ones only)
    private readonly Stack<List<Outgoing>> _spareOutboxes = new();
    private readonly Dictionary<Fabric.Flow, FlowAttempt> _flowAttempts = [];
    private long _wakes;
    private readonly IRoute _route;
    private IActorRef? _idleListener;
    private long _seq, _nextMessageId;
    private int _outstanding;
    private double _now, _windowEnd;
    private bool _started, _stopped;

    public VirtualLink(NetworkSettings network, ulong seed, int workers, int shards, IRoute? route = null)
    {
        _route = route ?? DirectRoute.Instance;
        _network = new NetworkModel(network, seed);
        _lookahead = network.MinLatency(workers, shards);
        if (network.Fabric.Shares) _fabric = new Fabric(network.Fabric, network.Placement, workers, shards);
    }

    /// <summary>What each fabric resource carried by now (null without a sharing fabric).</summary>
    public IReadOnlyList<ResourceUsage>? FabricUsage
    {
        get
        {
            lock (_lock) return _fabric?.Usage(_now);
        }
    }

    /// <summary>Flow-rate recomputations so far (0 without a sharing fabric).</summary>
    public long FabricRecomputations
    {
        get
        {
            lock (_lock) return _fabric?.Recomputations ?? 0;
        }
    }

    public bool IsVirtual => true;

    public DateTimeOffset Epoch { get; } = DateTimeOffset.UtcNow;

    public double Now
    {
        get
        {
            if (VirtualEvent.Current is { } c) return c.Now;
            lock (_lock) return _now;
        }
    }

    public LinkStatistics Statistics => _counters.Snapshot() with { Fabric = FabricUsage, FabricRecomputations = FabricRecomputations };

    public void Attach(IActorRef actor, Endpoint endpoint)
    {
        _endpoints.Attach(actor, endpoint);
        lock (_lock)
            if (_actors.TryGetValue(actor, out var state)) state.Endpoint = endpoint;
    }

    public bool Vouches(IActorRef sender, Endpoint claimed) => _endpoints.Vouches(sender, claimed);

    /// <summary>Who hears <see cref="SimulationIdle"/> when the run has no events left.</summary>
    public void NotifyWhenIdle(IActorRef listener) => _idleListener = listener;

    public void Send(IActorRef to, object message, long bytes, TrafficClass traffic, IActorRef sender) =>
        Emit(OutKind.Send, to, message, bytes, traffic, sender, 0);

    public void ScheduleOnce(IActorRef to, object message, double delay, IActorRef sender) =>
        Emit(OutKind.Timer, to, message, 0, TrafficClass.Control, sender, delay);

    public void Kill(IActorRef actor) => Emit(OutKind.Kill, actor, PoisonPill.Instance, 0, TrafficClass.Control, ActorRefs.Nobody, 0);

    public void Occupy(double modelled, double measured) => VirtualEvent.Occupy(modelled);

    public TransferTiming? Transfer => VirtualEvent.Current?.Transfer;

    private void Emit(OutKind kind, IActorRef to, object message, long bytes, TrafficClass traffic, IActorRef sender, double delay)
    {
        if (VirtualEvent.TryEmit(kind, to, message, bytes, traffic, sender, delay)) return;
        lock (_lock)
        {
            if (_started)
                throw new InvalidOperationException($"virtual link: {message.GetType().Name} sent outside an event after the start; under the virtual clock every message must come from a delivered event");
            _seeds.Add(new Outgoing(kind, to, message, bytes, traffic, sender, delay));
        }
    }

    public void Start()
    {
        List<Release> batch;
        lock (_lock)
        {
            if (_started) throw new InvalidOperationException("virtual link started twice");
            _started = true;
            foreach (var item in _seeds) Plan(item);
            _seeds.Clear();
            batch = ReleaseBatch();
        }
        Tell(batch);
    }

    public void Stop()
    {
        lock (_lock)
        {
            _stopped = true;
            _queue.Clear();
        }
    }

    void IEventLink.Enter(VirtualDelivery delivery, double previousEnd) => VirtualEvent.Enter(delivery, previousEnd);

    double IEventLink.Exit(IActorRef self)
    {
        var e = VirtualEvent.Exit();
        if (e.Receiver is ActorState state && e.Slot >= 0)
        {
            // this process's event: no lock unless it is the batch's last
            state.BusyUntil = e.Now;
            _slots[e.Slot] = (e.Seq, e.Outbox, e.Delivery);
            if (Interlocked.Decrement(ref _outstanding) == 0) PlanAndRelease();
        }
        else Complete(self, e.Seq, e.Now, e.Outbox);
        return e.Now;
    }

    /// <summary>
    /// An event is over: <paramref name="actor"/> reached <paramref name="now"/> and sent
    /// <paramref name="outbox"/>. Called on the actor's thread in one process, by the
    /// <see cref="Remoting.ClockEndpoint"/> for actors on other nodes.
    /// </summary>
    internal void Complete(IActorRef actor, long seq, double now, List<Outgoing> outbox)
    {
        lock (_lock)
        {
            StateOf(actor).BusyUntil = now;
            _remoteDone.Add((seq, outbox));
        }
        if (Interlocked.Decrement(ref _outstanding) == 0) PlanAndRelease();
    }

    /// <summary>The batch is over: its outboxes planned in the order of the events that produced them, and the next batch told.</summary>
    private void PlanAndRelease()
    {
        List<Release> batch;
        lock (_lock)
        {
            if (_stopped) return;
            for (int i = 0; i < _slotsUsed; i++)
            {
                if (_slots[i].Items is { } local) _done.Add((_slots[i].Seq, local));
                if (_slots[i].Delivery is { } spare)
                {
                    spare.Clear();
                    _spareDeliveries.Push(spare);
                }
                _slots[i] = default;
            }
            _slotsUsed = 0;
            _done.AddRange(_remoteDone);
            _remoteDone.Clear();
            // the slots come in (time, sequence) order: in sequence order already when the window holds one time
            var done = System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_done);
            for (int i = 1; i < done.Length; i++)
                if (done[i].Seq < done[i - 1].Seq)
                {
                    done.Sort(new BySeq());
                    break;
                }
            foreach (var (_, items) in _done)
            {
                foreach (var item in items) Plan(item);
                items.Clear();
                if (items.Capacity <= 16 && _spareOutboxes.Count < 4096) _spareOutboxes.Push(items);
            }
            _done.Clear();
            batch = ReleaseBatch();
        }
        Tell(batch);
    }

    /// <summary>Turns an outgoing item into queued events, in the deterministic order of the calls. Under the lock.</summary>
    private void Plan(in Outgoing item)
    {
        // Nothing may land inside the window just released (a timer of zero delay, say).
        double floor = _lookahead > 0 ? _windowEnd : _now;
        switch (item.Kind)
        {
            case OutKind.Timer:
                Enqueue(NewEvent(EventKind.Deliver, item.To, item.Message, item.Sender, -1, item.At), Math.Max(floor, item.At));
                return;
            case OutKind.Kill:
                Enqueue(NewEvent(EventKind.Kill, item.To, item.Message, item.Sender, -1, item.At), Math.Max(floor, item.At));
                return;
        }
        if (item.Traffic == TrafficClass.Control)
        {
            Enqueue(NewEvent(EventKind.Deliver, item.To, item.Message, item.Sender, -1, item.At), Math.Max(floor, item.At + _lookahead));
            return;
        }
        var receiver = StateOf(item.To);
        if (EndpointOf(item.Sender) is not { } from || EndpointOf(receiver, item.To) is not { } to)
            throw new InvalidOperationException($"virtual link: {item.Sender.Path} or {item.To.Path} was never attached to an endpoint");
        if (_fabric is { } fabric)
        {
            PlanFlows(fabric, item, from, to);
            return;
        }
        var plan = _network.Plan(from, to, item.Bytes, item.At);
        _counters.Planned(plan, item.Bytes, from, to);
        long id = _nextMessageId++;
        _duplicates.Expect(id, plan.Copies);
        for (int i = 0; i < plan.Copies; i++)
        {
            var e = NewEvent(EventKind.Deliver, item.To, item.Message, item.Sender, id, item.At);
            // found here already: the release takes the receiver's record without looking it up again
            e.TargetState = receiver;
            Enqueue(e, Math.Max(floor, plan.Arrival(i)));
        }
    }

    /// <summary>
    /// On a sharing fabric a message's attempts are flows started at their times: when one ends,
    /// the copy it carried (unless dropped) is delivered its latency later. Drops and latencies are
    /// drawn here, in the deterministic order of planning; the fabric decides only the timing.
    /// </summary>
    private void PlanFlows(Fabric fabric, in Outgoing item, Endpoint from, Endpoint to)
    {
        var plan = _network.PlanAttempts(from, to, item.At);
        _counters.Planned(plan, item.Bytes, from, to);
        long id = _nextMessageId++;
        _duplicates.Expect(id, plan.Copies);
        var path = fabric.Route(from, to);
        var delivery = NewEvent(EventKind.Deliver, item.To, item.Message, item.Sender, id, item.At);
        foreach (var (start, latency) in plan.Attempts)
            // not floored to the window: a flow's end and its delivery come at least a lookahead after its start
            Enqueue(NewEvent(EventKind.FlowStart, item.To, item.Message, item.Sender, id, item.At,
                new FlowAttempt(path, item.Bytes, latency is { } l ? l + path.Latency : null, delivery)), start);
    }

    /// <summary>
    /// A flow starting, or the fabric's wake-up at its next flow end, in time order between
    /// batches: finished flows deliver their copies, and the fabric is woken again at its new next
    /// end (one pending wake-up; an older one is stale). Under the lock.
    /// </summary>
    private void OnFlowEvent(Event e, double time)
    {
        var fabric = _fabric!;
        if (e.Fabric is FlowAttempt first)
        {
            // every flow starting at this instant starts together: one rate recomputation
            var attempts = new List<FlowAttempt> { first };
            while (_queue.TryPeek(out var queued, out var key) && key.Time == time && queued.Fabric is FlowAttempt more)
            {
                _queue.Dequeue();
                attempts.Add(more);
            }
            var flows = fabric.StartAll(time, attempts.Select(a => (a.Path, (double)a.Bytes)).ToList());
            for (int i = 0; i < flows.Count; i++) _flowAttempts[flows[i]] = attempts[i];
        }
        else if (e.Fabric is long wake && wake != _wakes) return;
        foreach (var flow in fabric.FinishDue(time))
        {
            _flowAttempts.Remove(flow, out var done);
            if (done!.Latency is { } latency)
            {
                var d = done.Delivery;
                Enqueue(NewEvent(d.Kind, d.Target, d.Message, d.Sender, d.MessageId, d.Departure, new TransferTiming(flow.Started, time, flow.Uncontended)), time + latency);
            }
        }
        double next = fabric.NextEnd;
        if (double.IsFinite(next)) Enqueue(NewEvent(EventKind.FlowEnd, e.Target, e.Message, e.Sender, -1, e.Departure, ++_wakes), next);
    }

    private void Enqueue(Event e, double time) => _queue.Enqueue(e, new EventKey(time, _seq++));

    /// <summary>The actor's record (created on first sight). Under the lock.</summary>
    private ActorState StateOf(IActorRef actor)
    {
        if (_byReference.TryGetValue(actor, out var state)) return state;
        if (!_actors.TryGetValue(actor, out state)) _actors[actor] = state = new ActorState();
        // refs deserialized afresh for every message would grow the cache without bound
        if (_byReference.Count > 4 * _actors.Count + 1024) _byReference.Clear();
        _byReference[actor] = state;
        return state;
    }

    /// <summary>The endpoint the actor was attached for, null if never. Under the lock.</summary>
    private Endpoint? EndpointOf(IActorRef actor) => EndpointOf(StateOf(actor), actor);

    private Endpoint? EndpointOf(ActorState state, IActorRef actor)
    {
        if (state.Endpoint is null && _endpoints.TryGetValue(actor, out var endpoint)) state.Endpoint = endpoint;
        return state.Endpoint;
    }

    /// <summary>The next batch of deliveries (kills in front of it are carried out first). Under the lock.</summary>
    private List<Release> ReleaseBatch()
    {
        var batch = Interlocked.Exchange(ref _spareBatch, null) ?? [];
        while (!_stopped && _queue.TryPeek(out var head, out var headKey))
        {
            if (head.Kind is EventKind.FlowStart or EventKind.FlowEnd)
            {
                _queue.Dequeue();
                _now = headKey.Time;
                OnFlowEvent(head, headKey.Time);
                continue;
            }
            if (head.Kind == EventKind.Kill)
            {
                _queue.Dequeue();
                _now = headKey.Time;
                _deathTime[head.Target] = headKey.Time;
                batch.Add(new Release(head.Target, head.Message, ActorRefs.Nobody));
                continue;
            }
            _now = headKey.Time;
            _windowEnd = headKey.Time + _lookahead;
            while (_queue.TryPeek(out var e, out var key) && e.Kind != EventKind.Kill
                   && (_lookahead > 0 ? key.Time < _windowEnd : key.Time == headKey.Time))
            {
                _queue.Dequeue();
                if (e.Kind is EventKind.FlowStart or EventKind.FlowEnd)
                {
                    // the fabric moves in time order between batches; nothing it does lands in this window
                    _deferred.Add((e, key));
                    continue;
                }
                if (_deathTime.Count > 0 && (_deathTime.ContainsKey(e.Target) || (_deathTime.TryGetValue(e.Sender, out double died) && e.Departure > died)))
                {
                    _counters.LostToStopped();
                    Recycle(e);
                    continue;
                }
                if (e.MessageId >= 0 && !_duplicates.Accept(e.MessageId))
                {
                    _counters.Duplicate();
                    Recycle(e);
                    continue;
                }
                // An actor's second event of the window follows its first in its mailbox: it starts at
                // max(arrival, the end of the one before), which the actor applies (LinkedActor)
                var target = e.TargetState ?? StateOf(e.Target);
                double start = Math.Max(key.Time, target.BusyUntil);
                _outstanding++;
                if (_slotsUsed == _slots.Length) Array.Resize(ref _slots, 2 * _slots.Length);
                var outbox = _spareOutboxes.TryPop(out var spareOutbox) ? spareOutbox : null;
                var delivery = _spareDeliveries.TryPop(out var spare)
                    ? spare.Reuse(e.Message, key.Seq, start, e.Fabric as TransferTiming, target, outbox, _slotsUsed++)
                    : new VirtualDelivery(e.Message, key.Seq, start, this, e.Fabric as TransferTiming, target, outbox, _slotsUsed++);
                batch.Add(new Release(e.Target, delivery, e.Sender));
                Recycle(e);
            }
            foreach (var (e, key) in _deferred) _queue.Enqueue(e, key); // flow events, for the fabric between batches
            _deferred.Clear();
            if (_outstanding > 0)
            {
                _counters.Events(_outstanding);
                _counters.Batch();
                break;
            }
        }
        if (_outstanding == 0 && _queue.Count == 0 && !_stopped && _idleListener is { } listener)
            batch.Add(new Release(listener, new SimulationIdle(_now), ActorRefs.Nobody));
        return batch;
    }

    private void Tell(List<Release> batch)
    {
        foreach (var r in batch) _route.Tell(r.To, r.Message, r.Sender);
        batch.Clear();
        Volatile.Write(ref _spareBatch, batch);
    }

    /// <summary>An actor's side of the clock: where its last completed event ended, and its endpoint once known.</summary>
    private sealed class ActorState
    {
        public double BusyUntil;
        public Endpoint? Endpoint;
    }

    private readonly struct BySeq : IComparer<(long Seq, List<Outgoing> Items)>
    {
        public int Compare((long Seq, List<Outgoing> Items) a, (long Seq, List<Outgoing> Items) b) => a.Seq.CompareTo(b.Seq);
    }

    /// <summary>
    /// An event's place in the queue: arrival time, then sequence number (the order of a (double,
    /// long) tuple, compared without the tuple's generic comparers, which showed in the profile).
    /// </summary>
    private readonly record struct EventKey(double Time, long Seq) : IComparable<EventKey>
    {
        public int CompareTo(EventKey other)
        {
            int byTime = Time.CompareTo(other.Time);
            return byTime != 0 ? byTime : Seq.CompareTo(other.Seq);
        }
    }

    private enum EventKind { Deliver, Kill, FlowStart, FlowEnd }

    /// <summary>
    /// A queued event. A delivery without fabric timing goes back to <see cref="_spareEvents"/> once
    /// released or dropped (one allocation less per message); the fabric's events are left to the collector.
    /// </summary>
    private sealed class Event
    {
        public EventKind Kind;
        public IActorRef Target = null!, Sender = null!;
        public object Message = null!;
        public long MessageId;
        public double Departure;
        public object? Fabric;

        /// <summary>The target's record when planning found it (a network delivery), else null.</summary>
        public ActorState? TargetState;
    }

    /// <summary>A queued event, recycled when one is spare. Under the lock.</summary>
    private Event NewEvent(EventKind kind, IActorRef target, object message, IActorRef sender, long messageId, double departure, object? fabric = null)
    {
        var e = _spareEvents.TryPop(out var spare) ? spare : new Event();
        (e.Kind, e.Target, e.Message, e.Sender, e.MessageId, e.Departure, e.Fabric, e.TargetState) = (kind, target, message, sender, messageId, departure, fabric, null);
        return e;
    }

    /// <summary>A delivery released or dropped: nothing refers to it any more. Under the lock.</summary>
    private void Recycle(Event e)
    {
        if (e.Fabric is not null || _spareEvents.Count >= 65536) return;
        (e.Target, e.Message, e.Sender, e.TargetState) = (null!, null!, null!, null);
        _spareEvents.Push(e);
    }

    /// <summary>One attempt of a message on the fabric: its path and size, and when its copy arrives after the last byte (null: dropped).</summary>
    private sealed record FlowAttempt(FabricPath Path, long Bytes, double? Latency, Event Delivery);

    private readonly record struct Release(IActorRef To, object Message, IActorRef Sender);
}

/// <summary>
/// The virtual event an actor is handling on this thread: its time and what it has sent so far.
/// One object per thread, reused from event to event (its outbox list is the delivery's or new).
/// </summary>
internal sealed class VirtualEvent
{
    [ThreadStatic] private static VirtualEvent? _current, _spare;

    public long Seq { get; private set; }
    public int Slot { get; private set; }
    public List<Outgoing> Outbox { get; private set; } = null!;
    public double Now;

    /// <summary>The scheduler's record of the receiving actor (what <see cref="VirtualDelivery.Receiver"/> carried), handed back with the outbox.</summary>
    public object? Receiver { get; private set; }

    /// <summary>How the message being handled crossed a sharing fabric (null otherwise).</summary>
    public TransferTiming? Transfer { get; private set; }

    /// <summary>The delivery that began the event.</summary>
    public VirtualDelivery? Delivery { get; private set; }

    public static VirtualEvent? Current => _current;

    public static void Enter(VirtualDelivery delivery, double previousEnd)
    {
        var e = _spare ?? new VirtualEvent();
        _spare = null;
        e.Seq = delivery.Seq;
        e.Slot = delivery.Slot;
        e.Now = Math.Max(delivery.Start, previousEnd);
        e.Outbox = delivery.Outbox ?? [];
        e.Receiver = delivery.Receiver;
        e.Transfer = delivery.Transfer;
        e.Delivery = delivery;
        _current = e;
    }

    /// <summary>Ends the thread's event: what it was (its shell is kept for the thread's next event).</summary>
    public static (long Seq, double Now, List<Outgoing> Outbox, object? Receiver, int Slot, VirtualDelivery? Delivery) Exit()
    {
        var e = _current ?? throw new InvalidOperationException("virtual link: an event ended that never began");
        _current = null;
        var ended = (e.Seq, e.Now, e.Outbox, e.Receiver, e.Slot, e.Delivery);
        e.Outbox = null!;
        e.Receiver = null;
        e.Transfer = null;
        e.Delivery = null;
        _spare = e;
        return ended;
    }

    public static void Occupy(double modelled)
    {
        var e = _current ?? throw new InvalidOperationException("virtual link: Occupy outside an event");
        e.Now += Math.Max(0, modelled);
    }

    /// <summary>Adds the item to the current event's outbox, departing <paramref name="delay"/> after the event's time; false outside an event.</summary>
    public static bool TryEmit(OutKind kind, IActorRef to, object message, long bytes, TrafficClass traffic, IActorRef sender, double delay)
    {
        if (_current is not { } e) return false;
        e.Outbox.Add(new Outgoing(kind, to, message, bytes, traffic, sender, e.Now + delay));
        return true;
    }
}
