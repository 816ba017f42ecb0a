using Akka.Actor;
using Akka.Cluster;

namespace ActorTrain.Cluster.Remoting;

/// <summary>
/// Who may speak to a node: actors of this node, and current members of its cluster (with a given
/// role, where one is asked for). Everything else that reaches a node over the network — a process
/// that only knows its address — is dropped by the actors that ask here.
/// </summary>
public static class Membership
{
    public static bool Admits(ActorSystem system, Address from, string? role = null)
    {
        var cluster = Akka.Cluster.Cluster.Get(system);
        if (!from.HasGlobalScope || from == cluster.SelfAddress) return role is null || cluster.SelfRoles.Contains(role);
        return cluster.State.Members.Any(m => m.Address == from && (role is null || m.HasRole(role)) && m.Status is MemberStatus.Joining
            or MemberStatus.WeaklyUp or MemberStatus.Up or MemberStatus.Leaving or MemberStatus.Exiting);
    }
}
