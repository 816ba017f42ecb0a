using ActorTrain.Cluster.Remoting;
using Akka.Actor;

namespace ActorTrain.Cluster.Tests;

public sealed class MembershipTests
{
    private static Address Node(int port) => new("akka.tcp", "actortrain", "127.0.0.1", port);

    /// <summary>
    /// The coordinator starts a run only when its view of the cluster has been seen by every Up
    /// member. A CI run stalled at step 0 because one stage's node had not yet heard that the other
    /// had joined and dropped its first activations as a stranger's.
    /// </summary>
    [Theory]
    [InlineData(new[] { 1, 2, 3 }, new[] { 1, 2, 3 }, new int[0])]
    [InlineData(new[] { 1, 2, 3 }, new[] { 1, 3 }, new[] { 2 })]
    [InlineData(new[] { 1, 2, 3 }, new[] { 1 }, new[] { 2, 3 })]
    [InlineData(new[] { 1, 2 }, new[] { 1, 2, 3 }, new int[0])]
    [InlineData(new[] { 3, 1, 2 }, new int[0], new[] { 3, 1, 2 })]
    public void A_run_waits_for_the_members_that_have_not_seen_the_current_view(int[] up, int[] seen, int[] waiting)
    {
        var unseen = Membership.NotYetSeenBy(up.Select(Node), seen.Select(Node).ToHashSet());
        Assert.Equal(waiting.Select(Node), unseen);
    }
}
