using ActorTrain.Cluster.Actors;
using ActorTrain.Cluster.Protocol;
using ActorTrain.Core.Compression;
using ActorTrain.Core.Models;
using ActorTrain.Core.Optimization;
using Akka.TestKit.Xunit2;

namespace ActorTrain.Cluster.Tests;

public class CompressionRunTests : TestKit
{
    private static Coordinator.Settings Settings(CompressionSettings compression, int workers = 2, int shards = 2, long steps = 10)
    {
        var (train, test) = BspTrainingTests.Data();
        return BspTrainingTests.Settings(train, test, workers, shards, 10, steps, new OptimizerSettings()) with { Compression = compression };
    }

    [Fact]
    public async Task Counted_bytes_are_the_encoded_sizes_of_the_messages()
    {
        var compression = new CompressionSettings("qsgd", Bits: 8, Chunk: 16);
        var settings = Settings(compression);
        var outcome = await new BspTrainingTests().Run(settings);
        var ranges = ParameterSharding.Balanced(settings.Model.ParameterCount, 2);
        var codec = compression.CreateCodec();
        long pushes = 10L * 2 * ranges.Sum(r => PushGradient.HeaderBytes + codec.MaxEncodedSize(r.Length));
        long pulls = 2L * 2 * PullParameters.HeaderBytes;
        var last = outcome.Evaluations[^1];
        Assert.Equal(pushes + pulls, last.BytesWorkerToShard);
        long densePushes = 10L * 2 * ranges.Sum(r => PushGradient.DenseBytes(r.Length));
        Assert.Equal(densePushes + pulls, last.DenseBytesWorkerToShard);
        // 42-value slices: the 52 bytes of headers keep the ratio well below the payload's 4x
        Assert.True(last.UplinkRatio > 1.5, $"8-bit QSGD ratio {last.UplinkRatio:0.00}x");
    }

    [Fact]
    public async Task An_fp16_downlink_rounds_the_weights_workers_see_and_shrinks_the_bytes()
    {
        var plain = await new BspTrainingTests().Run(Settings(CompressionSettings.Dense));
        var fp16Down = await new BspTrainingTests().Run(Settings(CompressionSettings.Dense with { Downlink = DownlinkMode.Fp16 }));
        Assert.NotEqual(plain.FinalWeights, fp16Down.FinalWeights); // workers computed on FP16-rounded weights
        Assert.True(fp16Down.Evaluations[^1].DownlinkRatio > 1.5, $"fp16 downlink ratio {fp16Down.Evaluations[^1].DownlinkRatio:0.00}");
    }

    [Fact]
    public async Task A_compressed_downlink_keeps_workers_in_step_with_the_shards()
    {
        var compression = new CompressionSettings("topk", Ratio: 0.2, ErrorFeedback: true, Downlink: DownlinkMode.Codec);
        var outcome = await new BspTrainingTests().Run(Settings(compression, steps: 40));
        Assert.All(outcome.FinalWeights, v => Assert.True(float.IsFinite(v)));
        Assert.True(outcome.Evaluations[^1].TestLoss < outcome.Evaluations[0].TestLoss * 0.8, "training should still progress");
        Assert.True(outcome.Evaluations[^1].DownlinkRatio > 1.5, $"downlink ratio {outcome.Evaluations[^1].DownlinkRatio:0.0}");
    }
}

public class CompressedDownlinkTests
{
    /// <summary>
    /// The shard sends each worker the change since the worker's copy (its mirror), compressed.
    /// Weights that jump once and then hold still must reach the worker exactly, one top-k share
    /// per message, never overshooting: what a message leaves out is still in the next change.
    /// With error feedback on top (the old code) the unsent part was counted twice, the worker's
    /// copy overshot and, under training, the weights went NaN.
    /// </summary>
    [Theory]
    [InlineData("topk")]
    [InlineData("dgc")]
    public void A_compressed_downlink_converges_on_the_weights_without_overshoot(string codec)
    {
        const int n = 1000;
        var settings = new CompressionSettings(codec, Ratio: 0.01, ErrorFeedback: true, Downlink: DownlinkMode.Codec);
        var downlink = new Downlink(settings, workers: 1, n, seed: 5, []);
        var rng = new Core.Rng(3);
        var weights = Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        var copy = new float[n];
        var change = new float[n];
        var (first, delta) = downlink.Encode(new float[n], 0, 0, first: true);
        Assert.False(delta);
        first.Release();
        for (int round = 1; round <= 3000; round++)
        {
            var (payload, isDelta) = downlink.Encode(weights, round, 0, first: false);
            Assert.True(isDelta);
            GradientCodec.Decode(payload.Memory.Span, change);
            payload.Release();
            for (int i = 0; i < n; i++)
            {
                copy[i] += change[i];
                Assert.True(Math.Abs(copy[i]) <= Math.Abs(weights[i]) + 1e-6 && copy[i] * weights[i] >= 0,
                    $"round {round}, parameter {i}: the worker holds {copy[i]} for a weight of {weights[i]}");
            }
        }
        Assert.Equal(weights, copy);
    }
}
