using System.Numerics.Tensors;
using System.Runtime.Intrinsics;
using ActorTrain.Core.Data;
using ActorTrain.Core.Engines;
using ActorTrain.Core.Models;
using ActorTrain.Core.Precision;

namespace ActorTrain.Compute.Simd;

/// <summary>
/// The CPU engine: forward and backward as register-blocked GEMMs (<see cref="Gemm"/>) and
/// System.Numerics.Tensors element-wise kernels, each matrix product split by rows over all cores.
/// Every buffer is allocated (pinned) at construction, so a step allocates nothing.
/// FP16 mode follows the <see cref="IGradientEngine"/> contract by rounding each stored tensor to
/// the nearest Half while the products accumulate in FP32.
/// </summary>
public sealed unsafe class SimdGradientEngine : IGradientEngine
{
    private enum Op { Forward, WeightGradient, InputGradient }

    private readonly WorkerThreads _threads;
    private readonly Action<int> _partBody;
    private readonly float[] _weights;     // FP16: the caller's weights rounded; FP32 reads the caller's own
    // The weights and gradient of the call in progress: pinned by ComputeGradient / Evaluate for the
    // call's duration (the parts run inside it). FP32 reads the caller's weights and every mode writes
    // the caller's gradient in place: no copy of either per step.
    private float* _w, _g;
    // The batch's features, the first layer's input: FP32 the caller's own (pinned for the call), FP16 a rounded copy in _acts[0].
    private float* _x;
    private readonly float[][] _acts;      // input of layer l (post-activation of layer l-1), MaxBatch x size[l]
    private readonly float[] _logits;      // MaxBatch x outputs
    private readonly float[][] _deltas;    // dL/dz of layer l, MaxBatch x size[l+1]
    private readonly float[][] _transposed; // W_l^T for l >= 1
    private readonly int[] _labels;
    private readonly float[] _targets;

    // The job the parallel parts work on; written by the calling thread before WorkerThreads.Run.
    private Op _op;
    private int _layer, _rows, _partRows;
    private int _batchRows; // the weight-gradient job splits the fan-in, so it needs the batch size apart
    private bool _fp16;

    public SimdGradientEngine(ModelSpec model, int maxBatch, int threads = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxBatch);
        Model = model;
        MaxBatch = maxBatch;
        int count = threads > 0 ? threads : Environment.ProcessorCount;
        _threads = new WorkerThreads(count, "simd-engine");
        _partBody = RunPart;
        _weights = Pinned(model.ParameterCount);
        int layers = model.LayerCount;
        _acts = new float[layers][];
        _deltas = new float[layers][];
        _transposed = new float[layers][];
        for (int l = 0; l < layers; l++)
        {
            _acts[l] = Pinned(maxBatch * model.LayerSizes[l]);
            _deltas[l] = Pinned(maxBatch * model.LayerSizes[l + 1]);
            _transposed[l] = l == 0 ? [] : Pinned(model.LayerSizes[l] * model.LayerSizes[l + 1]);
        }
        _logits = Pinned(maxBatch * model.Outputs);
        _labels = new int[maxBatch];
        _targets = new float[maxBatch * model.Outputs];
    }

    public string Name => $"simd ({_threads.Count} threads)";
    public ModelSpec Model { get; }
    public int MaxBatch { get; }
    public int Threads => _threads.Count;

    private static float[] Pinned(int length) => GC.AllocateArray<float>(Math.Max(length, 1), pinned: true);

    public GradientResult ComputeGradient(ReadOnlySpan<float> weights, Batch batch, Span<float> gradient, GradientRequest request)
    {
        int n = batch.Count;
        CheckBatch(weights, batch, n);
        if (gradient.Length != Model.ParameterCount) throw new ArgumentException($"gradient must hold {Model.ParameterCount} values", nameof(gradient));
        _fp16 = request.Precision == PrecisionMode.Fp16;
        fixed (float* w = weights, g = gradient)
        {
            _w = LoadWeights(weights, w);
            _g = g;
            try
            {
                fixed (float* x = batch.Features)
                {
                    LoadBatch(batch, n, x);
                    _batchRows = n;

                    Forward(n);
                    float loss = (float)OutputLoss(n, request.LossScale);

                    for (int l = Model.LayerCount - 1; l >= 0; l--)
                    {
                        int fin = Model.LayerSizes[l], fout = Model.LayerSizes[l + 1];
                        Parallel(Op.WeightGradient, l, fin);
                        var db = new Span<float>(_g + Model.Bias(l).Offset, fout);
                        db.Clear();
                        var delta = _deltas[l];
                        for (int i = 0; i < n; i++) TensorPrimitives.Add(db, delta.AsSpan(i * fout, fout), db);
                        if (l == 0) break;
                        Transpose(new ReadOnlySpan<float>(_w + Model.Weight(l).Offset, fin * fout), _transposed[l], fin, fout);
                        Parallel(Op.InputGradient, l, n);
                    }

                    // FP16: the gradient rounded where it lies
                    long underflow = _fp16 ? HalfPrecision.RoundCountingUnderflow(gradient, gradient) : 0;
                    bool nonFinite = !HalfPrecision.AllFinite(gradient);
                    return new GradientResult(loss, Model.FlopsPerSample * n, nonFinite, underflow);
                }
            }
            finally
            {
                _w = _g = _x = null;
            }
        }
    }

    public Evaluation Evaluate(ReadOnlySpan<float> weights, Batch batch, PrecisionMode precision)
    {
        if (weights.Length != Model.ParameterCount) throw new ArgumentException($"expected {Model.ParameterCount} weights");
        _fp16 = precision == PrecisionMode.Fp16;
        fixed (float* w = weights)
        {
            _w = LoadWeights(weights, w);
            try
            {
                return EvaluateLoaded(batch);
            }
            finally
            {
                _w = _x = null;
            }
        }
    }

    private Evaluation EvaluateLoaded(Batch batch)
    {
        double lossSum = 0;
        int correct = 0;
        int inputs = Model.Inputs, outs = Model.Outputs;
        for (int start = 0; start < batch.Count; start += MaxBatch)
        {
            int n = Math.Min(MaxBatch, batch.Count - start);
            var part = new Batch(batch.Features.Slice(start * inputs, n * inputs), n,
                batch.Labels.IsEmpty ? default : batch.Labels.Slice(start, n),
                batch.Targets.IsEmpty ? default : batch.Targets.Slice(start * outs, n * outs));
            fixed (float* x = part.Features)
            {
                LoadBatch(part, n, x);
                Forward(n);
            }
            lossSum += OutputLoss(n, 0) * n;
            if (Model.Loss == LossKind.CrossEntropy)
                for (int i = 0; i < n; i++)
                    if (TensorPrimitives.IndexOfMax(_logits.AsSpan(i * outs, outs)) == _labels[i]) correct++;
        }
        return new Evaluation(batch.Count == 0 ? 0 : lossSum / batch.Count, correct, batch.Count);
    }

    private void CheckBatch(ReadOnlySpan<float> weights, Batch batch, int n)
    {
        if (weights.Length != Model.ParameterCount) throw new ArgumentException($"expected {Model.ParameterCount} weights, got {weights.Length}");
        if (n <= 0 || n > MaxBatch) throw new ArgumentException($"batch of {n} outside 1..{MaxBatch}");
        if (batch.Features.Length < n * Model.Inputs) throw new ArgumentException("batch features shorter than count x inputs");
    }

    /// <summary>The weights the call computes with: FP32 the caller's own (<paramref name="pinned"/>), FP16 a rounded copy.</summary>
    private float* LoadWeights(ReadOnlySpan<float> weights, float* pinned)
    {
        if (!_fp16) return pinned;
        HalfPrecision.Round(weights, _weights);
        fixed (float* copy = _weights) return copy; // allocated pinned: the address holds
    }

    /// <param name="features">the batch's features, pinned by the caller for as long as the pass runs</param>
    private void LoadBatch(Batch batch, int n, float* features)
    {
        if (_fp16)
        {
            HalfPrecision.Round(batch.Features[..(n * Model.Inputs)], _acts[0]);
            fixed (float* copy = _acts[0]) _x = copy; // allocated pinned: the address holds
        }
        else _x = features;
        if (Model.Loss == LossKind.CrossEntropy)
        {
            if (batch.Labels.Length < n) throw new ArgumentException("a classifier needs one label per sample");
            batch.Labels[..n].CopyTo(_labels);
        }
        else
        {
            if (batch.Targets.Length < n * Model.Outputs) throw new ArgumentException("regression needs count x outputs targets");
            batch.Targets[..(n * Model.Outputs)].CopyTo(_targets);
        }
    }

    private void Forward(int n)
    {
        for (int l = 0; l < Model.LayerCount; l++) Parallel(Op.Forward, l, n);
    }

    /// <summary>
    /// Mean loss of the batch in the logits buffer; when <paramref name="scale"/> is non-zero also the
    /// output delta scale * dL/dz (stored as FP16 in FP16 mode), which starts the backward pass.
    /// </summary>
    private double OutputLoss(int n, float scale)
    {
        int outs = Model.Outputs;
        var delta = _deltas[^1].AsSpan(0, n * outs);
        float k = scale / n;
        double loss = 0;
        if (Model.Loss == LossKind.MeanSquaredError)
        {
            for (int i = 0; i < n * outs; i++)
            {
                float r = _logits[i] - _targets[i];
                loss += (double)r * r;
                delta[i] = r * k;
            }
            loss /= 2.0 * n;
        }
        else
        {
            for (int i = 0; i < n; i++)
            {
                var z = _logits.AsSpan(i * outs, outs);
                var d = delta.Slice(i * outs, outs);
                float max = TensorPrimitives.Max(z);
                float sum = 0;
                for (int c = 0; c < outs; c++) sum += d[c] = MathF.Exp(z[c] - max);
                loss += max + Math.Log(sum) - z[_labels[i]];
                float norm = k / sum;
                TensorPrimitives.Multiply(d, norm, d);
                d[_labels[i]] -= k;
            }
            loss /= n;
        }
        if (_fp16 && scale != 0) HalfPrecision.Round(delta);
        return loss;
    }

    private void Parallel(Op op, int layer, int rows)
    {
        _op = op;
        _layer = layer;
        _rows = rows;
        int blocks = (rows + 3) / 4;
        int parts = Math.Min(_threads.Count, blocks);
        _partRows = (blocks + parts - 1) / parts * 4;
        _threads.Run(_partBody, parts);
    }

    private void RunPart(int part)
    {
        int r0 = part * _partRows;
        int r1 = Math.Min(_rows, r0 + _partRows);
        if (r0 >= r1) return;
        int l = _layer, fin = Model.LayerSizes[l], fout = Model.LayerSizes[l + 1];
        bool hidden = l < Model.LayerCount - 1;
        switch (_op)
        {
            case Op.Forward:
            {
                var z = hidden ? _acts[l + 1] : _logits;
                var bias = new ReadOnlySpan<float>(_w + Model.Bias(l).Offset, fout);
                for (int i = r0; i < r1; i++) bias.CopyTo(z.AsSpan(i * fout, fout));
                fixed (float* acts = _acts[l], c = z)
                {
                    float* a = l == 0 ? _x : acts;
                    Gemm.MultiplyAdd(r1 - r0, fout, fin, a + r0 * fin, fin, 1, _w + Model.Weight(l).Offset, fout, c + r0 * fout, fout);
                }
                var rows = z.AsSpan(r0 * fout, (r1 - r0) * fout);
                if (hidden)
                {
                    if (Model.Activation == Activation.Relu) TensorPrimitives.Max(rows, 0f, rows);
                    else TensorPrimitives.Tanh(rows, rows);
                }
                if (_fp16) HalfPrecision.Round(rows);
                break;
            }
            case Op.WeightGradient:
            {
                int n = _batchRows;
                // the band's weight gradient is written, not added to: no clearing pass over it
                fixed (float* acts = _acts[l], d = _deltas[l])
                {
                    float* a = l == 0 ? _x : acts;
                    Gemm.MultiplyAdd(r1 - r0, fout, n, a + r0, 1, fin, d, fout, _g + Model.Weight(l).Offset + r0 * fout, fout, accumulate: false);
                }
                break;
            }
            case Op.InputGradient:
            {
                var prev = _deltas[l - 1].AsSpan(r0 * fin, (r1 - r0) * fin);
                fixed (float* d = _deltas[l], wt = _transposed[l], p = _deltas[l - 1])
                    Gemm.MultiplyAdd(r1 - r0, fin, fout, d + r0 * fout, fout, 1, wt, fin, p + r0 * fin, fin, accumulate: false);
                var act = _acts[l].AsSpan(r0 * fin, (r1 - r0) * fin);
                if (Model.Activation == Activation.Relu) ReluBackward(act, prev);
                else TanhBackward(act, prev);
                if (_fp16) HalfPrecision.Round(prev);
                break;
            }
        }
    }

    /// <summary>delta = 0 where the activation is not positive (a NaN activation keeps its delta, as the scalar `a &lt;= 0` test did).</summary>
    internal static void ReluBackward(ReadOnlySpan<float> act, Span<float> delta)
    {
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
            for (; i + Vector256<float>.Count <= delta.Length; i += Vector256<float>.Count)
            {
                var d = Vector256.Create<float>(delta[i..]);
                Vector256.ConditionalSelect(Vector256.LessThanOrEqual(Vector256.Create<float>(act[i..]), Vector256<float>.Zero), Vector256<float>.Zero, d)
                    .CopyTo(delta[i..]);
            }
        for (; i < delta.Length; i++)
            if (act[i] <= 0) delta[i] = 0;
    }

    /// <summary>delta *= 1 - a^2, each product and difference rounded as the scalar loop rounds them (no fused multiply-add).</summary>
    internal static void TanhBackward(ReadOnlySpan<float> act, Span<float> delta)
    {
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
            for (; i + Vector256<float>.Count <= delta.Length; i += Vector256<float>.Count)
            {
                var a = Vector256.Create<float>(act[i..]);
                (Vector256.Create<float>(delta[i..]) * (Vector256<float>.One - a * a)).CopyTo(delta[i..]);
            }
        for (; i < delta.Length; i++) delta[i] *= 1 - act[i] * act[i];
    }

    /// <summary>In 16 x 16 blocks, so the strided writes of a block stay in a few cache lines.</summary>
    private static void Transpose(ReadOnlySpan<float> source, Span<float> destination, int rows, int cols)
    {
        const int block = 16;
        for (int r0 = 0; r0 < rows; r0 += block)
        {
            int r1 = Math.Min(rows, r0 + block);
            for (int c0 = 0; c0 < cols; c0 += block)
            {
                int c1 = Math.Min(cols, c0 + block);
                for (int r = r0; r < r1; r++)
                    for (int c = c0; c < c1; c++)
                        destination[c * rows + r] = source[r * cols + c];
            }
        }
    }

    public void Dispose() => _threads.Dispose();
}
