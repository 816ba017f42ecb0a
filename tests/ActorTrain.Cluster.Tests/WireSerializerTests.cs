using System.Diagnostics;
using ActorTrain.Cluster.Actors;
using ActorTrain.Cluster.Protocol;
using ActorTrain.Cluster.Remoting;
using ActorTrain.Cluster.Transport;
using Akka.Actor;
using Akka.Configuration;
using Akka.TestKit.Xunit2;

namespace ActorTrain.Cluster.Tests;

/// <summary>The binary wire format: every message round-trips field for field; bad input is refused, not half-read.</summary>
public class WireSerializerTests() : TestKit(WireSerializer.Bindings)
{
    private WireSerializer Serializer => (WireSerializer)Sys.Serialization.FindSerializerForType(typeof(PushGradient));

    private object RoundTrip(object message)
    {
        var serializer = Serializer;
        return serializer.FromBinary(serializer.ToBinary(message), serializer.Manifest(message));
    }

    private static readonly ActivityContext Trace = new(ActivityTraceId.CreateRandom(), ActivitySpanId.CreateRandom(), ActivityTraceFlags.Recorded);

    [Fact]
    public void Every_protocol_message_is_bound_to_the_wire_serializer()
    {
        foreach (var type in new[] { typeof(Begin), typeof(PushGradient), typeof(ParameterSlice), typeof(ShardSnapshot), typeof(WorkerStepReport),
                     typeof(StopTraining), typeof(Frame), typeof(EventDone), typeof(HostRun), typeof(WorkerLost) })
            Assert.IsType<WireSerializer>(Sys.Serialization.FindSerializerForType(type));
    }

    [Fact]
    public void Training_messages_round_trip_field_for_field()
    {
        var begin = (Begin)RoundTrip(new Begin(true, Trace));
        Assert.True(begin.Rejoin);
        Assert.Equal(Trace.TraceId, begin.Trace.TraceId);
        Assert.Equal(Trace.SpanId, begin.Trace.SpanId);
        Assert.Equal(Trace.TraceFlags, begin.Trace.TraceFlags);
        Assert.Equal(default, ((Begin)RoundTrip(Begin.First)).Trace);

        Assert.Equal(new PullParameters(3, 77, true), RoundTrip(new PullParameters(3, 77, true)));

        byte[] payload = Enumerable.Range(0, 1000).Select(i => (byte)(i * 7)).ToArray();
        var push = (PushGradient)RoundTrip(new PushGradient(2, 41, 40, 1024f, false, 32, payload, 1.25, Trace));
        Assert.Equal((2, 41L, 40L, 1024f, false, 32, 1.25), (push.Worker, push.Clock, push.BaseVersion, push.LossScale, push.NonFinite, push.Samples, push.SentAt));
        Assert.Equal(payload, push.Payload.ToArray());
        Assert.True(push.Pooled); // the receiving shard returns it to the pool
        push.Release();

        Assert.Null(push.Factors);
        // K-FAC: the factor contribution rides with the push
        var withFactors = (PushGradient)RoundTrip(new PushGradient(2, 41, 40, 1f, false, 32, payload, 1.25, Trace) { Factors = [0.5f, -1f, 3e-8f] });
        Assert.Equal([0.5f, -1f, 3e-8f], withFactors.Factors!);
        Assert.Equal(12, withFactors.FactorBytes);
        withFactors.Release();
        var skipped = (PushGradient)RoundTrip(new PushGradient(1, 5, 5, 65536f, true, 32, ReadOnlyMemory<byte>.Empty));
        Assert.True(skipped.NonFinite);
        Assert.Equal(0, skipped.Payload.Length);

        var slice = (ParameterSlice)RoundTrip(new ParameterSlice(1, 9, payload, true, 8, 0.5, Trace));
        Assert.Equal((1, 9L, true, 8L, 0.5), (slice.Shard, slice.Version, slice.Delta, slice.WorkerClock, slice.HeldSeconds));
        Assert.Equal(payload, slice.Payload.ToArray());
        Assert.NotNull(slice.Owner);
        slice.Owner!.Release();

        var counters = new ShardCounters(1, 2, 3, 4, 5, 6, 7, 8, 9, 0.5, Enumerable.Range(0, ShardCounters.HistogramBuckets).Select(i => (long)i).ToArray(),
            10, 11, 12, 0.25);
        var snapshot = (ShardSnapshot)RoundTrip(new ShardSnapshot(1, 50, new[] { 1f, -2.5f, float.NaN }, counters, true));
        Assert.Equal((1, 50L, true), (snapshot.Shard, snapshot.Step, snapshot.Final));
        Assert.Equal(new[] { 1f, -2.5f, float.NaN }, snapshot.Values.ToArray());
        Assert.Equal(counters.StalenessHistogram, snapshot.Counters.StalenessHistogram);
        Assert.Equal(counters with { StalenessHistogram = snapshot.Counters.StalenessHistogram }, snapshot.Counters);

        var report = new WorkerStepReport(1, 2, 0.5f, 32, 1000, 0.1, 0.2, 0.3, 4, false, 8f, 3, 0.05);
        Assert.Equal(report, RoundTrip(report));
        Assert.Same(StopTraining.Instance, RoundTrip(StopTraining.Instance));
        Assert.Same(FinalSnapshotRequest.Instance, RoundTrip(FinalSnapshotRequest.Instance));
        Assert.Equal(new WorkerLost(3), RoundTrip(new WorkerLost(3)));
        // all-reduce: the ring in Begin, a chunk, a replica digest
        var ring = (Begin)RoundTrip(new Begin(false, Trace, [TestActor, TestActor, TestActor]));
        Assert.Equal(3, ring.Peers!.Count);
        Assert.All(ring.Peers, p => Assert.Equal(TestActor.Path, p.Path));
        Assert.Null(((Begin)RoundTrip(new Begin(false, Trace))).Peers);
        var chunk = (PeerChunk)RoundTrip(new PeerChunk(1, 12, 3, 2, 256f, 32, true, payload, 0.5, Trace));
        Assert.Equal((1, 12L, 3, 2, 256f, 32, true, 0.5), (chunk.From, chunk.Clock, chunk.Step, chunk.Origin, chunk.LossScale, chunk.Samples, chunk.NonFinite, chunk.SentAt));
        Assert.Equal((Trace.TraceId, Trace.SpanId, Trace.TraceFlags), (chunk.Trace.TraceId, chunk.Trace.SpanId, chunk.Trace.TraceFlags)); // read back as remote
        Assert.Equal(payload, chunk.Payload.ToArray());
        Assert.Equal(new ReplicaDigest(3, 40, 0xDEADBEEF01234567), RoundTrip(new ReplicaDigest(3, 40, 0xDEADBEEF01234567)));
    }

    [Fact]
    public void Pipeline_messages_round_trip_field_for_field_and_a_stages_snapshot_keeps_its_own_counters()
    {
        float[] values = [1f, -2.5f, float.NaN, float.NegativeInfinity, 3e-8f];
        var batch = (PipelineBatch)RoundTrip(new PipelineBatch(7, values, [0, 9, 2], 3));
        Assert.Equal((7L, 3), (batch.Step, batch.Count));
        Assert.Equal(values, batch.Features);
        Assert.Equal([0, 9, 2], batch.Labels);
        var activations = (StageActivations)RoundTrip(new StageActivations(1, 8, 3, values, [4, 5], 6));
        Assert.Equal((1, 8L, 3, 6), (activations.FromStage, activations.Step, activations.Micro, activations.StepSamples));
        Assert.Equal(values, activations.Values);
        Assert.Equal([4, 5], activations.Labels);
        var gradients = (StageGradients)RoundTrip(new StageGradients(2, 9, 1, values));
        Assert.Equal((2, 9L, 1), (gradients.FromStage, gradients.Step, gradients.Micro));
        Assert.Equal(values, gradients.Values);
        var replica = (StageReplicaGradient)RoundTrip(new StageReplicaGradient(1, 3, 10, values, 12));
        Assert.Equal((1, 3, 10L, 12), (replica.Stage, replica.Replica, replica.Step, replica.Samples));
        Assert.Equal(values, replica.Values);
        var weights = (StageReplicaWeights)RoundTrip(new StageReplicaWeights(2, 11, []));
        Assert.Equal((2, 11L, 0), (weights.Stage, weights.Step, weights.Values.Length));
        Assert.True(((StageReplicaGradient)RoundTrip(new StageReplicaGradient(1, 3, 10, values, 12, NonFinite: true))).NonFinite);
        Assert.Equal(new StageChecked(2, 13, false), RoundTrip(new StageChecked(2, 13, false)));
        Assert.Equal(new StageVerdict(13, true, 32768f), RoundTrip(new StageVerdict(13, true, 32768f)));
        var done = new StageDone(3, 12, 0.75f, 0.125, 0.0625, 17, true);
        Assert.Equal(done, RoundTrip(done));
        Assert.True(float.IsNaN(((StageDone)RoundTrip(done with { Loss = float.NaN })).Loss)); // a stage before the last has no loss

        // what a stage adds to the counters of its snapshot (peak activations; K-FAC's factor bytes for a shard)
        var counters = new ShardCounters(1, 2, 3, 4, 5, 6, 7, 8, 9, 0.5, new long[ShardCounters.HistogramBuckets], 10, 11, 12, 0.25)
            { PeakActivations = 4, FactorBytesIn = 1 << 20 };
        var snapshot = (ShardSnapshot)RoundTrip(new ShardSnapshot(2, 5, values, counters, false));
        Assert.Equal((4, 1L << 20), (snapshot.Counters.PeakActivations, snapshot.Counters.FactorBytesIn));
    }

    [Fact]
    public void Plumbing_messages_round_trip_with_nested_messages_and_actor_references()
    {
        var probe = CreateTestProbe();
        var done = (EventDone)RoundTrip(new EventDone(probe.Ref, 12, 0.75,
        [
            new Outgoing(OutKind.Send, probe.Ref, new PullParameters(1, 2), 16, TrafficClass.WorkerToShard, TestActor, 0.5),
            new Outgoing(OutKind.Timer, TestActor, new WorkerLost(2), 0, TrafficClass.Control, ActorRefs.Nobody, 0.25),
        ]));
        Assert.Equal(probe.Ref, done.Actor);
        Assert.Equal((12L, 0.75), (done.Seq, done.Now));
        Assert.Equal(2, done.Outbox.Count);
        Assert.Equal(new Outgoing(OutKind.Send, probe.Ref, new PullParameters(1, 2), 16, TrafficClass.WorkerToShard, TestActor, 0.5), done.Outbox[0]);
        Assert.True(done.Outbox[1].Sender.IsNobody());

        var host = (HostRun)RoundTrip(new HostRun("name = x", "worker", [1, 3], TestActor, [probe.Ref], null, 638_000_000_000_000_000));
        Assert.Equal(("name = x", "worker", 638_000_000_000_000_000L), (host.Config, host.Role, host.EpochTicks));
        Assert.Equal(new[] { 1, 3 }, host.Ids);
        Assert.Equal(TestActor, host.Coordinator);
        Assert.Equal(new[] { probe.Ref }, host.Shards);
        Assert.Null(host.Clock);

        var ev = (RemoteEvent)RoundTrip(new RemoteEvent(new Begin(), 5, 0.125));
        Assert.Equal((5L, 0.125), (ev.Seq, ev.Start));
        Assert.IsType<Begin>(ev.Message);
    }

    [Fact]
    public void Checkpoints_round_trip_as_messages_inside_a_host_request_and_as_files()
    {
        var counters = new ShardCounters(10, 40, 1, 0, 1280, 9, 8, 7, 6, 0.5, new long[ShardCounters.HistogramBuckets], 3, 2, 1, 0.25);
        var part = new ShardCheckpoint(1, 100, 100, [1f, 2f, -3f], 100, [[0.5f, 0.25f, 0f], [1e-8f, 2e-8f, 3e-8f]], [100, 100, 99], counters);
        var checkpoint = new Actors.RunCheckpoint(100, 0.125, [part, part with { Shard = 0 }]);

        void AssertSame(ShardCheckpoint expected, ShardCheckpoint actual)
        {
            Assert.Equal((expected.Shard, expected.Step, expected.Version, expected.OptimizerSteps), (actual.Shard, actual.Step, actual.Version, actual.OptimizerSteps));
            Assert.Equal(expected.Weights, actual.Weights);
            Assert.Equal(expected.OptimizerState, actual.OptimizerState);
            Assert.Equal(expected.WorkerClocks, actual.WorkerClocks);
            Assert.Equal(expected.Counters with { StalenessHistogram = actual.Counters.StalenessHistogram }, actual.Counters);
        }

        AssertSame(part, (ShardCheckpoint)RoundTrip(part));
        var host = (HostRun)RoundTrip(new HostRun("x", "ps", [0, 1], TestActor, [], null, 1, checkpoint));
        Assert.Equal((100L, 0.125), (host.Resume!.Step, host.Resume.Time));
        AssertSame(part, host.Resume.Shards[0]);
        var file = WireSerializer.DecodeCheckpoint(WireSerializer.EncodeCheckpoint(checkpoint));
        Assert.Equal(2, file.Shards.Count);
        AssertSame(checkpoint.Shards[1], file.Shards[1]);
        Assert.Throws<WireFormatException>(() => WireSerializer.DecodeCheckpoint(WireSerializer.EncodeCheckpoint(checkpoint)[..^1]));
    }

    [Fact]
    public void Malformed_or_oversized_bytes_are_refused_with_a_wire_format_error()
    {
        var serializer = Serializer;
        byte[] good = serializer.ToBinary(new PushGradient(2, 41, 40, 1f, false, 32, new byte[100]));
        var truncated = Assert.Throws<WireFormatException>(() => serializer.FromBinary(good[..^10], "PU"));
        Assert.Contains("PushGradient.Payload", truncated.Message);
        Assert.Throws<WireFormatException>(() => serializer.FromBinary([.. good, 0], "PU"));
        Assert.Contains("unknown manifest", Assert.Throws<WireFormatException>(() => serializer.FromBinary(good, "XX")).Message);

        // a payload that claims 2 GB: refused by its length before anything is allocated
        byte[] huge = (byte[])good.Clone();
        BitConverter.GetBytes(int.MaxValue).CopyTo(huge, good.Length - 1 - 100 - 4); // before the payload (and the factors' presence byte)
        Assert.Contains("maximum message size", Assert.Throws<WireFormatException>(() => serializer.FromBinary(huge, "PU")).Message);

        Assert.Contains("not a wire message", Assert.Throws<WireFormatException>(() => serializer.ToBinary("a string")).Message);
    }
}

/// <summary>Two actor systems on loopback: messages between their gateways, chunked when large, arrive whole and in order.</summary>
public sealed class GatewayTests : IAsyncLifetime
{
    private const int ChunkSize = 16_000;
    private ActorSystem _a = null!, _b = null!;

    private static ActorSystem Node(string name) => ActorSystem.Create("actortrain", WireSerializer.Bindings.WithFallback(ConfigurationFactory.ParseString($$"""
        akka.actor.provider = remote
        akka.remote.dot-netty.tcp { hostname = 127.0.0.1, port = 0 }
        akka.loglevel = ERROR
        actortrain.cluster.max-message-size = 4MiB
        """)));

    public Task InitializeAsync()
    {
        _a = Node("a");
        _b = Node("b");
        return Task.CompletedTask;
    }

    public async Task DisposeAsync() => await Task.WhenAll(_a.Terminate(), _b.Terminate());

    private sealed class Collector : ReceiveActor
    {
        private readonly List<object> _received = [];

        public Collector(TaskCompletionSource<List<object>> done, int expected) => ReceiveAny(m =>
        {
            _received.Add(m);
            if (_received.Count == expected) done.TrySetResult(_received);
        });
    }

    [Fact]
    public async Task A_gradient_larger_than_a_frame_arrives_whole_and_after_it_the_small_message_sent_behind_it()
    {
        var gatewayA = _a.ActorOf(Gateway.Props(ChunkSize, 4 << 20), "gateway");
        _b.ActorOf(Gateway.Props(ChunkSize, 4 << 20), "gateway");
        var done = new TaskCompletionSource<List<object>>(TaskCreationOptions.RunContinuationsAsynchronously);
        var target = _b.ActorOf(Props.Create(() => new Collector(done, 3)), "shard-0");
        var remoteTarget = ((ExtendedActorSystem)_a).Provider.ResolveActorRef(target.Path.ToStringWithAddress(((ExtendedActorSystem)_b).Provider.DefaultAddress));
        var route = new GatewayRoute(gatewayA, ((ExtendedActorSystem)_a).Provider.DefaultAddress);

        byte[] large = new byte[1_000_000];
        new Random(7).NextBytes(large);
        route.Tell(remoteTarget, new PushGradient(1, 0, 0, 1f, false, 32, large), ActorRefs.Nobody);   // 63 chunks
        route.Tell(remoteTarget, new PullParameters(1, 1), ActorRefs.Nobody);                          // one frame
        route.Tell(remoteTarget, new WorkerLost(5), ActorRefs.Nobody);

        var received = await done.Task.WaitAsync(TimeSpan.FromSeconds(30));
        var push = Assert.IsType<PushGradient>(received[0]);
        Assert.Equal(large, push.Payload.ToArray());
        Assert.Equal(new PullParameters(1, 1), received[1]);
        Assert.Equal(new WorkerLost(5), received[2]);
    }

    [Fact]
    public async Task A_gateway_drops_malformed_and_oversized_frames_and_goes_on_delivering()
    {
        _a.ActorOf(Gateway.Props(ChunkSize, 4 << 20), "gateway");
        var gatewayB = _b.ActorOf(Gateway.Props(ChunkSize, 4 << 20), "gateway");
        var done = new TaskCompletionSource<List<object>>(TaskCreationOptions.RunContinuationsAsynchronously);
        var target = _b.ActorOf(Props.Create(() => new Collector(done, 1)), "worker-0");
        var provider = ((ExtendedActorSystem)_a).Provider;
        var remoteGateway = provider.ResolveActorRef(gatewayB.Path.ToStringWithAddress(((ExtendedActorSystem)_b).Provider.DefaultAddress));
        var remoteTarget = provider.ResolveActorRef(target.Path.ToStringWithAddress(((ExtendedActorSystem)_b).Provider.DefaultAddress));
        var sender = _a.ActorOf(Gateway.Props(ChunkSize, 4 << 20), "sender");

        remoteGateway.Tell(new Frame(1, 0, 1, new byte[] { 1, 2, 3 }), sender);               // garbage envelope
        remoteGateway.Tell(new Frame(2, 0, 100_000, new byte[ChunkSize]), sender);            // declares 1.6 GB: over max-message-size
        remoteGateway.Tell(new Frame(3, 5, 6, new byte[10]), sender);                         // a chunk whose predecessors never came
        new GatewayRoute(sender, provider.DefaultAddress).Tell(remoteTarget, new WorkerLost(7), ActorRefs.Nobody);

        var received = await done.Task.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(new WorkerLost(7), Assert.Single(received));
    }
}

/// <summary>
/// What a node's Akka.Remote rebuilds (<see cref="NodeSerializers"/>): the bytes a stranger's actor
/// system (Akka's defaults) writes for a local-only message, a PoisonPill, a Kill, a status reply or
/// a system message other than death watch's are refused on arrival; Akka's housekeeping and death
/// watch still pass. (A payload inside Akka's messages, such as an Identify's id, is written in
/// JSON by Akka's defaults and refused with it: no run sends one.)
/// </summary>
public class NodeSerializersTests() : TestKit(WireSerializer.Bindings.WithFallback(NodeSerializers.Config).WithFallback("akka.actor.provider = remote\nakka.remote.dot-netty.tcp.port = 0"))
{
    private readonly ActorSystem _stranger = ActorSystem.Create("stranger", "akka.loglevel = OFF\nakka.actor.provider = remote\nakka.remote.dot-netty.tcp.port = 0");

    protected override void AfterAll()
    {
        _stranger.Terminate().Wait();
        base.AfterAll();
    }

    /// <summary>Writes <paramref name="message"/> as the stranger would, reads it as a node does.</summary>
    private object Arrive(object message)
    {
        var serializer = _stranger.Serialization.FindSerializerFor(message);
        string manifest = Akka.Serialization.Serialization.ManifestFor(serializer, message);
        return Sys.Serialization.Deserialize(serializer.ToBinary(message), serializer.Identifier, manifest);
    }

    public static TheoryData<string> Refused => new() { "json", "poison pill", "kill", "failure", "success", "terminate", "supervise", "failed" };

    [Theory]
    [MemberData(nameof(Refused))]
    public void A_message_that_would_act_on_the_node_is_refused_on_arrival(string kind)
    {
        object message = kind switch
        {
            "json" => Coordinator.Interrupt.Instance,
            "poison pill" => PoisonPill.Instance,
            "kill" => Kill.Instance,
            "failure" => new Status.Failure(new InvalidOperationException("forged")),
            "success" => new Status.Success(null),
            "terminate" => new Akka.Dispatch.SysMsg.Terminate(),
            "supervise" => new Akka.Dispatch.SysMsg.Supervise(_stranger.DeadLetters, false),
            _ => new Akka.Dispatch.SysMsg.Failed(_stranger.DeadLetters, new InvalidOperationException("forged"), 1),
        };
        var refused = Assert.Throws<WireFormatException>(() => Arrive(message));
        Assert.Contains("refused", refused.Message);
    }

    [Fact]
    public void Akka_housekeeping_and_death_watch_still_arrive_and_the_run_s_messages_keep_the_wire_format()
    {
        Assert.IsType<Akka.Remote.RemoteWatcher.Heartbeat>(Arrive(Akka.Remote.RemoteWatcher.Heartbeat.Instance));
        // remote death watch: how a coordinator learns that a shard or worker on a live node stopped
        var watched = (IInternalActorRef)_stranger.DeadLetters;
        Assert.IsType<Akka.Dispatch.SysMsg.Watch>(Arrive(new Akka.Dispatch.SysMsg.Watch(watched, watched)));
        Assert.IsType<Akka.Dispatch.SysMsg.Unwatch>(Arrive(new Akka.Dispatch.SysMsg.Unwatch(watched, watched)));
        Assert.IsType<Akka.Dispatch.SysMsg.DeathWatchNotification>(Arrive(new Akka.Dispatch.SysMsg.DeathWatchNotification(watched, true, false)));
        Assert.IsType<GuardedMiscSerializer>(Sys.Serialization.FindSerializerFor(Akka.Remote.RemoteWatcher.Heartbeat.Instance));
        Assert.IsType<WireSerializer>(Sys.Serialization.FindSerializerFor(new WorkerLost(3)));
    }

    [Fact]
    public void A_message_without_a_wire_format_is_refused_on_sending_and_a_remote_deployment_on_arrival()
    {
        var json = Sys.Serialization.FindSerializerFor(Coordinator.Interrupt.Instance);
        Assert.IsType<RefusedJsonSerializer>(json);
        Assert.Throws<WireFormatException>(() => json.ToBinary(Coordinator.Interrupt.Instance));
        Assert.Throws<WireFormatException>(() => Sys.Serialization.Deserialize([1, 2, 3], 3, "Akka.Remote.DaemonMsgCreate, Akka.Remote"));
    }
}

/// <summary>An ask through the gateways takes its answer from the asked node only.</summary>
public class GatewayAskTests() : TestKit("akka.actor.provider = remote\nakka.remote.dot-netty.tcp.port = 0")
{
    /// <summary>Stands for the gateways: keeps who asked, delivers nothing.</summary>
    private sealed class Captured : IRoute
    {
        public readonly TaskCompletionSource<IActorRef> Asker = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public void Tell(IActorRef to, object message, IActorRef sender) => Asker.TrySetResult(sender);
    }

    [Fact]
    public async Task An_answer_from_another_node_is_dropped_and_the_asked_node_s_is_taken()
    {
        var provider = ((ExtendedActorSystem)Sys).Provider;
        var host = provider.ResolveActorRef("akka.tcp://actortrain@127.0.0.1:7001/user/node");
        var stranger = provider.ResolveActorRef("akka.tcp://actortrain@127.0.0.1:7002/user/node");
        var route = new Captured();
        var asked = GatewayAsk.Ask(Sys, route, host, CollectTelemetry.Instance, TimeSpan.FromSeconds(30));
        var asker = await route.Asker.Task.WaitAsync(TimeSpan.FromSeconds(30));
        asker.Tell(new HostFailed("forged"), stranger);
        asker.Tell(new HostFailed("forged"), TestActor);
        asker.Tell(new Hosted("ps", []), host);
        Assert.Equal("ps", Assert.IsType<Hosted>(await asked).Role);
    }
}

/// <summary>
/// Remote death watch between two systems that both refuse what <see cref="NodeSerializers"/>
/// refuses: the coordinator learns this way that a shard or worker on a live node stopped.
/// </summary>
public class RemoteDeathWatchTests() : TestKit(WireSerializer.Bindings.WithFallback(NodeSerializers.Config)
    .WithFallback("akka.actor.provider = remote\nakka.remote.dot-netty.tcp { hostname = 127.0.0.1, port = 0 }\nakka.loglevel = OFF"))
{
    [Fact]
    public async Task A_watched_actor_on_another_node_that_stops_is_reported_terminated()
    {
        using var node = ActorSystem.Create("node", WireSerializer.Bindings.WithFallback(NodeSerializers.Config)
            .WithFallback("akka.actor.provider = remote\nakka.remote.dot-netty.tcp { hostname = 127.0.0.1, port = 0 }\nakka.loglevel = OFF"));
        var shard = node.ActorOf(Props.Empty, "shard-0");
        var address = ((ExtendedActorSystem)node).Provider.DefaultAddress;
        var remote = ((ExtendedActorSystem)Sys).Provider.ResolveActorRef(shard.Path.ToStringWithAddress(address) + "#" + shard.Path.Uid);
        Watch(remote);
        // the Watch and the stop race; a Watch that arrives after the stop is answered with a death notification too
        node.Stop(shard);
        var terminated = ExpectTerminated(remote, TimeSpan.FromSeconds(20));
        Assert.False(terminated.AddressTerminated);
        await node.Terminate();
    }
}
