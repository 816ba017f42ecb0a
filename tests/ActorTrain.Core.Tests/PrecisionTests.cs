using ActorTrain.Core.Precision;

namespace ActorTrain.Core.Tests;

public class LossScalerTests
{
    [Fact]
    public void Dynamic_scaler_starts_at_2_to_16_with_gradscaler_defaults()
    {
        var s = LossScaler.Dynamic();
        Assert.Equal(65536f, s.Scale);
        Assert.Equal((2f, 0.5f, 2000), (s.GrowthFactor, s.BackoffFactor, s.GrowthInterval));
    }

    [Fact]
    public void Dynamic_scaler_doubles_after_growth_interval_clean_steps()
    {
        var s = new DynamicLossScaler(initialScale: 1024, growthInterval: 3);
        Assert.True(s.Update(false));
        Assert.True(s.Update(false));
        Assert.Equal(1024f, s.Scale);
        Assert.True(s.Update(false));
        Assert.Equal(2048f, s.Scale);
        Assert.Equal(0, s.GrowthTracker);
    }

    [Fact]
    public void Dynamic_scaler_halves_skips_and_restarts_the_count_on_overflow()
    {
        var s = new DynamicLossScaler(initialScale: 1024, growthInterval: 3);
        s.Update(false);
        s.Update(false);
        Assert.False(s.Update(true));
        Assert.Equal(512f, s.Scale);
        Assert.Equal(0, s.GrowthTracker);
        s.Update(false);
        s.Update(false);
        Assert.Equal(512f, s.Scale); // two clean steps since the backoff: not yet
        s.Update(false);
        Assert.Equal(1024f, s.Scale);
        Assert.Equal((6L, 1L), (s.Steps, s.SkippedSteps));
    }

    [Fact]
    public void Dynamic_scaler_never_grows_into_infinity()
    {
        var s = new DynamicLossScaler(initialScale: float.MaxValue / 1.5f, growthInterval: 1);
        s.Update(false);
        Assert.True(float.IsFinite(s.Scale));
    }

    [Fact]
    public void Static_scaler_keeps_its_scale_and_skips_non_finite_steps()
    {
        var s = LossScaler.Static(256);
        Assert.True(s.Update(false));
        Assert.False(s.Update(true));
        Assert.Equal(256f, s.Scale);
        Assert.Equal(1, s.SkippedSteps);
        Assert.Throws<ActorTrainException>(() => LossScaler.Static(0));
    }
}

public class HalfPrecisionTests
{
    [Fact]
    public void Rounding_matches_system_half_and_counts_flushed_values()
    {
        // 1e-8 is below half's smallest subnormal (5.96e-8): it flushes to zero; 1e-7 survives as a subnormal.
        float[] src = [1f, 1e-8f, -1e-8f, 1e-7f, 0f, 70000f, 3.14159f, 1e-3f, 2e-8f, 5f, 6f];
        var dst = new float[src.Length];
        long flushed = HalfPrecision.RoundCountingUnderflow(src, dst);
        Assert.Equal(3, flushed); // 1e-8, -1e-8, 2e-8 (0 stays 0 and is not counted)
        for (int i = 0; i < src.Length; i++) Assert.Equal((float)(Half)src[i], dst[i]);
        Assert.True(float.IsPositiveInfinity(dst[5]));
    }

    [Fact]
    public void Counting_is_the_same_on_vector_and_tail_elements()
    {
        var src = Enumerable.Range(0, 100).Select(i => i % 3 == 0 ? 1e-9f : 0.5f).ToArray();
        var dst = new float[src.Length];
        Assert.Equal(34, HalfPrecision.RoundCountingUnderflow(src, dst));
    }

    [Fact]
    public void All_finite_detects_inf_and_nan_anywhere()
    {
        var v = Enumerable.Repeat(1f, 37).ToArray();
        Assert.True(HalfPrecision.AllFinite(v));
        foreach (int pos in new[] { 0, 7, 8, 36 })
        foreach (float bad in new[] { float.NaN, float.PositiveInfinity, float.NegativeInfinity })
        {
            var w = (float[])v.Clone();
            w[pos] = bad;
            Assert.False(HalfPrecision.AllFinite(w), $"{bad} at {pos}");
        }
    }
}

public class HalfRoundingTests
{
    private static void AssertSameAsSystemHalf(float[] values)
    {
        var rounded = (float[])values.Clone();
        HalfPrecision.Round(rounded);
        for (int i = 0; i < values.Length; i++)
        {
            float expected = (float)(Half)values[i];
            Assert.True(BitConverter.SingleToInt32Bits(expected) == BitConverter.SingleToInt32Bits(rounded[i]) || (float.IsNaN(expected) && float.IsNaN(rounded[i])),
                $"{values[i]:R} (0x{BitConverter.SingleToInt32Bits(values[i]):X8}): System.Half gives {expected:R}, got {rounded[i]:R}");
        }
    }

    [Fact]
    public void Vector_rounding_equals_system_half_on_edge_cases()
    {
        float tieUp = (float)(Half)1f + MathF.Pow(2, -11);              // halfway between 1 and the next half: ties to even (1)
        float tieUp2 = 1f + 3 * MathF.Pow(2, -11);                      // halfway above an odd mantissa: rounds up
        float[] edges =
        [
            0f, -0f, 1f, -1f, tieUp, tieUp2, 65504f, 65519.99f, 65520f, -65520f, 70000f, float.MaxValue,
            float.PositiveInfinity, float.NegativeInfinity, float.NaN, MathF.Pow(2, -14), MathF.Pow(2, -14) * 0.999f,
            MathF.Pow(2, -24), MathF.Pow(2, -25), MathF.Pow(2, -25) * 1.0001f, MathF.Pow(2, -24) * 1.5f, MathF.Pow(2, -24) * 2.5f,
            1e-10f, -3e-8f, float.Epsilon, 0.1f, 3.14159265f, 1000.5f, 2049f, 2051f,
        ];
        // padded to a multiple of 16 and of 8 so every value goes through each vector width too
        AssertSameAsSystemHalf(edges.Concat(Enumerable.Repeat(0f, 16 - edges.Length % 16)).ToArray());
        AssertSameAsSystemHalf(edges.Concat(Enumerable.Repeat(0f, 8 - edges.Length % 8)).ToArray());
        AssertSameAsSystemHalf(edges);
    }

    [Fact]
    public void Vector_rounding_equals_system_half_on_random_bit_patterns()
    {
        var rng = new Rng(99);
        var values = new float[1 << 16];
        for (int i = 0; i < values.Length; i++)
        {
            // all exponents that matter to FP16, and a share of fully random patterns
            values[i] = i % 4 == 0
                ? BitConverter.Int32BitsToSingle((int)rng.NextUInt64())
                : (float)((rng.NextDouble() - 0.5) * Math.Pow(2, rng.NextInt(50) - 30));
        }
        AssertSameAsSystemHalf(values);
        // rounding into another buffer gives the same bits and leaves the source as it was
        var source = (float[])values.Clone();
        var into = new float[values.Length + 3];
        HalfPrecision.Round(source, into);
        var inPlace = (float[])values.Clone();
        HalfPrecision.Round(inPlace);
        Assert.Equal(inPlace.Select(BitConverter.SingleToInt32Bits), into.Take(values.Length).Select(BitConverter.SingleToInt32Bits));
        Assert.Equal(values.Select(BitConverter.SingleToInt32Bits), source.Select(BitConverter.SingleToInt32Bits));
    }
}
