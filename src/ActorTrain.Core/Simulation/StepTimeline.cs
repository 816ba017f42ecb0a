using ActorTrain.Core.Models;

namespace ActorTrain.Core.Simulation;

/// <summary>training.overlap: when a step's gradients leave the worker.</summary>
public enum OverlapMode
{
    /// <summary>After the whole backward pass, all at once (the first build's step).</summary>
    Off,
    /// <summary>Each layer's gradient as soon as the backward pass has produced it.</summary>
    Layer,
    /// <summary>In buckets of training.bucket-size, filled last layer first (PyTorch DDP, Horovod's tensor fusion).</summary>
    Bucket,
}

/// <summary>A group of consecutive layers whose gradients leave together, and when, from the start of the backward pass.</summary>
public readonly record struct GradientBucket(ParameterRange Range, double ReadyAfter);

/// <summary>
/// The layer-wise timeline of one step. The step's compute time (the device profile's, with the
/// worker's slowdown) is split among the layers in proportion to their FLOPs, forward then
/// backward, so the step takes as long as without overlap; the backward runs last layer first.
/// A bucket's gradient is ready when the backward of its earliest layer is done. The gradient
/// values are the same whatever the mode: only when they leave changes.
/// </summary>
public sealed class StepTimeline
{
    private readonly ModelSpec _model;
    private readonly double[] _forward, _backwardDone;

    private StepTimeline(ModelSpec model, double[] forward, double[] backwardDone, IReadOnlyList<GradientBucket> buckets)
    {
        _model = model;
        _forward = forward;
        _backwardDone = backwardDone;
        Buckets = buckets;
    }

    /// <summary>Per layer, in forward order.</summary>
    public IReadOnlyList<double> Forward => _forward;

    public double ForwardSeconds => _forward.Sum();

    /// <summary>From the start of the backward pass to its end (the first layer's gradient).</summary>
    public double BackwardSeconds => _backwardDone.Length == 0 ? 0 : _backwardDone[0];

    /// <summary>In the order they become ready (last layers first); together they cover the whole parameter vector.</summary>
    public IReadOnlyList<GradientBucket> Buckets { get; }

    /// <param name="computeSeconds">the whole step's forward and backward</param>
    /// <param name="bucketBytes">training.bucket-size, FP32 gradient bytes (bucket mode)</param>
    public static StepTimeline Build(ModelSpec model, double computeSeconds, OverlapMode mode, long bucketBytes)
    {
        var layers = model.Layers;
        double total = layers.Sum(l => l.ForwardFlops + l.BackwardFlops);
        double Share(double flops) => total > 0 ? computeSeconds * flops / total : computeSeconds / (2.0 * layers.Count);
        var forward = layers.Select(l => Share(total > 0 ? l.ForwardFlops : 1)).ToArray();
        var done = new double[layers.Count];
        double t = 0;
        for (int l = layers.Count - 1; l >= 0; l--)
        {
            t += Share(total > 0 ? layers[l].BackwardFlops : 1);
            done[l] = t;
        }
        var buckets = new List<GradientBucket>();
        if (mode == OverlapMode.Off)
        {
            buckets.Add(new GradientBucket(new ParameterRange(0, model.ParameterCount), t));
        }
        else
        {
            // walk the layers backward, closing a bucket once it holds bucket-size (layer mode: every layer)
            int end = model.ParameterCount, start = end;
            double ready = 0;
            for (int l = layers.Count - 1; l >= 0; l--)
            {
                var range = layers[l].Parameters;
                if (range.Length == 0) continue;
                start = range.Start;
                ready = done[l];
                if (mode == OverlapMode.Layer || 4L * (end - start) >= bucketBytes)
                {
                    buckets.Add(new GradientBucket(new ParameterRange(start, end - start), ready));
                    end = start;
                }
            }
            if (end > 0) buckets.Add(new GradientBucket(new ParameterRange(0, end), ready));
        }
        return new StepTimeline(model, forward, done, buckets);
    }

    /// <summary>
    /// After the start of the backward pass, when every gradient in <paramref name="range"/> may
    /// leave: when every bucket it touches is ready (in layer mode, the backward of the earliest
    /// layer it touches is done). A part that spans buckets waits for the last of them.
    /// </summary>
    public double ReadyAfter(ParameterRange range)
    {
        double ready = 0;
        foreach (var bucket in Buckets)
            if (bucket.Range.Start < range.End && range.Start < bucket.Range.End) ready = Math.Max(ready, bucket.ReadyAfter);
        return ready;
    }

    /// <summary>When the forward pass's first layer starts (see <see cref="ForwardEnd"/>).</summary>
    public double ForwardStart(double start, Func<ParameterRange, double> parametersIn)
    {
        var first = _model.Layers[0].Parameters;
        return first.Length > 0 ? Math.Max(start, parametersIn(first)) : start;
    }

    /// <summary>
    /// When the forward pass ends if it may start at <paramref name="start"/> and each layer's
    /// forward waits for its parameters (<paramref name="parametersIn"/>: when a range's values
    /// arrived): t = max(t, in(layer)) + forward(layer), layer by layer.
    /// </summary>
    public double ForwardEnd(double start, Func<ParameterRange, double> parametersIn)
    {
        double t = start;
        var layers = _model.Layers;
        for (int l = 0; l < layers.Count; l++)
        {
            if (layers[l].Parameters.Length > 0) t = Math.Max(t, parametersIn(layers[l].Parameters));
            t += _forward[l];
        }
        return t;
    }
}
