using ActorTrain.Core.Models;

namespace ActorTrain.Core.Pipeline;

/// <summary>
/// The layers [First, Last) of a dense model as one pipeline stage, in FP32, with the reference
/// model's arithmetic: forward of a micro-batch (keeping its layer inputs and pre-activations until
/// its backward), the loss at the last stage as a share of the whole batch's mean, and backward
/// (the parameter gradient accumulated over micro-batches, the input's delta for the stage before).
/// Every sample is computed as the reference computes it, and the gradient sums the samples in
/// micro-batch order: micro-batches run backward in order give the bits of one pass over the whole batch.
/// Weights and gradients are full-length vectors of which this stage reads and writes only its range.
/// </summary>
public sealed class StageModel
{
    private readonly ModelSpec _spec;
    private readonly int _totalSamples;
    private readonly Dictionary<int, (float[][] Inputs, float[][] Pre, int Count)> _held = [];

    /// <param name="totalSamples">the samples of the whole step (micro-batches x micro-batch size): the loss is their mean</param>
    public StageModel(ModelSpec spec, int first, int last, int totalSamples)
    {
        if (spec.SizesOnly || first < 0 || last > spec.LayerCount || first >= last)
            throw new ArgumentException($"layers [{first}, {last}) of a {spec.LayerCount}-layer model with values");
        (_spec, First, Last, _totalSamples) = (spec, first, last, totalSamples);
        Range = new ParameterRange(spec.Weight(first).Offset, spec.Bias(last - 1).Offset + spec.Bias(last - 1).Length - spec.Weight(first).Offset);
    }

    public int First { get; }
    public int Last { get; }
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
        var a = input;
        for (int l = First; l < Last; l++)
        {
            var z = ReferenceModel.LayerForward(_spec, weights, l, a, count);
            inputs[l - First] = a;
            pre[l - First] = z;
            a = l + 1 < _spec.LayerCount ? Array.ConvertAll(z, v => ReferenceModel.Activate(_spec.Activation, v)) : z;
        }
        _held[micro] = (inputs, pre, count);
        return a;
    }

    /// <summary>The last stage: this micro-batch's share of the batch's mean loss, and the output delta its backward starts from.</summary>
    public (float Loss, float[] Delta) Loss(int micro, ReadOnlySpan<int> labels, ReadOnlySpan<float> targets)
    {
        if (!IsLast) throw new InvalidOperationException("only the last stage computes the loss");
        var (_, pre, count) = _held[micro];
        var delta = new float[count * _spec.Outputs];
        float loss = ReferenceModel.OutputLossAndDelta(_spec, pre[^1], count, labels, targets, delta, _totalSamples);
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
            int fin = _spec.LayerSizes[l], fout = _spec.LayerSizes[l + 1];
            ReferenceModel.AddLayerGradient(_spec, l, inputs[l - First], delta, count, gradient);
            if (l == 0) return null;
            // the delta of layer l - 1's pre-activations needs its activations: this stage's input when l is its first layer
            var z = l - 1 >= First ? pre[l - 1 - First] : null;
            if (z is null)
            {
                // the previous layer belongs to the stage before: it gets d(loss)/d(its activations), which it multiplies by the derivative
                var upstream = new float[count * fin];
                var weightsOfL = weights.Slice(_spec.Weight(l).Offset, fin * fout);
                for (int i = 0; i < count; i++)
                    for (int k = 0; k < fin; k++)
                    {
                        float s = 0;
                        for (int o = 0; o < fout; o++) s += delta[i * fout + o] * weightsOfL[k * fout + o];
                        upstream[i * fin + k] = s;
                    }
                return upstream;
            }
            delta = ReferenceModel.PreviousDelta(_spec, weights, l, delta, z, inputs[l - First], count);
        }
        return null;
    }

    /// <summary>
    /// A stage that receives d(loss)/d(output activations) from the next stage turns it into the
    /// delta of its last layer's pre-activations (times the activation's derivative), as the
    /// reference does inside one backward pass.
    /// </summary>
    public float[] DeltaFromActivationGradient(int micro, float[] upstream)
    {
        var (inputs, pre, count) = _held[micro];
        int fout = OutputWidth;
        var z = pre[^1];
        var delta = new float[count * fout];
        // the activations are the next stage's input, a(z) recomputed from the held pre-activations (the same bits)
        for (int i = 0; i < delta.Length; i++)
        {
            float a = ReferenceModel.Activate(_spec.Activation, z[i]);
            delta[i] = upstream[i] * ReferenceModel.ActivationDerivative(_spec.Activation, z[i], a);
        }
        return delta;
    }
}
