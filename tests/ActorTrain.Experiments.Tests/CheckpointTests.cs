using ActorTrain.Cluster.Actors;
using ActorTrain.Core;
using ActorTrain.Experiments;

namespace ActorTrain.Experiments.Tests;

/// <summary>Shard checkpoints and `run --resume`.</summary>
public sealed class CheckpointTests() : TempFolderTest("actortrain-checkpoint-")
{
    private static readonly string[] Quick = ["training.max-steps=300", "training.checkpoint-every=100", "output.plots=off", "telemetry.exporter=none"];

    [Theory]
    [InlineData("optimizer.type=momentum")]
    [InlineData("optimizer.type=adam")]
    // K-FAC's running factors, inverses and the steps since its last inversion (7 does not divide 100) travel in the checkpoint
    [InlineData("optimizer.type=kfac;optimizer.learning-rate=0.02;optimizer.kfac.damping=0.01;optimizer.kfac.inverse-every=7;optimizer.kfac.factor-every=3")]
    // pipeline stages write their layers' part (weights, optimizer); the drivers go on with their data order
    [InlineData("parallelism.pipeline-stages=2;parallelism.micro-batches=4;topology.workers=2;optimizer.type=adam")]
    [InlineData("parallelism.pipeline-stages=2;parallelism.micro-batches=2;topology.workers=1;precision.mode=fp16;precision.loss-scale=1024")]
    public async Task Resuming_a_BSP_run_from_a_checkpoint_reaches_the_same_final_weights_as_the_uninterrupted_run(string settings)
    {
        var spec = ExperimentSpec.Load(null, [.. Quick, .. settings.Split(';')]);
        var whole = await ExperimentRunner.RunAsync(spec, Root);
        Assert.Equal(new long[] { 100, 200 }, Checkpoints.Steps(whole.Folder));

        var resumed = await ExperimentRunner.ResumeAsync(whole.Folder, step: 100, outputRoot: Root);

        Assert.Contains("-resumed-", resumed.Folder);
        Assert.Equal(300, resumed.Outcome.FinalStep);
        Assert.Equal(whole.Outcome.FinalWeights, resumed.Outcome.FinalWeights);
        // every evaluation from the checkpoint on has the same test loss; the rows before it are the original's
        var original = whole.Outcome.Evaluations.Where(e => e.Step >= 100).Select(e => (e.Step, e.TestLoss)).ToList();
        Assert.Equal(original, resumed.Outcome.Evaluations.Select(e => (e.Step, e.TestLoss)).ToList());
        var rows = File.ReadAllLines(Path.Combine(resumed.Folder, "metrics.csv"));
        Assert.Equal(File.ReadAllLines(Path.Combine(whole.Folder, "metrics.csv")).Take(3), rows.Take(3)); // header, steps 0 and 50
        Assert.Equal(whole.Outcome.Evaluations.Count + 1, rows.Length);
    }

    [Fact]
    public async Task Runs_with_different_seeds_end_with_different_weights()
    {
        // The control of the resume test: its equality of final weights is not true of any two runs.
        var a = await ExperimentRunner.RunAsync(ExperimentSpec.Load(null, Quick), Path.Combine(Root, "a"));
        var b = await ExperimentRunner.RunAsync(ExperimentSpec.Load(null, [.. Quick, "seed=8"]), Path.Combine(Root, "b"));
        Assert.NotEqual(a.Outcome.FinalWeights, b.Outcome.FinalWeights);
    }

    [Fact]
    public async Task A_run_that_fails_after_a_checkpoint_keeps_its_folder_and_says_how_to_resume()
    {
        // worker 0 dies for good at step 150: BSP stalls after the checkpoint of step 100
        var spec = ExperimentSpec.Load(null, [.. Quick, "faults=[{worker=0, at-step=150}]"]);
        var error = await Assert.ThrowsAsync<RunFailedWithCheckpointException>(() => ExperimentRunner.RunAsync(spec, Root));
        Assert.Contains("stalled", error.Message);
        Assert.Contains($"actortrain run --resume {error.Folder}", error.Message);
        Assert.EndsWith("-incomplete", error.Folder);
        Assert.Equal(new long[] { 100 }, Checkpoints.Steps(error.Folder));
        Assert.True(File.Exists(Path.Combine(error.Folder, "config.conf")));
        Assert.True(File.Exists(Path.Combine(error.Folder, "error.txt")));
        Assert.Equal(100, Checkpoints.Read(error.Folder).Step);
    }

    [Fact]
    public async Task Resume_names_what_is_missing()
    {
        var plain = await ExperimentRunner.RunAsync(ExperimentSpec.Load(null, ["training.max-steps=50", "output.plots=off", "telemetry.exporter=none"]), Root);
        Assert.Contains("no checkpoints", (await Assert.ThrowsAsync<ActorTrainException>(() => ExperimentRunner.ResumeAsync(plain.Folder))).Message);
        Assert.Contains("not found", (await Assert.ThrowsAsync<ActorTrainException>(() => ExperimentRunner.ResumeAsync(Path.Combine(Root, "nope")))).Message);
        var withCheckpoints = await ExperimentRunner.RunAsync(ExperimentSpec.Load(null, Quick), Path.Combine(Root, "c"));
        Assert.Contains("checkpoints at steps 100, 200",
            (await Assert.ThrowsAsync<ActorTrainException>(() => ExperimentRunner.ResumeAsync(withCheckpoints.Folder, step: 150))).Message);
        string file = Path.Combine(withCheckpoints.Folder, Checkpoints.Folder, "step-200.ckpt");
        File.WriteAllBytes(file, File.ReadAllBytes(file)[..^100]);
        Assert.Contains("cannot be used", (await Assert.ThrowsAsync<ActorTrainException>(() => ExperimentRunner.ResumeAsync(withCheckpoints.Folder))).Message);
    }

    /// <summary>
    /// A checkpoint with any single byte flipped, or cut anywhere, is refused with the file named:
    /// before the checksum, a flipped weight resumed silently from wrong weights.
    /// </summary>
    [Fact]
    public async Task A_damaged_checkpoint_is_refused_naming_the_file()
    {
        var run = await ExperimentRunner.RunAsync(ExperimentSpec.Load(null, [.. Quick, "training.max-steps=200"]), Root);
        string file = Path.Combine(run.Folder, Checkpoints.Folder, "step-100.ckpt");
        byte[] whole = File.ReadAllBytes(file);
        Assert.Equal(100, Checkpoints.Decode(whole).Step);
        var rng = new Rng(11);
        for (int trial = 0; trial < 5000; trial++) // 10,000 damaged files: 5,000 flipped, 5,000 cut
        {
            byte[] damaged = (byte[])whole.Clone();
            int at = trial < whole.Length && trial < 64 ? trial : (int)(rng.NextDouble() * whole.Length);
            damaged[at] ^= (byte)(1 << (trial % 8));
            Assert.Throws<InvalidDataException>(() => Checkpoints.Decode(damaged));
            Assert.Throws<InvalidDataException>(() => Checkpoints.Decode(whole.AsSpan(0, (int)(rng.NextDouble() * whole.Length))));
        }
        whole[whole.Length / 2] ^= 0x10;
        File.WriteAllBytes(file, whole);
        var error = await Assert.ThrowsAsync<ActorTrainException>(() => ExperimentRunner.ResumeAsync(run.Folder));
        Assert.Contains(file, error.Message);
        Assert.Contains("checksum mismatch", error.Message);
    }
}
