namespace ActorTrain.Core.Data;

/// <summary>Seeded synthetic datasets: the same arguments always give the same rows.</summary>
public static class SyntheticData
{
    /// <summary>
    /// y = x W* + b* + noise with x ~ N(0, I), W*, b* ~ N(0, 1) and noise ~ N(0, noiseStd^2).
    /// The true weights are returned in the model's layout (W* row-major features x outputs, then b*).
    /// </summary>
    public static Dataset Linear(int count, int features, int outputs, double noiseStd, ulong seed, out float[] trueWeights)
    {
        Require(count > 0, $"sample count must be positive, got {count}");
        Require(features > 0, $"feature count must be positive, got {features}");
        Require(outputs > 0, $"output count must be positive, got {outputs}");
        Require(noiseStd >= 0, $"noise must be >= 0, got {noiseStd}");
        var rng = new Rng(seed);
        trueWeights = new float[features * outputs + outputs];
        for (int i = 0; i < trueWeights.Length; i++) trueWeights[i] = (float)rng.NextGaussian();
        var x = new float[count * features];
        var y = new float[count * outputs];
        for (int n = 0; n < count; n++)
        {
            for (int f = 0; f < features; f++) x[n * features + f] = (float)rng.NextGaussian();
            for (int o = 0; o < outputs; o++)
            {
                double s = trueWeights[features * outputs + o];
                for (int f = 0; f < features; f++) s += x[n * features + f] * trueWeights[f * outputs + o];
                y[n * outputs + o] = (float)(s + noiseStd * rng.NextGaussian());
            }
        }
        return new Dataset("synthetic-linear", x, features, y, outputs);
    }

    /// <summary>
    /// Gaussian blobs: class centres drawn from N(0, separation^2 I), points = centre + N(0, I),
    /// classes balanced (class = row mod classes, rows in a seeded order). A larger separation makes
    /// the classes easier to tell apart; around 1 they overlap substantially.
    /// </summary>
    public static Dataset Blobs(int count, int features, int classes, double separation, ulong seed)
    {
        Require(count > 0, $"sample count must be positive, got {count}");
        Require(features > 0, $"feature count must be positive, got {features}");
        Require(classes >= 2, $"blobs need at least 2 classes, got {classes}");
        Require(separation > 0, $"separation must be positive, got {separation}");
        var rng = new Rng(seed);
        var centres = new double[classes * features];
        for (int i = 0; i < centres.Length; i++) centres[i] = separation * rng.NextGaussian();
        var labels = new int[count];
        for (int n = 0; n < count; n++) labels[n] = n % classes;
        rng.Shuffle(labels.AsSpan());
        var x = new float[count * features];
        for (int n = 0; n < count; n++)
            for (int f = 0; f < features; f++)
                x[n * features + f] = (float)(centres[labels[n] * features + f] + rng.NextGaussian());
        return new Dataset("synthetic-blobs", x, features, labels, classes);
    }

    private static void Require(bool ok, string message)
    {
        if (!ok) throw new ActorTrainException(message);
    }
}
