using ActorTrain.Core.Models;
using ActorTrain.Core.Precision;

namespace ActorTrain.Core.Pipeline;

/// <summary>
/// The layers [First, Last) of a dense model as one pipeline stage, in FP32, with the reference
/// model's arithmetic: forward of a micro-batch (keeping its layer inputs and pre-activations until
/// its backward), the loss at the last stage as a share of the whole batch's mean, and backward
/// (the parameter gradient accumulated over micro-batches, the input's delta for the stage before).
/// Every sample is computed as the reference computes it, and the gradient sums the samples in
/// micro-batch order: micro-batches run backward in order give the bits of one pass over the whole batch.
/// Weights and gradients are full-length vectors of which this stage reads and writes only its range.
///
/// FP16 (the engines' storage contract): the caller passes FP16-rounded weights; the first stage's
/// inputs, every pre-activation, activation and delta are rounded to FP16 as they are stored (and
/// sent), products accumulate in FP32, and the output delta is multiplied by the loss scale. The
/// gradient accumulates in FP32 over the micro-batches; the stage rounds it to FP16 and unscales it
/// once per step. Rounding is per element, so the micro-batches change nothing: a pipeline in FP16
/// gives the bits of one stage over the whole batch in FP16.
/// </summary>
public sealed class StageModel
{
    private readonly ModelSpec _spec;
    private readonly Dictionary<int, (float[][] Inputs, float[][] Pre, int Count)> _held = [];
    private readonly bool _fp16;

    /// <param name="scale">FP16: the (static) loss scale the output delta is multiplied by</param>
    public StageModel(ModelSpec spec, int first, int last, PrecisionMode precision = PrecisionMode.Fp32, float scale = 1)
    {
        _fp16 = precision == PrecisionMode.Fp16;
        Scale = _fp16 ? scale : 1;
        if (spec.SizesOnly || first < 0 || last > spec.LayerCount || first >= last)
            throw new ArgumentException($"layers [{first}, {last}) of a {spec.LayerCount}-layer model with values");
        (_spec, First, Last) = (spec, first, last);
        Range = RangeOf(spec, first, last);
    }

    /// <summary>The parameters of layers [<paramref name="first"/>, <paramref name="last"/>): from the first layer's weights to the last layer's bias.</summary>
    public static ParameterRange RangeOf(ModelSpec spec, int first, int last) =>
        new(spec.Weight(first).Offset, spec.Bias(last - 1).Offset + spec.Bias(last - 1).Length - spec.Weight(first).Offset);

    /// <summary>
    /// The first layer of each of <paramref name="stages"/> stages: balanced by forward FLOPs (the
    /// least largest stage, exactly, over the layer boundaries), or the ones given (each stage's
    /// first layer after the first stage's 0).
    /// </summary>
    public static IReadOnlyList<int> Boundaries(ModelSpec model, int stages, IReadOnlyList<int> given)
    {
        if (given.Count > 0) return [0, .. given];
        var flops = Enumerable.Range(0, model.LayerCount).Select(l => (long)model.LayerSizes[l] * model.LayerSizes[l + 1]).ToArray();
        return ParameterSharding.Partition(flops, stages, "parallelism.pipeline-stages");
    }

    public int First { get; }
    public int Last { get; }

    /// <summary>FP16: the loss scale the output delta is multiplied by and the gradient divided by (a dynamic scale changes between steps); 1 in FP32.</summary>
    public float Scale
    {
        get;
        set => field = _fp16 ? value : 1;
    }
    public ParameterRange Range { get; }
    public bool IsLast => Last == _spec.LayerCount;
    public int InputWidth => _spec.LayerSizes[First];
    public int OutputWidth => _spec.LayerSizes[Last];

    /// <summary>Micro-batches whose activations this stage holds (forward done, backward not yet).</summary>
    public int Held => _held.Count;

    /// <summary>Forward FLOPs per sample of this stage's layers (2 per multiply-add).</summary>
    public long ForwardFlopsPerSample => Enumerable.Range(First, Last - First).Sum(l => 2L * _spec.LayerSizes[l] * _spec.LayerSizes[l + 1]);

    /// <summary>Floats this stage keeps per sample of a micro-batch in flight: each layer's input and pre-activation.</summary>
    public long HeldFloatsPerSample => Enumerable.Range(First, Last - First).Sum(l => (long)_spec.LayerSizes[l] + _spec.LayerSizes[l + 1]);

    /// <summary>The stage's output for <paramref name="count"/> samples (activations, or the logits at the last stage); the micro-batch is held until its backward.</summary>
    public float[] Forward(int micro, ReadOnlySpan<float> weights, float[] input, int count)
    {
        var inputs = new float[Last - First][];
        var pre = new float[Last - First][];
        // the model's input is stored in FP16 too; a later stage's input was stored by the stage before
        var a = First == 0 && _fp16 ? Store((float[])input.Clone()) : input;
        for (int l = First; l < Last; l++)
        {
            var z = Store(ReferenceModel.LayerForward(_spec, weights, l, a, count));
            inputs[l - First] = a;
            pre[l - First] = z;
            a = l + 1 < _spec.LayerCount ? Store(Array.ConvertAll(z, v => ReferenceModel.Activate(_spec.Activation, v))) : z;
        }
        _held[micro] = (inputs, pre, count);
        return a;
    }

    /// <summary>
    /// The last stage: this micro-batch's share of the batch's mean loss over <paramref name="stepSamples"/>
    /// (every micro-batch of the step; fewer than training.batch-size for an epoch's short last batch),
    /// and the output delta its backward starts from.
    /// </summary>
    public (float Loss, float[] Delta) Loss(int micro, ReadOnlySpan<int> labels, ReadOnlySpan<float> targets, int stepSamples)
    {
        if (!IsLast) throw new InvalidOperationException("only the last stage computes the loss");
        var (_, pre, count) = _held[micro];
        var delta = new float[count * _spec.Outputs];
        float loss = ReferenceModel.OutputLossAndDelta(_spec, pre[^1], count, labels, targets, delta, stepSamples);
        if (_fp16)
        {
            System.Numerics.Tensors.TensorPrimitives.Multiply(delta, Scale, delta);
            Store(delta);
        }
        return (loss, delta);
    }

    /// <summary>
    /// Backward of a held micro-batch from the delta of its output: adds its share to
    /// <paramref name="gradient"/> (this stage's range of it) and returns the delta of its input
    /// (null at the first layer of the model, which has no stage before it).
    /// </summary>
    public float[]? Backward(int micro, ReadOnlySpan<float> weights, float[] delta, Span<float> gradient)
    {
        if (!_held.Remove(micro, out var held)) throw new InvalidOperationException($"micro-batch {micro} has no forward held");
        var (inputs, pre, count) = held;
        for (int l = Last - 1; l >= First; l--)
        {
            ReferenceModel.AddLayerGradient(_spec, l, inputs[l - First], delta, count, gradient);
            if (l == 0) return null;
            // the delta of layer l - 1's pre-activations: from its activations, which are this layer's input
            // (held by this stage when l is its first layer: for ReLU a > 0 exactly where z > 0, tanh's derivative needs a only)
            var z = l - 1 >= First ? pre[l - 1 - First] : inputs[0];
            delta = Store(ReferenceModel.PreviousDelta(_spec, weights, l, delta, z, inputs[l - First], count));
            if (l == First) return delta;
        }
        return null;
    }

    /// <summary>A value as stored: rounded to FP16 in place in FP16 mode, unchanged in FP32.</summary>
    private float[] Store(float[] values)
    {
        if (_fp16) HalfPrecision.Round(values);
        return values;
    }

    /// <summary>
    /// The step's accumulated gradient (this stage's range) as it leaves the stage: FP16 rounds it
    /// (returning the values lost to underflow) and divides by the loss scale in FP32. False when it
    /// is not finite: the step is skipped.
    /// </summary>
    public (bool Finite, long Underflowed) Finish(Span<float> gradient)
    {
        if (!_fp16) return (HalfPrecision.AllFinite(gradient), 0);
        long underflowed = HalfPrecision.RoundCountingUnderflow(gradient, gradient);
        if (!HalfPrecision.AllFinite(gradient)) return (false, underflowed);
        System.Numerics.Tensors.TensorPrimitives.Multiply(gradient, 1f / Scale, gradient);
        return (true, underflowed);
    }
}
