using Akka.Actor;
using Akka.Remote.Serialization;
using Akka.Serialization;

namespace ActorTrain.Cluster.Remoting;

/// <summary>
/// What a cluster node's Akka.Remote will rebuild from a frame. Akka's defaults serve a process
/// that trusts every peer; a node takes the run's messages in the wire format
/// (<see cref="WireSerializer"/>) and Akka's own housekeeping, and refuses the rest:
/// <list type="bullet">
/// <item>Akka's default serializer (Newtonsoft JSON, bound to System.Object) rebuilds any type a
/// frame names, private ones included: a stranger's JSON <c>Coordinator.Interrupt</c> stopped a
/// live run (<see cref="RefusedJsonSerializer"/>).</item>
/// <item>A <c>PoisonPill</c> or <c>Kill</c> stops an actor before the actor sees it: a stranger's
/// stopped the coordinator; a <c>Status.Failure</c> fails a coordinator's run
/// (<see cref="GuardedMiscSerializer"/>).</item>
/// <item>System messages act on an actor's life: a stranger's <c>Terminate</c> stopped the
/// coordinator. Only death watch crosses nodes in a run (<see cref="GuardedSystemMessageSerializer"/>).</item>
/// <item>Remote deployment creates an actor of any type named (the run places its actors, it
/// never deploys them: <see cref="RefusedDeploymentSerializer"/>).</item>
/// </list>
/// Each replacement takes the name and id of the serializer it replaces, so the bindings to it and
/// the frames that name it come to the replacement.
/// </summary>
public static class NodeSerializers
{
    public static Akka.Configuration.Config Config => Akka.Configuration.ConfigurationFactory.ParseString($$"""
        akka.actor.serializers {
          json = "{{typeof(RefusedJsonSerializer).AssemblyQualifiedName}}"
          daemon-create = "{{typeof(RefusedDeploymentSerializer).AssemblyQualifiedName}}"
          akka-misc = "{{typeof(GuardedMiscSerializer).AssemblyQualifiedName}}"
          akka-system-msg = "{{typeof(GuardedSystemMessageSerializer).AssemblyQualifiedName}}"
        }
        """);
}

/// <summary>Refuses both ways: sending names the type that has no wire format, receiving names what came.</summary>
public abstract class RefusingSerializer(ExtendedActorSystem system, string what) : Serializer(system)
{
    public override bool IncludeManifest => true;

    public override byte[] ToBinary(object obj) =>
        throw new WireFormatException($"{obj.GetType().FullName} cannot be sent to another node ({what}): only the run's messages and Akka's own cross the network");

    public override object FromBinary(byte[] bytes, Type type) =>
        throw new WireFormatException($"{what} ({type?.FullName ?? "no type named"}, {bytes.Length} bytes) was refused: this node does not rebuild it from the network");
}

/// <summary>In place of Akka's Newtonsoft JSON serializer (id 1).</summary>
public sealed class RefusedJsonSerializer(ExtendedActorSystem system) : RefusingSerializer(system, "a message in Akka's JSON format")
{
    /// <summary>Akka hands the settings of the serializer replaced (serialization-settings.json) to this constructor; none apply.</summary>
    public RefusedJsonSerializer(ExtendedActorSystem system, Akka.Configuration.Config settings) : this(system)
    {
    }

    public override int Identifier => 1;
}

/// <summary>In place of Akka.Remote's remote-deployment serializer (id 3).</summary>
public sealed class RefusedDeploymentSerializer(ExtendedActorSystem system) : RefusingSerializer(system, "a remote deployment")
{
    public override int Identifier => 3;
}

/// <summary>
/// Akka.Remote's serializer of its miscellaneous messages (id 16: identify, actor references,
/// heartbeats, ...) except that a PoisonPill, a Kill or a status reply arriving is refused: the
/// first two stop an actor before it sees them, and a coordinator fails its run on a
/// <c>Status.Failure</c> (its own evaluations report failures that way; a stranger's failed a live
/// run). Sending them stays possible, as a run never sends them to another node.
/// </summary>
public sealed class GuardedMiscSerializer : SerializerWithStringManifest
{
    private readonly MiscMessageSerializer _inner;
    // manifest -> what it is, for the log line
    private readonly Dictionary<string, string> _refused;

    public GuardedMiscSerializer(ExtendedActorSystem system) : base(system)
    {
        _inner = new MiscMessageSerializer(system);
        _refused = new()
        {
            [_inner.Manifest(PoisonPill.Instance)] = "PoisonPill",
            [_inner.Manifest(Kill.Instance)] = "Kill",
            [_inner.Manifest(new Status.Failure(null))] = "Status.Failure",
            [_inner.Manifest(new Status.Success(null))] = "Status.Success",
        };
    }

    public override int Identifier => _inner.Identifier;

    public override string Manifest(object o) => _inner.Manifest(o);

    public override byte[] ToBinary(object obj) => _inner.ToBinary(obj);

    public override object FromBinary(byte[] bytes, string manifest) => _refused.TryGetValue(manifest, out var what)
        ? throw new WireFormatException($"a {what} from the network was refused: only the coordinator ends a run, with its own messages")
        : _inner.FromBinary(bytes, manifest);
}

/// <summary>
/// Akka.Remote's serializer of system messages (id 22), taking from the network only what remote
/// death watch needs (Watch, Unwatch, DeathWatchNotification). The rest (Terminate, Create,
/// Recreate, Suspend, Resume, Supervise, Failed) crosses nodes only for remotely deployed actors,
/// which a run never has; a stranger's Terminate stopped the coordinator.
/// </summary>
public sealed class GuardedSystemMessageSerializer : Serializer
{
    private static readonly HashSet<Type> Heard = [typeof(Akka.Dispatch.SysMsg.Watch), typeof(Akka.Dispatch.SysMsg.Unwatch), typeof(Akka.Dispatch.SysMsg.DeathWatchNotification)];
    private readonly SystemMessageSerializer _inner;

    public GuardedSystemMessageSerializer(ExtendedActorSystem system) : base(system) => _inner = new SystemMessageSerializer(system);

    public override int Identifier => _inner.Identifier;

    public override bool IncludeManifest => _inner.IncludeManifest;

    public override byte[] ToBinary(object obj) => _inner.ToBinary(obj);

    public override object FromBinary(byte[] bytes, Type type) => type is not null && Heard.Contains(type)
        ? _inner.FromBinary(bytes, type)
        : throw new WireFormatException($"a system message ({type?.Name ?? "no type named"}) from the network was refused: only death watch crosses nodes in a run");
}
