using ActorTrain.Cluster.Actors;
using ActorTrain.Cluster.Protocol;
using ActorTrain.Cluster.Transport;
using ActorTrain.Core.Models;
using ActorTrain.Core.Optimization;
using ActorTrain.Core.Pipeline;
using ActorTrain.Core.Simulation;
using Akka.Actor;
using Akka.TestKit.Xunit2;

namespace ActorTrain.Cluster.Tests;

/// <summary>
/// A pipeline stage fed micro-batch messages of the wrong shape (what could come off the wire in a
/// cluster run: a micro-batch out of range, too many or too few values, a label out of range, a
/// batch of the wrong size) drops them and keeps its state: fed the good messages afterwards, it
/// sends exactly what a stage that only ever saw the good ones sends. Accepted, each bad message
/// would throw inside the model (restarting the stage with its peers forgotten) or take the place
/// of a micro-batch's input.
/// </summary>
public sealed class PipelineStageTests : TestKit
{
    // MLP 6 -> 8 -> 3 in two stages (a layer each), batch 4 in 2 micro-batches of 2
    private static readonly ModelSpec Mlp = ModelSpec.Mlp(6, [8], 3, Activation.Tanh);
    private static readonly PipelineSettings Pipeline = new(2, 2, PipelineScheduleKind.GPipe, [0, 1]);
    private const int Batch = 4, Micro = 2;

    /// <summary>Stand for the neighbouring stage and the coordinator (an actor is attached to one endpoint); this test's actor is the driver.</summary>
    private readonly Akka.TestKit.TestProbe _neighbour, _coordinator;

    public PipelineStageTests()
    {
        _neighbour = CreateTestProbe();
        _coordinator = CreateTestProbe();
    }

    private IActorRef Stage(int stage, bool dynamicScale = false)
    {
        var weights = new float[Mlp.ParameterCount];
        Mlp.Initialize(weights, 7);
        var link = new WallClockLink();
        var settings = new PipelineStage.Settings(stage, Pipeline, Mlp, weights, new OptimizerSettings(),
            LearningRateSchedule.Create(ScheduleKind.Constant, 0.1, 10), 10, 10, Batch, ComputeTime.Measured, null)
        {
            Precision = dynamicScale ? Core.Precision.PrecisionMode.Fp16 : Core.Precision.PrecisionMode.Fp32, LossScale = dynamicScale ? 1024 : 1,
            DynamicScale = dynamicScale,
        };
        var actor = Sys.ActorOf(PipelineStage.Props(settings, link, _coordinator.Ref));
        link.Attach(_neighbour.Ref, Endpoint.Shard(1 - stage));
        link.Attach(TestActor, Endpoint.Worker(0));
        link.Attach(_coordinator.Ref, Endpoint.Coordinator);
        link.Attach(actor, Endpoint.Shard(stage));
        var peers = stage == 0 ? new[] { actor, _neighbour.Ref } : [_neighbour.Ref, actor];
        actor.Tell(new Begin(Peers: [.. peers, TestActor, actor]), _coordinator.Ref);
        _coordinator.ExpectMsg<ShardSnapshot>(s => !s.Final);
        return actor;
    }

    private static float[] Values(int count, float scale) => Enumerable.Range(0, count).Select(i => scale * MathF.Sin(i + 1)).ToArray();

    /// <summary>
    /// Sends <paramref name="messages"/> (a batch or a verdict from the driver, the rest from the neighbouring
    /// stage), then collects <paramref name="toNeighbour"/> messages the neighbour gets, <paramref name="toDriver"/>
    /// the driver gets, and with <paramref name="final"/> the final snapshot.
    /// </summary>
    private List<object> Drive(IActorRef stage, IEnumerable<object> messages, int toNeighbour, int toDriver, bool final = true)
    {
        foreach (var message in messages) stage.Tell(message, message is PipelineBatch or StageVerdict ? TestActor : _neighbour.Ref);
        var replies = Enumerable.Range(0, toNeighbour).Select(_ => _neighbour.ExpectMsg<object>()).ToList();
        replies.AddRange(Enumerable.Range(0, toDriver).Select(_ => ExpectMsg<object>()));
        if (!final) return replies;
        stage.Tell(FinalSnapshotRequest.Instance, _coordinator.Ref);
        replies.Add(_coordinator.ExpectMsg<ShardSnapshot>(s => s.Final));
        return replies;
    }

    private static void AssertSameReplies(List<object> clean, List<object> fed)
    {
        Assert.Equal(clean.Count, fed.Count);
        for (int i = 0; i < clean.Count; i++)
        {
            Assert.Equal(clean[i].GetType(), fed[i].GetType());
            switch (clean[i], fed[i])
            {
                case (StageActivations a, StageActivations b):
                    Assert.Equal(a.Micro, b.Micro);
                    Assert.Equal(a.Values, b.Values);
                    Assert.Equal(a.Labels, b.Labels);
                    break;
                case (StageGradients a, StageGradients b):
                    Assert.Equal(a.Micro, b.Micro);
                    Assert.Equal(a.Values, b.Values);
                    break;
                case (StageDone a, StageDone b):
                    Assert.Equal((a.Step, a.Loss), (b.Step, b.Loss));
                    break;
                case (ShardSnapshot a, ShardSnapshot b):
                    Assert.Equal(a.Values.ToArray(), b.Values.ToArray());
                    break;
            }
        }
    }

    [Fact]
    public void The_last_stage_drops_activations_of_the_wrong_shape_and_then_trains_as_if_it_never_saw_them()
    {
        StageActivations Good(int micro) => new(0, 0, micro, Values(Micro * 8, 0.3f + micro), [micro, 2], Batch);
        object[] bad =
        [
            new StageActivations(0, 0, 2, Values(Micro * 8, 1), [0, 1], Batch), // micro-batch out of range
            new StageActivations(0, 0, -1, Values(Micro * 8, 1), [0, 1], Batch),
            new StageActivations(0, 0, 0, Values(Micro * 8 - 1, 1), [0, 1], Batch), // a value short
            new StageActivations(0, 0, 0, Values(Micro * 8 + 8, 1), [0, 1], Batch), // a sample too many
            new StageActivations(0, 0, 0, Values(Micro * 8, 1), [0], Batch), // a label short
            new StageActivations(0, 0, 0, Values(Micro * 8, 1), [0, 3], Batch), // a label beyond the 3 classes
            new StageActivations(0, 0, 1, Values(Micro * 8, 1), [-1, 0], Batch),
            new StageActivations(0, 0, 0, Values(Micro * 8, 1), [0, 1], 0), // a step of no samples
            new StageActivations(0, 0, 0, Values(Micro * 8, 1), [0, 1], Batch + 1), // a step larger than the batch
            new StageActivations(0, 0, 1, Values(Micro * 8, 1), [0, 1], 3), // 3 samples: micro-batch 1 has 1
            new StageGradients(0, 0, 0, Values(Micro * 3, 1)), // the last stage takes no gradients
        ];
        // last stage: two deltas back to stage 0, then the step is done
        var clean = Drive(Stage(1), [Good(0), Good(1)], 2, 1);
        var fed = Drive(Stage(1), [.. bad, Good(0), Good(1)], 2, 1);
        Assert.Equal(2, clean.OfType<StageGradients>().Count());
        Assert.All(clean.OfType<StageGradients>(), g => Assert.Equal(Micro * 8, g.Values.Length));
        Assert.True(float.IsFinite(clean.OfType<StageDone>().Single().Loss));
        AssertSameReplies(clean, fed);
    }

    [Fact]
    public void The_first_stage_drops_batches_and_gradients_of_the_wrong_shape_and_then_trains_as_if_it_never_saw_them()
    {
        var features = Values(Batch * 6, 0.5f);
        var good = new PipelineBatch(0, features, [0, 1, 2, 1], Batch);
        object[] badBatches =
        [
            new PipelineBatch(0, Values(Batch * 6 - 1, 1), [0, 1, 2, 1], Batch), // a feature short
            new PipelineBatch(0, Values(Batch * 6 + 6, 1), [0, 1, 2, 1, 0], Batch + 1), // a sample too many
            new PipelineBatch(0, [], [], 0), // no samples
            new PipelineBatch(0, features, [0, 1, 2], Batch), // a label short
            new PipelineBatch(0, features, [0, 1, 2, 3], Batch), // a label beyond the 3 classes
        ];
        object[] goodGradients = [new StageGradients(1, 0, 1, Values(Micro * 8, 0.2f)), new StageGradients(1, 0, 0, Values(Micro * 8, -0.1f))];
        object[] badGradients =
        [
            new StageGradients(1, 0, 2, Values(Micro * 8, 1)), // micro-batch out of range
            new StageGradients(1, 0, 0, Values(Micro * 8 + 1, 1)), // a value too many
            new StageGradients(1, 0, 1, Values(Micro * 3, 1)), // the width of the model's output, not of this stage's
        ];
        // first stage: two micro-batches of activations forward; with both deltas back, the step is done
        var cleanStage = Stage(0);
        var clean = Drive(cleanStage, [good], 2, 0, final: false);
        clean.AddRange(Drive(cleanStage, goodGradients, 0, 1));
        var fedStage = Stage(0);
        var fed = Drive(fedStage, [.. badBatches, good], 2, 0, final: false);
        fed.AddRange(Drive(fedStage, [.. badGradients, .. goodGradients], 0, 1));
        Assert.Equal([typeof(StageActivations), typeof(StageActivations), typeof(StageDone), typeof(ShardSnapshot)], clean.Select(m => m.GetType()));
        AssertSameReplies(clean, fed);
        // the step happened: the weights moved
        var initial = new float[Mlp.ParameterCount];
        Mlp.Initialize(initial, 7);
        Assert.NotEqual(initial.AsSpan(0, 6 * 8 + 8).ToArray(), ((ShardSnapshot)clean[^1]).Values.ToArray());
    }

    /// <summary>
    /// A dynamic FP16 scale: after its backwards the stage asks its driver and waits. Verdicts that
    /// are not the driver's, not for this step, with a scale that is not a positive finite number, or
    /// a second one, are dropped; the one good verdict steps the stage once.
    /// </summary>
    [Fact]
    public void A_stage_takes_one_verdict_from_its_driver_for_its_step_and_drops_the_rest()
    {
        StageActivations Good(int micro) => new(0, 0, micro, Values(Micro * 8, 0.3f + micro), [micro, 2], Batch);
        var clean = Stage(1, dynamicScale: true);
        var asked = Drive(clean, [Good(0), Good(1)], 2, 1, final: false);
        Assert.Equal(new StageChecked(1, 0, true), asked[^1]);
        var cleanDone = Drive(clean, [new StageVerdict(0, true, 2048f)], 0, 1);

        var fed = Stage(1, dynamicScale: true);
        Drive(fed, [Good(0), Good(1)], 2, 1, final: false);
        // each bad verdict says "skip": taken, it would leave the weights unstepped
        fed.Tell(new StageVerdict(0, false, 2048f), _neighbour.Ref); // not the driver
        foreach (var bad in new[] { new StageVerdict(1, false, 2048f), new StageVerdict(0, false, float.NaN), new StageVerdict(0, false, 0f), new StageVerdict(0, false, float.PositiveInfinity) })
            fed.Tell(bad, TestActor);
        var fedDone = Drive(fed, [new StageVerdict(0, true, 2048f), new StageVerdict(0, false, 1f)], 0, 1);
        AssertSameReplies(cleanDone, fedDone);
        Assert.IsType<StageDone>(fedDone[0]);
        // the control: a stage that took a skip verdict did not step
        var skipped = Stage(1, dynamicScale: true);
        Drive(skipped, [Good(0), Good(1)], 2, 1, final: false);
        var skippedDone = Drive(skipped, [new StageVerdict(0, false, 512f)], 0, 1);
        Assert.NotEqual(((ShardSnapshot)cleanDone[^1]).Values.ToArray(), ((ShardSnapshot)skippedDone[^1]).Values.ToArray());
    }
}
