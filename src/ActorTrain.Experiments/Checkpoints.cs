using ActorTrain.Cluster.Actors;
using ActorTrain.Cluster.Remoting;
using ActorTrain.Core;

namespace ActorTrain.Experiments;

/// <summary>
/// A run's checkpoints: checkpoints/step-N.ckpt in the run folder, one file per checkpointed step
/// holding every shard's part: a magic and a version, then the checkpoint in the cluster's wire
/// format (<see cref="WireSerializer.EncodeCheckpoint"/>). Written to a temporary name and
/// renamed, so a file that exists is whole.
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
            w.Write(WireSerializer.EncodeCheckpoint(checkpoint));
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
            byte[] bytes = File.ReadAllBytes(path);
            if (bytes.Length < 8 || BitConverter.ToUInt32(bytes, 0) != Magic || BitConverter.ToInt32(bytes, 4) != Version)
                throw new InvalidDataException("not an ActorTrain checkpoint of this version");
            return WireSerializer.DecodeCheckpoint(bytes.AsSpan(8));
        }
        catch (Exception e) when (e is IOException or InvalidDataException or WireFormatException)
        {
            throw new ActorTrainException($"--resume: cannot read {path}: {e.Message}");
        }
    }
}
