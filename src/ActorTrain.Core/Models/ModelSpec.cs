namespace ActorTrain.Core.Models;

public enum ModelKind
{
    /// <summary>One dense layer, identity output, loss 1/(2n) * sum ||y_hat - y||^2.</summary>
    LinearRegression,
    /// <summary>One dense layer, softmax output, mean cross-entropy. Two classes give logistic regression.</summary>
    SoftmaxRegression,
    /// <summary>Dense hidden layers with an activation, then a softmax output with mean cross-entropy.</summary>
    Mlp,
    /// <summary>
    /// A published architecture as a table of layer sizes and costs (<see cref="Models.Workload"/>):
    /// it times steps and sizes messages, but has no values; no gradient is computed.
    /// </summary>
    Workload,
}

/// <summary>
/// One layer as the step's timeline sees it: the parameters it owns (a contiguous range, possibly
/// empty), its arithmetic per sample forward and backward, and its output elements per sample.
/// </summary>
public sealed record ComputeLayer(string Name, ParameterRange Parameters, double ForwardFlops, double BackwardFlops, double Activations);

public enum Activation
{
    Relu,
    Tanh,
}

public enum LossKind
{
    MeanSquaredError,
    CrossEntropy,
}

/// <summary>One named tensor inside the flat parameter vector (row-major).</summary>
public sealed record ParameterBlock(string Name, int Rows, int Columns, int Offset)
{
    public int Length => Rows * Columns;
    public override string ToString() => $"{Name}[{Rows}x{Columns}]@{Offset}";
}

/// <summary>
/// A model is a stack of dense layers over one flat FP32 parameter vector. Layer l holds
/// W_l (fan_in x fan_out, row-major) followed by b_l (fan_out); <c>z = a W + b</c>. Keeping every
/// model in this one shape lets every engine implement a single forward/backward and lets a
/// parameter-server shard own any contiguous range of the vector.
/// </summary>
public sealed class ModelSpec
{
    private ModelSpec(ModelKind kind, int[] layerSizes, Activation activation)
    {
        Kind = kind;
        LayerSizes = layerSizes;
        Activation = activation;
        var blocks = new List<ParameterBlock>();
        int offset = 0;
        for (int l = 0; l < layerSizes.Length - 1; l++)
        {
            var w = new ParameterBlock($"layer{l}.weight", layerSizes[l], layerSizes[l + 1], offset);
            offset += w.Length;
            var b = new ParameterBlock($"layer{l}.bias", 1, layerSizes[l + 1], offset);
            offset += b.Length;
            blocks.Add(w);
            blocks.Add(b);
        }
        Layout = blocks;
        ParameterCount = offset;
        Layers = Enumerable.Range(0, layerSizes.Length - 1).Select(l =>
        {
            long mac = (long)layerSizes[l] * layerSizes[l + 1];
            return new ComputeLayer($"layer{l}", new ParameterRange(blocks[2 * l].Offset, blocks[2 * l].Length + blocks[2 * l + 1].Length),
                2.0 * mac, (l == 0 ? 2.0 : 4.0) * mac, layerSizes[l + 1]);
        }).ToArray();
    }

    private ModelSpec(Workload workload)
    {
        Kind = ModelKind.Workload;
        Workload = workload;
        LayerSizes = [];
        Activation = Activation.Relu;
        var blocks = new List<ParameterBlock>();
        var layers = new List<ComputeLayer>();
        long offset = 0;
        foreach (var layer in workload.Layers)
        {
            if (offset + layer.Parameters > int.MaxValue)
                throw new ActorTrainException($"workload {workload.Name}: more than {int.MaxValue:N0} parameters, the most one flat parameter vector indexes");
            var range = new ParameterRange((int)offset, (int)layer.Parameters);
            if (layer.Parameters > 0) blocks.Add(new ParameterBlock(layer.Name, 1, (int)layer.Parameters, (int)offset));
            // backward: the gradient of the weights and of the input, each as much arithmetic as the forward
            layers.Add(new ComputeLayer(layer.Name, range, layer.ForwardFlops, 2.0 * layer.ForwardFlops, layer.ActivationBytes / 4.0));
            offset += layer.Parameters;
        }
        Layout = blocks;
        Layers = layers;
        ParameterCount = (int)offset;
    }

    /// <summary>The model of a workload table: sizes and costs only.</summary>
    public static ModelSpec FromWorkload(Workload workload) => new(workload);

    /// <summary>The layer table behind a <see cref="ModelKind.Workload"/> model (null for the others).</summary>
    public Workload? Workload { get; }

    /// <summary>True when the model has no values: nothing is computed, messages carry sizes.</summary>
    public bool SizesOnly => Kind == ModelKind.Workload;

    /// <summary>The layers in forward order, with their parameter ranges and costs (the step timeline's input).</summary>
    public IReadOnlyList<ComputeLayer> Layers { get; }

    /// <summary>Output elements of every layer, per sample, plus the input (the activations a step writes and reads).</summary>
    public double ActivationsPerSample => Kind == ModelKind.Workload
        ? Layers.Sum(l => l.Activations)
        : LayerSizes.Sum(w => (double)w);

    public ModelKind Kind { get; }

    /// <summary>[inputs, hidden..., outputs].</summary>
    public IReadOnlyList<int> LayerSizes { get; }

    public Activation Activation { get; }
    public IReadOnlyList<ParameterBlock> Layout { get; }
    public int ParameterCount { get; }
    public int Inputs => LayerSizes[0];
    public int Outputs => LayerSizes[^1];
    public int LayerCount => Kind == ModelKind.Workload ? Layers.Count : LayerSizes.Count - 1;
    public LossKind Loss => Kind == ModelKind.LinearRegression ? LossKind.MeanSquaredError : LossKind.CrossEntropy;

    public ParameterBlock Weight(int layer) => Layout[2 * layer];
    public ParameterBlock Bias(int layer) => Layout[2 * layer + 1];

    public static ModelSpec LinearRegression(int inputs, int outputs = 1)
    {
        RequirePositive(inputs, nameof(inputs));
        RequirePositive(outputs, nameof(outputs));
        return new ModelSpec(ModelKind.LinearRegression, [inputs, outputs], Activation.Relu);
    }

    public static ModelSpec SoftmaxRegression(int inputs, int classes)
    {
        RequirePositive(inputs, nameof(inputs));
        if (classes < 2) throw new ActorTrainException($"softmax regression needs at least 2 classes, got {classes}");
        return new ModelSpec(ModelKind.SoftmaxRegression, [inputs, classes], Activation.Relu);
    }

    public static ModelSpec Mlp(int inputs, IReadOnlyList<int> hidden, int classes, Activation activation)
    {
        RequirePositive(inputs, nameof(inputs));
        if (classes < 2) throw new ActorTrainException($"an MLP classifier needs at least 2 classes, got {classes}");
        if (hidden.Count == 0) throw new ActorTrainException("an MLP needs at least one hidden layer; use softmax regression for none");
        foreach (int h in hidden) RequirePositive(h, "hidden layer size");
        return new ModelSpec(ModelKind.Mlp, [inputs, .. hidden, classes], activation);
    }

    private static void RequirePositive(int value, string what)
    {
        if (value <= 0) throw new ActorTrainException($"{what} must be positive, got {value}");
    }

    /// <summary>
    /// Multiply-adds counted as 2 FLOPs: forward 2*in*out per layer, weight gradient 2*in*out,
    /// input gradient 2*in*out for every layer but the first (its input needs no gradient).
    /// Element-wise work (bias, activation, softmax) is left out, as GEMM-based FLOP counts do.
    /// </summary>
    public long FlopsPerSample
    {
        get
        {
            if (Kind == ModelKind.Workload) return (long)Layers.Sum(l => l.ForwardFlops + l.BackwardFlops);
            long flops = 0;
            for (int l = 0; l < LayerCount; l++)
            {
                long mac = (long)LayerSizes[l] * LayerSizes[l + 1];
                flops += (l == 0 ? 4 : 6) * mac;
            }
            return flops;
        }
    }

    /// <summary>
    /// Regression models start at zero (the convex textbook start). MLP weights are drawn from
    /// N(0, 2/fan_in) for ReLU (He) and N(0, 1/fan_in) for tanh (LeCun); biases start at zero.
    /// </summary>
    public void Initialize(Span<float> weights, ulong seed)
    {
        if (weights.Length != ParameterCount)
            throw new ArgumentException($"expected {ParameterCount} weights, got {weights.Length}", nameof(weights));
        weights.Clear();
        if (Kind != ModelKind.Mlp) return;
        var rng = new Rng(seed);
        for (int l = 0; l < LayerCount; l++)
        {
            var w = Weight(l);
            double gain = l < LayerCount - 1 && Activation == Activation.Relu ? 2.0 : 1.0;
            double std = Math.Sqrt(gain / w.Rows);
            var span = weights.Slice(w.Offset, w.Length);
            for (int i = 0; i < span.Length; i++) span[i] = (float)(rng.NextGaussian() * std);
        }
    }

    public string Describe() => Kind switch
    {
        ModelKind.Workload => $"workload {Workload!.Name} ({Layers.Count} layers, {ParameterCount:N0} parameters, {Layers.Sum(l => l.ForwardFlops) / 1e9:0.##} GFLOP forward per sample; sizes only)",
        ModelKind.Mlp => $"mlp {string.Join('-', LayerSizes)} ({Activation.ToString().ToLowerInvariant()}), {ParameterCount} parameters",
        _ => $"{Kind} {Inputs}->{Outputs}, {ParameterCount} parameters",
    };
}
