using ActorTrain.Core.Data;
using ActorTrain.Core.Models;
using ActorTrain.Core.Precision;

namespace ActorTrain.Core.Engines;

/// <summary>How one gradient is to be computed.</summary>
public readonly record struct GradientRequest(PrecisionMode Precision, float LossScale)
{
    public static GradientRequest Fp32 => new(PrecisionMode.Fp32, 1f);
}

/// <summary>
/// What one gradient computation produced. <see cref="Loss"/> is the unscaled mean loss of the
/// batch. The gradient buffer holds LossScale * dL/dw (rounded to FP16 in FP16 mode); the receiver
/// unscales in FP32, so a scale travels with the gradient it produced.
/// </summary>
public readonly record struct GradientResult(float Loss, long Flops, bool NonFinite, long UnderflowedElements);

/// <summary>Mean loss and (for classifiers) correct predictions over a batch.</summary>
public readonly record struct Evaluation(double Loss, int Correct, int Count)
{
    public double Accuracy => Count == 0 ? 0 : (double)Correct / Count;
}

/// <summary>
/// Computes loss and gradient of one model for a batch. One engine serves one model and one caller
/// at a time (a worker owns its engine); buffers are sized at creation for <see cref="MaxBatch"/>
/// so steady-state calls do not allocate.
///
/// Precision contract: in FP32 mode everything is single precision. In FP16 mode weights, inputs,
/// activations and back-propagated deltas are stored in FP16 (values rounded to the nearest Half)
/// while every dot product accumulates in FP32; the scaled loss gradient starts the backward pass
/// and the resulting weight gradient is rounded to FP16, where small values underflow (counted).
/// </summary>
public interface IGradientEngine : IDisposable
{
    string Name { get; }
    ModelSpec Model { get; }
    int MaxBatch { get; }

    GradientResult ComputeGradient(ReadOnlySpan<float> weights, Batch batch, Span<float> gradient, GradientRequest request);

    Evaluation Evaluate(ReadOnlySpan<float> weights, Batch batch, PrecisionMode precision);
}

/// <summary>Creates engines; Cluster receives one of these so actors never reference Compute.</summary>
public interface IGradientEngineFactory
{
    string Name { get; }
    IGradientEngine Create(ModelSpec model, int maxBatch);
}
