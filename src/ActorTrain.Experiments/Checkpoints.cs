using System.Buffers.Binary;
using System.IO.Hashing;
using ActorTrain.Cluster.Actors;
using ActorTrain.Cluster.Remoting;
using ActorTrain.Core;

namespace ActorTrain.Experiments;

/// <summary>
/// A run's checkpoints: checkpoints/step-N.ckpt in the run folder, one file per checkpointed step
/// holding every shard's part: a magic, a version and the payload's length, the checkpoint in the
/// cluster's wire format (<see cref="WireSerializer.EncodeCheckpoint"/>), then an XxHash64 of
/// everything before it. A file whose hash does not match is refused: a flipped bit in the weights
/// would otherwise resume silently from wrong weights. Written to a temporary name and renamed, so
/// a file that exists is whole.
/// </summary>
public static class Checkpoints
{
    public const string Folder = "checkpoints";
    private const uint Magic = 0x4B435441; // "ATCK"
    private const int Version = 2;
    private const int HeaderBytes = 16, HashBytes = 8;

    public static void Write(string runFolder, RunCheckpoint checkpoint)
    {
        string folder = Path.Combine(runFolder, Folder);
        Directory.CreateDirectory(folder);
        string path = Path.Combine(folder, $"step-{checkpoint.Step}.ckpt");
        File.WriteAllBytes(path + ".tmp", Encode(checkpoint));
        File.Move(path + ".tmp", path, overwrite: true);
    }

    /// <summary>A checkpoint file's bytes: header, payload, hash.</summary>
    public static byte[] Encode(RunCheckpoint checkpoint)
    {
        byte[] payload = WireSerializer.EncodeCheckpoint(checkpoint);
        var bytes = new byte[HeaderBytes + payload.Length + HashBytes];
        BinaryPrimitives.WriteUInt32LittleEndian(bytes, Magic);
        BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(4), Version);
        BinaryPrimitives.WriteInt64LittleEndian(bytes.AsSpan(8), payload.Length);
        payload.CopyTo(bytes.AsSpan(HeaderBytes));
        XxHash64.Hash(bytes.AsSpan(0, HeaderBytes + payload.Length), bytes.AsSpan(HeaderBytes + payload.Length));
        return bytes;
    }

    /// <summary>A checkpoint from a file's bytes; anything but a whole, unaltered checkpoint of this version is an <see cref="InvalidDataException"/>.</summary>
    public static RunCheckpoint Decode(ReadOnlySpan<byte> bytes)
    {
        if (bytes.Length < HeaderBytes + HashBytes || BinaryPrimitives.ReadUInt32LittleEndian(bytes) != Magic)
            throw new InvalidDataException("not an ActorTrain checkpoint");
        int version = BinaryPrimitives.ReadInt32LittleEndian(bytes[4..]);
        if (version != Version)
            throw new InvalidDataException($"checkpoint format version {version}; this ActorTrain reads version {Version} (with a checksum) only");
        long length = BinaryPrimitives.ReadInt64LittleEndian(bytes[8..]);
        if (length != bytes.Length - HeaderBytes - HashBytes)
            throw new InvalidDataException($"the file holds {bytes.Length} bytes but its header says {length} bytes of checkpoint: it is truncated or has extra bytes");
        var body = bytes[..^HashBytes];
        if (XxHash64.HashToUInt64(body) != BinaryPrimitives.ReadUInt64BigEndian(bytes[^HashBytes..]))
            throw new InvalidDataException("checksum mismatch: the file was changed or damaged after it was written");
        try
        {
            return WireSerializer.DecodeCheckpoint(body[HeaderBytes..]);
        }
        catch (WireFormatException e)
        {
            throw new InvalidDataException(e.Message, e);
        }
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

    /// <summary>Step <paramref name="step"/>'s checkpoint, or the last one when null; <paramref name="option"/> names the command's option in errors.</summary>
    public static RunCheckpoint Read(string runFolder, long? step = null, string option = "--resume")
    {
        var steps = Steps(runFolder);
        if (steps.Count == 0)
            throw new ActorTrainException($"{option}: {runFolder} has no checkpoints ({Folder}/step-N.ckpt); runs write them with training.checkpoint-every > 0");
        long chosen = step ?? steps[^1];
        if (!steps.Contains(chosen))
            throw new ActorTrainException($"--checkpoint {chosen}: {runFolder} has checkpoints at steps {string.Join(", ", steps)}");
        string path = Path.Combine(runFolder, Folder, $"step-{chosen}.ckpt");
        try
        {
            return Decode(File.ReadAllBytes(path));
        }
        catch (Exception e) when (e is IOException or InvalidDataException or UnauthorizedAccessException)
        {
            throw new ActorTrainException($"{option}: checkpoint {path} cannot be used: {e.Message}");
        }
    }
}
