using System.Numerics.Tensors;
using ActorTrain.Cluster.Protocol;
using ActorTrain.Cluster.Transport;
using ActorTrain.Core.Optimization;
using Akka.Actor;

namespace ActorTrain.Cluster.Actors;

/// <summary>
/// Owns the contiguous range [Start, Start + Length) of the flat parameter vector: its FP32 master
/// weights, the optimizer state for exactly that range, and the synchronisation of the pushes for it.
///
/// BSP: the pushes of clock c are summed (each unscaled by the loss scale it was computed with,
/// in FP32; non-finite pushes are skipped and counted); when all N have arrived the average of the
/// finite ones takes one optimizer step, the version becomes c + 1 and every worker gets the new
/// slice, which is also its answer to the pull of c + 1. If every push of a clock was non-finite the
/// version still advances, without a step, so clocks stay aligned with versions.
/// </summary>
public sealed class ParameterServerShard : ReceiveActor
{
    public sealed record Settings(
        int ShardId,
        int Start,
        float[] InitialValues,
        int Workers,
        OptimizerSettings Optimizer,
        LearningRateSchedule Schedule,
        long MaxSteps,
        int SnapshotEvery)
    {
        public int Length => InitialValues.Length;
    }

    private readonly Settings _settings;
    private readonly ILink _link;
    private readonly IActorRef _coordinator;
    private readonly float[] _weights;
    private readonly float[] _sum;
    private readonly Optimizer _optimizer;
    private readonly List<IActorRef> _pushers;
    private long _version;
    private int _received, _finite;
    private double _scaleSum, _lastStepScale = 1;
    private long _applied, _skipped, _samples, _bytesIn, _bytesOut;

    public ParameterServerShard(Settings settings, ILink link, IActorRef coordinator)
    {
        _settings = settings;
        _link = link;
        _coordinator = coordinator;
        _weights = (float[])settings.InitialValues.Clone();
        _sum = new float[settings.Length];
        _optimizer = Optimizer.Create(settings.Optimizer, settings.Length);
        _pushers = new List<IActorRef>(settings.Workers);
        Training();
    }

    public static Props Props(Settings settings, ILink link, IActorRef coordinator) =>
        Akka.Actor.Props.Create(() => new ParameterServerShard(settings, link, coordinator));

    protected override void PreStart() => SendSnapshot(final: false);

    private void Training()
    {
        Receive<PullParameters>(pull =>
        {
            // Only the first pull reaches a BSP shard: later ones are fused with the push.
            _bytesIn += PullParameters.HeaderBytes;
            if (pull.Clock <= _version) SendSlice(Sender, Slice());
        });
        Receive<PushGradient>(OnPush);
        Receive<FinalSnapshotRequest>(_ =>
        {
            SendSnapshot(final: true);
            Become(Finished);
        });
        Receive<StopTraining>(_ => Context.Stop(Self));
    }

    private void Finished()
    {
        Receive<PullParameters>(_ => { });
        Receive<PushGradient>(_ => { });
        Receive<FinalSnapshotRequest>(_ => { });
        Receive<StopTraining>(_ => Context.Stop(Self));
    }

    private void OnPush(PushGradient push)
    {
        if (push.Clock != _version)
            throw new InvalidOperationException($"shard {_settings.ShardId}: BSP push of clock {push.Clock} from worker {push.Worker} at version {_version}");
        if (push.Gradient.Length != _settings.Length)
            throw new InvalidOperationException($"shard {_settings.ShardId}: push of {push.Gradient.Length} values for a range of {_settings.Length}");
        _received++;
        _pushers.Add(Sender);
        _samples += push.Samples;
        _bytesIn += push.WireBytes;
        _scaleSum += push.LossScale;
        if (push.NonFinite)
        {
            _skipped++;
        }
        else
        {
            TensorPrimitives.MultiplyAdd(push.Gradient.Span, 1f / push.LossScale, _sum, _sum);
            _finite++;
            _applied++;
        }
        if (_received < _settings.Workers) return;

        if (_finite > 0)
        {
            TensorPrimitives.Multiply(_sum, 1f / _finite, _sum);
            _optimizer.Step(_weights, _sum, _settings.Schedule.Rate(_version));
        }
        _version++;
        Array.Clear(_sum);
        _lastStepScale = _scaleSum / _received;
        _scaleSum = 0;
        _received = _finite = 0;

        bool last = _version >= _settings.MaxSteps;
        if (!last)
        {
            var slice = Slice();
            foreach (var worker in _pushers) SendSlice(worker, slice);
        }
        _pushers.Clear();
        if (last)
        {
            SendSnapshot(final: true);
            Become(Finished);
        }
        else if (_version % _settings.SnapshotEvery == 0)
        {
            SendSnapshot(final: false);
        }
    }

    /// <summary>A copy of the weights: sent to every worker and never written again.</summary>
    private ParameterSlice Slice() => new(_settings.ShardId, _version, _weights.AsSpan().ToArray());

    private void SendSlice(IActorRef worker, ParameterSlice slice)
    {
        _bytesOut += slice.WireBytes;
        _link.Send(worker, slice, slice.WireBytes, TrafficClass.ShardToWorker, Self);
    }

    private void SendSnapshot(bool final) =>
        _coordinator.Tell(new ShardSnapshot(_settings.ShardId, _version, _weights.AsSpan().ToArray(),
            new ShardCounters(_optimizer.Steps, _applied, _skipped, _samples, _bytesIn, _bytesOut, _lastStepScale), final), Self);
}
