using ActorTrain.Core;
using ActorTrain.Core.Models;
using ActorTrain.Core.Precision;
using ActorTrain.Core.Simulation;

namespace ActorTrain.Core.Tests;

public class DistributionTests
{
    public static TheoryData<string> Laws => new()
    {
        "constant(2ms)",
        "uniform(min=1ms, max=3ms)",
        "normal(mean=1ms, sd=0.1ms)",
        "lognormal(mu=0.5ms, sigma=0.3)",
        "exponential(mean=1ms)",
        "pareto(scale=1ms, shape=6)",
    };

    /// <summary>
    /// 400,000 seeded draws. The sample mean must lie within 5 standard errors (sigma / sqrt(n)) of
    /// the law's mean. The sample variance's relative standard error is sqrt((excess kurtosis + 2) / n):
    /// 0.2% for the uniform law, 0.3% normal, 0.4% exponential, 0.5% lognormal(sigma 0.3), and 1.0%
    /// for the heaviest, pareto with shape 6 (excess kurtosis 35.7); 5% relative is 5 of those or more.
    /// The normal law has mean 10 sd above zero, so clamping at zero never bites.
    /// </summary>
    [Theory]
    [MemberData(nameof(Laws))]
    public void Sample_moments_match_the_law_within_statistical_bounds(string text)
    {
        var law = Distribution.Parse(text, "network.latency", timed: true);
        var rng = new Rng(2024);
        const int n = 400_000;
        double sum = 0, sumSq = 0, min = double.MaxValue;
        for (int i = 0; i < n; i++)
        {
            double x = law.Sample(rng);
            sum += x;
            sumSq += x * x;
            min = Math.Min(min, x);
        }
        double mean = sum / n;
        double variance = sumSq / n - mean * mean;
        double se = Math.Sqrt(law.Variance / n);
        Assert.True(Math.Abs(mean - law.Mean) <= 5 * se + 1e-9 * law.Mean, $"{text}: mean {mean:E4} vs {law.Mean:E4} (5 SE = {5 * se:E2})");
        if (law.Variance == 0) Assert.True(Math.Abs(variance) < 1e-9 * law.Mean * law.Mean);
        else Assert.True(Math.Abs(variance / law.Variance - 1) < 0.05, $"{text}: variance {variance:E4} vs {law.Variance:E4}");
        Assert.True(min >= law.LowerBound, $"{text}: a draw {min:E4} fell below the lower bound {law.LowerBound:E4}");
    }

    [Fact]
    public void Closed_form_moments_are_the_textbook_ones()
    {
        var u = (Distribution.Uniform)Distribution.Parse("uniform(1ms, 3ms)", "k", timed: true);
        Assert.Equal(0.002, u.Mean, 12);
        Assert.Equal(0.002 * 0.002 / 12, u.Variance, 15);
        var ln = Distribution.Parse("lognormal(mu=1ms, sigma=0.5)", "k", timed: true);
        Assert.Equal(0.001 * Math.Exp(0.125), ln.Mean, 12);
        var p = Distribution.Parse("pareto(scale=1ms, shape=3)", "k", timed: true);
        Assert.Equal(0.0015, p.Mean, 12);
        Assert.Equal(1e-6 * 3 / (4.0 * 1), p.Variance, 15);
        Assert.Equal(0.002, Distribution.Parse("2ms", "k", timed: true).Mean, 12);
        Assert.Equal(0.5, Distribution.Parse("exponential(mean=0.5)", "k", timed: false).Mean, 12);
    }

    [Theory]
    [InlineData("constant(2)", "no unit")]
    [InlineData("uniform(min=3ms, max=1ms)", "max is below min")]
    [InlineData("gamma(1ms, 2)", "unknown distribution 'gamma'")]
    [InlineData("normal(mean=1ms)", "needs mean and sd")]
    [InlineData("pareto(scale=1ms, alpha=2)", "no parameter 'alpha'")]
    [InlineData("lognormal(mu=0ms, sigma=0.3)", "must be above zero")]
    [InlineData("constant(-1ms)", "must not be negative")]
    [InlineData("constant(2 parsecs)", "unknown time unit 'parsecs'")]
    [InlineData("fast", "is not a distribution")]
    [InlineData("uniform(1ms, 3ms", "missing ')'")]
    public void Bad_distributions_are_rejected_with_the_key_named(string text, string message)
    {
        var e = Assert.Throws<ActorTrainException>(() => Distribution.Parse(text, "network.latency", timed: true));
        Assert.Contains("network.latency", e.Message);
        Assert.Contains(message, e.Message);
    }

    [Fact]
    public void Dimensionless_distributions_reject_units()
    {
        var e = Assert.Throws<ActorTrainException>(() => Distribution.Parse("exponential(mean=2ms)", "stragglers.random-slowdown", timed: false));
        Assert.Contains("stragglers.random-slowdown", e.Message);
    }
}

public class QuantityTests
{
    [Theory]
    [InlineData("10Gbps", 1.25e9)]
    [InlineData("100 Mbit/s", 12.5e6)]
    [InlineData("1GB/s", 1e9)]
    [InlineData("1.5kbps", 187.5)]
    [InlineData("unlimited", double.PositiveInfinity)]
    public void Bandwidths_parse_in_bits_or_bytes(string text, double bytesPerSecond) =>
        Assert.Equal(bytesPerSecond, Quantity.BytesPerSecond(text, "network.bandwidth"), 6);

    [Theory]
    [InlineData("10", "no unit")]
    [InlineData("0Gbps", "above zero")]
    [InlineData("10 furlongs", "unknown bandwidth unit")]
    [InlineData("fast", "is not a bandwidth")]
    public void Bad_bandwidths_name_the_key(string text, string message)
    {
        var e = Assert.Throws<ActorTrainException>(() => Quantity.BytesPerSecond(text, "network.bandwidth"));
        Assert.Contains("network.bandwidth", e.Message);
        Assert.Contains(message, e.Message);
    }

    [Theory]
    [InlineData("250ns", 250e-9)]
    [InlineData("20us", 20e-6)]
    [InlineData("0.5ms", 0.5e-3)]
    [InlineData("2s", 2)]
    [InlineData("1e-3s", 1e-3)]
    public void Durations_parse_with_units(string text, double seconds) => Assert.Equal(seconds, Quantity.Seconds(text, "k"), 15);
}

public class NetworkModelTests
{
    private static NetworkSettings Net(string latency, string bandwidth, double drop = 0) => NetworkSettings.Ideal with
    {
        Default = new LinkSpec(Distribution.Parse(latency, "network.latency", true), Quantity.BytesPerSecond(bandwidth, "network.bandwidth"), 0, drop),
    };

    [Fact]
    public void Transfer_time_is_latency_plus_size_over_bandwidth()
    {
        var model = new NetworkModel(Net("constant(1ms)", "1Gbps"), 1);
        var plan = model.Plan(Endpoint.Worker(0), Endpoint.Shard(0), 125_000, departure: 0.010);
        // 125,000 bytes at 125,000,000 bytes/s = 1 ms on the wire, then 1 ms of latency
        Assert.Equal([0.012], plan.Arrivals, (a, b) => Math.Abs(a - b) < 1e-12);
        Assert.Equal((1, 1), (plan.Attempts, plan.Copies));
        Assert.Null(plan.LaterArrivals); // one copy: nothing allocated for later ones
        var big = model.Plan(Endpoint.Worker(1), Endpoint.Shard(0), 1_250_000, departure: 0);
        Assert.Equal(0.011, big.Arrivals[0], 12);
    }

    [Fact]
    public void A_link_sends_one_message_at_a_time()
    {
        var model = new NetworkModel(Net("constant(1ms)", "1Gbps"), 1);
        var first = model.Plan(Endpoint.Shard(0), Endpoint.Worker(0), 125_000, 0);
        var second = model.Plan(Endpoint.Shard(0), Endpoint.Worker(0), 125_000, 0);
        var otherLink = model.Plan(Endpoint.Shard(0), Endpoint.Worker(1), 125_000, 0);
        Assert.Equal(0.002, first.Arrivals[0], 12);
        Assert.Equal(0.003, second.Arrivals[0], 12); // queued behind the first on the same link
        Assert.Equal(0.002, otherLink.Arrivals[0], 12);
    }

    /// <summary>
    /// With drop probability p each attempt succeeds only if neither the message nor its ack is
    /// lost, (1 - p)^2, so attempts are geometric with mean 1 / (1 - p)^2; a copy arrives in every
    /// attempt whose message got through, so the expected copies are (1 - p) x attempts.
    /// </summary>
    [Fact]
    public void Dropped_messages_are_sent_again_until_acknowledged()
    {
        const double p = 0.3;
        var model = new NetworkModel(Net("constant(1ms)", "unlimited", p), 9);
        const int n = 20_000;
        long attempts = 0, copies = 0;
        for (int i = 0; i < n; i++)
        {
            var plan = model.Plan(Endpoint.Worker(i % 8), Endpoint.Shard(0), 100, i);
            Assert.False(plan.Lost);
            attempts += plan.Attempts;
            copies += plan.Arrivals.Length;
            Assert.Equal(plan.Copies - 1, plan.LaterArrivals?.Length ?? 0);
            // each retry leaves one retransmit timeout after the previous attempt
            Assert.True(plan.Arrivals.Min() >= i + 0.001 - 1e-12);
        }
        double q = (1 - p) * (1 - p);
        double meanAttempts = 1 / q, sdAttempts = Math.Sqrt((1 - q) / (q * q));
        Assert.True(Math.Abs((double)attempts / n - meanAttempts) < 5 * sdAttempts / Math.Sqrt(n), $"mean attempts {(double)attempts / n}");
        Assert.True(copies > n, "some acknowledgements were lost, so some messages arrived twice");
        Assert.Equal((1 - p) * attempts, copies, 0.02 * copies);
    }

    [Fact]
    public void Overrides_apply_cross_rack_then_direction_then_link_rules()
    {
        var slow = Distribution.Parse("constant(5ms)", "k", true);
        var settings = NetworkSettings.Ideal with
        {
            Default = new LinkSpec(Distribution.Parse("constant(50us)", "k", true), 1.25e9, 0, 0),
            Racks = 2,
            CrossRack = new LinkOverride(Latency: slow),
            Uplink = new LinkOverride(BytesPerSecond: 1e6),
            Rules = [new LinkRule(Endpoint.Worker(2), Endpoint.Shard(0), new LinkOverride(Drop: 0.1))],
        };
        Assert.Equal(50e-6, settings.Resolve(Endpoint.Shard(0), Endpoint.Worker(0)).Latency.Mean, 12); // same rack, downlink
        Assert.Equal(0.005, settings.Resolve(Endpoint.Shard(0), Endpoint.Worker(1)).Latency.Mean, 12); // across racks
        var up = settings.Resolve(Endpoint.Worker(1), Endpoint.Shard(0));
        Assert.Equal(0.005, up.Latency.Mean, 12);
        Assert.Equal((1e6, 0.0), (up.BytesPerSecond, up.Drop));
        var rule = settings.Resolve(Endpoint.Worker(2), Endpoint.Shard(0)); // worker 2 and shard 0 share rack 0
        Assert.Equal(50e-6, rule.Latency.Mean, 12);
        Assert.Equal((1e6, 0.1), (rule.BytesPerSecond, rule.Drop));
        Assert.Equal(50e-6, settings.MinLatency(4, 2), 12);
    }
}

public class DeviceProfileTests
{
    [Fact]
    public void Step_time_is_the_roofline_plus_launches()
    {
        var model = ModelSpec.SoftmaxRegression(100, 10); // 1010 parameters, one layer
        var device = new DeviceProfile("test", 1e9, 4e9, 1e9, 1e-6, 0.5);
        // FLOPs per sample: 4 x 100 x 10 (forward and weight gradient of the first layer)
        double flops = model.FlopsPerSample * 32;
        double bytes = 4 * (3.0 * 1010 + 3.0 * 32 * 110);
        double expected = Math.Max(flops / 0.5e9, bytes / 1e9) + 4 * 1e-6;
        Assert.Equal(expected, device.StepSeconds(model, 32, PrecisionMode.Fp32), 15);
        Assert.True(device.StepSeconds(model, 32, PrecisionMode.Fp16) < expected);
        Assert.Equal(4.0 * 1000 * 7 / 1e9 + 1e-6, device.ApplySeconds(1000, 2), 15); // Adam: w, m, v read and written, g read
    }

    [Fact]
    public void Unknown_profiles_list_the_known_ones()
    {
        var e = Assert.Throws<ActorTrainException>(() => DeviceProfile.Resolve("tpu", new Dictionary<string, DeviceProfile>(), "simulation.worker-device"));
        Assert.Contains("simulation.worker-device", e.Message);
        Assert.Contains("h100", e.Message);
    }
}
