using ActorTrain.Cluster.Remoting;
using ActorTrain.Cluster.Transport;
using Akka.Actor;
using Akka.TestKit.Xunit2;

namespace ActorTrain.Cluster.Tests;

/// <summary>A node's host, on a one-node cluster whose only member is this test's system, in the coordinator's role.</summary>
public class NodeHostTests() : TestKit("""
    akka.actor.provider = cluster
    akka.remote.dot-netty.tcp { hostname = 127.0.0.1, port = 0 }
    akka.cluster.roles = [coordinator]
    akka.loglevel = OFF
    """)
{
    /// <summary>Fails on "fail", answers anything else with its count of messages so far.</summary>
    private sealed class Counter : ReceiveActor
    {
        private int _seen;

        public Counter() => ReceiveAny(m =>
        {
            if (m is "fail") throw new InvalidOperationException("boom");
            Sender.Tell(++_seen);
        });
    }

    [Fact]
    public async Task An_actor_of_the_node_s_part_that_fails_is_stopped_not_rebuilt_with_fresh_state()
    {
        var cluster = Akka.Cluster.Cluster.Get(Sys);
        var up = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        cluster.RegisterOnMemberUp(() => up.TrySetResult());
        cluster.Join(cluster.SelfAddress);
        await up.Task.WaitAsync(TimeSpan.FromSeconds(30));

        var host = Sys.ActorOf(NodeHost.Props((_, _) => new HostedPart(new WallClockLink(), [("shard-0", Props.Create(() => new Counter()), Core.Simulation.Endpoint.Shard(0))]),
            CreateTestProbe().Ref));
        host.Tell(new HostRun("", "ps", [0], TestActor, [], null, 0));
        var shard = ExpectMsg<Hosted>().Actors.Single();
        Watch(shard);
        shard.Tell("count");
        Assert.Equal(1, ExpectMsg<int>());
        shard.Tell("fail");
        // restarted, it would answer the next message with a count of 1 again
        ExpectTerminated(shard);
    }
}
