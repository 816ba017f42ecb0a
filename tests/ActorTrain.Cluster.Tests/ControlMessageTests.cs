using ActorTrain.Cluster.Actors;
using ActorTrain.Cluster.Protocol;
using Akka.Actor;
using Akka.TestKit.Xunit2;

namespace ActorTrain.Cluster.Tests;

/// <summary>
/// The run's control messages (Begin, WorkerLost, FinalSnapshotRequest, StopTraining) are the
/// coordinator's alone: shards and workers drop them from anyone else.
/// </summary>
public class ControlMessageTests : TestKit
{
    private Task<RunOutcome> Run(IRunObserver? observer = null) => StrangerTarget.Run(Sys, 3, 2, observer);

    /// <summary>
    /// At the first evaluation a stranger tells both shards that workers 0 and 1 were lost (taken
    /// in, the BSP barrier would close on one push), asks them for their final snapshot (they would
    /// stop stepping), begins them again, and tells shards and workers to stop training.
    /// </summary>
    private sealed class Stranger(ActorSystem system, IActorRef self) : IRunObserver
    {
        public int Sent;

        public void OnEvaluation(EvaluationPoint point)
        {
            if (point.Step != 0) return;
            object[] toShards = [new WorkerLost(0), new WorkerLost(1), FinalSnapshotRequest.Instance, Begin.First, StopTraining.Instance];
            object[] toWorkers = [new Begin(Rejoin: true), StopTraining.Instance];
            for (int k = 0; k < 2; k++)
                foreach (var message in toShards) Send($"shard-{k}", message);
            for (int w = 0; w < 3; w++)
                foreach (var message in toWorkers) Send($"worker-{w}", message);
        }

        private void Send(string actor, object message)
        {
            system.ActorSelection($"/user/coordinator-*/{actor}").Tell(message, self);
            Sent++;
        }
    }

    [Fact]
    public async Task A_strangers_control_messages_are_dropped_and_the_run_ends_as_without_them()
    {
        var clean = await Run();
        var stranger = new Stranger(Sys, CreateTestProbe().Ref);
        var attacked = await Run(stranger);
        Assert.Equal(2 * 5 + 3 * 2, stranger.Sent);
        Assert.Equal(StopReason.MaxSteps, attacked.StopReason);
        Assert.Equal(30, attacked.FinalStep);
        Assert.Equal(clean.FinalWeights, attacked.FinalWeights);
        Assert.Equal(clean.Evaluations.Select(e => (e.Step, e.TestLoss)), attacked.Evaluations.Select(e => (e.Step, e.TestLoss)));
    }
}
