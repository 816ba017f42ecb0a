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
