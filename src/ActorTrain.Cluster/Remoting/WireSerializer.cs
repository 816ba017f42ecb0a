using System.Buffers;
using ActorTrain.Cluster.Actors;
using ActorTrain.Cluster.Protocol;
using ActorTrain.Cluster.Transport;
using Akka.Actor;
using Akka.Serialization;

namespace ActorTrain.Cluster.Remoting;

/// <summary>
/// The binary wire format of every message that crosses nodes (DESIGN.md section 4): a short
/// string manifest names the type, the body is fixed-width little-endian fields, length-prefixed
/// byte and float arrays, W3C trace contexts as 25 raw bytes and actor references as their
/// serialized paths. Nothing is JSON or polymorphic: an unknown manifest, a truncated body, a
/// length over <c>actortrain.cluster.max-message-size</c> or bytes left over is a
/// <see cref="WireFormatException"/>, which Akka logs before it drops the message; the node goes on.
/// Received gradient payloads are rented from the array pool, as local ones are, so a shard
/// returns them after decoding.
/// </summary>
public sealed class WireSerializer : SerializerWithStringManifest
{
    public const int Id = 4107;
    public const int DefaultMaxMessageSize = 256 << 20;

    private readonly int _maxLength;

    public WireSerializer(ExtendedActorSystem system) : base(system)
    {
        if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("the wire format copies float arrays as little-endian bytes");
        _maxLength = (int)Math.Min(int.MaxValue, system.Settings.Config.GetByteSize("actortrain.cluster.max-message-size") ?? DefaultMaxMessageSize);
    }

    public override int Identifier => Id;

    /// <summary>Binds this serializer to every training and plumbing message (what a node's actor system needs besides its settings).</summary>
    public static Akka.Configuration.Config Bindings => Akka.Configuration.ConfigurationFactory.ParseString($$"""
        akka.actor {
          serializers.actortrain = "{{typeof(WireSerializer).AssemblyQualifiedName}}"
          serialization-bindings {
            "{{typeof(ITrainingMessage).AssemblyQualifiedName}}" = actortrain
            "{{typeof(IRemotingMessage).AssemblyQualifiedName}}" = actortrain
          }
        }
        """);

    public override string Manifest(object o) => o switch
    {
        Begin => "B",
        PeerChunk => "PC",
        ReplicaDigest => "RD",
        PullParameters => "PL",
        PushGradient => "PU",
        ParameterSlice => "SL",
        ShardSnapshot => "SN",
        WorkerStepReport => "RP",
        StopTraining => "ST",
        FinalSnapshotRequest => "FS",
        WorkerLost => "WL",
        ShardCheckpoint => "CK",
        Frame => "FR",
        RemoteEvent => "EV",
        EventDone => "ED",
        HostRun => "HR",
        Hosted => "HD",
        HostFailed => "HF",
        Roster => "RO",
        CollectTelemetry => "CT",
        NodeTelemetry => "NT",
        EndRun => "ER",
        PipelineBatch => "PB",
        StageActivations => "SA",
        StageGradients => "SG",
        StageReplicaGradient => "SR",
        StageReplicaWeights => "SW",
        StageDone => "SD",
        StageChecked => "SC",
        StageVerdict => "SV",
        _ => throw new WireFormatException($"{o.GetType().FullName} is not a wire message: only the training protocol and the cluster plumbing cross nodes"),
    };

    public override byte[] ToBinary(object obj)
    {
        if (obj is Frame frame)
        {
            // the bulk of cluster traffic: written straight into an array of the exact size
            var bytes = new byte[20 + frame.Data.Length];
            var span = bytes.AsSpan();
            System.Buffers.Binary.BinaryPrimitives.WriteInt64LittleEndian(span, frame.Transfer);
            System.Buffers.Binary.BinaryPrimitives.WriteInt32LittleEndian(span[8..], frame.Index);
            System.Buffers.Binary.BinaryPrimitives.WriteInt32LittleEndian(span[12..], frame.Count);
            System.Buffers.Binary.BinaryPrimitives.WriteInt32LittleEndian(span[16..], frame.Data.Length);
            frame.Data.Span.CopyTo(span[20..]);
            return bytes;
        }
        using var w = new WireWriter();
        Write(w, obj);
        return w.ToArray();
    }

    /// <summary>Writes <paramref name="obj"/>'s body (no manifest) into <paramref name="w"/>.</summary>
    internal void Write(WireWriter w, object obj)
    {
        switch (obj)
        {
            case Begin b:
                w.Bool(b.Rejoin);
                w.Trace(b.Trace);
                WriteRefs(w, b.Peers?.ToArray() ?? []);
                break;
            case PeerChunk c:
                w.Int(c.From);
                w.Long(c.Clock);
                w.Int(c.Step);
                w.Int(c.Origin);
                w.Float(c.LossScale);
                w.Int(c.Samples);
                w.Bool(c.NonFinite);
                w.Double(c.SentAt);
                w.Trace(c.Trace);
                w.Bytes(c.Payload.Span);
                break;
            case ReplicaDigest d:
                w.Int(d.Worker);
                w.Long(d.Step);
                w.Long((long)d.Hash);
                break;
            case PullParameters p:
                w.Int(p.Worker);
                w.Long(p.Clock);
                w.Bool(p.Rejoin);
                w.Trace(p.Trace);
                break;
            case PushGradient p:
                w.Int(p.Worker);
                w.Long(p.Clock);
                w.Long(p.BaseVersion);
                w.Float(p.LossScale);
                w.Bool(p.NonFinite);
                w.Int(p.Samples);
                w.Double(p.SentAt);
                w.Trace(p.Trace);
                w.Bytes(p.Payload.Span);
                // K-FAC: the worker's factor contribution for the shard's layers, when it carries one
                w.Bool(p.Factors is not null);
                if (p.Factors is { } factors) w.Floats(factors);
                break;
            case ParameterSlice s:
                w.Int(s.Shard);
                w.Long(s.Version);
                w.Bool(s.Delta);
                w.Long(s.WorkerClock);
                w.Double(s.HeldSeconds);
                w.Trace(s.Trace);
                w.Bytes(s.Payload.Span);
                break;
            case ShardSnapshot s:
                w.Int(s.Shard);
                w.Long(s.Step);
                w.Bool(s.Final);
                w.Floats(s.Values.Span);
                WriteCounters(w, s.Counters);
                // a snapshot's own fields (checkpoints do not carry them: their format stays as it was)
                w.Long(s.Counters.FactorBytesIn);
                w.Int(s.Counters.PeakActivations);
                break;
            case WorkerStepReport r:
                w.Int(r.Worker);
                w.Long(r.Clock);
                w.Float(r.Loss);
                w.Int(r.Samples);
                w.Long(r.Flops);
                w.Double(r.ComputeSeconds);
                w.Double(r.CommunicationSeconds);
                w.Double(r.WaitSeconds);
                w.Long(r.UnderflowedElements);
                w.Bool(r.NonFinite);
                w.Float(r.LossScale);
                w.Int(r.Epoch);
                w.Double(r.GradientSeconds);
                break;
            case StopTraining or FinalSnapshotRequest or EndRun or CollectTelemetry:
                break;
            case WorkerLost l:
                w.Int(l.Worker);
                break;
            case ShardCheckpoint c:
                WriteCheckpoint(w, c);
                break;
            case Frame:
                throw new WireFormatException("a frame travels on its own (ToBinary), never inside another message");
            case RemoteEvent e:
                w.Long(e.Seq);
                w.Double(e.Start);
                WriteNested(w, e.Message);
                break;
            case EventDone d:
                WriteRef(w, d.Actor);
                w.Long(d.Seq);
                w.Double(d.Now);
                w.Int(d.Outbox.Count);
                foreach (var item in d.Outbox)
                {
                    w.Int((int)item.Kind);
                    WriteRef(w, item.To);
                    WriteNested(w, item.Message);
                    w.Long(item.Bytes);
                    w.Int((int)item.Traffic);
                    WriteRef(w, item.Sender);
                    w.Double(item.At);
                }
                break;
            case HostRun h:
                w.String(h.Config);
                w.String(h.Role);
                w.Int(h.Ids.Length);
                foreach (int id in h.Ids) w.Int(id);
                WriteRef(w, h.Coordinator);
                WriteRefs(w, h.Shards);
                WriteRef(w, h.Clock ?? ActorRefs.Nobody);
                w.Long(h.EpochTicks);
                w.Bool(h.Resume is not null);
                if (h.Resume is { } resume) WriteCheckpoint(w, resume);
                break;
            case Hosted h:
                w.String(h.Role);
                WriteRefs(w, h.Actors);
                break;
            case HostFailed f:
                w.String(f.Reason);
                break;
            case NodeTelemetry t:
                w.String(t.Node);
                w.String(t.Traces);
                w.String(t.Metrics);
                break;
            case PipelineBatch b:
                w.Long(b.Step);
                w.Int(b.Count);
                w.Floats(b.Features);
                w.Ints(b.Labels);
                break;
            case StageActivations a:
                w.Int(a.FromStage);
                w.Long(a.Step);
                w.Int(a.Micro);
                w.Floats(a.Values);
                w.Ints(a.Labels);
                w.Int(a.StepSamples);
                break;
            case StageGradients g:
                w.Int(g.FromStage);
                w.Long(g.Step);
                w.Int(g.Micro);
                w.Floats(g.Values);
                break;
            case StageReplicaGradient g:
                w.Int(g.Stage);
                w.Int(g.Replica);
                w.Long(g.Step);
                w.Floats(g.Values);
                w.Int(g.Samples);
                w.Bool(g.NonFinite);
                break;
            case StageChecked c:
                w.Int(c.Stage);
                w.Long(c.Step);
                w.Bool(c.Finite);
                break;
            case StageVerdict v:
                w.Long(v.Step);
                w.Bool(v.Finite);
                w.Float(v.NextScale);
                break;
            case StageReplicaWeights rw:
                w.Int(rw.Stage);
                w.Long(rw.Step);
                w.Floats(rw.Values);
                break;
            case StageDone d:
                w.Int(d.Stage);
                w.Long(d.Step);
                w.Float(d.Loss);
                w.Double(d.ComputeSeconds);
                w.Double(d.IdleSeconds);
                w.Long(d.Underflowed);
                w.Bool(d.NonFinite);
                break;
            case Roster ro:
                WriteRef(w, ro.Coordinator);
                WriteRefs(w, ro.Shards);
                WriteRefs(w, ro.Workers);
                break;
            default:
                Manifest(obj); // throws the "not a wire message" error
                break;
        }
    }

    public override object FromBinary(byte[] bytes, string manifest)
    {
        if (manifest != "FR") return Read(bytes, manifest);
        // A frame's data stays in the array Akka read it into: no copy per chunk.
        var r = new WireReader(bytes, _maxLength);
        long transfer = r.Long();
        int index = r.Int(), count = r.Int();
        if (count < 1 || index < 0 || index >= count) throw new WireFormatException($"FR: chunk {index} of {count}");
        int length = r.Count(1, "Frame.Data");
        int offset = bytes.Length - r.Remaining;
        if (r.Remaining != length) throw new WireFormatException($"FR: {r.Remaining - length} bytes left over after the frame");
        return new Frame(transfer, index, count, new ReadOnlyMemory<byte>(bytes, offset, length));
    }

    /// <summary>Reads a whole body of the given manifest; the body must be consumed exactly.</summary>
    /// <summary>
    /// How deep messages may sit inside messages: an envelope holds an event, an event a message,
    /// an outbox entry a message. Anything deeper is refused before it is read, so a hostile peer
    /// cannot make the reader recurse until the stack overflows.
    /// </summary>
    public const int MaxNesting = 4;

    internal object Read(ReadOnlySpan<byte> bytes, string manifest, int depth = 0)
    {
        var r = new WireReader(bytes, _maxLength);
        var message = Read(ref r, manifest, depth);
        r.End(manifest);
        return message;
    }

    private object Read(ref WireReader r, string manifest, int depth)
    {
        switch (manifest)
        {
            case "B":
            {
                bool rejoin = r.Bool();
                var trace = r.Trace();
                var peers = ReadRefs(ref r, "Begin.Peers");
                return new Begin(rejoin, trace, peers.Length == 0 ? null : peers);
            }
            case "PC":
            {
                int from = r.Int();
                long clock = r.Long();
                int step = r.Int(), origin = r.Int();
                float scale = r.Float();
                int samples = r.Int();
                bool nonFinite = r.Bool();
                double sentAt = r.Double();
                var trace = r.Trace();
                return new PeerChunk(from, clock, step, origin, scale, samples, nonFinite, r.Bytes("PeerChunk.Payload").ToArray(), sentAt, trace);
            }
            case "RD":
                return new ReplicaDigest(r.Int(), r.Long(), (ulong)r.Long());
            case "PL":
                return new PullParameters(r.Int(), r.Long(), r.Bool(), r.Trace());
            case "PU":
            {
                int worker = r.Int();
                long clock = r.Long(), baseVersion = r.Long();
                float scale = r.Float();
                bool nonFinite = r.Bool();
                int samples = r.Int();
                double sentAt = r.Double();
                var trace = r.Trace();
                var payload = r.Bytes("PushGradient.Payload");
                var factors = r.Bool() ? r.Floats("PushGradient.Factors") : null;
                bool pooled = payload.Length > 0;
                return new PushGradient(worker, clock, baseVersion, scale, nonFinite, samples,
                    pooled ? PushGradient.Rent(payload) : ReadOnlyMemory<byte>.Empty, sentAt, trace, pooled) { Factors = factors };
            }
            case "SL":
            {
                int shard = r.Int();
                long version = r.Long();
                bool delta = r.Bool();
                long workerClock = r.Long();
                double held = r.Double();
                var trace = r.Trace();
                var bytes = r.Bytes("ParameterSlice.Payload");
                var owner = SharedPayload.Copy(bytes);
                return new ParameterSlice(shard, version, owner.Memory, delta, workerClock, held, trace, owner);
            }
            case "SN":
            {
                int shard = r.Int();
                long step = r.Long();
                bool final = r.Bool();
                var values = r.Floats("ShardSnapshot.Values");
                var counters = ReadCounters(ref r) with { FactorBytesIn = r.Long() };
                return new ShardSnapshot(shard, step, values, counters with { PeakActivations = r.Int() }, final);
            }
            case "RP":
                return new WorkerStepReport(r.Int(), r.Long(), r.Float(), r.Int(), r.Long(), r.Double(), r.Double(), r.Double(), r.Long(), r.Bool(),
                    r.Float(), r.Int(), r.Double());
            case "ST":
                return StopTraining.Instance;
            case "FS":
                return FinalSnapshotRequest.Instance;
            case "ER":
                return EndRun.Instance;
            case "CT":
                return CollectTelemetry.Instance;
            case "NT":
                return new NodeTelemetry(r.String("NodeTelemetry.Node"), r.String("NodeTelemetry.Traces"), r.String("NodeTelemetry.Metrics"));
            case "WL":
                return new WorkerLost(r.Int());
            case "CK":
                return ReadCheckpoint(ref r);
            case "FR":
                throw new WireFormatException("a frame travels on its own (FromBinary), never inside another message");
            case "EV":
            {
                long seq = r.Long();
                double start = r.Double();
                return new RemoteEvent(ReadNested(ref r, depth + 1), seq, start);
            }
            case "ED":
            {
                var actor = ReadRef(ref r);
                long seq = r.Long();
                double now = r.Double();
                int count = r.Count(1, "EventDone.Outbox");
                var outbox = new List<Outgoing>(count);
                for (int i = 0; i < count; i++)
                {
                    int kind = r.Int();
                    if (kind is < 0 or > (int)OutKind.Kill) throw new WireFormatException($"EventDone: unknown outbox kind {kind}");
                    var to = ReadRef(ref r);
                    var message = ReadNested(ref r, depth + 1);
                    long bytes = r.Long();
                    int traffic = r.Int();
                    if (traffic is < 0 or > (int)TrafficClass.WorkerToWorker) throw new WireFormatException($"EventDone: unknown traffic class {traffic}");
                    outbox.Add(new Outgoing((OutKind)kind, to, message, bytes, (TrafficClass)traffic, ReadRef(ref r), r.Double()));
                }
                return new EventDone(actor, seq, now, outbox);
            }
            case "HR":
            {
                string config = r.String("HostRun.Config"), role = r.String("HostRun.Role");
                var ids = new int[r.Count(4, "HostRun.Ids")];
                for (int i = 0; i < ids.Length; i++) ids[i] = r.Int();
                var coordinator = ReadRef(ref r);
                var shards = ReadRefs(ref r, "HostRun.Shards");
                var clock = ReadRef(ref r);
                long epoch = r.Long();
                var resume = r.Bool() ? ReadRunCheckpoint(ref r) : null;
                return new HostRun(config, role, ids, coordinator, shards, clock.IsNobody() ? null : clock, epoch, resume);
            }
            case "HD":
            {
                string role = r.String("Hosted.Role");
                return new Hosted(role, ReadRefs(ref r, "Hosted.Actors"));
            }
            case "HF":
                return new HostFailed(r.String("HostFailed.Reason"));
            case "PB":
            {
                long step = r.Long();
                int count = r.Int();
                return new PipelineBatch(step, r.Floats("PipelineBatch.Features"), r.Ints("PipelineBatch.Labels"), count);
            }
            case "SA":
            {
                int from = r.Int();
                long step = r.Long();
                int micro = r.Int();
                var values = r.Floats("StageActivations.Values");
                return new StageActivations(from, step, micro, values, r.Ints("StageActivations.Labels"), r.Int());
            }
            case "SG":
            {
                int from = r.Int();
                long step = r.Long();
                int micro = r.Int();
                return new StageGradients(from, step, micro, r.Floats("StageGradients.Values"));
            }
            case "SR":
            {
                int stage = r.Int(), replica = r.Int();
                long step = r.Long();
                var values = r.Floats("StageReplicaGradient.Values");
                return new StageReplicaGradient(stage, replica, step, values, r.Int(), r.Bool());
            }
            case "SW":
            {
                int stage = r.Int();
                long step = r.Long();
                return new StageReplicaWeights(stage, step, r.Floats("StageReplicaWeights.Values"));
            }
            case "SC":
                return new StageChecked(r.Int(), r.Long(), r.Bool());
            case "SV":
                return new StageVerdict(r.Long(), r.Bool(), r.Float());
            case "SD":
                return new StageDone(r.Int(), r.Long(), r.Float(), r.Double(), r.Double(), r.Long(), r.Bool());
            case "RO":
                return new Roster(ReadRef(ref r), ReadRefs(ref r, "Roster.Shards"), ReadRefs(ref r, "Roster.Workers"));
            default:
                throw new WireFormatException($"unknown manifest '{manifest}': the sending node runs a different version of ActorTrain?");
        }
    }

    /// <summary>Manifest, body length, body: a message inside another (an envelope, an event, an outbox).</summary>
    internal void WriteNested(WireWriter w, object message)
    {
        w.String(Manifest(message));
        int at = w.Length;
        w.Int(0);
        Write(w, message);
        w.PatchInt(at, w.Length - at - 4);
    }

    internal object ReadNested(ref WireReader r, int depth = 0)
    {
        if (depth >= MaxNesting) throw new WireFormatException($"messages nested more than {MaxNesting} deep");
        string manifest = r.String("manifest");
        var body = r.Bytes($"{manifest} body");
        return Read(body, manifest, depth);
    }

    private static void WriteRef(WireWriter w, IActorRef actor) => w.String(actor.IsNobody() ? "" : Serialization.SerializedActorPath(actor));

    private IActorRef ReadRef(ref WireReader r) => Resolve(system, r.String("actor path"));

    /// <summary>An actor path from the wire ("" is nobody); a path Akka cannot parse is a <see cref="WireFormatException"/>.</summary>
    internal static IActorRef Resolve(ExtendedActorSystem system, string path)
    {
        if (path.Length == 0) return ActorRefs.Nobody;
        try
        {
            return system.Provider.ResolveActorRef(path);
        }
        catch (Exception e) when (e is FormatException or UriFormatException or ArgumentException or OverflowException)
        {
            throw new WireFormatException($"'{(path.Length > 80 ? path[..80] + "..." : path)}' is not an actor path ({e.GetType().Name})");
        }
    }

    /// <summary>
    /// A run's checkpoint in the wire format: what `HostRun` carries to the nodes of a resumed run
    /// and, behind a magic and a version, what checkpoints/step-N.ckpt holds (one encoding for both).
    /// </summary>
    public static byte[] EncodeCheckpoint(Actors.RunCheckpoint checkpoint)
    {
        using var w = new WireWriter(1 << 16);
        WriteCheckpoint(w, checkpoint);
        return w.ToArray();
    }

    public static Actors.RunCheckpoint DecodeCheckpoint(ReadOnlySpan<byte> bytes)
    {
        var r = new WireReader(bytes, int.MaxValue);
        var checkpoint = ReadRunCheckpoint(ref r);
        r.End("checkpoint");
        return checkpoint;
    }

    private static void WriteCheckpoint(WireWriter w, Actors.RunCheckpoint checkpoint)
    {
        w.Long(checkpoint.Step);
        w.Double(checkpoint.Time);
        w.Int(checkpoint.Shards.Count);
        foreach (var shard in checkpoint.Shards) WriteCheckpoint(w, shard);
    }

    private static Actors.RunCheckpoint ReadRunCheckpoint(ref WireReader r)
    {
        long step = r.Long();
        double time = r.Double();
        var shards = new ShardCheckpoint[r.Count(4, "RunCheckpoint.Shards")];
        for (int i = 0; i < shards.Length; i++) shards[i] = ReadCheckpoint(ref r);
        return new Actors.RunCheckpoint(step, time, shards);
    }

    private static void WriteCheckpoint(WireWriter w, ShardCheckpoint c)
    {
        w.Int(c.Shard);
        w.Long(c.Step);
        w.Long(c.Version);
        w.Floats(c.Weights);
        w.Long(c.OptimizerSteps);
        w.Int(c.OptimizerState.Length);
        foreach (var buffer in c.OptimizerState) w.Floats(buffer);
        w.Longs(c.WorkerClocks);
        WriteCounters(w, c.Counters);
    }

    private static ShardCheckpoint ReadCheckpoint(ref WireReader r)
    {
        int shard = r.Int();
        long step = r.Long(), version = r.Long();
        var weights = r.Floats("ShardCheckpoint.Weights");
        long optimizerSteps = r.Long();
        var state = new float[r.Count(4, "ShardCheckpoint.OptimizerState")][];
        for (int i = 0; i < state.Length; i++) state[i] = r.Floats("ShardCheckpoint.OptimizerState");
        return new ShardCheckpoint(shard, step, version, weights, optimizerSteps, state, r.Longs("ShardCheckpoint.WorkerClocks"), ReadCounters(ref r));
    }

    private static void WriteRefs(WireWriter w, IActorRef[] actors)
    {
        w.Int(actors.Length);
        foreach (var actor in actors) WriteRef(w, actor);
    }

    private IActorRef[] ReadRefs(ref WireReader r, string what)
    {
        var actors = new IActorRef[r.Count(4, what)];
        for (int i = 0; i < actors.Length; i++) actors[i] = ReadRef(ref r);
        return actors;
    }

    private static void WriteCounters(WireWriter w, ShardCounters c)
    {
        w.Long(c.Steps);
        w.Long(c.PushesApplied);
        w.Long(c.PushesSkippedNonFinite);
        w.Long(c.PushesDroppedLate);
        w.Long(c.Samples);
        w.Long(c.BytesIn);
        w.Long(c.BytesOut);
        w.Long(c.DenseBytesIn);
        w.Long(c.DenseBytesOut);
        w.Double(c.LossScale);
        w.Longs(c.StalenessHistogram);
        w.Long(c.StalenessSum);
        w.Long(c.StalenessMax);
        w.Long(c.MaxClockLead);
        w.Double(c.BusySeconds);
    }

    private static ShardCounters ReadCounters(ref WireReader r) =>
        new(r.Long(), r.Long(), r.Long(), r.Long(), r.Long(), r.Long(), r.Long(), r.Long(), r.Long(), r.Double(), r.Longs("StalenessHistogram"),
            r.Long(), r.Long(), r.Long(), r.Double());
}
