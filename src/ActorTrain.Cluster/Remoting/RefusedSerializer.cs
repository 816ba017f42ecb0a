using Akka.Actor;
using Akka.Serialization;

namespace ActorTrain.Cluster.Remoting;

/// <summary>
/// Takes the place of Akka's default serializer (Newtonsoft JSON, id 1, bound to System.Object) on
/// a cluster node. That serializer rebuilds any type a message names, private ones included, so a
/// process that reached a node's port could hand its coordinator an <c>Interrupt</c> (tested: the
/// run stopped) or any other local-only message. Every run message has the wire format
/// (<see cref="WireSerializer"/>) and Akka's own messages have theirs; what is left is refused
/// both ways: sending names the type that has no wire format, receiving names what came.
/// </summary>
public sealed class RefusedSerializer(ExtendedActorSystem system) : Serializer(system)
{
    /// <summary>Akka hands the settings of the serializer it replaces (serialization-settings.json) to this constructor; there are none to use.</summary>
    public RefusedSerializer(ExtendedActorSystem system, Akka.Configuration.Config settings) : this(system)
    {
    }

    /// <summary>Replaces the "json" serializer under its own name and id: bindings to it and frames that name it come here.</summary>
    public static Akka.Configuration.Config Config => Akka.Configuration.ConfigurationFactory.ParseString($$"""
        akka.actor.serializers.json = "{{typeof(RefusedSerializer).AssemblyQualifiedName}}"
        """);

    public override int Identifier => 1;

    public override bool IncludeManifest => true;

    public override byte[] ToBinary(object obj) =>
        throw new WireFormatException($"{obj.GetType().FullName} has no wire format: only the run's messages and Akka's own cross the network");

    public override object FromBinary(byte[] bytes, Type type) =>
        throw new WireFormatException($"a message in Akka's JSON format ({type?.FullName ?? "no type named"}, {bytes.Length} bytes) was refused: this node hears the wire format only");
}
