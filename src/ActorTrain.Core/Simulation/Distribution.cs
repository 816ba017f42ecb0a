using System.Globalization;

namespace ActorTrain.Core.Simulation;

/// <summary>
/// A non-negative random quantity: message latency (in seconds) or a straggler's extra slowdown
/// (dimensionless). Written as e.g. "constant(1ms)", "uniform(min=1ms, max=3ms)",
/// "normal(mean=1ms, sd=0.2ms)", "lognormal(mu=0.5ms, sigma=0.3)", "exponential(mean=1ms)",
/// "pareto(scale=1ms, shape=2.5)"; in a dimensionless distribution the numbers carry no unit.
///
/// lognormal's mu is written as its median e^mu (so it carries the unit) and sigma is the standard
/// deviation of the logarithm. A normal draw below zero is clamped to zero (a latency cannot be
/// negative); <see cref="Mean"/> and <see cref="Variance"/> are those of the unclamped law.
/// </summary>
public abstract record Distribution
{
    public abstract double Sample(Rng rng);
    public abstract double Mean { get; }
    public abstract double Variance { get; }

    /// <summary>The smallest value a draw can take: the lookahead of a virtual clock.</summary>
    public abstract double LowerBound { get; }

    public static readonly Distribution Zero = new Constant(0);

    /// <summary>The largest lognormal sigma accepted (mean = 2981 x median).</summary>
    public const double MaxLogSigma = 4;

    /// <summary>The text it was parsed from, for summaries.</summary>
    public string? Source { get; init; }

    public sealed override string ToString() => Source ?? GetType().Name.ToLowerInvariant();

    public sealed record Constant(double Value) : Distribution
    {
        public override double Sample(Rng rng) => Value;
        public override double Mean => Value;
        public override double Variance => 0;
        public override double LowerBound => Value;
    }

    public sealed record Uniform(double Min, double Max) : Distribution
    {
        public override double Sample(Rng rng) => Min + (Max - Min) * rng.NextDouble();
        public override double Mean => (Min + Max) / 2;
        public override double Variance => (Max - Min) * (Max - Min) / 12;
        public override double LowerBound => Min;
    }

    public sealed record Normal(double Mu, double Sd) : Distribution
    {
        public override double Sample(Rng rng) => Math.Max(0, Mu + Sd * rng.NextGaussian());
        public override double Mean => Mu;
        public override double Variance => Sd * Sd;
        public override double LowerBound => Sd == 0 ? Math.Max(0, Mu) : 0;
    }

    public sealed record LogNormal(double Median, double Sigma) : Distribution
    {
        public override double Sample(Rng rng) => Median * Math.Exp(Sigma * rng.NextGaussian());
        public override double Mean => Median * Math.Exp(Sigma * Sigma / 2);
        public override double Variance => Median * Median * Math.Exp(Sigma * Sigma) * (Math.Exp(Sigma * Sigma) - 1);
        public override double LowerBound => Sigma == 0 ? Median : 0;
    }

    public sealed record Exponential(double MeanValue) : Distribution
    {
        public override double Sample(Rng rng) => -MeanValue * Math.Log(1 - rng.NextDouble());
        public override double Mean => MeanValue;
        public override double Variance => MeanValue * MeanValue;
        public override double LowerBound => 0;
    }

    /// <summary>Pareto type I: P(X > x) = (scale / x)^shape for x &gt;= scale; heavy-tailed delays.</summary>
    public sealed record Pareto(double Scale, double Shape) : Distribution
    {
        public override double Sample(Rng rng) => Scale / Math.Pow(1 - rng.NextDouble(), 1 / Shape);
        public override double Mean => Shape > 1 ? Shape * Scale / (Shape - 1) : double.PositiveInfinity;
        public override double Variance => Shape > 2 ? Scale * Scale * Shape / ((Shape - 1) * (Shape - 1) * (Shape - 2)) : double.PositiveInfinity;
        public override double LowerBound => Scale;
    }

    /// <summary>
    /// Parses a distribution; <paramref name="timed"/> demands time units on its location and scale
    /// parameters (latency) and forbids them otherwise (slowdowns). A bare quantity such as "2ms"
    /// means constant(2ms). Errors name <paramref name="key"/> and show the accepted forms.
    /// </summary>
    public static Distribution Parse(string text, string key, bool timed) => ParseLaw(text, key, timed) with { Source = text.Trim() };

    private static Distribution ParseLaw(string text, string key, bool timed)
    {
        string raw = text.Trim();
        string forms = timed
            ? "constant(1ms), uniform(min=1ms, max=3ms), normal(mean=1ms, sd=0.2ms), lognormal(mu=0.5ms, sigma=0.3), exponential(mean=1ms) or pareto(scale=1ms, shape=2.5)"
            : "constant(0.5), uniform(min=0, max=2), normal(mean=1, sd=0.2), lognormal(mu=1, sigma=0.5), exponential(mean=0.5) or pareto(scale=0.2, shape=2.5)";
        int open = raw.IndexOf('(');
        if (open < 0)
        {
            if (raw.Length > 0 && (char.IsDigit(raw[0]) || raw[0] == '.')) return new Constant(Amount(raw, key, timed));
            throw new ActorTrainException($"{key} = \"{text}\" is not a distribution; write one of {forms}");
        }
        if (!raw.EndsWith(')')) throw new ActorTrainException($"{key} = \"{text}\": missing ')'; write one of {forms}");
        string name = raw[..open].Trim().ToLowerInvariant();
        var args = raw[(open + 1)..^1].Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        var named = new Dictionary<string, string>();
        var positional = new List<string>();
        foreach (string arg in args)
        {
            int eq = arg.IndexOf('=');
            if (eq < 0) positional.Add(arg);
            else named[arg[..eq].Trim().ToLowerInvariant()] = arg[(eq + 1)..].Trim();
        }
        string[] Parameters(params string[] names)
        {
            foreach (string given in named.Keys)
                if (!names.Contains(given))
                    throw new ActorTrainException($"{key} = \"{text}\": {name} has no parameter '{given}' (it takes {string.Join(", ", names)})");
            if (positional.Count > 0 && named.Count > 0)
                throw new ActorTrainException($"{key} = \"{text}\": name every parameter or none, e.g. {name}({string.Join(", ", names.Select(n => n + "=..."))})");
            var values = positional.Count > 0 ? positional.ToArray() : names.Select(n => named.GetValueOrDefault(n, "")).ToArray();
            if (values.Length != names.Length || values.Any(v => v.Length == 0))
                throw new ActorTrainException($"{key} = \"{text}\": {name} needs {string.Join(" and ", names)}, e.g. {name}({string.Join(", ", names.Select(n => n + "=..."))})");
            return values;
        }
        double Positive(string value, string what, bool unit)
        {
            double v = unit ? Amount(value, key, timed) : Dimensionless(value, key);
            if (v <= 0) throw new ActorTrainException($"{key} = \"{text}\": {what} must be above zero");
            return v;
        }
        switch (name)
        {
            case "constant":
                return new Constant(Amount(Parameters("value")[0], key, timed));
            case "uniform":
            {
                var p = Parameters("min", "max");
                double min = Amount(p[0], key, timed), max = Amount(p[1], key, timed);
                if (max < min) throw new ActorTrainException($"{key} = \"{text}\": max is below min");
                return new Uniform(min, max);
            }
            case "normal":
            {
                var p = Parameters("mean", "sd");
                return new Normal(Amount(p[0], key, timed), Amount(p[1], key, timed));
            }
            case "lognormal":
            {
                var p = Parameters("mu", "sigma");
                double sigma = Dimensionless(p[1], key);
                // the mean is e^(sigma^2/2) times the median: beyond sigma = 4 (2981x) one draw in a
                // few thousand is astronomically long, which is a typo, not a network
                if (sigma > MaxLogSigma)
                    throw new ActorTrainException(FormattableString.Invariant(
                        $"{key} = \"{text}\": sigma = {sigma} gives a mean {Math.Exp(Math.Min(sigma * sigma / 2, 700)):0.###e+0} times the median; use sigma <= {MaxLogSigma}"));
                return new LogNormal(Positive(p[0], "mu (the median)", true), sigma);
            }
            case "exponential":
                return new Exponential(Positive(Parameters("mean")[0], "mean", true));
            case "pareto":
            {
                var p = Parameters("scale", "shape");
                double shape = Positive(p[1], "shape", false);
                if (shape <= 1)
                    throw new ActorTrainException(FormattableString.Invariant(
                        $"{key} = \"{text}\": shape = {shape} has an infinite mean (a run would wait forever on some message); use shape > 1 (1 < shape <= 2: finite mean, infinite variance)"));
                return new Pareto(Positive(p[0], "scale", true), shape);
            }
            default:
                throw new ActorTrainException($"{key} = \"{text}\": unknown distribution '{name}'; write one of {forms}");
        }
    }

    private static double Amount(string text, string key, bool timed) => timed ? Quantity.Seconds(text, key) : Dimensionless(text, key);

    private static double Dimensionless(string text, string key)
    {
        if (!double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) || !double.IsFinite(v))
            throw new ActorTrainException($"{key}: \"{text}\" is not a plain number");
        if (v < 0) throw new ActorTrainException($"{key}: \"{text}\" must not be negative");
        return v;
    }
}
