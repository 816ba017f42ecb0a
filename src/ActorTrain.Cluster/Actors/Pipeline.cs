using System.Diagnostics;
using ActorTrain.Cluster.Protocol;
using ActorTrain.Cluster.Telemetry;
using ActorTrain.Cluster.Transport;
using ActorTrain.Core.Data;
using ActorTrain.Core.Models;
using ActorTrain.Core.Optimization;
using ActorTrain.Core.Pipeline;
using ActorTrain.Core.Simulation;
using Akka.Actor;
using Akka.Event;

namespace ActorTrain.Cluster.Actors;

/// <summary>
/// parallelism.*: the model's layers in <see cref="Stages"/> contiguous stages (each stage's first
/// layer in <see cref="FirstLayers"/>), each step's batch in <see cref="MicroBatches"/> micro-batches
/// run in <see cref="Schedule"/> order.
/// </summary>
public sealed record PipelineSettings(int Stages, int MicroBatches, PipelineScheduleKind Schedule, IReadOnlyList<int> FirstLayers)
{
    /// <summary>Stage s owns layers [FirstLayers[s], FirstLayers[s + 1]) (the last to the model's end).</summary>
    public (int First, int Last) Layers(int stage, int layerCount) =>
        (FirstLayers[stage], stage + 1 < Stages ? FirstLayers[stage + 1] : layerCount);

    /// <summary>The parameter ranges the stages own, in order (what the coordinator assembles snapshots from).</summary>
    public ParameterRange[] Ranges(ModelSpec model) => Enumerable.Range(0, Stages).Select(s =>
    {
        var (first, last) = Layers(s, model.LayerCount);
        return StageModel.RangeOf(model, first, last);
    }).ToArray();
}

/// <summary>Driver -> stage 0: the step's batch (features and labels of every micro-batch, in order).</summary>
public sealed record PipelineBatch(long Step, float[] Features, int[] Labels, int Count) : ITrainingMessage;

/// <summary>
/// Stage s -> s + 1: a micro-batch's output activations (the labels ride along for the last stage; they are not counted as bytes)
/// and the step's samples (the loss is their mean: fewer than training.batch-size in an epoch's short last batch).
/// </summary>
public sealed record StageActivations(int FromStage, long Step, int Micro, float[] Values, int[] Labels, int StepSamples) : ITrainingMessage;

/// <summary>Stage s + 1 -> s: the delta of stage s's last pre-activations for a micro-batch (computed from the activations stage s + 1 holds).</summary>
public sealed record StageGradients(int FromStage, long Step, int Micro, float[] Values) : ITrainingMessage;

/// <summary>
/// Hybrid D x P, stage s of replica r -> stage s of replica 0: its gradient of the step (over its step's samples), to be averaged over
/// the replicas; a non-finite one (FP16) is left out of the mean, as a shard leaves out a non-finite push.
/// </summary>
public sealed record StageReplicaGradient(int Stage, int Replica, long Step, float[] Values, int Samples, bool NonFinite = false) : ITrainingMessage;

/// <summary>Stage -> its driver, with a dynamic FP16 loss scale: whether the stage's gradient of the step is finite.</summary>
public sealed record StageChecked(int Stage, long Step, bool Finite) : ITrainingMessage;

/// <summary>
/// Driver -> each of its stages, with a dynamic FP16 loss scale: whether every stage's gradient was finite (otherwise the
/// replica's step is skipped, as a worker's non-finite push is), and the scale of the next step (the scaler's, after this step).
/// </summary>
public sealed record StageVerdict(long Step, bool Finite, float NextScale) : ITrainingMessage;

/// <summary>Hybrid D x P, stage s of replica 0 -> stage s of every other replica: the weights after the step's optimizer step.</summary>
public sealed record StageReplicaWeights(int Stage, long Step, float[] Values) : ITrainingMessage;

/// <summary>
/// Stage -> driver: the stage has stepped its optimizer for <paramref name="Step"/>; the last stage
/// adds the batch's mean loss; FP16: the gradient elements lost to underflow, and whether the
/// gradient was not finite (skipped).
/// </summary>
public sealed record StageDone(int Stage, long Step, float Loss, double ComputeSeconds, double IdleSeconds, long Underflowed = 0, bool NonFinite = false) : ITrainingMessage;

/// <summary>
/// One pipeline stage: it owns its layers' FP32 weights, their gradient and optimizer state, and runs
/// its schedule's operations as their inputs arrive (a forward needs the micro-batch's activations
/// from the stage before, or the batch at stage 0; a backward needs the gradient from the stage
/// after, or its own loss at the last stage). Activations and deltas go through the link
/// (micro-batch x width x 4 bytes, 2 in FP16). Once its last backward is done it takes one optimizer step (a
/// synchronous flush), and it answers the coordinator as a parameter-server shard does: a snapshot
/// at step 0 and every eval-every steps, a final one at max-steps or when asked. Under the virtual
/// clock each operation takes its share of the step's modelled compute time, by FLOPs: forward a
/// third, backward two thirds.
///
/// Hybrid D x P: D replicas of the pipeline, each with its driver and data partition (worker r).
/// Stage s of replica 0 is the stage's parameter server: the other replicas send it their
/// gradient for the step, it sums them in replica order, takes the mean (as a shard sums pushes)
/// and steps the optimizer, and sends the new weights back. Replica r's stage s is at the link's
/// endpoint shard-(r x P + s); only replica 0's stages answer the coordinator.
/// </summary>
public sealed class PipelineStage : LinkedActor
{
    public sealed record Settings(
        int Stage,
        PipelineSettings Pipeline,
        ModelSpec Model,
        float[] InitialWeights,
        OptimizerSettings Optimizer,
        LearningRateSchedule Schedule,
        long MaxSteps,
        int SnapshotEvery,
        int BatchSize,
        ComputeTime ComputeTime,
        DeviceProfile? Device,
        int TraceEvery = 1,
        int Replica = 0,
        int Replicas = 1,
        Core.Precision.PrecisionMode Precision = Core.Precision.PrecisionMode.Fp32,
        float LossScale = 1,
        int CheckpointEvery = 0,
        ShardCheckpoint? Restore = null,
        bool DynamicScale = false);

    private readonly Settings _settings;
    private readonly IActorRef _coordinator;
    private readonly StageModel _model;
    private readonly PipelineOp[] _ops;
    private readonly float[] _weights;
    private readonly float[] _computeWeights;
    private readonly float[] _gradient;
    private readonly bool _fp16;
    private readonly int _element;
    private long _skipped, _underflowed;
    private bool _nonFinite;
    private readonly Optimizer _optimizer;
    private readonly ParameterRange _range;
    private readonly double _forwardSeconds, _backwardSeconds, _applySeconds;
    private readonly int _inputWidth, _outputWidth;
    private int _stepSamples;
    private readonly int[] _replicaSamples;
    private readonly bool[] _replicaFinite;
    private long _samples;
    private IReadOnlyList<IActorRef> _stages = [];
    private IReadOnlyList<IActorRef> _replicas = [];
    private IActorRef _driver = ActorRefs.Nobody;
    private readonly float[]?[] _replicaGradients;
    private bool _ownGradientIn;
    private readonly Dictionary<int, (float[] Values, int[] Labels)> _inputs = [];
    private readonly Dictionary<int, float[]> _deltas = [];
    private int _next, _peakHeld;
    private bool _ended, _awaitingVerdict;
    private long _step, _bytesIn, _bytesOut;
    private float _loss;
    private double _computeSeconds, _idleSince, _idleSeconds;
    private ActivityContext _run;

    public PipelineStage(Settings settings, ILink link, IActorRef coordinator) : base(link)
    {
        _settings = settings;
        _coordinator = coordinator;
        var p = settings.Pipeline;
        var (first, last) = p.Layers(settings.Stage, settings.Model.LayerCount);
        _model = new StageModel(settings.Model, first, last, settings.Precision, settings.LossScale);
        _fp16 = settings.Precision == Core.Precision.PrecisionMode.Fp16;
        _element = _fp16 ? 2 : 4;
        _range = _model.Range;
        _ops = PipelineSchedule.Ops(p.Schedule, settings.Stage, p.Stages, p.MicroBatches);
        (_inputWidth, _outputWidth) = (settings.Model.LayerSizes[first], settings.Model.LayerSizes[last]);
        _weights = (float[])settings.InitialWeights.Clone();
        _computeWeights = _fp16 ? (float[])settings.InitialWeights.Clone() : _weights;
        RoundWeights();
        _gradient = new float[_weights.Length];
        _optimizer = Optimizer.Create(settings.Optimizer, _range.Length);
        if (settings.Restore is { } restore) Restore(restore);
        // the step's modelled compute (the whole model, the whole batch) split by this stage's share of the FLOPs
        double share = (double)_model.ForwardFlopsPerSample / Enumerable.Range(0, settings.Model.LayerCount).Sum(l => 2.0 * settings.Model.LayerSizes[l] * settings.Model.LayerSizes[l + 1]);
        double step = settings.ComputeTime.Kind == ComputeTimeKind.Measured ? 0 : settings.ComputeTime.Seconds(0, settings.Model, settings.BatchSize, Core.Precision.PrecisionMode.Fp32);
        _forwardSeconds = step * share / 3 / p.MicroBatches;
        _backwardSeconds = 2 * _forwardSeconds;
        _applySeconds = settings.Device?.ApplySeconds(_range.Length, _optimizer.State.Count) ?? 0;
        _replicaGradients = new float[]?[settings.Replicas];
        _replicaSamples = new int[settings.Replicas];
        _replicaFinite = new bool[settings.Replicas];

        ReceiveFromCoordinator<Begin>(OnBegin);
        Receive<PipelineBatch>(OnBatch);
        Receive<StageActivations>(a =>
        {
            if (!FromStage(a, a.FromStage, _settings.Stage - 1) || a.Step != _step || !Shaped(a, a.Micro, a.StepSamples, a.Values, _inputWidth, a.Labels)) return;
            _stepSamples = a.StepSamples;
            _bytesIn += (long)_element * a.Values.Length;
            _inputs[a.Micro] = (a.Values, a.Labels);
            Run();
        });
        Receive<StageGradients>(g =>
        {
            if (!FromStage(g, g.FromStage, _settings.Stage + 1) || g.Step != _step || !Shaped(g, g.Micro, _stepSamples, g.Values, _outputWidth, null)) return;
            _bytesIn += (long)_element * g.Values.Length;
            _deltas[g.Micro] = g.Values;
            Run();
        });
        Receive<StageReplicaGradient>(g =>
        {
            if (_settings.Replica != 0 || g.Stage != _settings.Stage || (uint)g.Replica >= (uint)_settings.Replicas || g.Replica == 0 || g.Step != _step
                || g.Values.Length != _range.Length || g.Samples is < 1 || g.Samples > _settings.BatchSize || !Authentic(Endpoint.Shard(g.Replica * _settings.Pipeline.Stages + _settings.Stage), g)) return;
            _bytesIn += 4L * g.Values.Length;
            _replicaGradients[g.Replica] = g.Values;
            _replicaSamples[g.Replica] = g.Samples;
            _replicaFinite[g.Replica] = !g.NonFinite;
            TrySync();
        });
        Receive<StageReplicaWeights>(w =>
        {
            if (_settings.Replica == 0 || w.Stage != _settings.Stage || w.Step != _step || w.Values.Length != _range.Length
                || !Authentic(Endpoint.Shard(_settings.Stage), w)) return;
            w.Values.CopyTo(_weights, _range.Start);
            RoundWeights();
            Array.Clear(_gradient, _range.Start, _range.Length);
            Done();
        });
        Receive<StageVerdict>(OnVerdict);
        ReceiveFromCoordinator<FinalSnapshotRequest>(_ => Finish());
        ReceiveFromCoordinator<StopTraining>(_ => Context.Stop(Self));
    }

    /// <summary>
    /// Goes on from replica 0's checkpoint of this stage (every replica's stage s holds the same
    /// weights after a step): its layers' weights, the optimizer, the step and the counters.
    /// </summary>
    private void Restore(ShardCheckpoint c)
    {
        if (c.Weights.Length != _range.Length || c.WorkerClocks.Length != _settings.Replicas)
            throw new Core.ActorTrainException($"checkpoint of stage {c.Shard} holds {c.Weights.Length} weights and {c.WorkerClocks.Length} replicas; " +
                $"this run's stage has {_range.Length} and {_settings.Replicas}");
        c.Weights.CopyTo(_weights, _range.Start);
        RoundWeights();
        _optimizer.Restore(c.OptimizerSteps, c.OptimizerState);
        _step = c.Step;
        var k = c.Counters;
        (_skipped, _samples, _bytesIn, _bytesOut, _peakHeld) = (k.PushesSkippedNonFinite, k.Samples, k.BytesIn, k.BytesOut, k.PeakActivations);
    }

    /// <summary>Replica 0, every checkpoint-every steps before the last: its layers' part of the run's checkpoint.</summary>
    private void SendCheckpoint()
    {
        if (_settings.Replica != 0 || _settings.CheckpointEvery <= 0 || _step % _settings.CheckpointEvery != 0 || _step >= _settings.MaxSteps) return;
        Link.Send(_coordinator, new ShardCheckpoint(_settings.Stage, _step, _step, _weights.AsSpan(_range.Start, _range.Length).ToArray(), _optimizer.Steps,
            _optimizer.State.Select(x => (float[])x.Clone()).ToArray(), Enumerable.Repeat(_step, _settings.Replicas).ToArray(), Counters()), 0, TrafficClass.Control, Self);
    }

    /// <summary>The actor's name: stage-s, or replica-r-stage-s with several replicas.</summary>
    public static string ActorName(int replica, int stage, int replicas) => replicas == 1 ? $"stage-{stage}" : $"replica-{replica}-stage-{stage}";

    /// <summary>This stage's endpoint index on the link: replica r's stage s is shard-(r x P + s).</summary>
    public static int EndpointOf(int replica, int stage, int stages) => replica * stages + stage;

    public static Props Props(Settings settings, ILink link, IActorRef coordinator) =>
        Akka.Actor.Props.Create(() => new PipelineStage(settings, link, coordinator));

    /// <summary>A message from the stage next to this one, as attached on the link; anything else is dropped.</summary>
    private bool FromStage(object message, int claimed, int expected) =>
        claimed == expected && (uint)expected < (uint)_settings.Pipeline.Stages
        && Authentic(Endpoint.Shard(EndpointOf(_settings.Replica, expected, _settings.Pipeline.Stages)), message);

    /// <summary>
    /// A micro-batch message as this stage expects it: a micro-batch of the step, of a step of 1..batch-size
    /// samples, its share of them (<see cref="PipelineSchedule.MicroBatch"/>) x width values and a
    /// label in range for each sample. Messages from other nodes come off the wire; a wrong shape
    /// would throw inside the model and restart the stage with its state lost.
    /// </summary>
    private bool Shaped(object message, int micro, int stepSamples, float[] values, int width, int[]? labels)
    {
        int m = _settings.Pipeline.MicroBatches;
        int count = stepSamples is >= 1 && stepSamples <= _settings.BatchSize && (uint)micro < (uint)m
            ? PipelineSchedule.MicroBatch(stepSamples, m, micro).Count : -1;
        if (count >= 0 && values.Length == count * width
            && (labels is null || (labels.Length == count && LabelsInRange(labels, _settings.Model.Outputs)))) return true;
        Context.GetLogger().Warning($"{Self.Path.Name}: dropped a {message.GetType().Name} of micro-batch {micro} of a {stepSamples}-sample step with {values.Length} values" +
            (labels is null ? "" : $" and {labels.Length} labels") +
            $": expected micro-batch 0..{m - 1} of a step of 1..{_settings.BatchSize} samples, its share of them x {width} values" +
            (labels is null ? "" : $" and a label below {_settings.Model.Outputs} for each"));
        return false;
    }

    private static bool LabelsInRange(int[] labels, int classes)
    {
        foreach (int label in labels)
            if ((uint)label >= (uint)classes) return false;
        return true;
    }

    private void OnBegin(Begin begin)
    {
        // Peers: every stage of this replica in order, the replica's driver, then this stage of every replica
        int stages = _settings.Pipeline.Stages;
        if (begin.Peers is not { } peers || peers.Count != stages + 1 + _settings.Replicas) return;
        _stages = peers.Take(stages).ToList();
        _driver = peers[stages];
        _replicas = peers.Skip(stages + 1).ToList();
        _run = begin.Trace;
        _idleSince = Link.Now;
        if (_settings.Replica == 0) SendSnapshot(final: false);
    }

    private void OnBatch(PipelineBatch batch)
    {
        if (_settings.Stage != 0 || !Authentic(Endpoint.Worker(_settings.Replica), batch) || batch.Step != _step) return;
        int width = _settings.Model.Inputs;
        if (batch.Count is < 1 || batch.Count > _settings.BatchSize || batch.Features.Length != batch.Count * width || batch.Labels.Length != batch.Count
            || !LabelsInRange(batch.Labels, _settings.Model.Outputs))
        {
            Context.GetLogger().Warning($"{Self.Path.Name}: dropped a batch of {batch.Count} samples with {batch.Features.Length} features and {batch.Labels.Length} labels: " +
                $"expected 1..{_settings.BatchSize} samples of {width} features, labels below {_settings.Model.Outputs}");
            return;
        }
        _stepSamples = batch.Count;
        for (int m = 0; m < _settings.Pipeline.MicroBatches; m++)
        {
            var (offset, count) = PipelineSchedule.MicroBatch(batch.Count, _settings.Pipeline.MicroBatches, m);
            _inputs[m] = (batch.Features.AsSpan(offset * width, count * width).ToArray(), batch.Labels.AsSpan(offset, count).ToArray());
        }
        Run();
    }

    /// <summary>Runs the schedule's operations while their inputs are in; after the last one, the optimizer step.</summary>
    private void Run()
    {
        bool ran = false;
        while (_next < _ops.Length)
        {
            var op = _ops[_next];
            if (op.Forward ? !_inputs.ContainsKey(op.MicroBatch) : !_deltas.ContainsKey(op.MicroBatch)) break;
            if (!ran) _idleSeconds += Link.Now - _idleSince;
            ran = true;
            if (op.Forward) Forward(op.MicroBatch);
            else Backward(op.MicroBatch);
            _next++;
            _peakHeld = Math.Max(_peakHeld, _model.Held);
        }
        if (ran) _idleSince = Link.Now;
        if (_next == _ops.Length && !_ended)
        {
            _ended = true;
            EndStep();
        }
    }

    private void Forward(int micro)
    {
        _inputs.Remove(micro, out var input);
        double from = Link.Now;
        long started = Stopwatch.GetTimestamp();
        var output = _model.Forward(micro, _computeWeights, input.Values, input.Labels.Length);
        float[]? delta = null;
        if (_model.IsLast)
        {
            var (loss, d) = _model.Loss(micro, input.Labels, [], _stepSamples);
            _loss += loss;
            delta = d;
        }
        Spend(_forwardSeconds, started);
        Trace("stage.forward", from, micro);
        if (delta is not null) _deltas[micro] = delta;
        else
        {
            _bytesOut += (long)_element * output.Length;
            Link.Send(_stages[_settings.Stage + 1], new StageActivations(_settings.Stage, _step, micro, output, input.Labels, _stepSamples), (long)_element * output.Length,
                TrafficClass.WorkerToWorker, Self);
        }
    }

    private void Backward(int micro)
    {
        _deltas.Remove(micro, out var delta);
        double from = Link.Now;
        long started = Stopwatch.GetTimestamp();
        var upstream = _model.Backward(micro, _computeWeights, delta!, _gradient);
        Spend(_backwardSeconds, started);
        Trace("stage.backward", from, micro);
        if (upstream is not null)
        {
            _bytesOut += (long)_element * upstream.Length;
            Link.Send(_stages[_settings.Stage - 1], new StageGradients(_settings.Stage, _step, micro, upstream), (long)_element * upstream.Length,
                TrafficClass.WorkerToWorker, Self);
        }
    }

    /// <summary>The operation's time: its modelled share, or under the measured compute time what it took.</summary>
    private void Spend(double modelled, long started)
    {
        double measured = Stopwatch.GetElapsedTime(started).TotalSeconds;
        double seconds = _settings.ComputeTime.Kind == ComputeTimeKind.Measured ? measured : modelled;
        _computeSeconds += seconds;
        Link.Occupy(seconds, measured);
    }

    private void Trace(string name, double from, int micro)
    {
        if (RunTelemetry.Tracing && _step % _settings.TraceEvery == 0)
            RunTelemetry.Record(name, _run, Link, from, Link.Now,
                [new("actortrain.stage", _settings.Stage), new("actortrain.replica", _settings.Replica), new("actortrain.micro_batch", micro), new("actortrain.clock", _step)]);
    }

    /// <summary>Every micro-batch is through: step the optimizer (alone, or as replica 0 once every replica's gradient is in), or send the gradient to replica 0.</summary>
    private void EndStep()
    {
        // FP16: rounded and unscaled once, here
        var (finite, underflowed) = _model.Finish(_gradient.AsSpan(_range.Start, _range.Length));
        _underflowed += underflowed;
        _nonFinite = !finite;
        if (_settings.DynamicScale)
        {
            // a dynamic scale: the replica's driver decides for all its stages (one non-finite stage skips the replica's step)
            _awaitingVerdict = true;
            Link.Send(_driver, new StageChecked(_settings.Stage, _step, finite), 0, TrafficClass.Control, Self);
            return;
        }
        Step(finite);
    }

    /// <summary>The driver's verdict on the step's gradient (dynamic loss scale): whether it counts, and the scale of the next step.</summary>
    private void OnVerdict(StageVerdict verdict)
    {
        if (!_awaitingVerdict || verdict.Step != _step || !(verdict.NextScale > 0) || !float.IsFinite(verdict.NextScale)
            || !Authentic(Endpoint.Worker(_settings.Replica), verdict)) return;
        _awaitingVerdict = false;
        _nonFinite = !verdict.Finite;
        _model.Scale = verdict.NextScale;
        Step(verdict.Finite);
    }

    /// <summary>
    /// The step with this stage's gradient, or without it when it is not finite (zeroed and counted;
    /// with no finite gradient there is no optimizer step, as at a shard): alone, or through replica 0.
    /// </summary>
    private void Step(bool finite)
    {
        if (!finite)
        {
            _skipped++;
            Array.Clear(_gradient, _range.Start, _range.Length);
        }
        if (_settings.Replicas == 1)
        {
            _samples += _stepSamples;
            if (finite) Apply(_gradient.AsSpan(_range.Start, _range.Length));
            Done();
            return;
        }
        if (_settings.Replica != 0)
        {
            var values = _gradient.AsSpan(_range.Start, _range.Length).ToArray();
            _bytesOut += 4L * values.Length;
            Link.Send(_replicas[0], new StageReplicaGradient(_settings.Stage, _settings.Replica, _step, values, _stepSamples, !finite), 4L * values.Length,
                TrafficClass.WorkerToWorker, Self);
            return;
        }
        _ownGradientIn = true;
        _replicaFinite[0] = finite;
        TrySync();
    }

    /// <summary>Replica 0: once its own and every other replica's gradient is in, the mean of the finite ones takes the optimizer step and the weights go back.</summary>
    private void TrySync()
    {
        if (!_ownGradientIn || _replicaGradients.Skip(1).Any(g => g is null)) return;
        var sum = _gradient.AsSpan(_range.Start, _range.Length);
        // summed in replica order (a non-finite one left out; replica 0's own is zero then) and scaled by
        // 1 / (finite replicas), as a shard sums its pushes: D replicas step as D data-parallel workers do
        int finite = _replicaFinite[0] ? 1 : 0;
        for (int r = 1; r < _settings.Replicas; r++)
            if (_replicaFinite[r])
            {
                System.Numerics.Tensors.TensorPrimitives.Add(sum, _replicaGradients[r], sum);
                finite++;
            }
        if (finite > 0)
        {
            System.Numerics.Tensors.TensorPrimitives.Multiply(sum, 1f / finite, sum);
            Apply(sum);
        }
        else Array.Clear(_gradient, _range.Start, _range.Length);
        Array.Clear(_replicaGradients);
        Array.Clear(_replicaFinite);
        // every replica's samples, as a shard counts every worker's pushes
        _samples += _stepSamples + _replicaSamples.Sum();
        Array.Clear(_replicaSamples);
        _ownGradientIn = false;
        var weights = _weights.AsSpan(_range.Start, _range.Length).ToArray();
        for (int r = 1; r < _settings.Replicas; r++)
        {
            _bytesOut += 4L * weights.Length;
            Link.Send(_replicas[r], new StageReplicaWeights(_settings.Stage, _step, weights), 4L * weights.Length, TrafficClass.WorkerToWorker, Self);
        }
        Done();
    }

    private void Apply(Span<float> gradient)
    {
        _optimizer.Step(_weights.AsSpan(_range.Start, _range.Length), gradient, _settings.Schedule.Rate(_step));
        Array.Clear(_gradient, _range.Start, _range.Length);
        RoundWeights();
        if (Link.IsVirtual) Link.Occupy(_applySeconds, 0);
    }

    /// <summary>FP16: the weights the next step computes with, the FP32 master weights rounded (FP32: the master weights themselves).</summary>
    private void RoundWeights()
    {
        if (!_fp16) return;
        var range = _computeWeights.AsSpan(_range.Start, _range.Length);
        _weights.AsSpan(_range.Start, _range.Length).CopyTo(range);
        Core.Precision.HalfPrecision.Round(range);
    }

    /// <summary>The step is done here: tell the driver, snapshot (replica 0) and go on.</summary>
    private void Done()
    {
        Link.Send(_driver, new StageDone(_settings.Stage, _step, _model.IsLast ? _loss : float.NaN, _computeSeconds, _idleSeconds, _underflowed, _nonFinite),
            0, TrafficClass.Control, Self);
        _underflowed = 0;
        _step++;
        _next = 0;
        // every operation took its input; anything left is a duplicate and must not feed the next step
        _inputs.Clear();
        _deltas.Clear();
        _ended = false;
        _loss = 0;
        _computeSeconds = _idleSeconds = 0;
        _idleSince = Link.Now;
        SendCheckpoint();
        if (_step >= _settings.MaxSteps) Finish();
        else if (_step % _settings.SnapshotEvery == 0 && _settings.Replica == 0) SendSnapshot(final: false);
    }

    private void Finish()
    {
        if (_settings.Replica == 0) SendSnapshot(final: true);
        Become(() =>
        {
            ReceiveAny(m =>
            {
                if (m is StopTraining) Context.Stop(Self);
            });
        });
    }

    private void SendSnapshot(bool final) =>
        Link.Send(_coordinator, new ShardSnapshot(_settings.Stage, _step, _weights.AsSpan(_range.Start, _range.Length).ToArray(), Counters(), final), 0,
            TrafficClass.Control, Self);

    private ShardCounters Counters() => new(_optimizer.Steps, _optimizer.Steps, _skipped, 0, _samples, _bytesIn, _bytesOut, _bytesIn, _bytesOut,
        1, new long[ShardCounters.HistogramBuckets], 0, 0, 0) { PeakActivations = _peakHeld };
}

/// <summary>
/// A pipeline replica's data and bookkeeping, on worker r's endpoint: it draws each step's batch (the
/// whole mini-batch of training.batch-size, split into micro-batches by the first stage), hands it to
/// stage 0, and once every stage has stepped its optimizer reports the step to the coordinator (the
/// last stage's loss) and starts the next.
/// </summary>
public sealed class PipelineDriver : LinkedActor
{
    private readonly PipelineSettings _pipeline;
    private readonly int _replica;
    private readonly ModelSpec _model;
    private readonly MiniBatchIterator _batches;
    private readonly BatchBuffer _buffer;
    private readonly IActorRef _coordinator;
    private IReadOnlyList<IActorRef> _stages = [];
    private long _step;
    private float _loss;
    private double _compute, _idle;
    private readonly long _maxSteps;
    private readonly Core.Precision.LossScaler _scaler;
    private float _stepScale;
    private readonly bool[] _checked, _doneStages;
    private long _underflowed;
    private bool _nonFinite;
    private int _samples;

    /// <param name="scaler">the replica's loss scaler, as a worker's (static: the stages' scale, 1 in FP32; dynamic: the driver decides each step for its stages)</param>
    /// <param name="startStep">a resumed run's step: the batches before it are drawn and skipped, so the data order goes on as it was</param>
    public PipelineDriver(PipelineSettings pipeline, int replica, ModelSpec model, Dataset partition, int batchSize, ulong dataSeed, long maxSteps,
        Core.Precision.LossScaler scaler, ILink link, IActorRef coordinator, long startStep = 0)
        : base(link)
    {
        _scaler = scaler;
        _stepScale = scaler.Scale;
        _checked = new bool[pipeline.Stages];
        _doneStages = new bool[pipeline.Stages];
        _pipeline = pipeline;
        _replica = replica;
        _model = model;
        _batches = new MiniBatchIterator(partition, batchSize, dataSeed);
        _buffer = _batches.CreateBuffer();
        for (long i = 0; i < startStep; i++) _batches.Next(_buffer);
        _step = startStep;
        _coordinator = coordinator;
        _maxSteps = maxSteps;
        ReceiveFromCoordinator<Begin>(begin =>
        {
            // Peers: the replica's stages in order, then this driver
            if (begin.Peers is not { } peers || peers.Count != pipeline.Stages + 1) return;
            _stages = peers.Take(pipeline.Stages).ToList();
            NextStep();
        });
        Receive<StageDone>(OnDone);
        Receive<StageChecked>(OnChecked);
        ReceiveFromCoordinator<StopTraining>(_ => Context.Stop(Self));
    }

    /// <summary>The actor's name: pipeline, or pipeline-r with several replicas.</summary>
    public static string ActorName(int replica, int replicas) => replicas == 1 ? "pipeline" : $"pipeline-{replica}";

    public static Props Props(PipelineSettings pipeline, int replica, ModelSpec model, Dataset partition, int batchSize, ulong dataSeed, long maxSteps,
        Core.Precision.LossScaler scaler, ILink link, IActorRef coordinator, long startStep = 0) =>
        Akka.Actor.Props.Create(() => new PipelineDriver(pipeline, replica, model, partition, batchSize, dataSeed, maxSteps, scaler, link, coordinator, startStep));

    /// <summary>
    /// A dynamic loss scale: once every stage has said whether its gradient is finite, the scaler
    /// takes the replica's verdict (GradScaler over the whole model: one non-finite stage skips the
    /// step and backs the scale off) and every stage hears it with the next step's scale.
    /// </summary>
    private void OnChecked(StageChecked c)
    {
        if ((uint)c.Stage >= (uint)_pipeline.Stages || c.Step != _step || _checked[c.Stage]
            || !Authentic(Endpoint.Shard(PipelineStage.EndpointOf(_replica, c.Stage, _pipeline.Stages)), c)) return;
        _checked[c.Stage] = true;
        _nonFinite |= !c.Finite;
        if (_checked.Any(x => !x)) return;
        Array.Clear(_checked);
        bool finite = !_nonFinite;
        _scaler.Update(!finite);
        foreach (var stage in _stages) Link.Send(stage, new StageVerdict(_step, finite, _scaler.Scale), 0, TrafficClass.Control, Self);
    }

    private void NextStep()
    {
        _batches.Next(_buffer);
        int count = _samples = _buffer.Count;
        Link.Send(_stages[0], new PipelineBatch(_step, _buffer.Features.AsSpan(0, count * _model.Inputs).ToArray(), _buffer.Labels.AsSpan(0, count).ToArray(), count),
            0, TrafficClass.Control, Self);
    }

    private void OnDone(StageDone done)
    {
        if ((uint)done.Stage >= (uint)_pipeline.Stages || done.Step != _step || _doneStages[done.Stage]
            || !Authentic(Endpoint.Shard(PipelineStage.EndpointOf(_replica, done.Stage, _pipeline.Stages)), done)) return;
        _doneStages[done.Stage] = true;
        if (!float.IsNaN(done.Loss)) _loss = done.Loss;
        _compute += done.ComputeSeconds;
        _idle += done.IdleSeconds;
        _underflowed += done.Underflowed;
        _nonFinite |= done.NonFinite;
        if (_doneStages.Any(x => !x)) return;
        Array.Clear(_doneStages);
        int samples = _samples;
        // per stage on average: compute, and idle (the bubble, and waiting for activations and gradients)
        Link.Send(_coordinator, new WorkerStepReport(_replica, _step, _loss, samples, _model.FlopsPerSample * samples,
            _compute / _pipeline.Stages, 0, _idle / _pipeline.Stages, _underflowed, _nonFinite, _stepScale, _batches.Epoch), 0, TrafficClass.Control, Self);
        (_loss, _compute, _idle, _underflowed, _nonFinite) = (0, 0, 0, 0, false);
        // the scale the next step runs at (a dynamic scaler moved at this step's verdict)
        _stepScale = _scaler.Scale;
        _step++;
        if (_step < _maxSteps) NextStep();
    }
}
