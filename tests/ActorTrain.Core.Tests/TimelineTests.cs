using System.Text;
using ActorTrain.Core;
using ActorTrain.Core.Compression;
using ActorTrain.Core.Models;
using ActorTrain.Core.Precision;
using ActorTrain.Core.Simulation;

namespace ActorTrain.Core.Tests;

public class WorkloadTests
{
    /// <summary>The totals torchvision (and Hugging Face for the transformers) count for each architecture.</summary>
    [Theory]
    [InlineData("resnet50", 25_557_032L)]
    [InlineData("resnet101", 44_549_160L)]
    [InlineData("vgg16", 138_357_544L)]
    [InlineData("inception-v3", 27_161_264L)]
    [InlineData("bert-large", 335_141_888L)]
    [InlineData("gpt2-xl", 1_557_611_200L)]
    public void Built_in_tables_total_the_published_parameter_counts(string name, long parameters)
    {
        var workload = Workload.Load(name);
        Assert.Equal(parameters, workload.Parameters);
        var model = ModelSpec.FromWorkload(workload);
        Assert.Equal(parameters, model.ParameterCount);
        Assert.True(model.SizesOnly);
        // the layers' ranges tile the vector in order
        long next = 0;
        foreach (var layer in model.Layers)
        {
            Assert.Equal(next, layer.Parameters.Length == 0 ? next : layer.Parameters.Start);
            next += layer.Parameters.Length;
        }
        Assert.Equal(parameters, next);
    }

    [Fact]
    public void ResNet50_forward_is_about_4_1_GMACs_per_image()
    {
        // 4.1 G multiply-adds (He et al. 2016 report 3.8 G with their counting; torchvision's model card 4.09 GFLOPS as MACs)
        var model = ModelSpec.FromWorkload(Workload.Load("resnet50"));
        double forward = model.Layers.Sum(l => l.ForwardFlops);
        Assert.InRange(forward / 2, 4.0e9, 4.2e9);
        Assert.Equal(3 * forward, model.FlopsPerSample, 0);
    }

    public static TheoryData<string, string> BadTables => new()
    {
        { "not json", "not valid JSON" },
        { "[]", "\"layers\" array" },
        { "{\"layers\": []}", "is empty" },
        { "{\"layers\": [{\"parameters\": 10, \"forward_flops\": 5}]}", "\"activation_bytes\" is missing" },
        { "{\"layers\": [{\"parameters\": -1, \"forward_flops\": 5, \"activation_bytes\": 4}]}", "must be a whole number >= 0" },
        { "{\"layers\": [{\"parameters\": 1.5, \"forward_flops\": 5, \"activation_bytes\": 4}]}", "must be a whole number >= 0" },
        { "{\"layers\": [{\"parameters\": 0, \"forward_flops\": 5, \"activation_bytes\": 4}]}", "no layer has parameters" },
        { "{\"layers\": [3]}", "layers[0] is not an object" },
    };

    [Theory]
    [MemberData(nameof(BadTables))]
    public void A_bad_table_is_refused_naming_what_is_wrong(string json, string message)
    {
        var e = Assert.Throws<ActorTrainException>(() => Workload.Parse(new MemoryStream(Encoding.UTF8.GetBytes(json)), "model.workload file t.json"));
        Assert.Contains(message, e.Message);
        Assert.Contains("t.json", e.Message);
    }

    [Fact]
    public void An_unknown_name_lists_the_built_in_tables()
    {
        var e = Assert.Throws<ActorTrainException>(() => Workload.Load("resnet-50"));
        Assert.Contains("resnet50", e.Message);
        Assert.Contains("gpt2-xl", e.Message);
    }

    [Fact]
    public void The_step_of_a_workload_is_the_profiles_roofline_over_its_table()
    {
        var model = ModelSpec.FromWorkload(new Workload("two", "", [new("a", 100, 1e6, 400), new("b", 50, 2e6, 800)]));
        var device = new DeviceProfile("test", 1e9, 4e9, 1e9, 1e-6, 0.5);
        double flops = 3 * 3e6 * 8;
        double bytes = 4 * (3.0 * 150 + 3.0 * 8 * 300);
        Assert.Equal(Math.Max(flops / 0.5e9, bytes / 1e9) + 7e-6, device.StepSeconds(model, 8, PrecisionMode.Fp32), 15);
    }
}

public class StepTimelineTests
{
    // MLP 3-4-2: layer 0 holds 16 parameters (W 3x4, b 4), layer 1 holds 10 (W 4x2, b 2)
    private static readonly ModelSpec Mlp = ModelSpec.Mlp(3, [4], 2, Activation.Relu);

    [Fact]
    public void Compute_is_split_by_flops_forward_then_backward_last_layer_first()
    {
        // MACs: layer0 12, layer1 8. Forward 2 x MACs; backward 2 x 12 (first layer: weight gradient only) and 4 x 8.
        var t = StepTimeline.Build(Mlp, 1.0, OverlapMode.Layer, 25_000_000);
        double total = 24 + 16 + 24 + 32;
        Assert.Equal(24 / total, t.Forward[0], 15);
        Assert.Equal(16 / total, t.Forward[1], 15);
        Assert.Equal(40 / total, t.ForwardSeconds, 15);
        Assert.Equal(56 / total, t.BackwardSeconds, 15);
        // layer 1 (parameters 16..26) is ready after its backward, layer 0 after both
        Assert.Equal(2, t.Buckets.Count);
        Assert.Equal(new ParameterRange(16, 10), t.Buckets[0].Range);
        Assert.Equal(32 / total, t.Buckets[0].ReadyAfter, 15);
        Assert.Equal(new ParameterRange(0, 16), t.Buckets[1].Range);
        Assert.Equal(56 / total, t.Buckets[1].ReadyAfter, 15);
        // a range touching both layers waits for the earlier one
        Assert.Equal(56 / total, t.ReadyAfter(new ParameterRange(10, 10)), 15);
        Assert.Equal(32 / total, t.ReadyAfter(new ParameterRange(20, 6)), 15);
    }

    [Fact]
    public void Buckets_close_once_they_hold_bucket_size_bytes()
    {
        var model = ModelSpec.FromWorkload(new Workload("w", "", [new("a", 100, 1, 4), new("b", 100, 1, 4), new("c", 100, 1, 4), new("d", 100, 1, 4)]));
        // 800 bytes per bucket: d+c, then b+a
        var t = StepTimeline.Build(model, 1.0, OverlapMode.Bucket, 800);
        Assert.Equal([new ParameterRange(200, 200), new ParameterRange(0, 200)], t.Buckets.Select(b => b.Range));
        // 1000 bytes: d+c+b (1200 >= 1000), then a alone at the end
        t = StepTimeline.Build(model, 1.0, OverlapMode.Bucket, 1000);
        Assert.Equal([new ParameterRange(100, 300), new ParameterRange(0, 100)], t.Buckets.Select(b => b.Range));
        Assert.Equal(t.BackwardSeconds, t.Buckets[^1].ReadyAfter, 15);
        // a range inside the first bucket leaves with it; one reaching into the second waits for that
        Assert.Equal(t.Buckets[0].ReadyAfter, t.ReadyAfter(new ParameterRange(350, 10)), 15);
        Assert.Equal(t.BackwardSeconds, t.ReadyAfter(new ParameterRange(50, 100)), 15);
        // a bucket larger than the model: one bucket, ready at the end
        t = StepTimeline.Build(model, 1.0, OverlapMode.Bucket, 25_000_000);
        Assert.Equal([new ParameterRange(0, 400)], t.Buckets.Select(b => b.Range));
    }

    [Fact]
    public void The_forward_pass_waits_layer_by_layer_for_its_parameters()
    {
        var t = StepTimeline.Build(Mlp, 1.0, OverlapMode.Layer, 25_000_000);
        double f0 = t.Forward[0], f1 = t.Forward[1];
        // layer 0's parameters in at 2, layer 1's at 2.1: max(2 + f0, 2.1) + f1
        double In(ParameterRange r) => r.Start == 0 ? 2.0 : 2.1;
        Assert.Equal(Math.Max(2 + f0, 2.1) + f1, t.ForwardEnd(0, In), 15);
        Assert.Equal(2.0, t.ForwardStart(0, In));
        // the device free later than both
        Assert.Equal(5 + f0 + f1, t.ForwardEnd(5, In), 15);
    }
}

public class CodecCostTests
{
    private static readonly DeviceProfile Device = new("test", 2e12, 8e12, 1e11, 1e-6, 0.5) { ElementOpsPerSecond = 1e10 };

    /// <summary>
    /// Each codec's encode and decode time is its formula: (bytes read + bytes written) / bandwidth +
    /// element operations / element rate + launches x overhead; the encoder reads the FP32 input
    /// once or twice and writes the message, the decoder reads the message and writes FP32.
    /// </summary>
    [Theory]
    [InlineData("none", 4.0, 0.0, 1, 0.0)]
    [InlineData("fp16", 4.0, 4.0, 1, 0.5)]
    [InlineData("u8bit", 8.0, 5.0, 2, 2.0)]
    [InlineData("qsgd", 8.0, 12.0, 2, 16.0)]
    [InlineData("terngrad", 8.0, 8.5, 2, 10.0)]
    [InlineData("onebit", 8.0, 22.0, 2, 18.0)]
    [InlineData("signsgd", 4.0, 0.1, 1, 0.25)]
    [InlineData("efsignsgd", 8.0, 0.25, 2, 0.25)]
    [InlineData("topk", 8.0, 2.5, 2, 0.0)]
    [InlineData("randomk", 0.04, 0.5, 1, 0.4)]
    public void Modelled_time_is_the_formula(string codec, double readPerValue, double encodeOps, int encodeLaunches, double decodeOps)
    {
        const long n = 1_000_000;
        var settings = new CompressionSettings(codec, Ratio: 0.01);
        long encoded = settings.EncodedBytes(n);
        double expectedEncode = (readPerValue * n + encoded) / 1e11 + encodeOps * n / 1e10 + encodeLaunches * 1e-6;
        Assert.Equal(expectedEncode, CodecCost.Encode(settings, n, encoded).Seconds(Device), 12);
        double expectedDecode = (encoded + 4.0 * n) / 1e11 + decodeOps * n / 1e10 + 1e-6;
        Assert.Equal(expectedDecode, CodecCost.Decode(settings, n, encoded).Seconds(Device), 12);
    }

    [Fact]
    public void PowerSgd_counts_its_matrix_products()
    {
        var settings = new CompressionSettings("powersgd", Rank: 4);
        MatrixBlock[] blocks = [new(0, 1024, 1024)];
        long n = 1024 * 1024 + 100, encoded = 5000;
        double flops = 8.0 * 1024 * 1024 * 4;
        Assert.Equal((8.0 * 1024 * 1024 + 4.0 * 100 + encoded) / 1e11 + flops / 1e10 + 2e-6, CodecCost.Encode(settings, n, encoded, blocks).Seconds(Device), 12);
        Assert.Equal((encoded + 4.0 * n) / 1e11 + flops / 4 / 1e10 + 1e-6, CodecCost.Decode(settings, n, encoded, blocks).Seconds(Device), 12);
    }

    [Fact]
    public void Off_and_measured_modes_take_nothing_or_what_was_measured()
    {
        var settings = new CompressionSettings("topk");
        Assert.Equal(0, new CodecTimer(settings, CodecCostMode.Off, Device).Encode(1000, 100, 0.5));
        Assert.Equal(0.5, new CodecTimer(settings, CodecCostMode.Measured, Device).Encode(1000, 100, 0.5));
        Assert.Equal(CodecCost.Encode(settings, 1000, 100).Seconds(Device), new CodecTimer(settings, CodecCostMode.Model, Device).Encode(1000, 100, 0.5));
    }

    /// <summary>The formula sizes sizes-only runs send equal the codecs' own sizes.</summary>
    [Theory]
    [InlineData("none")] [InlineData("fp16")] [InlineData("u8bit")] [InlineData("qsgd")] [InlineData("terngrad")] [InlineData("onebit")]
    [InlineData("signsgd")] [InlineData("efsignsgd")] [InlineData("topk")] [InlineData("randomk")] [InlineData("dgc")]
    public void Formula_sizes_equal_the_codecs_sizes(string codec)
    {
        foreach (var settings in new[] { new CompressionSettings(codec), new CompressionSettings(codec, Ratio: 0.003, Bits: 3, Chunk: 64) })
        {
            Assert.Null(settings.SizesOnlyUnsupported());
            foreach (int n in new[] { 1, 7, 64, 513, 100_000, 1_234_567 })
                Assert.Equal(settings.CreateCodec().MaxEncodedSize(n), settings.EncodedBytes(n));
        }
        // past 2^31 bytes the formula goes on in 64 bits
        Assert.True(new CompressionSettings(codec).EncodedBytes(1_557_611_200) > 0);
    }

    [Fact]
    public void Codecs_whose_size_needs_values_are_named()
    {
        Assert.Contains("threshold", new CompressionSettings("threshold").SizesOnlyUnsupported());
        Assert.Contains("matrix", new CompressionSettings("powersgd").SizesOnlyUnsupported());
        Assert.Contains("lz4", new CompressionSettings("topk", Lz4: true).SizesOnlyUnsupported());
    }

    /// <summary>
    /// The calibration: the cpu profile's modelled time for 1M values against the codecs measured on
    /// one core (benchmarks/RESULTS.md, "Codecs", 2026-11-25): within 2x either way for every codec.
    /// </summary>
    [Theory]
    [InlineData("none", 8, 512, 0.01, 88.3, 89.3)]
    [InlineData("fp16", 8, 512, 0.01, 1126.4, 184.6)]
    [InlineData("u8bit", 8, 512, 0.01, 1416.8, 596.3)]
    [InlineData("qsgd", 8, 512, 0.01, 3243.6, 4256.6)]
    [InlineData("qsgd", 2, 64, 0.01, 6292.0, 4917.7)]
    [InlineData("terngrad", 8, 512, 0.01, 2273.6, 2577.0)]
    [InlineData("onebit", 8, 512, 0.01, 5592.9, 4499.1)]
    [InlineData("signsgd", 8, 512, 0.01, 105.9, 113.5)]
    [InlineData("efsignsgd", 8, 512, 0.01, 151.7, 110.1)]
    [InlineData("topk", 8, 512, 0.01, 824.3, 57.5)]
    [InlineData("randomk", 8, 512, 0.01, 153.3, 124.0)]
    public void Cpu_profile_is_within_2x_of_the_measured_codecs(string codec, int bits, int chunk, double ratio, double encodeUs, double decodeUs)
    {
        const int n = 1 << 20;
        var settings = new CompressionSettings(codec, Ratio: ratio, Bits: bits, Chunk: chunk);
        var cpu = DeviceProfile.Presets["cpu"];
        long bytes = settings.EncodedBytes(n);
        double encode = CodecCost.Encode(settings, n, bytes).Seconds(cpu) * 1e6, decode = CodecCost.Decode(settings, n, bytes).Seconds(cpu) * 1e6;
        Assert.InRange(encode / encodeUs, 0.5, 2.0);
        Assert.InRange(decode / decodeUs, 0.5, 2.0);
    }
}
