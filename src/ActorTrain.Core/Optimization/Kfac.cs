using System.Numerics.Tensors;
using ActorTrain.Core.Data;
using ActorTrain.Core.Models;

namespace ActorTrain.Core.Optimization;

/// <summary>
/// optimizer.kfac.*: Kronecker-factored approximate curvature (Martens and Grosse, 2015).
/// <see cref="FactorDecay"/>: running average of the factors (new = decay x old + (1 - decay) x
/// batch); <see cref="Damping"/>: Tikhonov damping gamma, split between the factors by the pi rule;
/// <see cref="InverseEvery"/>: steps between inversions; <see cref="KlClip"/>: bound on each layer's
/// step (0: off); <see cref="FactorEvery"/>: steps between factor contributions from the workers.
/// </summary>
public sealed record KfacSettings(double FactorDecay = 0.95, double Damping = 1e-3, int InverseEvery = 10, double KlClip = 1e-3, int FactorEvery = 1)
{
    public void Validate()
    {
        static void Check(bool ok, string key, object value, string rule)
        {
            if (!ok) throw new ActorTrainException($"optimizer.kfac.{key} = {value} is out of range: {rule}");
        }
        Check(FactorDecay is >= 0 and < 1, "factor-decay", FactorDecay, "0 <= factor-decay < 1");
        Check(Damping > 0, "damping", Damping, "damping > 0 (the damped factors must be invertible)");
        Check(InverseEvery >= 1, "inverse-every", InverseEvery, "inverse-every >= 1");
        Check(KlClip >= 0, "kl-clip", KlClip, "kl-clip >= 0 (0: off)");
        Check(FactorEvery >= 1, "factor-every", FactorEvery, "factor-every >= 1");
    }
}

/// <summary>
/// One dense layer as K-FAC sees it, at <see cref="Offset"/> in the flat parameter vector: its weight
/// (Inputs x Outputs, row-major) followed by its bias (Outputs), which together are the
/// (Inputs + 1) x Outputs matrix M whose last row is the bias. A = E[a a^T] over the layer's inputs
/// with a 1 appended (Inputs + 1 square), G = E[g g^T] over the per-sample loss gradients of its
/// pre-activations (Outputs square).
/// </summary>
public readonly record struct KfacLayer(int Index, int Inputs, int Outputs, int Offset)
{
    public int ADim => Inputs + 1;
    public int GDim => Outputs;
    public int Length => ADim * Outputs;

    /// <summary>Floats of the layer's factor contribution on the wire: the upper triangles of A and G.</summary>
    public int PackedLength => ADim * (ADim + 1) / 2 + GDim * (GDim + 1) / 2;

    /// <summary>FLOPs of one batch's contribution: B (a a^T and g g^T, symmetric halves, multiply-add = 2).</summary>
    public double ContributionFlops(int batch) => (double)batch * (ADim * (ADim + 1) + GDim * (GDim + 1));

    /// <summary>FLOPs of inverting both damped factors (Cholesky n^3 / 3, then the inverse from it 2 n^3 / 3).</summary>
    public double InverseFlops => Math.Pow(ADim, 3) + Math.Pow(GDim, 3);

    /// <summary>FLOPs of preconditioning the gradient: A^-1 M G^-1.</summary>
    public double PreconditionFlops => 2.0 * ((double)ADim * ADim * GDim + (double)ADim * GDim * GDim);
}

/// <summary>The dense layers of a model and each layer's factor contribution from one batch.</summary>
public static class KfacFactors
{
    /// <summary>Every dense layer of an MLP, softmax or linear regression; a workload has no values to precondition.</summary>
    public static KfacLayer[] Layers(ModelSpec spec)
    {
        if (spec.SizesOnly) throw new ActorTrainException("optimizer.type = kfac needs a model with values (mlp, softmax, linear), not a sizes-only workload");
        return Enumerable.Range(0, spec.LayerCount).Select(l => new KfacLayer(l, spec.LayerSizes[l], spec.LayerSizes[l + 1], spec.Weight(l).Offset)).ToArray();
    }

    /// <summary>The layers whose parameters lie in [start, start + length): a K-FAC shard owns whole layers.</summary>
    public static KfacLayer[] InRange(ModelSpec spec, int start, int length) =>
        Layers(spec).Where(l => l.Offset >= start && l.Offset + l.Length <= start + length).ToArray();

    /// <summary>
    /// The batch's factors of every layer, in double: A = (1/B) sum a~ a~^T and G = (1/B) sum g g^T,
    /// g the per-sample loss gradient of the layer's pre-activations (the labels' loss: the
    /// empirical Fisher). Full symmetric matrices, row-major.
    /// </summary>
    public static (double[] A, double[] G)[] Compute(ModelSpec spec, ReadOnlySpan<float> weights, Batch batch)
    {
        var w = new double[weights.Length];
        for (int i = 0; i < w.Length; i++) w[i] = weights[i];
        var x = new double[batch.Count * spec.Inputs];
        for (int i = 0; i < x.Length; i++) x[i] = batch.Features[i];
        var targets = new double[batch.Targets.Length];
        for (int i = 0; i < targets.Length; i++) targets[i] = batch.Targets[i];
        var (inputs, deltas) = ReferenceModel.LayerInputsAndDeltas<double>(spec, w, x, batch.Count, batch.Labels, targets);
        int n = batch.Count;
        var result = new (double[] A, double[] G)[spec.LayerCount];
        for (int l = 0; l < spec.LayerCount; l++)
        {
            int fin = spec.LayerSizes[l], fout = spec.LayerSizes[l + 1], da = fin + 1;
            var a = new double[da * da];
            var g = new double[fout * fout];
            var input = inputs[l];
            var delta = deltas[l];
            var row = new double[da];
            for (int i = 0; i < n; i++)
            {
                for (int k = 0; k < fin; k++) row[k] = input[i * fin + k];
                row[fin] = 1;
                AddOuter(a, row, da, 1.0 / n);
                // deltas are of the mean loss (1/B each): the per-sample gradient is B x delta, so g g^T / B = B delta delta^T
                AddOuter(g, delta.AsSpan(i * fout, fout), fout, n);
            }
            Mirror(a, da);
            Mirror(g, fout);
            result[l] = (a, g);
        }
        return result;
    }

    /// <summary>Upper triangle of target += scale x v v^T.</summary>
    private static void AddOuter(double[] target, ReadOnlySpan<double> v, int n, double scale)
    {
        for (int r = 0; r < n; r++)
        {
            double vr = v[r] * scale;
            if (vr != 0) TensorPrimitives.MultiplyAdd(v[r..n], vr, target.AsSpan(r * n + r, n - r), target.AsSpan(r * n + r, n - r));
        }
    }

    private static void Mirror(double[] m, int n)
    {
        for (int r = 0; r < n; r++)
            for (int c = r + 1; c < n; c++) m[c * n + r] = m[r * n + c];
    }

    /// <summary>The upper triangles of A then G, as floats (what a worker sends).</summary>
    public static void Pack(double[] a, int da, double[] g, int dg, Span<float> target)
    {
        int i = 0;
        foreach (var (m, n) in new[] { (a, da), (g, dg) })
            for (int r = 0; r < n; r++)
                for (int c = r; c < n; c++) target[i++] = (float)m[r * n + c];
    }

    /// <summary>The packed contribution of <paramref name="layers"/> (in order) from one batch's factors.</summary>
    public static float[] Pack(IReadOnlyList<KfacLayer> layers, (double[] A, double[] G)[] factors)
    {
        var packed = new float[layers.Sum(l => l.PackedLength)];
        int offset = 0;
        foreach (var layer in layers)
        {
            var (a, g) = factors[layer.Index];
            Pack(a, layer.ADim, g, layer.GDim, packed.AsSpan(offset, layer.PackedLength));
            offset += layer.PackedLength;
        }
        return packed;
    }
}

/// <summary>
/// K-FAC over the whole layers of one contiguous range (a shard's): running factors, their damped
/// inverses, and momentum SGD on the preconditioned gradient A^-1 M G^-1 of each layer.
///
/// A step: the factor contributions added since the last step (<see cref="AddFactors"/>, averaged)
/// enter the running averages (the first ones replace the start); at steps 1, 1 + k, 1 + 2k, ...
/// (k = <see cref="KfacSettings.InverseEvery"/>, and at the first step with factors) the damped factors
/// A + pi sqrt(gamma) I and G + sqrt(gamma) / pi I, pi = sqrt((tr A / dim A) / (tr G / dim G)), are
/// inverted by Cholesky; the gradient plus weight-decay x weights is preconditioned layer by layer; with
/// kl-clip kappa > 0 each layer's direction is scaled by min(1, sqrt(kappa / (lr^2 sum P o grad)))
/// (per layer, so that a shard needs nothing from the others); then v = mu v + P, w -= lr v.
/// Before any factor has arrived the preconditioner is the identity (momentum SGD). Factors and
/// inverses are kept in double.
/// </summary>
public sealed class KfacOptimizer : Optimizer
{
    private readonly KfacLayer[] _layers;
    private readonly int _start;
    private readonly float[] _velocity;
    private readonly double[][] _a, _g, _aInverse, _gInverse, _aBatch, _gBatch;
    private readonly double[] _grad, _temp, _direction;
    private int _contributions;
    private bool _haveFactors, _haveInverses;
    private readonly float[] _factorState;

    /// <param name="start">where the range starts in the flat parameter vector (the layers' offsets are absolute)</param>
    public KfacOptimizer(OptimizerSettings settings, int start, int length, IReadOnlyList<KfacLayer> layers) : base(settings, length)
    {
        settings.Kfac.Validate();
        _start = start;
        _layers = [.. layers];
        foreach (var layer in _layers)
            if (layer.Offset < start || layer.Offset + layer.Length > start + length)
                throw new ArgumentException($"layer {layer.Index} [{layer.Offset}, {layer.Offset + layer.Length}) is not inside the range [{start}, {start + length})");
        if (_layers.Sum(l => l.Length) != length)
            throw new ActorTrainException($"K-FAC preconditions whole layers: the range [{start}, {start + length}) holds {_layers.Length} whole layer(s) of {_layers.Sum(l => l.Length)} parameters, not all {length} of its own");
        PackedLength = _layers.Sum(l => l.PackedLength);
        _velocity = new float[length];
        double[][] Each(Func<KfacLayer, int> size) => _layers.Select(l => new double[size(l)]).ToArray();
        _a = Each(l => l.ADim * l.ADim);
        _g = Each(l => l.GDim * l.GDim);
        _aInverse = Each(l => l.ADim * l.ADim);
        _gInverse = Each(l => l.GDim * l.GDim);
        _aBatch = Each(l => l.ADim * l.ADim);
        _gBatch = Each(l => l.GDim * l.GDim);
        int largest = _layers.Length == 0 ? 0 : _layers.Max(l => l.Length);
        _grad = new double[largest];
        _temp = new double[largest];
        _direction = new double[largest];
        // the running factors and their inverses in checkpoints: each double as two floats (bit for bit), then two flags
        _factorState = new float[2 * 2 * _layers.Sum(l => l.ADim * l.ADim + l.GDim * l.GDim) + 2];
    }

    public IReadOnlyList<KfacLayer> Layers => _layers;

    /// <summary>
    /// Velocity, then the running factors and their inverses (bit for bit: doubles as float pairs)
    /// and whether each exists: a run resumed from a checkpoint steps exactly as the uninterrupted
    /// one, whatever the step is against inverse-every.
    /// </summary>
    public override IReadOnlyList<float[]> State
    {
        get
        {
            var bits = System.Runtime.InteropServices.MemoryMarshal.Cast<float, double>(_factorState.AsSpan(0, _factorState.Length - 2));
            int i = 0;
            foreach (var m in FactorArrays())
            {
                m.CopyTo(bits.Slice(i));
                i += m.Length;
            }
            _factorState[^2] = _haveFactors ? 1 : 0;
            _factorState[^1] = _haveInverses ? 1 : 0;
            return [_velocity, _factorState];
        }
    }

    private IEnumerable<double[]> FactorArrays()
    {
        for (int l = 0; l < _layers.Length; l++)
        {
            yield return _a[l];
            yield return _g[l];
            yield return _aInverse[l];
            yield return _gInverse[l];
        }
    }

    /// <summary>After a checkpoint's state went into <see cref="State"/>'s buffers: take the factors and inverses back.</summary>
    protected override void Restored()
    {
        var bits = System.Runtime.InteropServices.MemoryMarshal.Cast<float, double>(_factorState.AsSpan(0, _factorState.Length - 2));
        int i = 0;
        foreach (var m in FactorArrays())
        {
            bits.Slice(i, m.Length).CopyTo(m);
            i += m.Length;
        }
        _haveFactors = _factorState[^2] != 0;
        _haveInverses = _factorState[^1] != 0;
    }

    /// <summary>Floats one worker's contribution holds for this range's layers (upper triangles of A and G, layer by layer).</summary>
    public int PackedLength { get; }

    /// <summary>Adds one worker's packed contribution for this step; the step averages those it got.</summary>
    public void AddFactors(ReadOnlySpan<float> packed)
    {
        if (packed.Length != PackedLength) throw new ArgumentException($"a factor contribution of {packed.Length} floats; this range's layers take {PackedLength}");
        int i = 0;
        for (int l = 0; l < _layers.Length; l++)
        {
            foreach (var (m, n) in new[] { (_aBatch[l], _layers[l].ADim), (_gBatch[l], _layers[l].GDim) })
                for (int r = 0; r < n; r++)
                    for (int c = r; c < n; c++) m[r * n + c] += packed[i++];
        }
        _contributions++;
    }

    /// <summary>Whether the last step inverted the factors (the virtual clock charges <see cref="KfacLayer.InverseFlops"/>).</summary>
    public bool InvertedLastStep { get; private set; }

    protected override void Apply(Span<float> w, ReadOnlySpan<float> g, double lr, float scale)
    {
        var k = Settings.Kfac;
        bool fresh = _contributions > 0;
        if (fresh)
        {
            for (int l = 0; l < _layers.Length; l++)
            {
                Blend(_a[l], _aBatch[l], _layers[l].ADim, k.FactorDecay, _contributions, _haveFactors);
                Blend(_g[l], _gBatch[l], _layers[l].GDim, k.FactorDecay, _contributions, _haveFactors);
            }
            _haveFactors = true;
            _contributions = 0;
        }
        InvertedLastStep = _haveFactors && (!_haveInverses || (Steps - 1) % k.InverseEvery == 0);
        if (InvertedLastStep)
        {
            for (int l = 0; l < _layers.Length; l++) Invert(l);
            _haveInverses = true;
        }
        float mu = (float)Settings.Momentum, wd = (float)Settings.WeightDecay;
        for (int l = 0; l < _layers.Length; l++)
        {
            var layer = _layers[l];
            int offset = layer.Offset - _start, da = layer.ADim, dg = layer.GDim, length = layer.Length;
            var grad = _grad.AsSpan(0, length);
            for (int i = 0; i < length; i++) grad[i] = (double)(g[offset + i] * scale) + wd * (double)w[offset + i];
            var direction = _direction.AsSpan(0, length);
            if (_haveInverses)
            {
                // P = A^-1 M G^-1: first T = A^-1 M (da x dg), then P = T G^-1
                var t = _temp.AsSpan(0, length);
                MultiplyInto(_aInverse[l], da, da, grad, dg, t);
                MultiplyInto(t, da, dg, _gInverse[l], dg, direction);
            }
            else grad.CopyTo(direction);
            double clip = 1;
            if (k.KlClip > 0 && _haveInverses)
            {
                double inner = 0;
                for (int i = 0; i < length; i++) inner += direction[i] * grad[i];
                if (inner > 0) clip = Math.Min(1, Math.Sqrt(k.KlClip / (lr * lr * inner)));
            }
            var v = _velocity.AsSpan(offset, length);
            var weights = w.Slice(offset, length);
            float rate = (float)lr;
            for (int i = 0; i < length; i++)
            {
                v[i] = mu * v[i] + (float)(clip * direction[i]);
                weights[i] -= rate * v[i];
            }
        }
    }

    /// <summary>running = batch mean (the first time) or decay x running + (1 - decay) x batch mean; the batch sum is cleared.</summary>
    private static void Blend(double[] running, double[] batchSum, int n, double decay, int count, bool haveFactors)
    {
        for (int r = 0; r < n; r++)
            for (int c = r; c < n; c++)
            {
                double mean = batchSum[r * n + c] / count;
                double value = haveFactors ? decay * running[r * n + c] + (1 - decay) * mean : mean;
                running[r * n + c] = value;
                running[c * n + r] = value;
            }
        Array.Clear(batchSum);
    }

    /// <summary>The damped inverses of layer l's running factors (the pi split of Tikhonov damping).</summary>
    private void Invert(int l)
    {
        var layer = _layers[l];
        var (dampA, dampG) = Damping(_a[l], layer.ADim, _g[l], layer.GDim, Settings.Kfac.Damping);
        SymmetricPositiveDefinite.Inverse(_a[l], layer.ADim, dampA, _aInverse[l]);
        SymmetricPositiveDefinite.Inverse(_g[l], layer.GDim, dampG, _gInverse[l]);
    }

    /// <summary>What is added to the diagonals of A and G: pi sqrt(gamma) and sqrt(gamma) / pi, pi = sqrt((tr A / dim A) / (tr G / dim G)) (1 when either trace is 0).</summary>
    public static (double A, double G) Damping(ReadOnlySpan<double> a, int da, ReadOnlySpan<double> g, int dg, double gamma)
    {
        double ta = 0, tg = 0;
        for (int i = 0; i < da; i++) ta += a[i * da + i];
        for (int i = 0; i < dg; i++) tg += g[i * dg + i];
        double pi = ta > 0 && tg > 0 ? Math.Sqrt(ta / da / (tg / dg)) : 1;
        double root = Math.Sqrt(gamma);
        return (pi * root, root / pi);
    }

    /// <summary>result (rows x n) = left (rows x inner) x right (inner x n), all row-major.</summary>
    private static void MultiplyInto(ReadOnlySpan<double> left, int rows, int inner, ReadOnlySpan<double> right, int n, Span<double> result)
    {
        result[..(rows * n)].Clear();
        for (int r = 0; r < rows; r++)
        {
            var line = result.Slice(r * n, n);
            for (int k = 0; k < inner; k++)
            {
                double x = left[r * inner + k];
                if (x != 0) TensorPrimitives.MultiplyAdd(right.Slice(k * n, n), x, line, line);
            }
        }
    }
}

/// <summary>Inverse of a symmetric positive definite matrix plus a diagonal, by Cholesky, in double.</summary>
public static class SymmetricPositiveDefinite
{
    /// <summary>inverse = (m + diagonal I)^-1 for a symmetric n x n <paramref name="m"/>, row-major.</summary>
    public static void Inverse(ReadOnlySpan<double> m, int n, double diagonal, Span<double> inverse)
    {
        // L L^T = m + diagonal I (lower triangle in l)
        var l = new double[n * n];
        for (int i = 0; i < n; i++)
        {
            for (int j = 0; j <= i; j++)
            {
                double sum = m[i * n + j] + (i == j ? diagonal : 0) - TensorPrimitives.Dot(l.AsSpan(i * n, j), l.AsSpan(j * n, j));
                if (i == j)
                {
                    if (!(sum > 0)) throw new ActorTrainException($"K-FAC: a damped factor is not positive definite (pivot {sum} at {i} of {n}); raise optimizer.kfac.damping");
                    l[i * n + i] = Math.Sqrt(sum);
                }
                else l[i * n + j] = sum / l[j * n + j];
            }
        }
        // U = L^-T (upper) by columns of L^-1 stored as rows: row j of u holds column j of L^-1, so
        // every inner product below runs over contiguous memory; then inverse = L^-T L^-1 = U U^T
        var u = new double[n * n];
        for (int j = 0; j < n; j++)
        {
            var column = u.AsSpan(j * n, n);
            column[j] = 1 / l[j * n + j];
            for (int i = j + 1; i < n; i++)
                column[i] = -TensorPrimitives.Dot(l.AsSpan(i * n + j, i - j), column.Slice(j, i - j)) / l[i * n + i];
        }
        for (int i = 0; i < n; i++)
            for (int j = 0; j <= i; j++)
            {
                // (L^-T L^-1)[i, j] = sum_k L^-1[k, i] L^-1[k, j], k >= max(i, j) = i
                double sum = TensorPrimitives.Dot(u.AsSpan(i * n + i, n - i), u.AsSpan(j * n + i, n - i));
                inverse[i * n + j] = sum;
                inverse[j * n + i] = sum;
            }
    }
}
