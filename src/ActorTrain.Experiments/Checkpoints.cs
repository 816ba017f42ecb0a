using ActorTrain.Cluster.Actors;
using ActorTrain.Cluster.Protocol;
using ActorTrain.Core;

namespace ActorTrain.Experiments;

/// <summary>
/// A run's checkpoints: checkpoints/step-N.ckpt in the run folder, one file per checkpointed step
/// holding every shard's part. Little-endian binary with a magic and a version; written to a
/// temporary name and renamed, so a file that exists is whole.
/// </summary>
public static class Checkpoints
{
    public const string Folder = "checkpoints";
    private const uint Magic = 0x4B435441; // "ATCK"
    private const int Version = 1;

    public static void Write(string runFolder, RunCheckpoint checkpoint)
    {
        string folder = Path.Combine(runFolder, Folder);
        Directory.CreateDirectory(folder);
        string path = Path.Combine(folder, $"step-{checkpoint.Step}.ckpt");
        using (var w = new BinaryWriter(File.Create(path + ".tmp")))
        {
            w.Write(Magic);
            w.Write(Version);
            w.Write(checkpoint.Step);
            w.Write(checkpoint.Time);
            w.Write(checkpoint.Shards.Count);
            foreach (var s in checkpoint.Shards)
            {
                w.Write(s.Shard);
                w.Write(s.Step);
                w.Write(s.Version);
                Floats(w, s.Weights);
                w.Write(s.OptimizerSteps);
                w.Write(s.OptimizerState.Length);
                foreach (var buffer in s.OptimizerState) Floats(w, buffer);
                Longs(w, s.WorkerClocks);
                var c = s.Counters;
                foreach (long v in new[] { c.Steps, c.PushesApplied, c.PushesSkippedNonFinite, c.PushesDroppedLate, c.Samples, c.BytesIn, c.BytesOut,
                             c.DenseBytesIn, c.DenseBytesOut })
                    w.Write(v);
                w.Write(c.LossScale);
                Longs(w, c.StalenessHistogram);
                w.Write(c.StalenessSum);
                w.Write(c.StalenessMax);
                w.Write(c.MaxClockLead);
                w.Write(c.BusySeconds);
            }
        }
        File.Move(path + ".tmp", path, overwrite: true);
    }

    /// <summary>The steps checkpointed in a run folder, in order.</summary>
    public static IReadOnlyList<long> Steps(string runFolder)
    {
        string folder = Path.Combine(runFolder, Folder);
        if (!Directory.Exists(folder)) return [];
        return Directory.GetFiles(folder, "step-*.ckpt")
            .Select(f => long.TryParse(Path.GetFileNameWithoutExtension(f)["step-".Length..], out long step) ? step : -1)
            .Where(s => s >= 0).Order().ToList();
    }

    /// <summary>Step <paramref name="step"/>'s checkpoint, or the last one when null.</summary>
    public static RunCheckpoint Read(string runFolder, long? step = null)
    {
        var steps = Steps(runFolder);
        if (steps.Count == 0)
            throw new ActorTrainException($"--resume: {runFolder} has no checkpoints ({Folder}/step-N.ckpt); runs write them with training.checkpoint-every > 0");
        long chosen = step ?? steps[^1];
        if (!steps.Contains(chosen))
            throw new ActorTrainException($"--checkpoint {chosen}: {runFolder} has checkpoints at steps {string.Join(", ", steps)}");
        string path = Path.Combine(runFolder, Folder, $"step-{chosen}.ckpt");
        try
        {
            using var r = new BinaryReader(File.OpenRead(path));
            if (r.ReadUInt32() != Magic || r.ReadInt32() != Version) throw new InvalidDataException("not an ActorTrain checkpoint of this version");
            long at = r.ReadInt64();
            double time = r.ReadDouble();
            var shards = new ShardCheckpoint[Count(r, 1 << 16)];
            for (int k = 0; k < shards.Length; k++)
            {
                int shard = r.ReadInt32();
                long shardStep = r.ReadInt64(), version = r.ReadInt64();
                var weights = Floats(r);
                long optimizerSteps = r.ReadInt64();
                var state = new float[Count(r, 16)][];
                for (int i = 0; i < state.Length; i++) state[i] = Floats(r);
                var clocks = Longs(r);
                var v = new long[9];
                for (int i = 0; i < v.Length; i++) v[i] = r.ReadInt64();
                double scale = r.ReadDouble();
                var histogram = Longs(r);
                var counters = new ShardCounters(v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], scale, histogram, r.ReadInt64(), r.ReadInt64(),
                    r.ReadInt64(), r.ReadDouble());
                shards[k] = new ShardCheckpoint(shard, shardStep, version, weights, optimizerSteps, state, clocks, counters);
            }
            return new RunCheckpoint(at, time, shards);
        }
        catch (Exception e) when (e is IOException or InvalidDataException)
        {
            throw new ActorTrainException($"--resume: cannot read {path}: {e.Message}");
        }
    }

    private static int Count(BinaryReader r, int max)
    {
        int count = r.ReadInt32();
        if (count < 0 || count > max) throw new InvalidDataException($"a count of {count} is out of range");
        return count;
    }

    private static void Floats(BinaryWriter w, float[] values)
    {
        w.Write(values.Length);
        w.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()));
    }

    private static float[] Floats(BinaryReader r)
    {
        var values = new float[Count(r, 1 << 28)];
        if (r.Read(System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan())) != values.Length * sizeof(float))
            throw new InvalidDataException("truncated");
        return values;
    }

    private static void Longs(BinaryWriter w, long[] values)
    {
        w.Write(values.Length);
        foreach (long v in values) w.Write(v);
    }

    private static long[] Longs(BinaryReader r)
    {
        var values = new long[Count(r, 1 << 24)];
        for (int i = 0; i < values.Length; i++) values[i] = r.ReadInt64();
        return values;
    }
}
