using ActorTrain.Core.Compression;

namespace ActorTrain.Core.Tests;

public class CompressionTests
{
    private static float[] Gradient(int n, ulong seed, double scale = 1)
    {
        var rng = new Rng(seed);
        return Enumerable.Range(0, n).Select(_ => (float)(scale * rng.NextGaussian())).ToArray();
    }

    private static float[] RoundTrip(GradientCodec codec, float[] g, ulong seed = 1)
    {
        var buffer = new byte[codec.MaxEncodedSize(g.Length)];
        int n = codec.Encode(g, buffer, new Rng(seed));
        var output = new float[g.Length];
        GradientCodec.Decode(buffer.AsSpan(0, n), output);
        return output;
    }

    public static TheoryData<string> Codecs => new() { "none", "fp16", "u8bit", "qsgd8", "qsgd2", "terngrad", "onebit", "signsgd", "efsignsgd", "topk", "randomk", "threshold" };

    private static GradientCodec Build(string name) => name switch
    {
        "none" => new NoneCodec(),
        "fp16" => new Fp16Codec(),
        "u8bit" => new U8BitCodec(),
        "qsgd8" => new QsgdCodec(8, 128),
        "qsgd2" => new QsgdCodec(2, 128),
        "terngrad" => new TernGradCodec(),
        "onebit" => new OneBitCodec(64),
        "signsgd" => new SignSgdCodec(),
        "efsignsgd" => new EfSignSgdCodec(),
        "topk" => new TopKCodec(0.1),
        "randomk" => new RandomKCodec(0.1),
        "threshold" => new ThresholdCodec(1.0),
        _ => throw new ArgumentException(name),
    };

    [Theory]
    [MemberData(nameof(Codecs))]
    public void Encoded_size_is_header_plus_the_codec_formula(string name)
    {
        var codec = Build(name);
        foreach (int n in new[] { 1, 7, 64, 1000, 4099 })
        {
            var g = Gradient(n, (ulong)n);
            var buffer = new byte[codec.MaxEncodedSize(n)];
            int written = codec.Encode(g, buffer, new Rng(3));
            int expected = GradientWire.HeaderSize + name switch
            {
                "none" => 4 * n,
                "fp16" => 2 * n,
                "u8bit" => 8 + n,
                "qsgd8" => 8 + 4 * ((n + 127) / 128) + (8 * n + 7) / 8,
                "qsgd2" => 8 + 4 * ((n + 127) / 128) + (2 * n + 7) / 8,
                "terngrad" => 4 + (2 * n + 7) / 8,
                "onebit" => 4 + 8 * ((n + 63) / 64) + (n + 7) / 8,
                "signsgd" => (n + 7) / 8,
                "efsignsgd" => 4 + (n + 7) / 8,
                "topk" => 4 + 8 * (int)Math.Ceiling(0.1 * n),
                "randomk" => 12 + 4 * (int)Math.Ceiling(0.1 * n),
                "threshold" => 4 + 8 * g.Count(v => Math.Abs(v) >= 1.0f),
                _ => throw new ArgumentException(name),
            };
            Assert.Equal(expected, written);
        }
    }

    [Fact]
    public void Lossless_and_deterministic_codecs_meet_their_error_bounds()
    {
        var g = Gradient(5000, 1, 0.01);
        Assert.Equal(g, RoundTrip(new NoneCodec(), g));
        var h = RoundTrip(new Fp16Codec(), g);
        for (int i = 0; i < g.Length; i++) Assert.Equal((float)(Half)g[i], h[i]);
        float min = g.Min(), max = g.Max();
        var u = RoundTrip(new U8BitCodec(), g);
        for (int i = 0; i < g.Length; i++) Assert.True(Math.Abs(u[i] - g[i]) <= (max - min) / 510 * 1.0001 + 1e-9, $"u8bit element {i}");
    }

    [Theory]
    [InlineData(8)]
    [InlineData(4)]
    [InlineData(2)]
    public void Qsgd_error_per_element_is_at_most_its_bucket_norm_over_s(int bits)
    {
        var g = Gradient(3000, 2);
        var codec = new QsgdCodec(bits, 256);
        var q = RoundTrip(codec, g);
        for (int i = 0; i < g.Length; i++)
        {
            double norm = Math.Sqrt(g.Skip(i / 256 * 256).Take(256).Sum(v => (double)v * v));
            Assert.True(Math.Abs(q[i] - g[i]) <= norm / codec.Levels * 1.0001, $"element {i}: {q[i]} vs {g[i]}");
        }
    }

    [Fact]
    public void Signs_one_bit_and_terngrad_keep_the_sign_of_every_element_they_keep()
    {
        var g = Gradient(2000, 4);
        var sign = RoundTrip(new SignSgdCodec(), g);
        var ef = RoundTrip(new EfSignSgdCodec(), g);
        var one = RoundTrip(new OneBitCodec(128), g);
        var tern = RoundTrip(new TernGradCodec(), g);
        float scale = g.Sum(Math.Abs) / g.Length;
        float max = g.Max(Math.Abs);
        for (int i = 0; i < g.Length; i++)
        {
            Assert.Equal(g[i] >= 0 ? 1f : -1f, sign[i]);
            Assert.Equal(g[i] >= 0 ? scale : -scale, ef[i], 1e-6f);
            Assert.Equal(Math.Sign(g[i]) >= 0, one[i] >= 0);
            Assert.Contains(tern[i], new[] { 0f, max, -max });
            if (tern[i] != 0) Assert.Equal(Math.Sign(g[i]), Math.Sign(tern[i]));
        }
        // EF-signSGD is a delta-compressor: ||C(g) - g||^2 <= (1 - ||g||_1^2 / (n ||g||_2^2)) ||g||^2
        double l1 = g.Sum(v => Math.Abs((double)v)), l2sq = g.Sum(v => (double)v * v);
        double err = g.Zip(ef, (a, b) => (double)(a - b) * (a - b)).Sum();
        Assert.True(err <= (1 - l1 * l1 / (g.Length * l2sq)) * l2sq * 1.0001);
    }

    [Fact]
    public void Onebit_chunk_means_are_the_means_of_each_sign()
    {
        float[] g = [1, 3, -2, -4, 5, -1];
        var d = RoundTrip(new OneBitCodec(3), g);
        Assert.Equal([2f, 2f, -2f, -2.5f, 5f, -2.5f], d);
    }

    [Fact]
    public void Topk_keeps_exactly_the_k_largest_magnitudes()
    {
        var g = Gradient(10_000, 5);
        var codec = new TopKCodec(0.01);
        var d = RoundTrip(codec, g);
        var expected = g.Select((v, i) => (Math.Abs(v), i)).OrderByDescending(t => t.Item1).ThenBy(t => t.i).Take(100).Select(t => t.i).ToHashSet();
        Assert.Equal(100, d.Count(v => v != 0));
        for (int i = 0; i < g.Length; i++) Assert.Equal(expected.Contains(i) ? g[i] : 0f, d[i]);
    }

    [Fact]
    public void Topk_breaks_ties_to_the_lower_index()
    {
        float[] g = [1, -3, 3, 0.5f, 3, 2];
        Assert.Equal([0f, -3f, 3f, 0f, 0f, 0f], RoundTrip(new TopKCodec(2.0 / 6), g));
    }

    [Fact]
    public void Threshold_keeps_every_element_at_or_above_tau()
    {
        float[] g = [0.1f, -2f, 1f, -0.99f, 3f];
        Assert.Equal([0f, -2f, 1f, 0f, 3f], RoundTrip(new ThresholdCodec(1.0), g));
    }

    /// <summary>
    /// The mean of M independent encodings approaches g: each coordinate's mean is within 5 standard
    /// errors, the standard error taken from the codec's exact variance (not the sample's, which is 0
    /// for a rarely-rounded-up element): QSGD (||g|| / s)^2 p (1 - p) with p the fractional level,
    /// TernGrad s |g| - g^2, random-k g^2 (n / k - 1).
    /// </summary>
    [Theory]
    [InlineData("qsgd2")]
    [InlineData("qsgd8")]
    [InlineData("terngrad")]
    [InlineData("randomk")]
    public void Stochastic_codecs_are_unbiased(string name)
    {
        var codec = Build(name);
        var g = Gradient(200, 6);
        const int m = 4000;
        var sum = new double[g.Length];
        var sq = new double[g.Length];
        var rng = new Rng(77);
        var buffer = new byte[codec.MaxEncodedSize(g.Length)];
        var d = new float[g.Length];
        for (int t = 0; t < m; t++)
        {
            int n = codec.Encode(g, buffer, rng);
            GradientCodec.Decode(buffer.AsSpan(0, n), d);
            for (int i = 0; i < g.Length; i++) { sum[i] += d[i]; sq[i] += (double)d[i] * d[i]; }
        }
        double max = g.Max(v => Math.Abs((double)v));
        for (int i = 0; i < g.Length; i++)
        {
            double mean = sum[i] / m;
            double a = Math.Abs((double)g[i]);
            double norm = codec is QsgdCodec qc ? Math.Sqrt(g.Skip(i / qc.Bucket * qc.Bucket).Take(qc.Bucket).Sum(v => (double)v * v)) : 0;
            double variance = codec switch
            {
                QsgdCodec q => Math.Pow(norm / q.Levels, 2) * (a * q.Levels / norm % 1) * (1 - a * q.Levels / norm % 1),
                TernGradCodec => max * a - a * a,
                RandomKCodec r => a * a * ((double)g.Length / r.K(g.Length) - 1),
                _ => throw new ArgumentException(name),
            };
            double stderr = Math.Sqrt(variance / m);
            Assert.True(Math.Abs(mean - g[i]) <= 5 * stderr + 1e-6, $"{name} element {i}: mean {mean:G6} vs {g[i]:G6} (stderr {stderr:G3})");
        }
    }

    [Theory]
    [InlineData("topk")]
    [InlineData("efsignsgd")]
    [InlineData("qsgd2")]
    public void Residual_memory_keeps_what_was_not_sent(string name)
    {
        // sum of decoded transmissions + final residual = sum of raw gradients
        var codec = Build(name);
        var compressor = new GradientCompressor(codec, 500, errorFeedback: true, seed: 9);
        var raw = new double[500];
        var sent = new double[500];
        var buffer = new byte[compressor.MaxEncodedSize];
        var d = new float[500];
        for (int t = 0; t < 30; t++)
        {
            var g = Gradient(500, (ulong)(100 + t));
            for (int i = 0; i < g.Length; i++) raw[i] += g[i];
            int n = compressor.Compress(g, 1f, buffer);
            GradientCodec.Decode(buffer.AsSpan(0, n), d);
            for (int i = 0; i < g.Length; i++) sent[i] += d[i];
        }
        // float rounding of g + e and (g + e) - decoded, 30 times, at the magnitude of what was sent
        for (int i = 0; i < 500; i++)
        {
            double scale = Math.Max(1, Math.Max(Math.Abs(sent[i]), Math.Abs(compressor.Residual[i])));
            Assert.True(Math.Abs(sent[i] + compressor.Residual[i] - raw[i]) <= 30 * 4e-7 * scale * 10,
                $"{name} element {i}: sent {sent[i]} + residual {compressor.Residual[i]} vs raw {raw[i]}");
        }
    }

    [Fact]
    public void Residual_is_rescaled_when_the_loss_scale_changes()
    {
        var compressor = new GradientCompressor(new TopKCodec(0.25), 4, errorFeedback: true, seed: 1);
        var buffer = new byte[compressor.MaxEncodedSize];
        compressor.Compress([4f, 1f, -3f, 0.5f], 2f, buffer);     // top-1 sends 4
        Assert.Equal([0f, 1f, -3f, 0.5f], compressor.Residual.ToArray());
        compressor.Compress([0f, 0f, 0f, 0f], 4f, buffer);        // scale doubled: residual becomes (0, 2, -6, 1), -6 is sent
        Assert.Equal([0f, 2f, 0f, 1f], compressor.Residual.ToArray());
    }

    [Theory]
    [MemberData(nameof(Codecs))]
    public void Truncated_or_corrupted_messages_are_rejected_with_a_clear_error(string name)
    {
        var codec = Build(name);
        var g = Gradient(300, 8);
        var buffer = new byte[codec.MaxEncodedSize(g.Length)];
        int n = codec.Encode(g, buffer, new Rng(1));
        var output = new float[g.Length];
        // every truncation, from the empty message to one byte short
        for (int cut = 0; cut < n; cut += Math.Max(1, n / 50))
            Assert.Throws<CompressionFormatException>(() => GradientCodec.Decode(buffer.AsSpan(0, cut), output));
        Assert.Throws<CompressionFormatException>(() => GradientCodec.Decode(buffer.AsSpan(0, n - 1), output));
        // a receiver expecting another length
        Assert.Contains("expects 299", Assert.Throws<CompressionFormatException>(() => GradientCodec.Decode(buffer.AsSpan(0, n), new float[299])).Message);
        // a lying header: body length grown by 4 with 4 junk bytes appended
        var longer = buffer.AsSpan(0, n).ToArray().Concat(new byte[4]).ToArray();
        BitConverter.TryWriteBytes(longer.AsSpan(8), n - GradientWire.HeaderSize + 4);
        Assert.Throws<CompressionFormatException>(() => GradientCodec.Decode(longer, output));
        // bad magic
        var bad = buffer.AsSpan(0, n).ToArray();
        bad[0] ^= 0xFF;
        Assert.Contains("not a gradient message", Assert.Throws<CompressionFormatException>(() => GradientCodec.Decode(bad, output)).Message);
    }

    /// <summary>A dense FP32 message is read where it lies (the shard sums from it); every other message, and a length mismatch, is left to Decode.</summary>
    [Theory]
    [MemberData(nameof(Codecs))]
    public void Only_a_dense_fp32_message_of_the_expected_length_is_viewed_in_place(string name)
    {
        var codec = Build(name);
        var g = Gradient(300, 9);
        var buffer = new byte[codec.MaxEncodedSize(g.Length)];
        int n = codec.Encode(g, buffer, new Rng(1));
        bool viewed = GradientCodec.TryViewDense(buffer.AsSpan(0, n), g.Length, out var values);
        Assert.Equal(name == "none", viewed);
        if (viewed) Assert.Equal(RoundTrip(codec, g), values.ToArray());
        Assert.False(GradientCodec.TryViewDense(buffer.AsSpan(0, n), g.Length - 1, out _));
        // behind the LZ4 stage the body is compressed bytes: decode it
        var zeros = new float[300];
        var lz = new byte[codec.MaxEncodedSize(300) + 1024];
        int written = Lz4Stage.Apply(lz, codec.Encode(zeros, lz, new Rng(1)), new byte[lz.Length]);
        bool compressed = (GradientWire.Flags(lz) & GradientWire.Lz4Flag) != 0;
        Assert.True(compressed || name != "none"); // 1,200 zero bytes shrink
        if (compressed) Assert.False(GradientCodec.TryViewDense(lz.AsSpan(0, written), 300, out _));
        var bad = buffer.AsSpan(0, n).ToArray();
        bad[0] ^= 0xFF;
        Assert.Throws<CompressionFormatException>(() => GradientCodec.TryViewDense(bad, g.Length, out _));
        Assert.Throws<CompressionFormatException>(() => GradientCodec.TryViewDense(buffer.AsSpan(0, GradientWire.HeaderSize - 1), g.Length, out _));
    }

    [Fact]
    public void Sparse_indices_out_of_range_are_rejected()
    {
        var codec = new TopKCodec(0.5);
        var buffer = new byte[codec.MaxEncodedSize(4)];
        int n = codec.Encode([1f, 2f, 3f, 4f], buffer, new Rng(1));
        BitConverter.TryWriteBytes(buffer.AsSpan(GradientWire.HeaderSize + 4), 1000); // first index
        Assert.Contains("index 1000 outside [0, 4)", Assert.Throws<CompressionFormatException>(() => GradientCodec.Decode(buffer.AsSpan(0, n), new float[4])).Message);
    }

    [Fact]
    public void Randomk_is_reproducible_from_the_seed_in_the_message()
    {
        var g = Gradient(1000, 3);
        Assert.Equal(RoundTrip(new RandomKCodec(0.05), g, 42), RoundTrip(new RandomKCodec(0.05), g, 42));
        Assert.Equal(50, RoundTrip(new RandomKCodec(0.05), g, 42).Count(v => v != 0));
    }
}

public class DgcTests
{
    [Fact]
    public void Momentum_correction_accumulates_and_masking_clears_what_was_sent()
    {
        var dgc = new DgcCompressor(4, finalDensity: 0.25, momentum: 0.5, clip: 0, warmupSteps: 0, seed: 1);
        var buffer = new byte[dgc.MaxEncodedSize];
        var sent = new float[4];
        GradientCodec.Decode(buffer.AsSpan(0, dgc.Compress([1f, 0.5f, 0f, 0f], 1f, buffer)), sent);
        Assert.Equal([1f, 0f, 0f, 0f], sent);                        // v = u = g: the largest goes
        Assert.Equal([0f, 0.5f, 0f, 0f], dgc.Momentum.ToArray());     // masked where sent
        Assert.Equal([0f, 0.5f, 0f, 0f], dgc.Accumulation.ToArray());
        GradientCodec.Decode(buffer.AsSpan(0, dgc.Compress([0f, 0f, 0f, 0.2f], 1f, buffer)), sent);
        // u = 0.5 (0, 0.5, 0, 0) + (0, 0, 0, 0.2) = (0, 0.25, 0, 0.2); v = (0, 0.75, 0, 0.2)
        Assert.Equal([0f, 0.75f, 0f, 0f], sent);
        Assert.Equal([0f, 0f, 0f, 0.2f], dgc.Momentum.ToArray());
        Assert.Equal([0f, 0f, 0f, 0.2f], dgc.Accumulation.ToArray());
    }

    [Fact]
    public void Density_warms_up_through_the_published_stages()
    {
        var dgc = new DgcCompressor(1000, finalDensity: 0.001, momentum: 0.9, clip: 0, warmupSteps: 2, seed: 1);
        var buffer = new byte[dgc.MaxEncodedSize];
        var rng = new Rng(4);
        var kept = new List<int>();
        for (int step = 0; step < 10; step++)
        {
            var g = Enumerable.Range(0, 1000).Select(_ => (float)rng.NextGaussian()).ToArray();
            int n = dgc.Compress(g, 1f, buffer);
            kept.Add((n - GradientWire.HeaderSize - 4) / 8);
        }
        Assert.Equal([250, 250, 63, 63, 16, 16, 4, 4, 1, 1], kept);
    }

    [Fact]
    public void Local_clipping_bounds_the_gradient_norm_before_accumulation()
    {
        var dgc = new DgcCompressor(2, finalDensity: 1, momentum: 0, clip: 1, warmupSteps: 0, seed: 1);
        var buffer = new byte[dgc.MaxEncodedSize];
        var sent = new float[2];
        GradientCodec.Decode(buffer.AsSpan(0, dgc.Compress([6f, 8f], 2f, buffer)), sent);
        Assert.Equal([1.2f, 1.6f], sent); // norm 10 clipped to clip x loss scale = 2
    }
}

public class PowerSgdTests
{
    private static float[] RoundTrip(GradientCodec codec, float[] g)
    {
        var buffer = new byte[codec.MaxEncodedSize(g.Length)];
        int n = codec.Encode(g, buffer, new Rng(1));
        Assert.Equal(codec.MaxEncodedSize(g.Length), n); // size = header + 8 + 12 B + 4 sum (rows + cols) r + 4 dense
        var output = new float[g.Length];
        GradientCodec.Decode(buffer.AsSpan(0, n), output);
        return output;
    }

    [Fact]
    public void A_rank_one_block_is_recovered_and_the_rest_travels_dense()
    {
        // 3 dense values, a 6x5 rank-1 block u v^T, 2 dense values
        float[] u = [1, -2, 0.5f, 3, 1, -1], v = [2, 1, -1, 0.5f, 4];
        var g = new float[3 + 30 + 2];
        g[0] = 7; g[1] = -8; g[2] = 9; g[33] = 0.25f; g[34] = -0.5f;
        for (int i = 0; i < 6; i++) for (int j = 0; j < 5; j++) g[3 + i * 5 + j] = u[i] * v[j];
        var codec = new PowerSgdCodec(2, [new MatrixBlock(3, 6, 5)]);
        Assert.Equal(8 + 12 + 4 * (6 + 5) * 2 + 4 * 5, codec.BodySize(g.Length));
        var d = RoundTrip(codec, g);
        for (int i = 0; i < g.Length; i++) Assert.Equal(g[i], d[i], 4);
    }

    [Fact]
    public void Warm_start_makes_repeated_messages_of_a_low_rank_gradient_converge_to_it()
    {
        var rng = new Rng(3);
        var g = new float[20 * 12];
        // rank 2 plus small noise
        var a = Enumerable.Range(0, 40).Select(_ => (float)rng.NextGaussian()).ToArray();
        var b = Enumerable.Range(0, 24).Select(_ => (float)rng.NextGaussian()).ToArray();
        for (int i = 0; i < 20; i++)
            for (int j = 0; j < 12; j++)
                g[i * 12 + j] = a[i] * b[j] + a[20 + i] * b[12 + j] + 0.01f * (float)rng.NextGaussian();
        var codec = new PowerSgdCodec(2, [new MatrixBlock(0, 20, 12)]);
        double Error(float[] d) => Math.Sqrt(g.Zip(d, (x, y) => (double)(x - y) * (x - y)).Sum() / g.Sum(x => (double)x * x));
        double first = Error(RoundTrip(codec, g));
        for (int t = 0; t < 5; t++) RoundTrip(codec, g);
        double later = Error(RoundTrip(codec, g));
        Assert.True(later < 0.02, $"relative error after warm starts {later:G3}");
        Assert.True(later <= first, $"{later} vs first {first}");
    }

    [Fact]
    public void Blocks_follow_shard_boundaries_by_whole_rows()
    {
        var model = Models.ModelSpec.Mlp(10, [6], 3, Models.Activation.Relu); // W0 10x6 at 0, b0 at 60, W1 6x3 at 66, b1 at 84
        // range [20, 80): rows 4..9 of W0 (offset 24 -> 4), b0, and W1 rows 0..4 (66..80 holds 4 whole rows of 3 + 2)
        var blocks = MatrixBlock.InRange(model, 20, 60, rank: 2);
        Assert.Equal([new MatrixBlock(4, 6, 6), new MatrixBlock(46, 4, 3)], blocks);
        Assert.Equal([new MatrixBlock(4, 6, 6)], MatrixBlock.InRange(model, 20, 60, rank: 3)); // W1's 3 columns are no longer than the rank
    }

    [Fact]
    public void Malformed_blocks_are_rejected()
    {
        var codec = new PowerSgdCodec(1, [new MatrixBlock(0, 4, 4)]);
        var buffer = new byte[codec.MaxEncodedSize(20)];
        int n = codec.Encode(new float[20], buffer, new Rng(1));
        var output = new float[20];
        var bad = buffer.AsSpan(0, n).ToArray();
        BitConverter.TryWriteBytes(bad.AsSpan(GradientWire.HeaderSize + 12), 50); // rows
        Assert.Throws<CompressionFormatException>(() => GradientCodec.Decode(bad, output));
        for (int cut = 0; cut < n; cut += 7) Assert.Throws<CompressionFormatException>(() => GradientCodec.Decode(buffer.AsSpan(0, cut), output));
    }
}

public class Lz4StageTests
{
    [Fact]
    public void Lz4_shrinks_compressible_bodies_losslessly_and_leaves_dense_floats_alone()
    {
        // top-k that keeps equal values (a saturated or clipped gradient): the value array repeats
        var rng = new Rng(2);
        var g = Enumerable.Range(0, 20_000).Select(i => i % 50 == 0 ? 3f : 0.001f * (float)rng.NextGaussian()).ToArray();
        var plain = new GradientCompressor(new TopKCodec(0.02), g.Length, errorFeedback: false, seed: 1);
        var packed = new GradientCompressor(new TopKCodec(0.02), g.Length, errorFeedback: false, seed: 1, lz4: true);
        var a = new byte[plain.MaxEncodedSize];
        var b = new byte[packed.MaxEncodedSize];
        int na = plain.Compress(g, 1f, a), nb = packed.Compress(g, 1f, b);
        Assert.True(nb < na, $"lz4 {nb} bytes vs {na}");
        var da = new float[g.Length];
        var db = new float[g.Length];
        GradientCodec.Decode(a.AsSpan(0, na), da);
        GradientCodec.Decode(b.AsSpan(0, nb), db);
        Assert.Equal(da, db);

        var dense = new GradientCompressor(new NoneCodec(), 1000, errorFeedback: false, seed: 1, lz4: true);
        var buffer = new byte[dense.MaxEncodedSize];
        var noise = Enumerable.Range(0, 1000).Select(_ => (float)rng.NextGaussian()).ToArray();
        Assert.Equal(GradientWire.HeaderSize + 4000, dense.Compress(noise, 1f, buffer)); // not smaller: kept raw
    }

    [Fact]
    public void A_corrupt_lz4_body_is_rejected()
    {
        var g = Enumerable.Range(0, 4000).Select(i => i % 100 == 0 ? 5f : 0f).ToArray();
        var c = new GradientCompressor(new ThresholdCodec(1), g.Length, errorFeedback: false, seed: 1, lz4: true);
        var buffer = new byte[c.MaxEncodedSize];
        int n = c.Compress(g, 1f, buffer);
        Assert.Equal(GradientWire.Lz4Flag, buffer[3]);
        var bad = buffer.AsSpan(0, n).ToArray();
        BitConverter.TryWriteBytes(bad.AsSpan(12), 1 << 30); // absurd decompressed size
        Assert.Throws<CompressionFormatException>(() => GradientCodec.Decode(bad, new float[g.Length]));
        var truncated = buffer.AsSpan(0, n - 3).ToArray();
        BitConverter.TryWriteBytes(truncated.AsSpan(8), n - 3 - GradientWire.HeaderSize);
        Assert.Throws<CompressionFormatException>(() => GradientCodec.Decode(truncated, new float[g.Length]));
    }
}

public class TopKSamplingTests
{
    private static void AssertExactTopK(float[] g, double ratio)
    {
        var codec = new TopKCodec(ratio);
        var buffer = new byte[codec.MaxEncodedSize(g.Length)];
        int n = codec.Encode(g, buffer, new Rng(1));
        var d = new float[g.Length];
        GradientCodec.Decode(buffer.AsSpan(0, n), d);
        int k = codec.K(g.Length);
        var expected = g.Select((v, i) => (Mag: Math.Abs(v), i)).OrderByDescending(t => t.Mag).ThenBy(t => t.i).Take(k).Select(t => t.i).ToHashSet();
        for (int i = 0; i < g.Length; i++) Assert.True((expected.Contains(i) ? g[i] : 0f) == d[i], $"element {i}");
    }

    [Fact]
    public void The_sampled_threshold_path_selects_exactly_the_k_largest_with_ties_to_the_lower_index()
    {
        var rng = new Rng(11);
        // 200k values on a coarse grid: many ties around the k-th magnitude
        var g = Enumerable.Range(0, 200_000).Select(_ => MathF.Round((float)rng.NextGaussian() * 8) / 8).ToArray();
        AssertExactTopK(g, 0.01);
        AssertExactTopK(g, 0.003);
    }

    [Fact]
    public void A_sample_that_overshoots_falls_back_to_the_full_selection()
    {
        // every sampled position (stride 200000 / 8192 = 24) holds a large value, the rest are small:
        // the sampled threshold admits too few candidates for k = 20000
        var g = Enumerable.Range(0, 200_000).Select(i => i % 24 == 0 ? 10f : 1f + i * 1e-7f).ToArray();
        AssertExactTopK(g, 0.1);
    }
}
