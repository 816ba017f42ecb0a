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
public sealed class Gateway : ReceiveActor
{
    /// <summary>Local only: deliver <paramref name="Message"/> to <paramref name="To"/> on another node.</summary>
    public sealed record Outbound(IActorRef To, object Message, IActorRef Sender);

    /// <summary>Local only: the (virtual-clock) link whose events arriving deliveries belong to (null: none, the run is over).</summary>
    public sealed record UseEventLink(ILink? Link);

    private readonly WireSerializer _serializer;
    private readonly int _chunkSize;
    private readonly int _maxMessageSize;
    private readonly Dictionary<Address, IActorRef> _peers = new();
    private readonly Dictionary<(Address, long), Assembly> _assembling = new();
    private readonly ILoggingAdapter _log = Context.GetLogger();
    private IEventLink? _events;
    private long _nextTransfer;

    public Gateway(int chunkSize, int maxMessageSize)
    {
        _serializer = new WireSerializer((ExtendedActorSystem)Context.System);
        _chunkSize = chunkSize;
        _maxMessageSize = maxMessageSize;
        Receive<Outbound>(Send);
        Receive<Frame>(OnFrame);
        Receive<UseEventLink>(u => _events = u.Link as IEventLink);
    }

    public static Props Props(int chunkSize, int maxMessageSize) => Akka.Actor.Props.Create(() => new Gateway(chunkSize, maxMessageSize));

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

    private void OnFrame(Frame frame)
    {
        if (frame.Count == 1)
        {
            Deliver(frame.Data.Span);
            return;
        }
        var key = (Sender.Path.Address, frame.Transfer);
        if (!_assembling.TryGetValue(key, out var assembly))
        {
            if ((long)frame.Count * _chunkSize > _maxMessageSize)
            {
                _log.Error("gateway: a message of {0} chunks from {1} would exceed the maximum message size of {2} bytes (actortrain.cluster.max-message-size); dropped",
                    frame.Count, Sender.Path.Address, _maxMessageSize);
                return;
            }
            _assembling[key] = assembly = new Assembly(frame.Count, frame.Count * _chunkSize);
        }
        if (frame.Index != assembly.Next || frame.Count != assembly.Count)
        {
            _log.Error("gateway: chunk {0}/{1} of transfer {2} from {3} arrived out of order (expected {4}/{5}); the message is dropped",
                frame.Index, frame.Count, frame.Transfer, Sender.Path.Address, assembly.Next, assembly.Count);
            _assembling.Remove(key);
            assembly.Dispose();
            return;
        }
        if (!assembly.Append(frame.Data.Span))
        {
            _log.Error("gateway: transfer {0} from {1} is larger than its {2} chunks of {3} bytes allow; dropped", frame.Transfer, Sender.Path.Address,
                assembly.Count, _chunkSize);
            _assembling.Remove(key);
            assembly.Dispose();
            return;
        }
        if (++assembly.Next < assembly.Count) return;
        _assembling.Remove(key);
        try
        {
            Deliver(assembly.Written);
        }
        finally
        {
            assembly.Dispose();
        }
    }

    private void Deliver(ReadOnlySpan<byte> envelope)
    {
        IActorRef to, sender;
        object message;
        try
        {
            var r = new WireReader(envelope, _maxMessageSize);
            var provider = ((ExtendedActorSystem)Context.System).Provider;
            to = provider.ResolveActorRef(r.String("target"));
            string senderPath = r.String("sender");
            sender = senderPath.Length == 0 ? ActorRefs.Nobody : provider.ResolveActorRef(senderPath);
            message = _serializer.ReadNested(ref r);
            r.End("envelope");
        }
        catch (WireFormatException error)
        {
            _log.Error(error, "gateway: a malformed message from another node was dropped");
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

    /// <summary>A message being put together: a pooled buffer of count x chunk-size bytes, filled in order.</summary>
    private sealed class Assembly(int count, int capacity) : IDisposable
    {
        private byte[] _buffer = System.Buffers.ArrayPool<byte>.Shared.Rent(capacity);
        private int _length;
        public readonly int Count = count;
        public int Next;

        public ReadOnlySpan<byte> Written => _buffer.AsSpan(0, _length);

        public bool Append(ReadOnlySpan<byte> data)
        {
            if (_length + data.Length > _buffer.Length) return false;
            data.CopyTo(_buffer.AsSpan(_length));
            _length += data.Length;
            return true;
        }

        public void Dispose()
        {
            System.Buffers.ArrayPool<byte>.Shared.Return(_buffer);
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
