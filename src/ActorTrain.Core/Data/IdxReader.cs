using System.Buffers.Binary;
using System.IO.Compression;

namespace ActorTrain.Core.Data;

public enum PixelNormalization
{
    /// <summary>Bytes as they are, 0..255.</summary>
    None,
    /// <summary>Divided by 255, to [0, 1].</summary>
    UnitRange,
    /// <summary>Divided by 255, then shifted and scaled by the training set's mean and standard deviation.</summary>
    Standardize,
}

/// <summary>One IDX file: its dimensions and its unsigned-byte payload.</summary>
public sealed record IdxArray(int[] Dimensions, byte[] Data)
{
    public int Count => Dimensions[0];
    public int ItemSize => Dimensions.Length == 1 ? 1 : Dimensions[1..].Aggregate(1, (a, b) => a * b);
}

/// <summary>
/// Reads IDX files (the MNIST / Fashion-MNIST format), raw or gzip-compressed (detected by the gzip
/// magic, not by the file name). Only the unsigned-byte element type (0x08) is accepted, which is
/// what both datasets use. Every problem is reported with the file path and what is wrong.
/// </summary>
public static class IdxReader
{
    private const int MaxDimensions = 4;

    public static IdxArray Read(string path)
    {
        if (!File.Exists(path)) throw new DataFormatException(path, "file not found");
        byte[] bytes;
        try
        {
            bytes = File.ReadAllBytes(path);
            if (bytes.Length >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b)
            {
                using var gz = new GZipStream(new MemoryStream(bytes), CompressionMode.Decompress);
                using var raw = new MemoryStream();
                gz.CopyTo(raw);
                bytes = raw.ToArray();
            }
        }
        catch (InvalidDataException e)
        {
            throw new DataFormatException(path, $"corrupt gzip stream ({e.Message})", e);
        }
        catch (IOException e) when (e is not FileNotFoundException)
        {
            throw new DataFormatException(path, $"cannot read ({e.Message})", e);
        }
        catch (UnauthorizedAccessException e)
        {
            throw new DataFormatException(path, "permission denied", e);
        }
        return Parse(path, bytes);
    }

    internal static IdxArray Parse(string path, ReadOnlySpan<byte> bytes)
    {
        if (bytes.Length < 4) throw new DataFormatException(path, $"too short for an IDX header ({bytes.Length} bytes)");
        if (bytes[0] != 0 || bytes[1] != 0)
            throw new DataFormatException(path, $"not an IDX file (magic {bytes[0]:x2} {bytes[1]:x2} {bytes[2]:x2} {bytes[3]:x2}, expected 00 00 08 0N)");
        if (bytes[2] != 0x08)
            throw new DataFormatException(path, $"element type 0x{bytes[2]:x2} is not supported (only unsigned bytes, 0x08)");
        int rank = bytes[3];
        if (rank is < 1 or > MaxDimensions) throw new DataFormatException(path, $"rank {rank} is not supported (1 to {MaxDimensions})");
        int header = 4 + 4 * rank;
        if (bytes.Length < header) throw new DataFormatException(path, $"truncated header: {bytes.Length} bytes, {header} needed for rank {rank}");
        var dims = new int[rank];
        long size = 1;
        for (int d = 0; d < rank; d++)
        {
            dims[d] = BinaryPrimitives.ReadInt32BigEndian(bytes.Slice(4 + 4 * d));
            if (dims[d] <= 0) throw new DataFormatException(path, $"dimension {d} is {dims[d]}");
            size *= dims[d];
            if (size > Array.MaxLength) throw new DataFormatException(path, "declared size is larger than an array can hold");
        }
        long actual = bytes.Length - header;
        if (actual < size)
            throw new DataFormatException(path, $"truncated: header declares {string.Join('x', dims)} = {size} bytes of data, file has {actual}");
        if (actual > size)
            throw new DataFormatException(path, $"{actual - size} unexpected bytes after the {string.Join('x', dims)} data");
        return new IdxArray(dims, bytes.Slice(header).ToArray());
    }

    /// <summary>
    /// Loads an images file and its labels file as a classification dataset with one feature per
    /// pixel. <paramref name="mean"/> and <paramref name="std"/> are used for standardisation when
    /// given (pass the training set's), and computed from these images otherwise.
    /// </summary>
    /// <param name="classes">The number of classes: every label must be below it. Null: one more than the
    /// largest label, and every class 0..K-1 must then have a label (a gap means a damaged file).</param>
    public static Dataset LoadLabelled(string imagesPath, string labelsPath, PixelNormalization normalization,
        string name, ref double? mean, ref double? std, ref int? classes)
    {
        var images = Read(imagesPath);
        var labels = Read(labelsPath);
        if (images.Dimensions.Length < 2) throw new DataFormatException(imagesPath, $"expected images (rank >= 2), found rank {images.Dimensions.Length}");
        if (labels.Dimensions.Length != 1) throw new DataFormatException(labelsPath, $"expected labels (rank 1), found rank {labels.Dimensions.Length}");
        if (labels.Count != images.Count)
            throw new DataFormatException(labelsPath, $"{labels.Count} labels for {images.Count} images in {imagesPath}");
        if (classes is { } k)
        {
            int bad = Array.FindIndex(labels.Data, l => l >= k);
            if (bad >= 0)
                throw new LabelOutOfRangeException(labelsPath, $"row {bad} has label {labels.Data[bad]}, but there are {k} classes (labels 0..{k - 1})");
        }
        else
        {
            int count = labels.Data.Max() + 1;
            if (count < 2) throw new DataFormatException(labelsPath, "all labels are 0: not a classification set");
            var seen = new bool[count];
            foreach (byte l in labels.Data) seen[l] = true;
            int gap = Array.IndexOf(seen, false);
            if (gap >= 0)
            {
                int largest = Array.IndexOf(labels.Data, (byte)(count - 1));
                throw new LabelOutOfRangeException(labelsPath,
                    $"no row has label {gap}, but row {largest} has label {count - 1}: the labels are not 0..K-1 (a damaged file?); set dataset.classes to the real number of classes");
            }
            classes = count;
        }

        int features = images.ItemSize;
        var x = new float[images.Data.Length];
        float divisor = normalization == PixelNormalization.None ? 1f : 255f;
        for (int i = 0; i < x.Length; i++) x[i] = images.Data[i] / divisor;
        if (normalization == PixelNormalization.Standardize)
        {
            if (mean is null || std is null)
            {
                double sum = 0, sq = 0;
                foreach (float v in x) { sum += v; sq += (double)v * v; }
                mean = sum / x.Length;
                std = Math.Sqrt(Math.Max(sq / x.Length - mean.Value * mean.Value, 1e-12));
            }
            float m = (float)mean.Value, inv = (float)(1 / std.Value);
            for (int i = 0; i < x.Length; i++) x[i] = (x[i] - m) * inv;
        }
        var y = new int[labels.Count];
        for (int i = 0; i < y.Length; i++) y[i] = labels.Data[i];
        return new Dataset(name, x, features, y, classes.Value);
    }

    /// <summary>
    /// Fashion-MNIST or MNIST from a folder holding the four standard files
    /// (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-...), as Debian's
    /// dataset-fashion-mnist package installs them in /usr/share/datasets/fashion-mnist.
    /// </summary>
    public static (Dataset Train, Dataset Test) LoadMnistFolder(string directory, PixelNormalization normalization, int? classes = null)
    {
        if (!Directory.Exists(directory))
            throw new DataFormatException(directory, "folder not found (for Fashion-MNIST: apt-get install dataset-fashion-mnist)");
        double? mean = null, std = null;
        var train = LoadLabelled(Find(directory, "train-images-idx3-ubyte"), Find(directory, "train-labels-idx1-ubyte"),
            normalization, Path.GetFileName(directory.TrimEnd('/')) + "/train", ref mean, ref std, ref classes);
        var test = LoadLabelled(Find(directory, "t10k-images-idx3-ubyte"), Find(directory, "t10k-labels-idx1-ubyte"),
            normalization, Path.GetFileName(directory.TrimEnd('/')) + "/test", ref mean, ref std, ref classes);
        return (train, test);
    }

    private static string Find(string directory, string stem)
    {
        foreach (string candidate in new[] { stem + ".gz", stem })
        {
            string path = Path.Combine(directory, candidate);
            if (File.Exists(path)) return path;
        }
        throw new DataFormatException(Path.Combine(directory, stem + ".gz"), "file not found (nor without .gz)");
    }
}
