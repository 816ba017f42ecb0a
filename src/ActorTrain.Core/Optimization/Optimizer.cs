using System.Numerics;
namespace ActorTrain.Core.Optimization;

public enum OptimizerKind
{
    Sgd,
    Momentum,
    Nesterov,
    Adagrad,
    RmsProp,
    Adam,
    AdamW,

    /// <summary>K-FAC (<see cref="KfacOptimizer"/>): momentum SGD on the Kronecker-factored natural gradient; needs the model's layers.</summary>
    Kfac,
}

/// <summary>
/// Hyperparameters of a first-order optimizer. Defaults follow PyTorch's so that a trajectory can be
/// compared with torch.optim step for step. <see cref="WeightDecay"/> is an L2 term added to the
/// gradient (PyTorch's weight_decay) for every kind but AdamW, where it is decoupled.
/// </summary>
public sealed record OptimizerSettings
{
    public OptimizerKind Kind { get; init; } = OptimizerKind.Sgd;
    public double Momentum { get; init; } = 0.9;
    public double Beta1 { get; init; } = 0.9;
    public double Beta2 { get; init; } = 0.999;

    /// <summary>RMSprop's smoothing constant.</summary>
    public double Alpha { get; init; } = 0.99;

    /// <summary>Null picks the kind's PyTorch default: 1e-10 for Adagrad, 1e-8 otherwise.</summary>
    public double? Epsilon { get; init; }

    public double WeightDecay { get; init; }

    /// <summary>Adam and AdamW: off gives the textbook update theta -= eta m / (sqrt(v) + eps).</summary>
    public bool BiasCorrection { get; init; } = true;

    /// <summary>K-FAC's factor statistics, damping and schedules (used when <see cref="Kind"/> is Kfac).</summary>
    public KfacSettings Kfac { get; init; } = new();

    public double EffectiveEpsilon => Epsilon ?? (Kind == OptimizerKind.Adagrad ? 1e-10 : 1e-8);

    public void Validate()
    {
        static void Check(bool ok, string key, object value, string rule)
        {
            if (!ok) throw new ActorTrainException($"optimizer.{key} = {value} is out of range: {rule}");
        }
        Check(Momentum is >= 0 and < 1, "momentum", Momentum, "0 <= momentum < 1");
        Check(Beta1 is >= 0 and < 1, "beta1", Beta1, "0 <= beta1 < 1");
        Check(Beta2 is >= 0 and < 1, "beta2", Beta2, "0 <= beta2 < 1");
        Check(Alpha is >= 0 and < 1, "alpha", Alpha, "0 <= alpha < 1");
        Check(EffectiveEpsilon > 0, "epsilon", EffectiveEpsilon, "epsilon > 0");
        Check(WeightDecay >= 0, "weight-decay", WeightDecay, "weight-decay >= 0");
    }
}

/// <summary>
/// A first-order optimizer over one contiguous FP32 slice and the state for exactly that slice, so
/// a parameter-server shard can own its range. Allocation-free per step; state is allocated once.
/// </summary>
public abstract class Optimizer
{
    protected Optimizer(OptimizerSettings settings, int length)
    {
        settings.Validate();
        Settings = settings;
        Length = length;
    }

    public OptimizerSettings Settings { get; }
    public int Length { get; }

    /// <summary>Number of steps taken so far (Adam's t after the step is Steps).</summary>
    public long Steps { get; protected set; }

    /// <summary>The state buffers, for checkpoints and tests (momentum, squared averages, ...).</summary>
    public abstract IReadOnlyList<float[]> State { get; }

    public static Optimizer Create(OptimizerSettings settings, int length) => settings.Kind switch
    {
        OptimizerKind.Sgd => new Sgd(settings, length, momentum: false, nesterov: false),
        OptimizerKind.Momentum => new Sgd(settings, length, momentum: true, nesterov: false),
        OptimizerKind.Nesterov => new Sgd(settings, length, momentum: true, nesterov: true),
        OptimizerKind.Adagrad => new Adagrad(settings, length),
        OptimizerKind.RmsProp => new RmsProp(settings, length),
        OptimizerKind.Adam or OptimizerKind.AdamW => new Adam(settings, length),
        OptimizerKind.Kfac => throw new ArgumentException("K-FAC needs the layers it preconditions: create a KfacOptimizer"),
        _ => throw new ArgumentOutOfRangeException(nameof(settings)),
    };

    /// <summary>One step on <paramref name="gradient"/> x <paramref name="gradientScale"/>.</summary>
    /// <param name="gradientScale">
    /// Multiplies each gradient element as it is read (a mean's 1 / N, a loss scale's inverse): the
    /// same bits as multiplying the gradient beforehand (one rounding either way), without that pass
    /// over it. 1 reads the gradient as it is.
    /// </param>
    public void Step(Span<float> weights, ReadOnlySpan<float> gradient, double learningRate, float gradientScale = 1f)
    {
        if (weights.Length != Length || gradient.Length != Length)
            throw new ArgumentException($"optimizer owns {Length} parameters; got {weights.Length} weights and {gradient.Length} gradients");
        Steps++;
        Apply(weights, gradient, learningRate, gradientScale);
    }

    /// <summary>
    /// The step. Implementations read element i as g[i] x scale, and those that run Vector&lt;float&gt;
    /// lanes keep the scalar loop's operations in its order (no fused multiply-add): the same bits,
    /// 8-16 elements at a time (tested against the scalar loops). Before Adam ran on lanes, the
    /// shard's step took half as long as a one-worker gradient step.
    /// </summary>
    protected abstract void Apply(Span<float> w, ReadOnlySpan<float> g, double lr, float scale);

    /// <summary>Puts back the step count and state buffers of a checkpoint (same kind and length).</summary>
    public void Restore(long steps, IReadOnlyList<float[]> state)
    {
        if (state.Count != State.Count || state.Where((buffer, i) => buffer.Length != State[i].Length).Any())
            throw new ArgumentException($"a checkpoint's optimizer state ({state.Count} buffers) does not fit this {Settings.Kind} optimizer of {Length} parameters");
        for (int i = 0; i < state.Count; i++) state[i].CopyTo(State[i], 0);
        Steps = steps;
        Restored();
    }

    /// <summary>Called once a checkpoint's state is in the <see cref="State"/> buffers (state kept in another form takes it from there).</summary>
    protected virtual void Restored()
    {
    }

    /// <summary>g scale + weight_decay w, the L2-regularised gradient of element i.</summary>
    protected static float L2(ReadOnlySpan<float> g, Span<float> w, int i, float wd, float scale) => wd == 0 ? g[i] * scale : g[i] * scale + wd * w[i];

    /// <summary><see cref="L2"/> for the Vector&lt;float&gt; lanes starting at i, given those lanes of w.</summary>
    protected static Vector<float> L2(ReadOnlySpan<float> g, Vector<float> w, int i, float wd, float scale)
    {
        var d = new Vector<float>(g[i..]) * scale;
        return wd == 0 ? d : d + wd * w;
    }
}

/// <summary>Plain SGD, heavy-ball momentum (v = mu v + g; w -= lr v) and Nesterov (w -= lr (g + mu v)).</summary>
internal sealed class Sgd : Optimizer
{
    private readonly float[] _velocity;
    private readonly bool _momentum, _nesterov;

    public Sgd(OptimizerSettings s, int length, bool momentum, bool nesterov) : base(s, length)
    {
        _momentum = momentum;
        _nesterov = nesterov;
        _velocity = momentum ? new float[length] : [];
    }

    public override IReadOnlyList<float[]> State => _momentum ? [_velocity] : [];

    protected override void Apply(Span<float> w, ReadOnlySpan<float> g, double lr, float scale)
    {
        float rate = (float)lr, wd = (float)Settings.WeightDecay, mu = (float)Settings.Momentum;
        int i = 0, width = Vector<float>.Count;
        var v = _velocity.AsSpan();
        if (Vector.IsHardwareAccelerated)
        {
            for (; i <= w.Length - width; i += width)
            {
                var wi = new Vector<float>(w[i..]);
                var d = L2(g, wi, i, wd, scale);
                if (!_momentum) wi -= rate * d;
                else
                {
                    var vi = mu * new Vector<float>(v[i..]) + d;
                    wi -= rate * (_nesterov ? d + mu * vi : vi);
                    vi.CopyTo(v[i..]);
                }
                wi.CopyTo(w[i..]);
            }
        }
        for (; i < w.Length; i++)
        {
            float d = L2(g, w, i, wd, scale);
            if (!_momentum)
            {
                w[i] -= rate * d;
                continue;
            }
            v[i] = mu * v[i] + d;
            w[i] -= rate * (_nesterov ? d + mu * v[i] : v[i]);
        }
    }
}

/// <summary>sum += g^2; w -= lr g / (sqrt(sum) + eps): the running average below with alpha = 1 and 1 for
/// its (1 - alpha), which multiply exactly, so the bits are those of the sum.</summary>
internal sealed class Adagrad(OptimizerSettings s, int length) : SquareScaled(s, length, 1f, 1f);

/// <summary>v = alpha v + (1 - alpha) g^2; w -= lr g / (sqrt(v) + eps).</summary>
internal sealed class RmsProp(OptimizerSettings s, int length)
    // 1 - alpha is formed in double, as PyTorch does with its Python-float hyperparameters.
    : SquareScaled(s, length, (float)s.Alpha, (float)(1 - s.Alpha));

/// <summary>A step divided by the root of a running average of squared gradients, s = alpha s + beta g^2.</summary>
internal abstract class SquareScaled(OptimizerSettings s, int length, float alpha, float beta) : Optimizer(s, length)
{
    private readonly float[] _square = new float[length];

    public override IReadOnlyList<float[]> State => [_square];

    protected override void Apply(Span<float> w, ReadOnlySpan<float> g, double lr, float scale)
    {
        float rate = (float)lr, wd = (float)Settings.WeightDecay, eps = (float)Settings.EffectiveEpsilon;
        int i = 0, width = Vector<float>.Count;
        if (Vector.IsHardwareAccelerated)
        {
            var square = _square.AsSpan();
            for (; i <= w.Length - width; i += width)
            {
                var wi = new Vector<float>(w[i..]);
                var d = L2(g, wi, i, wd, scale);
                var si = alpha * new Vector<float>(square[i..]) + beta * d * d;
                wi -= rate * d / (Vector.SquareRoot(si) + new Vector<float>(eps));
                si.CopyTo(square[i..]);
                wi.CopyTo(w[i..]);
            }
        }
        for (; i < w.Length; i++)
        {
            float d = L2(g, w, i, wd, scale);
            _square[i] = alpha * _square[i] + beta * d * d;
            w[i] -= rate * d / (MathF.Sqrt(_square[i]) + eps);
        }
    }
}

/// <summary>
/// Adam, in PyTorch's arithmetic: step = lr / (1 - beta1^t), denominator sqrt(v) / sqrt(1 - beta2^t) + eps.
/// AdamW first decays the weights, w *= 1 - lr wd, and adds no L2 term to the gradient.
/// </summary>
internal sealed class Adam(OptimizerSettings s, int length) : Optimizer(s, length)
{
    private readonly float[] _m = new float[length];
    private readonly float[] _v = new float[length];

    public override IReadOnlyList<float[]> State => [_m, _v];

    protected override void Apply(Span<float> w, ReadOnlySpan<float> g, double lr, float scale)
    {
        bool decoupled = Settings.Kind == OptimizerKind.AdamW;
        // 1 - beta is formed in double, as PyTorch does with its Python-float hyperparameters.
        float oneMinusB1 = (float)(1 - Settings.Beta1), b2 = (float)Settings.Beta2, oneMinusB2 = (float)(1 - Settings.Beta2);
        float eps = (float)Settings.EffectiveEpsilon;
        float wd = decoupled ? 0f : (float)Settings.WeightDecay;
        double bc1 = Settings.BiasCorrection ? 1 - Math.Pow(Settings.Beta1, Steps) : 1;
        double bc2 = Settings.BiasCorrection ? 1 - Math.Pow(Settings.Beta2, Steps) : 1;
        float stepSize = (float)(lr / bc1);
        float bc2Sqrt = (float)Math.Sqrt(bc2);
        float decay = decoupled ? (float)(1 - lr * Settings.WeightDecay) : 1f;
        int i = 0;
        if (Vector.IsHardwareAccelerated)
        {
            var m = _m.AsSpan();
            var v = _v.AsSpan();
            int width = Vector<float>.Count;
            for (; i <= w.Length - width; i += width)
            {
                var wi = new Vector<float>(w[i..]);
                if (decoupled) wi *= decay;
                var d = L2(g, wi, i, wd, scale);
                var mi = new Vector<float>(m[i..]);
                mi += (d - mi) * oneMinusB1;
                var vi = b2 * new Vector<float>(v[i..]) + oneMinusB2 * d * d;
                var denom = Vector.SquareRoot(vi) / bc2Sqrt + new Vector<float>(eps);
                wi -= stepSize * mi / denom;
                mi.CopyTo(m[i..]);
                vi.CopyTo(v[i..]);
                wi.CopyTo(w[i..]);
            }
        }
        for (; i < w.Length; i++)
        {
            if (decoupled) w[i] *= decay;
            float d = L2(g, w, i, wd, scale);
            _m[i] += (d - _m[i]) * oneMinusB1;
            _v[i] = b2 * _v[i] + oneMinusB2 * d * d;
            float denom = MathF.Sqrt(_v[i]) / bc2Sqrt + eps;
            w[i] -= stepSize * _m[i] / denom;
        }
    }
}
