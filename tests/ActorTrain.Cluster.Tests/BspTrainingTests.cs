using ActorTrain.Cluster.Actors;
using ActorTrain.Cluster.Transport;
using ActorTrain.Core;
using ActorTrain.Core.Data;
using ActorTrain.Core.Engines;
using ActorTrain.Core.Models;
using ActorTrain.Core.Optimization;
using ActorTrain.Core.Precision;
using Akka.TestKit.Xunit2;

namespace ActorTrain.Cluster.Tests;

public class BspTrainingTests : TestKit
{
    private static readonly ModelSpec Mlp = ModelSpec.Mlp(6, [8], 3, Activation.Tanh);
    private const ulong Seed = 2024;

    internal static (Dataset Train, Dataset Test) Data() => SyntheticData.Blobs(240, 6, 3, 1.5, 5).Split(0.25, 6);

    internal static Coordinator.Settings Settings(Dataset train, Dataset test, int workers, int shards, int batch, long steps,
        OptimizerSettings optimizer, SyncPolicy? policy = null) => new(
        Mlp, Initial(), train.Partition(workers, Seed), test, train.Count, batch, Seed, PrecisionMode.Fp32,
        () => LossScaler.Static(1f), shards, policy ?? SyncPolicy.Bsp, null, optimizer,
        LearningRateSchedule.Create(ScheduleKind.InverseTime, 0.2, steps, decay: 0.05), steps, 5, null, null, null, null);

    internal static float[] Initial()
    {
        var w = new float[Mlp.ParameterCount];
        Mlp.Initialize(w, Seed);
        return w;
    }

    internal async Task<RunOutcome> Run(Coordinator.Settings settings, IGradientEngineFactory? engines = null)
    {
        var completion = new TaskCompletionSource<RunOutcome>(TaskCreationOptions.RunContinuationsAsynchronously);
        Sys.ActorOf(Coordinator.Props(settings, engines ?? new ReferenceEngineFactory(), new WallClockLink(), completion));
        return await completion.Task.WaitAsync(TimeSpan.FromSeconds(30));
    }

    /// <summary>The N workers' next mini-batches side by side, as one process with batch N x b would take them.</summary>
    private sealed class UnionBatches(Coordinator.Settings settings, int workers, int batch)
    {
        private readonly MiniBatchIterator[] _iterators = Enumerable.Range(0, workers)
            .Select(i => new MiniBatchIterator(settings.Partitions[i], batch, Coordinator.WorkerDataSeed(Seed, i))).ToArray();
        private readonly int[] _labels = new int[workers * batch];
        private readonly float[] _features = new float[workers * batch * Mlp.Inputs];
        private BatchBuffer? _buffer;

        public Batch Next()
        {
            _buffer ??= _iterators[0].CreateBuffer();
            for (int i = 0; i < _iterators.Length; i++)
            {
                _iterators[i].Next(_buffer);
                Assert.Equal(batch, _buffer.Count); // 60 rows per worker, 6 full batches per epoch: BSP's mean of means equals the union's mean only for equal batches
                _buffer.Features.AsSpan(0, batch * Mlp.Inputs).CopyTo(_features.AsSpan(i * batch * Mlp.Inputs));
                _buffer.Labels.AsSpan(0, batch).CopyTo(_labels.AsSpan(i * batch));
            }
            return new Batch(_features, _labels.Length, _labels, default);
        }
    }

    public static TheoryData<OptimizerKind> Optimizers => new() { OptimizerKind.Sgd, OptimizerKind.Momentum, OptimizerKind.Adam };

    [Theory]
    [MemberData(nameof(Optimizers))]
    public async Task One_worker_one_shard_bsp_reproduces_single_process_minibatch_training_bit_for_bit(OptimizerKind kind)
    {
        var (train, test) = Data();
        var optimizer = new OptimizerSettings { Kind = kind };
        var settings = Settings(train, test, 1, 1, 16, 30, optimizer);
        var outcome = await Run(settings);

        // The same computation as one plain loop: same partition, batch order, engine and optimizer.
        var w = Initial();
        var g = new float[w.Length];
        var it = new MiniBatchIterator(settings.Partitions[0], 16, Coordinator.WorkerDataSeed(Seed, 0));
        var buffer = it.CreateBuffer();
        var opt = Optimizer.Create(optimizer, w.Length);
        using var engine = new ReferenceEngine(Mlp, 16);
        for (int t = 0; t < 30; t++)
        {
            it.Next(buffer);
            engine.ComputeGradient(w, buffer.AsBatch(), g, GradientRequest.Fp32);
            opt.Step(w, g, settings.Schedule.Rate(t));
        }
        Assert.Equal(StopReason.MaxSteps, outcome.StopReason);
        Assert.Equal(30, outcome.FinalStep);
        Assert.Equal(w, outcome.FinalWeights);
    }

    [Fact]
    public async Task N_workers_of_batch_b_equal_one_process_with_batch_n_times_b()
    {
        var (train, test) = Data();
        const int workers = 3, batch = 10, steps = 20;
        var optimizer = new OptimizerSettings { Kind = OptimizerKind.Momentum };
        var settings = Settings(train, test, workers, 2, batch, steps, optimizer);
        var outcome = await Run(settings);

        var w = Initial();
        var g = new float[w.Length];
        var batches = new UnionBatches(settings, workers, batch);
        var opt = Optimizer.Create(optimizer, w.Length);
        using var engine = new ReferenceEngine(Mlp, workers * batch);
        for (int t = 0; t < steps; t++)
        {
            engine.ComputeGradient(w, batches.Next(), g, GradientRequest.Fp32);
            opt.Step(w, g, settings.Schedule.Rate(t));
        }
        double scale = w.Max(Math.Abs);
        for (int i = 0; i < w.Length; i++)
            Assert.True(Math.Abs(w[i] - outcome.FinalWeights[i]) <= 1e-5 * scale, $"parameter {i}: {w[i]} vs {outcome.FinalWeights[i]}");
        Assert.Equal(steps, outcome.Workers.Sum(x => x.Steps) / workers);
    }

    /// <summary>
    /// K-FAC distributed (N workers each sending its batch's factors with its pushes, K shards of whole
    /// layers each averaging them and preconditioning its layers) against one plain loop: the union
    /// batch's gradient and factors, one K-FAC optimizer over the whole model. Measured: 3.0e-7 and
    /// 3.4e-7 of the largest weight apart after 20 steps (float sums in another order).
    /// </summary>
    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    public async Task Kfac_with_n_workers_and_k_shards_equals_one_process_with_the_union_batch(int factorEvery)
    {
        var (train, test) = Data();
        const int workers = 3, batch = 10, steps = 20;
        var optimizer = new OptimizerSettings { Kind = OptimizerKind.Kfac, Momentum = 0.5, WeightDecay = 1e-3,
            Kfac = new KfacSettings(FactorDecay: 0.9, Damping: 0.01, InverseEvery: 4, KlClip: 0.01, FactorEvery: factorEvery) };
        var settings = Settings(train, test, workers, 2, batch, steps, optimizer);
        var outcome = await Run(settings);

        var w = Initial();
        var g = new float[w.Length];
        var batches = new UnionBatches(settings, workers, batch);
        var layers = KfacFactors.Layers(Mlp);
        var kfac = new KfacOptimizer(optimizer, 0, w.Length, layers);
        using var engine = new ReferenceEngine(Mlp, workers * batch);
        for (int t = 0; t < steps; t++)
        {
            var union = batches.Next();
            engine.ComputeGradient(w, union, g, GradientRequest.Fp32);
            if (t % factorEvery == 0) kfac.AddFactors(KfacFactors.Pack(layers, KfacFactors.Compute(Mlp, w, union)));
            kfac.Step(w, g, settings.Schedule.Rate(t));
        }
        double scale = w.Max(Math.Abs);
        for (int i = 0; i < w.Length; i++)
            Assert.True(Math.Abs(w[i] - outcome.FinalWeights[i]) <= 1e-6 * scale, $"parameter {i}: {w[i]} vs {outcome.FinalWeights[i]} (scale {scale})");
        // it moved: the weights are not the initial ones
        Assert.True(w.Zip(Initial(), (a, b) => Math.Abs(a - b)).Max() > 1e-2);
        // the factors were counted apart: every factor-every-th step, each worker sends each shard its layers' triangles
        long perStep = workers * (long)layers.Sum(l => l.PackedLength) * sizeof(float);
        Assert.Equal(perStep * ((steps + factorEvery - 1) / factorEvery), outcome.Shards.Sum(s => s.FactorBytesIn));
    }

    [Fact]
    public async Task Kfac_with_one_worker_and_one_shard_reproduces_a_single_process_loop_bit_for_bit()
    {
        var (train, test) = Data();
        var optimizer = new OptimizerSettings { Kind = OptimizerKind.Kfac, Kfac = new KfacSettings(Damping: 0.01, InverseEvery: 3, FactorEvery: 2) };
        var settings = Settings(train, test, 1, 1, 16, 30, optimizer);
        var outcome = await Run(settings);

        var w = Initial();
        var g = new float[w.Length];
        var it = new MiniBatchIterator(settings.Partitions[0], 16, Coordinator.WorkerDataSeed(Seed, 0));
        var buffer = it.CreateBuffer();
        var layers = KfacFactors.Layers(Mlp);
        var kfac = new KfacOptimizer(optimizer, 0, w.Length, layers);
        using var engine = new ReferenceEngine(Mlp, 16);
        for (int t = 0; t < 30; t++)
        {
            it.Next(buffer);
            engine.ComputeGradient(w, buffer.AsBatch(), g, GradientRequest.Fp32);
            if (t % 2 == 0) kfac.AddFactors(KfacFactors.Pack(layers, KfacFactors.Compute(Mlp, w, buffer.AsBatch())));
            kfac.Step(w, g, settings.Schedule.Rate(t));
        }
        Assert.Equal(w, outcome.FinalWeights);
    }

    [Fact]
    public async Task Kfac_shards_of_whole_layers_give_the_same_weights_as_one_shard()
    {
        var (train, test) = Data();
        var optimizer = new OptimizerSettings { Kind = OptimizerKind.Kfac, Kfac = new KfacSettings(InverseEvery: 3) };
        var one = await Run(Settings(train, test, 2, 1, 10, 12, optimizer));
        var two = await Run(Settings(train, test, 2, 2, 10, 12, optimizer));
        Assert.Equal(one.FinalWeights, two.FinalWeights);
        Assert.Equal(2, two.Shards.Count);
    }

    /// <summary>
    /// A pipeline of P stages with M micro-batches trains to the bits of one worker and one shard with
    /// the whole batch: every sample is computed as the reference computes it, and each stage's
    /// gradient sums the samples in micro-batch order, as the whole batch's does.
    /// </summary>
    [Theory]
    [InlineData(Core.Pipeline.PipelineScheduleKind.GPipe, OptimizerKind.Momentum)]
    [InlineData(Core.Pipeline.PipelineScheduleKind.OneFOneB, OptimizerKind.Momentum)]
    [InlineData(Core.Pipeline.PipelineScheduleKind.OneFOneB, OptimizerKind.Adam)]
    public async Task A_pipeline_of_two_stages_and_four_micro_batches_equals_one_worker_with_the_whole_batch(Core.Pipeline.PipelineScheduleKind schedule, OptimizerKind kind)
    {
        var (train, test) = Data();
        var optimizer = new OptimizerSettings { Kind = kind };
        var single = await Run(Settings(train, test, 1, 1, 20, 15, optimizer));
        var pipeline = await Run(Settings(train, test, 1, 2, 20, 15, optimizer) with { Pipeline = new PipelineSettings(2, 4, schedule, [0, 1]) });
        Assert.Equal(single.FinalWeights, pipeline.FinalWeights);
        Assert.Equal(single.Evaluations.Select(e => e.TestLoss), pipeline.Evaluations.Select(e => e.TestLoss));
        Assert.Equal(15, pipeline.FinalStep);
    }

    /// <summary>
    /// An epoch's last batch is short when the partition does not divide by the batch size (180 rows:
    /// 7 batches of 24 and one of 12; or 176 and 4): the pipeline splits it into M micro-batches as
    /// equal as can be (with fewer samples than micro-batches some are empty) and takes the mean over
    /// its samples, as one worker does over its short batch.
    /// </summary>
    [Theory]
    [InlineData(24, 4)]
    [InlineData(176, 16)]
    public async Task An_epochs_short_last_batch_trains_as_one_worker_trains_it(int batch, int micro)
    {
        var (train, test) = Data();
        Assert.Equal(180, train.Count);
        var optimizer = new OptimizerSettings { Kind = OptimizerKind.Momentum };
        var single = await Run(Settings(train, test, 1, 1, batch, 12, optimizer));
        var pipeline = await Run(Settings(train, test, 1, 2, batch, 12, optimizer) with { Pipeline = new PipelineSettings(2, micro, Core.Pipeline.PipelineScheduleKind.OneFOneB, [0, 1]) });
        Assert.Equal(single.FinalWeights, pipeline.FinalWeights);
        Assert.Equal(single.Evaluations.Select(e => e.TestLoss), pipeline.Evaluations.Select(e => e.TestLoss));
        Assert.Equal(single.Evaluations.Select(e => e.SamplesProcessed), pipeline.Evaluations.Select(e => e.SamplesProcessed));
        Assert.Equal(single.Workers.Single().Steps, pipeline.Workers.Single().Steps);
    }

    /// <summary>
    /// FP16 stages (FP16 storage of weights, inputs, activations and deltas, a static loss scale): the
    /// rounding is per element, so P stages and M micro-batches give the bits of one stage over the whole batch.
    /// </summary>
    [Theory]
    [InlineData(Core.Pipeline.PipelineScheduleKind.GPipe)]
    [InlineData(Core.Pipeline.PipelineScheduleKind.OneFOneB)]
    public async Task An_fp16_pipeline_equals_one_fp16_stage_over_the_whole_batch(Core.Pipeline.PipelineScheduleKind schedule)
    {
        var (train, test) = Data();
        var optimizer = new OptimizerSettings { Kind = OptimizerKind.Momentum };
        Coordinator.Settings Fp16(int stages, PipelineSettings pipeline) => Settings(train, test, 1, stages, 20, 15, optimizer) with
        {
            Precision = PrecisionMode.Fp16, LossScaler = () => LossScaler.Static(1024f), Pipeline = pipeline,
        };
        var whole = await Run(Fp16(1, new PipelineSettings(1, 1, schedule, [0])));
        var pipelined = await Run(Fp16(2, new PipelineSettings(2, 4, schedule, [0, 1])));
        Assert.Equal(whole.FinalWeights, pipelined.FinalWeights);
        // and FP16 is FP16: the weights are not FP32 training's
        var fp32 = await Run(Settings(train, test, 1, 1, 20, 15, optimizer));
        Assert.NotEqual(fp32.FinalWeights, whole.FinalWeights);
        Assert.True(whole.Evaluations[^1].TestLoss < whole.Evaluations[0].TestLoss);
    }

    /// <summary>
    /// A dynamic FP16 scale, started far too high (2^24: the output delta overflows FP16) and growing
    /// every 3 clean steps: each replica's driver takes its stages' verdict as one worker's GradScaler
    /// takes its gradient's (one non-finite stage skips the step, the scale backs off), so P = 2 stages
    /// with M = 4 micro-batches give the bits of one stage over the whole batch, skips and scales
    /// included; with 2 replicas a skipped replica is left out of the mean as a shard leaves out a
    /// non-finite push.
    /// </summary>
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public async Task A_dynamic_fp16_scale_skips_and_scales_as_one_fp16_stage_over_the_whole_batch(int replicas)
    {
        var (train, test) = Data();
        var optimizer = new OptimizerSettings { Kind = OptimizerKind.Adam };
        Coordinator.Settings Fp16(int stages, PipelineSettings pipeline) => Settings(train, test, replicas, stages, 20, 15, optimizer) with
        {
            Precision = PrecisionMode.Fp16, LossScaler = () => new DynamicLossScaler(1 << 24, growthInterval: 3), Pipeline = pipeline,
        };
        var whole = await Run(Fp16(1, new PipelineSettings(1, 1, Core.Pipeline.PipelineScheduleKind.GPipe, [0])));
        var pipelined = await Run(Fp16(2, new PipelineSettings(2, 4, Core.Pipeline.PipelineScheduleKind.OneFOneB, [0, 1])));
        Assert.Equal(whole.FinalWeights, pipelined.FinalWeights);
        Assert.Equal(whole.Workers.Select(w => (w.NonFiniteSteps, w.LastLossScale)), pipelined.Workers.Select(w => (w.NonFiniteSteps, w.LastLossScale)));
        // the scale backed off from 2^24 on skipped steps, and the run still learned
        Assert.All(pipelined.Workers, w => Assert.InRange(w.NonFiniteSteps, 1, 14));
        Assert.All(pipelined.Workers, w => Assert.True(w.LastLossScale < 1 << 24));
        Assert.True(pipelined.Evaluations[^1].TestLoss < pipelined.Evaluations[0].TestLoss);
    }

    /// <summary>
    /// Hybrid D x P: D replicas of the pipeline, each stage's gradient averaged over the replicas by
    /// replica 0's stage as a shard averages pushes, equal D data-parallel workers and one shard bit for bit.
    /// </summary>
    [Theory]
    [InlineData(Core.Pipeline.PipelineScheduleKind.GPipe)]
    [InlineData(Core.Pipeline.PipelineScheduleKind.OneFOneB)]
    public async Task Three_replicas_of_a_two_stage_pipeline_equal_three_data_parallel_workers(Core.Pipeline.PipelineScheduleKind schedule)
    {
        var (train, test) = Data();
        var optimizer = new OptimizerSettings { Kind = OptimizerKind.Momentum };
        var workers = await Run(Settings(train, test, 3, 1, 10, 12, optimizer));
        var hybrid = await Run(Settings(train, test, 3, 2, 10, 12, optimizer) with { Pipeline = new PipelineSettings(2, 2, schedule, [0, 1]) });
        Assert.Equal(workers.FinalWeights, hybrid.FinalWeights);
        // every replica's samples count, as every worker's pushes do at a shard
        Assert.Equal(workers.Evaluations.Select(e => e.SamplesProcessed), hybrid.Evaluations.Select(e => e.SamplesProcessed));
        Assert.Equal(3, hybrid.Workers.Count);
        Assert.Equal(12, hybrid.FinalStep);
        // a driver reports a step once its stages are done, which can be after the stages' final snapshots: the run waits for the last reports
        Assert.All(hybrid.Workers, w => Assert.Equal(12, w.Steps));
    }

    [Fact]
    public async Task K_shards_give_the_same_weights_as_one_shard()
    {
        var (train, test) = Data();
        var optimizer = new OptimizerSettings { Kind = OptimizerKind.Adam };
        var one = await Run(Settings(train, test, 2, 1, 10, 15, optimizer));
        var five = await Run(Settings(train, test, 2, 5, 10, 15, optimizer));
        Assert.Equal(one.FinalWeights, five.FinalWeights);
        Assert.Equal(5, five.Shards.Count);
        Assert.All(five.Shards, s => Assert.Equal(15, s.Steps));
    }

    [Fact]
    public async Task Evaluations_come_every_eval_every_steps_from_step_zero_to_the_end()
    {
        var (train, test) = Data();
        var outcome = await Run(Settings(train, test, 2, 2, 10, 17, new OptimizerSettings()));
        Assert.Equal([0L, 5, 10, 15, 17], outcome.Evaluations.Select(e => e.Step));
        Assert.True(outcome.Evaluations[^1].TestLoss < outcome.Evaluations[0].TestLoss, "the loss should fall");
        Assert.Null(outcome.Evaluations[0].TrainLoss);
        // every step each of 2 workers pushes 2 slices and gets 2 back: bytes are counted per direction
        Assert.True(outcome.Evaluations[^1].BytesWorkerToShard > 17 * 2 * Mlp.ParameterCount * 4);
        Assert.True(outcome.Evaluations[^1].BytesShardToWorker > 17 * 2 * Mlp.ParameterCount * 4);
    }

    [Fact]
    public async Task Target_accuracy_stops_the_run_at_the_evaluation_that_reaches_it()
    {
        var (train, test) = Data();
        var settings = Settings(train, test, 2, 1, 20, 400, new OptimizerSettings { Kind = OptimizerKind.Adam }) with { TargetAccuracy = 0.6 };
        var outcome = await Run(settings);
        Assert.Equal(StopReason.TargetAccuracy, outcome.StopReason);
        Assert.True(outcome.Evaluations[^1].TestAccuracy >= 0.6);
        Assert.All(outcome.Evaluations.SkipLast(1), e => Assert.True(e.TestAccuracy < 0.6));
        Assert.True(outcome.FinalStep < 400);
    }

    [Fact]
    public async Task A_non_finite_push_is_skipped_and_the_master_weights_stay_finite()
    {
        var (train, test) = Data();
        // Engines are created in order: the coordinator's evaluator first, then worker 0, worker 1.
        var outcome = await Run(Settings(train, test, 2, 2, 10, 10, new OptimizerSettings()), new PoisonedEngineFactory(poisonedCreation: 2));
        Assert.All(outcome.FinalWeights, v => Assert.True(float.IsFinite(v)));
        Assert.Equal(10L * 2, outcome.Shards.Sum(s => s.PushesSkippedNonFinite)); // 10 steps x 2 shards
        Assert.Equal(10, outcome.Workers[1].NonFiniteSteps + outcome.Workers[0].NonFiniteSteps);
    }
}
