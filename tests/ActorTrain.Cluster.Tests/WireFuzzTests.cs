using System.Buffers.Binary;
using System.Diagnostics;
using System.Text;
using ActorTrain.Cluster.Protocol;
using ActorTrain.Cluster.Remoting;
using ActorTrain.Cluster.Transport;
using Akka.Actor;
using Akka.Configuration;
using Akka.TestKit.Xunit2;

namespace ActorTrain.Cluster.Tests;

/// <summary>
/// What a hostile or broken peer can send: 12,000 mutated encodings of every kind of message
/// (bit flips, truncations, extensions, huge length prefixes, random bytes) through the wire
/// serializer. Each is read or refused with a <see cref="WireFormatException"/>, nothing else, and
/// reading one never allocates more than a small multiple of its size.
/// </summary>
public class WireFuzzTests() : TestKit(WireSerializer.Bindings)
{
    private WireSerializer Serializer => (WireSerializer)Sys.Serialization.FindSerializerForType(typeof(PushGradient));

    private static readonly ActivityContext Trace = new(ActivityTraceId.CreateRandom(), ActivitySpanId.CreateRandom(), ActivityTraceFlags.Recorded);

    private List<(byte[] Bytes, string Manifest)> Corpus()
    {
        var s = Serializer;
        var counters = new ShardCounters(1, 2, 3, 4, 5, 6, 7, 8, 9, 0.5, new long[ShardCounters.HistogramBuckets], 10, 11, 12, 0.25);
        var part = new ShardCheckpoint(0, 100, 100, [1f, 2f, -3f], 100, [[0.5f, 0.25f, 0f]], [100, 99], counters);
        object[] messages =
        [
            new Begin(true, Trace), new PullParameters(3, 77, true, Trace), new Begin(false, Trace, [TestActor, TestActor]),
            new PeerChunk(1, 12, 3, 2, 256f, 32, false, Enumerable.Range(0, 120).Select(i => (byte)i).ToArray(), 0.5, Trace),
            new ReplicaDigest(3, 40, 0xDEADBEEF01234567),
            new PushGradient(2, 41, 40, 1024f, false, 32, Enumerable.Range(0, 300).Select(i => (byte)i).ToArray(), 1.25, Trace),
            new PushGradient(2, 41, 40, 1f, false, 32, new byte[40], 1.25, Trace) { Factors = [1f, 2f, 3f] },
            new ParameterSlice(1, 9, new byte[200], true, 8, 0.5, Trace),
            new ShardSnapshot(1, 50, new[] { 1f, -2.5f }, counters, true),
            new WorkerStepReport(1, 2, 0.5f, 32, 1000, 0.1, 0.2, 0.3, 4, false, 8f, 3, 0.05),
            new WorkerLost(3), part,
            new EventDone(TestActor, 12, 0.75, [new Outgoing(OutKind.Send, TestActor, new PullParameters(1, 2), 16, TrafficClass.WorkerToShard, TestActor, 0.5)]),
            new HostRun("name = x", "worker", [1, 3], TestActor, [TestActor], null, 7, new Actors.RunCheckpoint(100, 0.5, [part])),
            new RemoteEvent(new RemoteEvent(new Begin(), 1, 0.5), 5, 0.125),
            new Roster(TestActor, [TestActor], [TestActor]),
            new Frame(9, 1, 3, new byte[64]),
            new Actors.PipelineBatch(4, [1f, 2f, 3f, 4f], [0, 1], 2), new Actors.StageActivations(0, 4, 1, [0.5f, -1f], [1], 2),
            new Actors.StageGradients(1, 4, 0, [0.25f, 2f]), new Actors.StageReplicaGradient(1, 2, 4, [1f, 2f, 3f], 2),
            new Actors.StageReplicaWeights(1, 4, [1f, 2f, 3f]), new Actors.StageDone(1, 4, float.NaN, 0.5, 0.25, 3, false),
            new Actors.StageChecked(1, 4, true), new Actors.StageVerdict(4, false, 512f),
        ];
        return messages.Select(m => (s.ToBinary(m), s.Manifest(m))).ToList();
    }

    [Fact]
    public void Twelve_thousand_mutated_messages_are_read_or_refused_with_a_wire_format_error_only()
    {
        var serializer = Serializer;
        var corpus = Corpus();
        var rng = new Core.Rng(2026);
        int refused = 0;
        for (int trial = 0; trial < 12_000; trial++)
        {
            var (good, manifest) = corpus[trial % corpus.Count];
            byte[] bytes = Mutate(good, rng, trial);
            long before = GC.GetAllocatedBytesForCurrentThread();
            try
            {
                var message = serializer.FromBinary(bytes, manifest);
                (message as PushGradient)?.Release();
            }
            catch (WireFormatException)
            {
                refused++;
            }
            catch (Exception e)
            {
                Assert.Fail($"trial {trial} ({manifest}, {bytes.Length} bytes): {e.GetType().Name}: {e.Message}");
            }
            long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
            Assert.True(allocated < 64 * 1024 + 16L * bytes.Length, $"trial {trial} ({manifest}): reading {bytes.Length} bytes allocated {allocated}");
        }
        // many mutations only change a number (a weight, a clock) and read fine; most must still be refused
        Assert.True(refused > 6_000, $"only {refused} of 12,000 mutations were refused: the mutations are too mild to test anything");
    }

    private static byte[] Mutate(byte[] good, Core.Rng rng, int trial)
    {
        int Next(int n) => (int)(rng.NextDouble() * n);
        byte[] bytes = (byte[])good.Clone();
        switch (trial % 6)
        {
            case 0: // bit flips
                for (int f = 0, n = 1 + Next(8); f < n && bytes.Length > 0; f++) bytes[Next(bytes.Length)] ^= (byte)(1 << Next(8));
                return bytes;
            case 1: // truncated
                return bytes[..Next(bytes.Length)];
            case 2: // extra bytes
                return [.. bytes, .. Enumerable.Range(0, 1 + Next(64)).Select(_ => (byte)Next(256))];
            case 3: // a huge, negative or off-by-one length prefix anywhere
            {
                if (bytes.Length < 4) return bytes;
                int at = Next(bytes.Length - 3);
                int[] lengths = [int.MaxValue, int.MinValue, -1, 0x7FFF_FFF0, bytes.Length, bytes.Length - at];
                BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(at), lengths[Next(lengths.Length)]);
                return bytes;
            }
            case 4: // random bytes of about the same size
                return Enumerable.Range(0, Next(2 * good.Length + 1)).Select(_ => (byte)Next(256)).ToArray();
            default: // a random run of bytes overwritten
            {
                int at = Next(bytes.Length), n = Math.Min(bytes.Length - at, 1 + Next(16));
                for (int i = 0; i < n; i++) bytes[at + i] = (byte)Next(256);
                return bytes;
            }
        }
    }

    /// <summary>A message nested 8,000 levels deep (208 KB once killed a node by overflowing its stack) is refused at level 4.</summary>
    [Fact]
    public void Deeply_nested_messages_are_refused_before_they_are_read()
    {
        var serializer = Serializer;
        byte[] inner = serializer.ToBinary(new Begin());
        string innerManifest = serializer.Manifest(new Begin());
        for (int level = 0; level < 8000; level++)
        {
            // an event: seq, start, then the nested message as manifest, length, body
            using var w = new MemoryStream();
            w.Write(new byte[16]);
            byte[] manifest = Encoding.UTF8.GetBytes(innerManifest);
            w.Write(BitConverter.GetBytes(manifest.Length));
            w.Write(manifest);
            w.Write(BitConverter.GetBytes(inner.Length));
            w.Write(inner);
            inner = w.ToArray();
            innerManifest = "EV";
        }
        var error = Assert.Throws<WireFormatException>(() => serializer.FromBinary(inner, "EV"));
        Assert.Contains($"nested more than {WireSerializer.MaxNesting} deep", error.Message);
        // the legitimate depth still reads
        Assert.IsType<RemoteEvent>(serializer.FromBinary(serializer.ToBinary(new RemoteEvent(new RemoteEvent(new Begin(), 1, 0), 2, 0)), "EV"));
    }
}

/// <summary>
/// A gateway under attack: malformed frames, strangers, and frames that claim far more than they
/// bring. Alone, not beside other test classes: the memory test counts every allocation of the process.
/// </summary>
[Collection(Alone.Name)]
public sealed class GatewayFuzzTests : IAsyncLifetime
{
    private const int ChunkSize = 16_000;
    private ActorSystem _a = null!, _b = null!;

    private static ActorSystem Node() => ActorSystem.Create("actortrain", WireSerializer.Bindings.WithFallback(ConfigurationFactory.ParseString("""
        akka.actor.provider = remote
        akka.remote.dot-netty.tcp { hostname = 127.0.0.1, port = 0 }
        akka.loglevel = OFF
        actortrain.cluster.max-message-size = 4MiB
        """)));

    public Task InitializeAsync()
    {
        _a = Node();
        _b = Node();
        return Task.CompletedTask;
    }

    public async Task DisposeAsync() => await Task.WhenAll(_a.Terminate(), _b.Terminate());

    private sealed class Collector : ReceiveActor
    {
        public Collector(TaskCompletionSource<object> first) => ReceiveAny(m => first.TrySetResult(m));
    }

    private static Address AddressOf(ActorSystem system) => ((ExtendedActorSystem)system).Provider.DefaultAddress;

    private IActorRef Remote(IActorRef actor) => ((ExtendedActorSystem)_a).Provider.ResolveActorRef(actor.Path.ToStringWithAddress(AddressOf(_b)));

    [Fact]
    public async Task A_gateway_takes_ten_thousand_malformed_frames_and_delivers_the_next_message_whole()
    {
        var gatewayB = _b.ActorOf(Gateway.Props(ChunkSize, 4 << 20), "gateway");
        var delivered = new TaskCompletionSource<object>(TaskCreationOptions.RunContinuationsAsynchronously);
        var target = _b.ActorOf(Props.Create(() => new Collector(delivered)), "shard-0");
        var sender = _a.ActorOf(Gateway.Props(ChunkSize, 4 << 20), "gateway");
        var remoteGateway = Remote(gatewayB);
        var rng = new Core.Rng(99);
        int Next(int n) => (int)(rng.NextDouble() * n);
        for (int i = 0; i < 10_000; i++)
        {
            int count = Next(4) switch { 0 => 1, 1 => 2 + Next(300), 2 => int.MaxValue, _ => 1 + Next(3) };
            var data = new byte[Next(3) == 0 ? Next(ChunkSize + 1) : Next(64)];
            for (int j = 0; j < data.Length; j += 97) data[j] = (byte)Next(256);
            remoteGateway.Tell(new Frame(Next(5), Next(Math.Min(count, 8)), count, data), sender);
        }
        new GatewayRoute(sender, AddressOf(_a)).Tell(Remote(target), new PushGradient(1, 0, 0, 1f, false, 32, new byte[100_000]), ActorRefs.Nobody);

        var push = Assert.IsType<PushGradient>(await delivered.Task.WaitAsync(TimeSpan.FromSeconds(60)));
        Assert.Equal(100_000, push.Payload.Length);
    }

    [Fact]
    public async Task A_gateway_hears_members_only()
    {
        var asked = new TaskCompletionSource<Address>(TaskCreationOptions.RunContinuationsAsynchronously);
        var stranger = AddressOf(_a);
        var gatewayB = _b.ActorOf(Gateway.Props(ChunkSize, 4 << 20, address =>
        {
            if (address == stranger) asked.TrySetResult(address);
            return address != stranger;
        }), "gateway");
        var delivered = new TaskCompletionSource<object>(TaskCreationOptions.RunContinuationsAsynchronously);
        var target = _b.ActorOf(Props.Create(() => new Collector(delivered)), "worker-0");
        var sender = _a.ActorOf(Gateway.Props(ChunkSize, 4 << 20), "gateway");
        new GatewayRoute(sender, AddressOf(_a)).Tell(Remote(target), new WorkerLost(1), ActorRefs.Nobody);
        Assert.Equal(stranger, await asked.Task.WaitAsync(TimeSpan.FromSeconds(30)));

        // a member's message (this node's own frame) is delivered, and it is the first and only one
        var serializer = (WireSerializer)_b.Serialization.FindSerializerForType(typeof(WorkerLost));
        gatewayB.Tell(new Frame(1, 0, 1, Envelope(serializer, target, new WorkerLost(2))), ActorRefs.NoSender);
        Assert.Equal(new WorkerLost(2), await delivered.Task.WaitAsync(TimeSpan.FromSeconds(30)));
    }

    /// <summary>
    /// Sixteen first chunks of 1 KB that each claim a 4 MB message used to reserve 4 MB apiece
    /// (2.5 GB with larger limits); the buffer now grows with what arrived, one message per node.
    /// </summary>
    [Fact]
    public async Task Reassembly_memory_grows_with_the_bytes_received_not_with_what_a_frame_claims()
    {
        var gateway = _b.ActorOf(Gateway.Props(ChunkSize, 4 << 20), "gateway");
        var warm = new TaskCompletionSource<object>(TaskCreationOptions.RunContinuationsAsynchronously);
        var serializer = (WireSerializer)_b.Serialization.FindSerializerForType(typeof(WorkerLost));
        gateway.Tell(new Frame(0, 0, 1, Envelope(serializer, _b.ActorOf(Props.Create(() => new Collector(warm)), "warm"), new WorkerLost(0))), ActorRefs.NoSender);
        await warm.Task.WaitAsync(TimeSpan.FromSeconds(30)); // the system's own start-up allocations are over
        var delivered = new TaskCompletionSource<object>(TaskCreationOptions.RunContinuationsAsynchronously);
        var target = _b.ActorOf(Props.Create(() => new Collector(delivered)), "worker-0");
        long before = GC.GetTotalAllocatedBytes(precise: true);
        for (int i = 0; i < 16; i++) gateway.Tell(new Frame(i, 0, 262, new byte[1024]), ActorRefs.NoSender);
        gateway.Tell(new Frame(99, 0, 1, Envelope(serializer, target, new WorkerLost(4))), ActorRefs.NoSender);
        Assert.Equal(new WorkerLost(4), await delivered.Task.WaitAsync(TimeSpan.FromSeconds(30)));
        long allocated = GC.GetTotalAllocatedBytes(precise: true) - before;
        Assert.True(allocated < 4L << 20, $"16 claims of 4 MB allocated {allocated / 1e6:0.0} MB");
    }

    private static byte[] Envelope(WireSerializer serializer, IActorRef to, object message)
    {
        using var w = new WireWriter(256);
        w.String(Akka.Serialization.Serialization.SerializedActorPath(to));
        w.String("");
        serializer.WriteNested(w, message);
        return w.Written.ToArray();
    }
}

[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class Alone
{
    public const string Name = "alone";
}
