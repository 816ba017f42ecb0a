using ActorTrain.Core.Simulation;
using Akka.Actor;

namespace ActorTrain.Cluster.Transport;

public enum TrafficClass
{
    WorkerToShard,
    ShardToWorker,
    /// <summary>Coordinator traffic (start, reports, snapshots): never lost, not counted, the link's minimum latency.</summary>
    Control,
    /// <summary>All-reduce chunks between workers.</summary>
    WorkerToWorker,
}

/// <summary>
/// The link layer and the clock of a run (DESIGN.md section 3). Actors call Send(to, message, bytes)
/// and never Tell each other directly for run traffic, so latency, bandwidth, drops and the virtual
/// clock sit behind this interface without touching the actors' logic. Two implementations:
/// <see cref="WallClockLink"/> (delays are real) and <see cref="VirtualLink"/> (a discrete-event
/// scheduler; time is simulated and runs are deterministic).
/// </summary>
public interface ILink
{
    /// <summary>True when time is simulated: durations come from models, nothing sleeps.</summary>
    bool IsVirtual => false;

    /// <summary>Seconds since the run began, on this link's clock, as the calling actor sees it.</summary>
    double Now => 0;

    /// <summary>The wall-clock instant run time 0 stands for: spans are placed at Epoch + run seconds.</summary>
    DateTimeOffset Epoch => DateTimeOffset.UnixEpoch;

    void Send(IActorRef to, object message, long bytes, TrafficClass traffic, IActorRef sender);

    /// <summary>
    /// The calling actor spends <paramref name="modelled"/> seconds on work that really took
    /// <paramref name="measured"/>: the virtual clock moves the actor's time on; the wall clock
    /// sleeps the difference when the model is slower than the machine.
    /// </summary>
    void Occupy(double modelled, double measured) { }

    /// <summary>Delivers <paramref name="message"/> to <paramref name="to"/> after <paramref name="delay"/> seconds on this clock (timers, fault schedules).</summary>
    void ScheduleOnce(IActorRef to, object message, double delay, IActorRef sender);

    /// <summary>Names the network endpoint an actor stands for (a restarted worker is attached again).</summary>
    void Attach(IActorRef actor, Endpoint endpoint) { }

    /// <summary>
    /// Whether a message that says it comes from <paramref name="claimed"/> (a push naming its
    /// worker, a slice naming its shard) really comes from the actor attached for it: a peer on
    /// another node, or a stranger, cannot speak for an endpoint it is not. A link with nothing
    /// attached (a bare link in a unit test) vouches for everyone.
    /// </summary>
    bool Vouches(IActorRef sender, Endpoint claimed) => true;

    /// <summary>Stops the actor now, as a crash would: what is addressed to it from now on is lost.</summary>
    void Kill(IActorRef actor) => actor.Tell(PoisonPill.Instance);

    /// <summary>How the message being handled crossed a sharing fabric: when its flow ran and what it waited for bandwidth (virtual clock only).</summary>
    TransferTiming? Transfer => null;

    /// <summary>The topology is built and its first messages sent: begin delivering.</summary>
    void Start() { }

    /// <summary>The run is over: deliver nothing more.</summary>
    void Stop() { }

    LinkStatistics Statistics => new();
}

/// <summary>Modelled time on an actor's clock.</summary>
public static class LinkTime
{
    /// <summary>The calling actor spends <paramref name="seconds"/> of modelled work (codecs, waiting for its backward pass); nothing when none.</summary>
    public static void Spend(this ILink link, double seconds)
    {
        if (seconds > 0 && link.IsVirtual) link.Occupy(seconds, 0);
    }

    /// <summary>The calling actor waits, busy, until <paramref name="time"/> on its clock (nothing when that has passed).</summary>
    public static void WaitUntil(this ILink link, double time) => link.Spend(time - link.Now);
}

/// <summary>
/// How a link hands a message to its target when the time comes: a plain Tell in one process;
/// across nodes, to the node's <see cref="Remoting.Gateway"/> when the target lives elsewhere.
/// </summary>
public interface IRoute
{
    void Tell(IActorRef to, object message, IActorRef sender);
}

/// <summary>Tells directly: one process, or Akka.Remote's own path.</summary>
public sealed class DirectRoute : IRoute
{
    public static readonly DirectRoute Instance = new();

    public void Tell(IActorRef to, object message, IActorRef sender) => to.Tell(message, sender);
}

/// <summary>What the link did over a run (retransmissions and duplicates only happen with drop > 0).</summary>
public sealed record LinkStatistics(
    long Messages = 0,
    long WireBytes = 0,
    long Retransmissions = 0,
    long DuplicatesDiscarded = 0,
    long Lost = 0,
    long LostToStoppedActors = 0,
    long Events = 0,
    string? FirstLost = null,
    IReadOnlyList<ResourceUsage>? Fabric = null,
    long FabricRecomputations = 0,
    long Batches = 0);

/// <summary>Thread-safe tallies behind <see cref="LinkStatistics"/>.</summary>
internal sealed class LinkCounters
{
    private long _messages, _bytes, _retransmissions, _duplicates, _lost, _lostToStopped, _events, _batches;
    private string? _firstLost;

    public void Planned(TransferPlan plan, long bytes, Endpoint from, Endpoint to) =>
        Planned(plan.Departure, plan.Attempts, plan.Lost, bytes, from, to);

    public void Planned(AttemptPlan plan, long bytes, Endpoint from, Endpoint to) =>
        Planned(plan.Departure, plan.Attempts.Count, plan.Copies == 0, bytes, from, to);

    private void Planned(double departure, int attempts, bool lost, long bytes, Endpoint from, Endpoint to)
    {
        Interlocked.Increment(ref _messages);
        Interlocked.Add(ref _bytes, bytes * attempts);
        if (attempts > 1) Interlocked.Add(ref _retransmissions, attempts - 1);
        if (lost && Interlocked.Increment(ref _lost) == 1)
            _firstLost = FormattableString.Invariant($"{from} -> {to} at {Quantity.FormatSeconds(departure)}, after {attempts} attempts");
    }

    public void Duplicate() => Interlocked.Increment(ref _duplicates);
    public void LostToStopped() => Interlocked.Increment(ref _lostToStopped);
    public void Events(int count) => Interlocked.Add(ref _events, count);
    public void Batch() => Interlocked.Increment(ref _batches);

    public LinkStatistics Snapshot() => new(Interlocked.Read(ref _messages), Interlocked.Read(ref _bytes), Interlocked.Read(ref _retransmissions),
        Interlocked.Read(ref _duplicates), Interlocked.Read(ref _lost), Interlocked.Read(ref _lostToStopped), Interlocked.Read(ref _events),
        Volatile.Read(ref _firstLost), Batches: Interlocked.Read(ref _batches));
}

/// <summary>
/// The receiving side's duplicate filter: a message planned for n deliveries (its first copy and
/// retransmitted duplicates) is passed on once; the entry is forgotten after the last copy.
/// </summary>
internal sealed class DuplicateFilter
{
    private readonly Dictionary<long, (int Left, bool Seen)> _pending = new();

    public void Expect(long id, int copies)
    {
        if (copies > 1) _pending[id] = (copies, false);
    }

    /// <summary>True for the first copy of a message to arrive, false for its duplicates.</summary>
    public bool Accept(long id)
    {
        if (_pending.Count == 0 || !_pending.TryGetValue(id, out var entry)) return true;
        if (entry.Left == 1) _pending.Remove(id);
        else _pending[id] = (entry.Left - 1, true);
        return !entry.Seen;
    }
}

/// <summary>A link's attachments: which actor stands for which endpoint (shared by every link that tracks them).</summary>
internal sealed class Attachments
{
    private readonly System.Collections.Concurrent.ConcurrentDictionary<IActorRef, Endpoint> _endpoints = new();

    public void Attach(IActorRef actor, Endpoint endpoint) => _endpoints[actor] = endpoint;

    public bool TryGetValue(IActorRef actor, out Endpoint endpoint) => _endpoints.TryGetValue(actor, out endpoint);

    public bool Vouches(IActorRef sender, Endpoint claimed) => _endpoints.IsEmpty || (_endpoints.TryGetValue(sender, out var e) && e == claimed);
}
