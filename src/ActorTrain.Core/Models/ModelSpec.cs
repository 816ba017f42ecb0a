namespace ActorTrain.Core.Models;

public enum ModelKind
{
    /// <summary>One dense layer, identity output, loss 1/(2n) * sum ||y_hat - y||^2.</summary>
    LinearRegression,
    /// <summary>One dense layer, softmax output, mean cross-entropy. Two classes give logistic regression.</summary>
    SoftmaxRegression,
    /// <summary>Dense hidden layers with an activation, then a softmax output with mean cross-entropy.</summary>
    Mlp,
}

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
    }

    public ModelKind Kind { get; }

    /// <summary>[inputs, hidden..., outputs].</summary>
    public IReadOnlyList<int> LayerSizes { get; }

    public Activation Activation { get; }
    public IReadOnlyList<ParameterBlock> Layout { get; }
    public int ParameterCount { get; }
    public int Inputs => LayerSizes[0];
    public int Outputs => LayerSizes[^1];
    public int LayerCount => LayerSizes.Count - 1;
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
        ModelKind.Mlp => $"mlp {string.Join('-', LayerSizes)} ({Activation.ToString().ToLowerInvariant()}), {ParameterCount} parameters",
        _ => $"{Kind} {Inputs}->{Outputs}, {ParameterCount} parameters",
    };
}
