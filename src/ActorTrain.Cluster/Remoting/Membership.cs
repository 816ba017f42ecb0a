using Akka.Actor;
using Akka.Cluster;

namespace ActorTrain.Cluster.Remoting;

/// <summary>
/// Who may speak to a node: actors of this node, and current members of its cluster; the run's
/// requests, only its coordinator. Everything else that reaches a node over the network — a process
/// that only knows its address — is dropped by the actors that ask here.
/// </summary>
public static class Membership
{
    public static bool Admits(ActorSystem system, Address from)
    {
        var cluster = Akka.Cluster.Cluster.Get(system);
        if (!from.HasGlobalScope || from == cluster.SelfAddress) return true;
        return cluster.State.Members.Any(m => m.Address == from && m.Status is MemberStatus.Joining
            or MemberStatus.WeaklyUp or MemberStatus.Up or MemberStatus.Leaving or MemberStatus.Exiting);
    }

    /// <summary>
    /// Whether <paramref name="from"/> is this cluster's coordinator: the oldest member with the
    /// coordinator's role. Without TLS any process that reaches the seed can join, with any role; one
    /// that joined as a second coordinator told every node the run was over (a shard was lost). The
    /// cluster's coordinator founds it (or joins before any other coordinator), so it is the oldest.
    /// </summary>
    public static bool IsCoordinator(ActorSystem system, Address from)
    {
        var cluster = Akka.Cluster.Cluster.Get(system);
        Member? oldest = null;
        foreach (var m in cluster.State.Members)
            if (m.HasRole("coordinator") && m.Status is MemberStatus.Up or MemberStatus.Leaving or MemberStatus.Exiting && (oldest is null || m.IsOlderThan(oldest)))
                oldest = m;
        return oldest is not null && oldest.Address == (from.HasGlobalScope ? from : cluster.SelfAddress);
    }

    /// <summary>
    /// Whether <paramref name="removed"/>, a member with the coordinator's role just removed, was this
    /// cluster's coordinator: no coordinator that remains is older. One that joined later and left
    /// must not take the nodes out of the run.
    /// </summary>
    public static bool WasCoordinator(ActorSystem system, Member removed) =>
        !Akka.Cluster.Cluster.Get(system).State.Members.Any(m => m.HasRole("coordinator") && m.Address != removed.Address && m.IsOlderThan(removed));

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
