using System.Runtime.InteropServices;
using ActorTrain.Core.Data;
using ActorTrain.Core.Engines;
using ActorTrain.Core.Models;
using ActorTrain.Core.Precision;
using ILGPU;
using ILGPU.Runtime;

namespace ActorTrain.Compute.Ilgpu;

/// <summary>
/// The ILGPU engine: owns one accelerator (CUDA > OpenCL > CPU, or forced) and, per precision, a set
/// of device buffers and loaded kernels, created on first use and kept for the engine's life. CUDA
/// contexts belong to a thread, so every call binds the accelerator to the calling thread first.
/// FP16 mode stores weights, activations and deltas as ILGPU.Half and accumulates in float; the
/// weight gradient leaves the device in FP32 and is rounded to FP16 on the host, by the same routine
/// as the SIMD engine, so underflow is counted identically.
/// </summary>
public sealed class IlgpuGradientEngine : IGradientEngine
{
    private readonly Context _context;
    private readonly Accelerator _accelerator;
    private IPrecisionPath? _fp32, _fp16;

    private readonly int _tile;

    public IlgpuGradientEngine(ModelSpec model, int maxBatch, IlgpuTarget target = IlgpuTarget.Auto)
        : this(model, maxBatch, target, tiled: null)
    {
    }

    /// <param name="tiled">
    /// The products tiled through shared memory (true), per element (false), or tiled on a GPU and per
    /// element on the CPU emulator (null), where a group barrier is a synchronisation of real threads.
    /// </param>
    internal IlgpuGradientEngine(ModelSpec model, int maxBatch, IlgpuTarget target, bool? tiled)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxBatch);
        Model = model;
        MaxBatch = maxBatch;
        _context = IlgpuDevices.CreateContext();
        try
        {
            var device = IlgpuDevices.Select(_context, target);
            _accelerator = device.CreateAccelerator(_context);
            // 16 x 16 threads a group where the accelerator allows (CUDA, OpenCL), else 4 x 4 (the emulator's 16)
            bool tiles = tiled ?? _accelerator.AcceleratorType != AcceleratorType.CPU;
            _tile = !tiles ? 0 : _accelerator.MaxNumThreadsPerGroup >= 16 * 16 ? 16 : 4;
        }
        catch
        {
            _context.Dispose();
            throw;
        }
    }

    public string Name => $"ilgpu-{_accelerator.AcceleratorType.ToString().ToLowerInvariant()} ({_accelerator.Name})";

    /// <summary>The side of the products' tiles; 0: one thread per element, no tiles.</summary>
    internal int Tile => _tile;

    public ModelSpec Model { get; }
    public int MaxBatch { get; }
    public AcceleratorType AcceleratorType => _accelerator.AcceleratorType;

    public GradientResult ComputeGradient(ReadOnlySpan<float> weights, Batch batch, Span<float> gradient, GradientRequest request)
    {
        if (weights.Length != Model.ParameterCount) throw new ArgumentException($"expected {Model.ParameterCount} weights, got {weights.Length}");
        if (gradient.Length != Model.ParameterCount) throw new ArgumentException($"gradient must hold {Model.ParameterCount} values", nameof(gradient));
        if (batch.Count <= 0 || batch.Count > MaxBatch) throw new ArgumentException($"batch of {batch.Count} outside 1..{MaxBatch}");
        _accelerator.Bind();
        var path = Path(request.Precision);
        float loss = path.Compute(weights, batch, gradient, request.LossScale, out long underflow);
        bool nonFinite = !HalfPrecision.AllFinite(gradient);
        return new GradientResult(loss, Model.FlopsPerSample * batch.Count, nonFinite, underflow);
    }

    public Evaluation Evaluate(ReadOnlySpan<float> weights, Batch batch, PrecisionMode precision)
    {
        if (weights.Length != Model.ParameterCount) throw new ArgumentException($"expected {Model.ParameterCount} weights, got {weights.Length}");
        _accelerator.Bind();
        return Path(precision).Evaluate(weights, batch);
    }

    private IPrecisionPath Path(PrecisionMode precision) => precision == PrecisionMode.Fp16
        ? _fp16 ??= new PrecisionPath<ILGPU.Half, HalfStorage>(_accelerator, Model, MaxBatch, _tile)
        : _fp32 ??= new PrecisionPath<float, SingleStorage>(_accelerator, Model, MaxBatch, _tile);

    public void Dispose()
    {
        _fp32?.Dispose();
        _fp16?.Dispose();
        _accelerator.Dispose();
        _context.Dispose();
    }

    private interface IPrecisionPath : IDisposable
    {
        float Compute(ReadOnlySpan<float> weights, Batch batch, Span<float> gradient, float lossScale, out long underflow);
        Evaluation Evaluate(ReadOnlySpan<float> weights, Batch batch);
    }

    private sealed class PrecisionPath<T, TS> : IPrecisionPath
        where T : unmanaged where TS : struct, IStorage<T>
    {
        private readonly Accelerator _acc;
        private readonly ModelSpec _model;
        private readonly int _maxBatch;
        private readonly bool _narrow = typeof(T) != typeof(float);

        private readonly MemoryBuffer1D<T, Stride1D.Dense> _weights, _logits;
        private readonly MemoryBuffer1D<T, Stride1D.Dense>[] _acts, _deltas;
        private readonly MemoryBuffer1D<float, Stride1D.Dense> _gradient, _targets, _rowLoss;
        private readonly MemoryBuffer1D<int, Stride1D.Dense> _labels;

        private readonly T[] _hostWeights, _hostInputs, _hostLogits;
        private readonly float[] _hostGradient, _hostRowLoss, _hostLogitsF;

        private readonly Action<Index1D, ArrayView<T>, ArrayView<int>, ArrayView<float>, ArrayView<T>, ArrayView<float>, int, int, float> _outputDelta;
        private readonly Action<Index1D, ArrayView<T>, ArrayView<float>, int, int, int> _biasGradient;

        // the three products, per element (_tile 0) or tiled
        private readonly int _tile;
        private readonly Action<Index2D, ArrayView<T>, ArrayView<T>, ArrayView<T>, int, int, int, int, int> _dense = null!;
        private readonly Action<Index2D, ArrayView<T>, ArrayView<T>, ArrayView<float>, int, int, int, int> _weightGradient = null!;
        private readonly Action<Index2D, ArrayView<T>, ArrayView<T>, ArrayView<T>, ArrayView<T>, int, int, int, int> _inputDelta = null!;
        private readonly Action<KernelConfig, ArrayView<T>, ArrayView<T>, ArrayView<T>, int, int, int, int, int, int> _denseTiled = null!;
        private readonly Action<KernelConfig, ArrayView<T>, ArrayView<T>, ArrayView<float>, int, int, int, int> _weightGradientTiled = null!;
        private readonly Action<KernelConfig, ArrayView<T>, ArrayView<T>, ArrayView<T>, ArrayView<T>, int, int, int, int, int> _inputDeltaTiled = null!;

        public PrecisionPath(Accelerator acc, ModelSpec model, int maxBatch, int tile)
        {
            _acc = acc;
            _tile = tile;
            _model = model;
            _maxBatch = maxBatch;
            int p = model.ParameterCount, layers = model.LayerCount;
            _weights = acc.Allocate1D<T>(p);
            _gradient = acc.Allocate1D<float>(p);
            _acts = new MemoryBuffer1D<T, Stride1D.Dense>[layers];
            _deltas = new MemoryBuffer1D<T, Stride1D.Dense>[layers];
            for (int l = 0; l < layers; l++)
            {
                _acts[l] = acc.Allocate1D<T>((long)maxBatch * model.LayerSizes[l]);
                _deltas[l] = acc.Allocate1D<T>((long)maxBatch * model.LayerSizes[l + 1]);
            }
            _logits = acc.Allocate1D<T>((long)maxBatch * model.Outputs);
            _targets = acc.Allocate1D<float>((long)maxBatch * model.Outputs);
            _rowLoss = acc.Allocate1D<float>(maxBatch);
            _labels = acc.Allocate1D<int>(maxBatch);

            _hostWeights = new T[p];
            _hostInputs = new T[maxBatch * model.Inputs];
            _hostLogits = new T[maxBatch * model.Outputs];
            _hostLogitsF = new float[maxBatch * model.Outputs];
            _hostGradient = new float[p];
            _hostRowLoss = new float[maxBatch];

            _outputDelta = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<T>, ArrayView<int>, ArrayView<float>, ArrayView<T>, ArrayView<float>, int, int, float>(Kernels.OutputDelta<T, TS>);
            _biasGradient = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<T>, ArrayView<float>, int, int, int>(Kernels.BiasGradient<T, TS>);
            if (tile > 0)
                (_denseTiled, _weightGradientTiled, _inputDeltaTiled) = tile == 16 ? LoadTiled<Tile16>(acc) : LoadTiled<Tile4>(acc);
            else
            {
                _dense = acc.LoadAutoGroupedStreamKernel<Index2D, ArrayView<T>, ArrayView<T>, ArrayView<T>, int, int, int, int, int>(Kernels.Dense<T, TS>);
                _weightGradient = acc.LoadAutoGroupedStreamKernel<Index2D, ArrayView<T>, ArrayView<T>, ArrayView<float>, int, int, int, int>(Kernels.WeightGradient<T, TS>);
                _inputDelta = acc.LoadAutoGroupedStreamKernel<Index2D, ArrayView<T>, ArrayView<T>, ArrayView<T>, ArrayView<T>, int, int, int, int>(Kernels.InputDelta<T, TS>);
            }
        }

        private static (Action<KernelConfig, ArrayView<T>, ArrayView<T>, ArrayView<T>, int, int, int, int, int, int>,
            Action<KernelConfig, ArrayView<T>, ArrayView<T>, ArrayView<float>, int, int, int, int>,
            Action<KernelConfig, ArrayView<T>, ArrayView<T>, ArrayView<T>, ArrayView<T>, int, int, int, int, int>) LoadTiled<TT>(Accelerator acc)
            where TT : struct, ITile =>
            (acc.LoadStreamKernel<ArrayView<T>, ArrayView<T>, ArrayView<T>, int, int, int, int, int, int>(Kernels.DenseTiled<T, TS, TT>),
             acc.LoadStreamKernel<ArrayView<T>, ArrayView<T>, ArrayView<float>, int, int, int, int>(Kernels.WeightGradientTiled<T, TS, TT>),
             acc.LoadStreamKernel<ArrayView<T>, ArrayView<T>, ArrayView<T>, ArrayView<T>, int, int, int, int, int>(Kernels.InputDeltaTiled<T, TS, TT>));

        /// <summary>Layer l's forward product of n rows into output, with its bias and activation.</summary>
        private void Dense(int n, int l, ArrayView<T> output, int activation)
        {
            int fin = _model.LayerSizes[l], fout = _model.LayerSizes[l + 1];
            if (_tile > 0)
                _denseTiled(Kernels.TileGrid(_tile, n, fout), _acts[l].View, _weights.View, output, n, fin, fout, _model.Weight(l).Offset, _model.Bias(l).Offset, activation);
            else _dense(new Index2D(n, fout), _acts[l].View, _weights.View, output, fin, fout, _model.Weight(l).Offset, _model.Bias(l).Offset, activation);
        }

        /// <summary>Layer l's weight gradient over n rows, into the gradient buffer.</summary>
        private void WeightGradient(int n, int l)
        {
            int fin = _model.LayerSizes[l], fout = _model.LayerSizes[l + 1];
            if (_tile > 0) _weightGradientTiled(Kernels.TileGrid(_tile, fin, fout), _acts[l].View, _deltas[l].View, _gradient.View, n, fin, fout, _model.Weight(l).Offset);
            else _weightGradient(new Index2D(fin, fout), _acts[l].View, _deltas[l].View, _gradient.View, n, fin, fout, _model.Weight(l).Offset);
        }

        /// <summary>Layer l's delta back to layer l - 1 over n rows, through the activation's derivative.</summary>
        private void InputDelta(int n, int l)
        {
            int fin = _model.LayerSizes[l], fout = _model.LayerSizes[l + 1];
            if (_tile > 0)
                _inputDeltaTiled(Kernels.TileGrid(_tile, n, fin), _deltas[l].View, _weights.View, _acts[l].View, _deltas[l - 1].View, n, fin, fout, _model.Weight(l).Offset, ActivationCode());
            else _inputDelta(new Index2D(n, fin), _deltas[l].View, _weights.View, _acts[l].View, _deltas[l - 1].View, fin, fout, _model.Weight(l).Offset, ActivationCode());
        }

        public float Compute(ReadOnlySpan<float> weights, Batch batch, Span<float> gradient, float lossScale, out long underflow)
        {
            int n = batch.Count;
            Upload(weights, batch, 0, n);
            Forward(n);
            _outputDelta(n, _logits.View, _labels.View, _targets.View, _deltas[^1].View, _rowLoss.View,
                _model.Outputs, LossKind(), lossScale / n);
            for (int l = _model.LayerCount - 1; l >= 0; l--)
            {
                int fout = _model.LayerSizes[l + 1];
                WeightGradient(n, l);
                _biasGradient(fout, _deltas[l].View, _gradient.View, n, fout, _model.Bias(l).Offset);
                if (l > 0) InputDelta(n, l);
            }
            _acc.Synchronize();
            _gradient.View.CopyToCPU(ref _hostGradient[0], _hostGradient.Length);
            if (_narrow) underflow = HalfPrecision.RoundCountingUnderflow(_hostGradient, gradient);
            else
            {
                _hostGradient.CopyTo(gradient);
                underflow = 0;
            }
            return (float)RowLossMean(n);
        }

        public Evaluation Evaluate(ReadOnlySpan<float> weights, Batch batch)
        {
            double lossSum = 0;
            int correct = 0, outs = _model.Outputs;
            bool first = true;
            for (int start = 0; start < batch.Count; start += _maxBatch)
            {
                int n = Math.Min(_maxBatch, batch.Count - start);
                Upload(first ? weights : default, batch, start, n);
                first = false;
                Forward(n);
                _outputDelta(n, _logits.View, _labels.View, _targets.View, _deltas[^1].View, _rowLoss.View, outs, LossKind(), 0f);
                _acc.Synchronize();
                lossSum += RowLossMean(n) * n;
                if (_model.Loss == Core.Models.LossKind.CrossEntropy)
                {
                    _logits.View.CopyToCPU(ref _hostLogits[0], (long)n * outs);
                    TS.ToSingle(_hostLogits.AsSpan(0, n * outs), _hostLogitsF);
                    for (int i = 0; i < n; i++)
                        if (System.Numerics.Tensors.TensorPrimitives.IndexOfMax(_hostLogitsF.AsSpan(i * outs, outs)) == batch.Labels[start + i]) correct++;
                }
            }
            return new Evaluation(batch.Count == 0 ? 0 : lossSum / batch.Count, correct, batch.Count);
        }

        private void Upload(ReadOnlySpan<float> weights, Batch batch, int start, int n)
        {
            if (!weights.IsEmpty)
            {
                TS.FromSingle(weights, _hostWeights);
                _weights.View.CopyFromCPU(ref _hostWeights[0], _hostWeights.Length);
            }
            int inputs = _model.Inputs, outs = _model.Outputs;
            TS.FromSingle(batch.Features.Slice(start * inputs, n * inputs), _hostInputs);
            _acts[0].View.CopyFromCPU(ref _hostInputs[0], (long)n * inputs);
            if (_model.Loss == Core.Models.LossKind.CrossEntropy)
            {
                var labels = batch.Labels.Slice(start, n);
                _labels.View.CopyFromCPU(ref MemoryMarshal.GetReference(labels), n);
            }
            else
            {
                var targets = batch.Targets.Slice(start * outs, n * outs);
                _targets.View.CopyFromCPU(ref MemoryMarshal.GetReference(targets), (long)n * outs);
            }
        }

        private void Forward(int n)
        {
            for (int l = 0; l < _model.LayerCount; l++)
            {
                bool hidden = l < _model.LayerCount - 1;
                Dense(n, l, (hidden ? _acts[l + 1] : _logits).View, hidden ? ActivationCode() : Kernels.Identity);
            }
        }

        private double RowLossMean(int n)
        {
            _rowLoss.View.CopyToCPU(ref _hostRowLoss[0], n);
            double sum = 0;
            for (int i = 0; i < n; i++) sum += _hostRowLoss[i];
            return _model.Loss == Core.Models.LossKind.MeanSquaredError ? sum / (2.0 * n) : sum / n;
        }

        private int LossKind() => _model.Loss == Core.Models.LossKind.MeanSquaredError ? Kernels.MeanSquaredError : Kernels.CrossEntropy;
        private int ActivationCode() => _model.Activation == Activation.Relu ? Kernels.Relu : Kernels.Tanh;

        public void Dispose()
        {
            _weights.Dispose();
            _logits.Dispose();
            _gradient.Dispose();
            _targets.Dispose();
            _rowLoss.Dispose();
            _labels.Dispose();
            foreach (var b in _acts) b.Dispose();
            foreach (var b in _deltas) b.Dispose();
        }
    }
}
