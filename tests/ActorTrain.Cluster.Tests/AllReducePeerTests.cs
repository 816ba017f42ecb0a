using ActorTrain.Cluster.Actors;
using ActorTrain.Cluster.Protocol;
using ActorTrain.Core.Collectives;
using Akka.Actor;
using Akka.TestKit.Xunit2;

namespace ActorTrain.Cluster.Tests;

/// <summary>All-reduce peers under attack: what a stranger sends them (or the coordinator on their behalf) changes nothing.</summary>
public class AllReducePeerTests : TestKit
{
    private Task<RunOutcome> Run(IRunObserver? observer = null) =>
        StrangerTarget.Run(Sys, 3, 1, observer, new AllReduceSettings(new RingAllReduce(), 1, Fp16: false));

    /// <summary>
    /// At the first evaluation (the workers are stepping by then), a stranger sends every worker a
    /// chunk for every step of every clock, each naming the right sender, and the coordinator a
    /// digest that disagrees. Taken in, any of them would put a wrong-sized segment in a ring (the
    /// run fails) or end the run as diverged replicas.
    /// </summary>
    private sealed class Stranger(ActorSystem system, IActorRef self) : IRunObserver
    {
        public int Sent;

        public void OnEvaluation(EvaluationPoint point)
        {
            if (point.Step != 0) return;
            foreach (var worker in new[] { 0, 1, 2 })
            {
                var to = system.ActorSelection($"/user/coordinator-*/worker-{worker}");
                for (long clock = 0; clock <= 30; clock++)
                    for (int step = 0; step < 4; step++)
                    {
                        to.Tell(new PeerChunk((worker + 2) % 3, clock, step, 0, 1f, 10, false, new byte[64]), self);
                        Sent++;
                    }
            }
            for (long step = 10; step <= 30; step += 10) system.ActorSelection("/user/coordinator-*").Tell(new ReplicaDigest(1, step, 42), self);
        }
    }

    [Fact]
    public async Task A_stranger_s_chunks_and_digests_are_dropped_and_the_run_ends_as_without_them()
    {
        var clean = await Run();
        var stranger = new Stranger(Sys, CreateTestProbe().Ref);
        var attacked = await Run(stranger);
        Assert.Equal(3 * 31 * 4, stranger.Sent);
        Assert.Equal(StopReason.MaxSteps, attacked.StopReason);
        Assert.Equal(clean.FinalWeights, attacked.FinalWeights);
        Assert.Equal(clean.ReplicaChecks, attacked.ReplicaChecks);
        Assert.True(clean.ReplicaChecks > 0);
    }
}
