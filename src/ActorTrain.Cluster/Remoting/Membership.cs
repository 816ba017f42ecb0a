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

    /// <summary>
    /// The members that have not yet seen this node's current view of the cluster (its gossip's
    /// seen-by set), in the order given. A leader moves joining nodes to Up without waiting for them
    /// to hear of each other, so a node can be Up here while another member still drops its frames
    /// as a stranger's (<see cref="Admits"/>). Once every member has seen a view in which all of
    /// them are Up, each one admits all the others: membership only grows by gossip.
    /// </summary>
    public static IReadOnlyList<Address> NotYetSeenBy(IEnumerable<Address> members, IReadOnlySet<Address> seenBy) =>
        members.Where(m => !seenBy.Contains(m)).ToList();
}
