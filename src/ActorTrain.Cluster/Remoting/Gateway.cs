using ActorTrain.Cluster.Transport;
using Akka.Actor;
using Akka.Event;
using Akka.Serialization;

namespace ActorTrain.Cluster.Remoting;

/// <summary>
/// A node's door for run traffic (one per node, at /user/gateway). Everything a link delivers to
/// an actor on another node goes through here: the message is written once in the
/// <see cref="WireSerializer"/> format as an envelope (target, sender, manifest, body), cut into
/// <see cref="Frame"/>s of at most the chunk size (Akka.Remote drops any message over its
/// maximum-frame-size, 128000 bytes by default, with nothing but a log line), and sent to the
/// target node's gateway, which puts the envelope together again and tells the target.
///
/// Every message between two nodes passes the same two gateways, so what one node sends another
/// arrives in the order it was sent, chunked or not (a chunked push is never overtaken by the
/// small pull behind it). Under the virtual clock a scheduled delivery travels as a
/// <see cref="RemoteEvent"/> and is handed to the target as an event of this node's
/// <see cref="RemoteClockLink"/>.
/// </summary>
public sealed class Gateway : ReceiveActor, IWithTimers
{
    /// <summary>Local only: deliver <paramref name="Message"/> to <paramref name="To"/> on another node.</summary>
    public sealed record Outbound(IActorRef To, object Message, IActorRef Sender);

    /// <summary>Local only: the (virtual-clock) link whose events arriving deliveries belong to (null: none, the run is over).</summary>
    public sealed record UseEventLink(ILink? Link);

    /// <summary>
    /// Local only: from now on take frames from the nodes of the run this node serves and no other
    /// member. Any process that reaches a seed can join a cluster without TLS; once a member, its
    /// forged virtual-clock events would run inside the run's actors and end as real outboxes.
    /// </summary>
    public sealed record HearOnly(IReadOnlyCollection<Address> Nodes);

    private readonly WireSerializer _serializer;
    private readonly int _chunkSize;
    private readonly int _maxMessageSize;
    private readonly Dictionary<Address, IActorRef> _peers = new();
    // at most one message being put together per sending node: a node's frames arrive in order, so
    // a new transfer means the last one will never be finished
    private readonly Dictionary<Address, Assembly> _assembling = new();
    private readonly Func<Address, bool> _member;
    private readonly HashSet<Address> _refused = [];
    // the run's nodes (HearOnly); null: every member
    private HashSet<Address>? _heard;
    private readonly ILoggingAdapter _log = Context.GetLogger();
    private IEventLink? _events;
    private long _nextTransfer;

    /// <summary>How long a message being put together may wait for its next chunk before it is dropped.</summary>
    public static readonly TimeSpan ReassemblyTimeout = TimeSpan.FromSeconds(30);

    private sealed class Sweep
    {
        public static readonly Sweep Instance = new();
    }

    /// <param name="member">Whether a node may send here (a current member of the cluster); null: every node.</param>
    public Gateway(int chunkSize, int maxMessageSize, Func<Address, bool>? member = null)
    {
        _serializer = new WireSerializer((ExtendedActorSystem)Context.System);
        _chunkSize = chunkSize;
        _maxMessageSize = maxMessageSize;
        _member = member ?? (_ => true);
        Receive<Outbound>(Send);
        Receive<Frame>(OnFrame);
        Receive<UseEventLink>(u => _events = u.Link as IEventLink);
        Receive<HearOnly>(h => _heard = [.. h.Nodes]);
        Receive<Sweep>(_ => Expire());
    }

    public ITimerScheduler Timers { get; set; } = null!;

    public static Props Props(int chunkSize, int maxMessageSize, Func<Address, bool>? member = null) =>
        Akka.Actor.Props.Create(() => new Gateway(chunkSize, maxMessageSize, member));

    protected override void PreStart() => Timers.StartPeriodicTimer("sweep", Sweep.Instance, ReassemblyTimeout / 3);

    protected override void PostStop()
    {
        foreach (var assembly in _assembling.Values) assembly.Dispose();
        _assembling.Clear();
    }

    /// <summary>Drops messages whose next chunk has not come for <see cref="ReassemblyTimeout"/>: their memory is not held for ever.</summary>
    private void Expire()
    {
        foreach (var (from, assembly) in _assembling.Where(a => a.Value.Idle > ReassemblyTimeout).ToList())
        {
            _log.Warning("gateway: a message of {0} chunks from {1} stalled at chunk {2} for {3:0} s; dropped", assembly.Count, from, assembly.Next,
                assembly.Idle.TotalSeconds);
            Drop(from);
        }
    }

    private void Drop(Address from)
    {
        if (_assembling.Remove(from, out var assembly)) assembly.Dispose();
    }

    /// <summary>The gateway of the node at <paramref name="address"/>.</summary>
    public static ActorPath PathAt(Address address) => new RootActorPath(address) / "user" / "gateway";

    private void Send(Outbound outbound)
    {
        var message = outbound.Message is VirtualDelivery d ? new RemoteEvent(d.Message, d.Seq, d.Start) : outbound.Message;
        using var w = new WireWriter(1024);
        try
        {
            w.String(Serialization.SerializedActorPath(outbound.To));
            w.String(outbound.Sender.IsNobody() ? "" : Serialization.SerializedActorPath(outbound.Sender));
            _serializer.WriteNested(w, message);
        }
        catch (WireFormatException e)
        {
            _log.Error(e, "gateway: cannot send {0} to {1}", message.GetType().Name, outbound.To.Path);
            return;
        }
        var peer = Peer(outbound.To.Path.Address);
        // One copy of the envelope; the frames are views of it (never written again, as messages must be).
        var bytes = w.Written.ToArray();
        int count = Math.Max(1, (bytes.Length + _chunkSize - 1) / _chunkSize);
        long transfer = _nextTransfer++;
        for (int i = 0; i < count; i++)
        {
            int from = i * _chunkSize;
            peer.Tell(new Frame(transfer, i, count, bytes.AsMemory(from, Math.Min(_chunkSize, bytes.Length - from))), Self);
        }
    }

    private IActorRef Peer(Address address)
    {
        if (!_peers.TryGetValue(address, out var peer))
            _peers[address] = peer = ((ExtendedActorSystem)Context.System).Provider.ResolveActorRef(PathAt(address));
        return peer;
    }

    /// <summary>
    /// Whatever a frame does, the gateway keeps its state: a restart would forget the run's event
    /// link (the first build restarted on one malformed 74-byte frame, then hung). Every known bad
    /// input is handled below; this is the net under them.
    /// </summary>
    protected override bool AroundReceive(Receive receive, object message)
    {
        try
        {
            return base.AroundReceive(receive, message);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            _log.Error("gateway: dropped a {0} from {1} that failed ({2}: {3}); the gateway goes on", message.GetType().Name, Sender.Path, e.GetType().Name, e.Message);
            if (message is Frame) Drop(Sender.Path.Address);
            return true;
        }
    }

    private void OnFrame(Frame frame)
    {
        var from = Sender.Path.Address;
        if (!_member(from) || _heard is { } heard && !heard.Contains(from))
        {
            // a stranger: one line per node, then silence (it may send much)
            if (_refused.Add(from))
                _log.Warning(_member(from) ? "gateway: frames from {0}, a member that is not a node of this run, are dropped"
                    : "gateway: frames from {0}, which is not a member of this cluster, are dropped", from);
            return;
        }
        if (frame.Count == 1)
        {
            if (_assembling.ContainsKey(from)) Abandon(from, frame);
            Deliver(frame.Data.Span, from);
            return;
        }
        if (!_assembling.TryGetValue(from, out var assembly) || assembly.Transfer != frame.Transfer)
        {
            if (assembly is not null) Abandon(from, frame);
            if (frame.Index != 0)
            {
                _log.Error("gateway: chunk {0}/{1} of transfer {2} from {3} came without its predecessors; dropped", frame.Index, frame.Count, frame.Transfer, from);
                return;
            }
            if ((long)frame.Count * _chunkSize > _maxMessageSize)
            {
                _log.Error("gateway: a message of {0} chunks from {1} would exceed the maximum message size of {2} bytes (actortrain.cluster.max-message-size); dropped",
                    frame.Count, from, _maxMessageSize);
                return;
            }
            _assembling[from] = assembly = new Assembly(frame.Transfer, frame.Count, frame.Count * _chunkSize);
        }
        if (frame.Index != assembly.Next || frame.Count != assembly.Count)
        {
            _log.Error("gateway: chunk {0}/{1} of transfer {2} from {3} arrived out of order (expected {4}/{5}); the message is dropped",
                frame.Index, frame.Count, frame.Transfer, from, assembly.Next, assembly.Count);
            Drop(from);
            return;
        }
        if (!assembly.Append(frame.Data.Span))
        {
            _log.Error("gateway: transfer {0} from {1} is larger than its {2} chunks of {3} bytes allow; dropped", frame.Transfer, from,
                assembly.Count, _chunkSize);
            Drop(from);
            return;
        }
        if (++assembly.Next < assembly.Count) return;
        _assembling.Remove(from);
        try
        {
            Deliver(assembly.Written, from);
        }
        finally
        {
            assembly.Dispose();
        }
    }

    private void Abandon(Address from, Frame next)
    {
        var old = _assembling[from];
        _log.Error("gateway: transfer {0} from {1} stopped at chunk {2}/{3} when transfer {4} began; dropped", old.Transfer, from, old.Next, old.Count, next.Transfer);
        Drop(from);
    }

    private void Deliver(ReadOnlySpan<byte> envelope, Address from)
    {
        IActorRef to, sender;
        object message;
        try
        {
            var r = new WireReader(envelope, _maxMessageSize);
            var system = (ExtendedActorSystem)Context.System;
            to = WireSerializer.Resolve(system, r.String("target"));
            sender = WireSerializer.Resolve(system, r.String("sender"));
            message = _serializer.ReadNested(ref r);
            r.End("envelope");
        }
        catch (WireFormatException error)
        {
            _log.Error("gateway: a malformed message from {0} was dropped: {1}", from, error.Message);
            return;
        }
        if (message is RemoteEvent e)
        {
            if (_events is not { } events)
            {
                _log.Warning("gateway: a virtual-clock event for {0} arrived with no run hosted here; dropped", to.Path);
                return;
            }
            message = new VirtualDelivery(e.Message, e.Seq, e.Start, events);
        }
        to.Tell(message, sender);
    }

    /// <summary>
    /// A message being put together, filled in order into a pooled buffer that grows with the bytes
    /// received (doubling, up to count x chunk-size): a first chunk that claims a huge count
    /// reserves nothing it has not sent.
    /// </summary>
    private sealed class Assembly(long transfer, int count, int capacity) : IDisposable
    {
        private byte[] _buffer = [];
        private int _length;
        private long _touched = System.Diagnostics.Stopwatch.GetTimestamp();
        public readonly long Transfer = transfer;
        public readonly int Count = count;
        public int Next;

        public ReadOnlySpan<byte> Written => _buffer.AsSpan(0, _length);

        public TimeSpan Idle => System.Diagnostics.Stopwatch.GetElapsedTime(_touched);

        public bool Append(ReadOnlySpan<byte> data)
        {
            if ((long)_length + data.Length > capacity) return false;
            if (_length + data.Length > _buffer.Length)
            {
                var larger = System.Buffers.ArrayPool<byte>.Shared.Rent((int)Math.Min(capacity, Math.Max(2L * _buffer.Length, _length + data.Length)));
                Written.CopyTo(larger);
                if (_buffer.Length > 0) System.Buffers.ArrayPool<byte>.Shared.Return(_buffer);
                _buffer = larger;
            }
            data.CopyTo(_buffer.AsSpan(_length));
            _length += data.Length;
            _touched = System.Diagnostics.Stopwatch.GetTimestamp();
            return true;
        }

        public void Dispose()
        {
            if (_buffer.Length > 0) System.Buffers.ArrayPool<byte>.Shared.Return(_buffer);
            _buffer = [];
        }
    }
}

/// <summary>Routes a link's deliveries: actors of this node directly, the rest through the gateway.</summary>
public sealed class GatewayRoute(IActorRef gateway, Address local) : IRoute
{
    public void Tell(IActorRef to, object message, IActorRef sender)
    {
        var address = to.Path.Address;
        if (!address.HasGlobalScope || address == local) to.Tell(message, sender);
        else gateway.Tell(new Gateway.Outbound(to, message, sender));
    }
}
