using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;
using ActorTrain.Core.Models;

namespace ActorTrain.Experiments;

/// <summary>
/// Weights as NumPy's .npz: a zip of one .npy array per named parameter block (layer0.weight as
/// fan_in x fan_out, layer0.bias as fan_out, ...), little-endian float32, format 1.0.
/// <c>numpy.load("weights.npz")["layer0.weight"]</c> reads them back.
/// </summary>
public static class NpzWriter
{
    public const string WeightsFile = "weights.npz";

    /// <summary>Writes <paramref name="weights"/> (the model's flat vector) to <paramref name="path"/> atomically (a .partial, then a rename).</summary>
    public static void Write(string path, ModelSpec model, ReadOnlySpan<float> weights)
    {
        if (model.SizesOnly) throw new Core.ActorTrainException("a workload (model.type = workload) has no weights to write");
        if (weights.Length != model.ParameterCount)
            throw new ArgumentException($"expected {model.ParameterCount} weights, got {weights.Length}", nameof(weights));
        string partial = path + ".partial";
        using (var file = File.Create(partial))
        using (var zip = new ZipArchive(file, ZipArchiveMode.Create))
        {
            foreach (var block in model.Layout)
            {
                var entry = zip.CreateEntry(block.Name + ".npy", CompressionLevel.Fastest);
                using var stream = entry.Open();
                bool vector = block.Name.EndsWith(".bias", StringComparison.Ordinal);
                WriteNpy(stream, vector ? $"({block.Columns},)" : $"({block.Rows}, {block.Columns})", weights.Slice(block.Offset, block.Length));
            }
        }
        File.Move(partial, path, overwrite: true);
    }

    private static void WriteNpy(Stream stream, string shape, ReadOnlySpan<float> values)
    {
        // magic, version 1.0, header length; the header is padded with spaces so data starts on a 64-byte boundary
        string header = $"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}";
        int unpadded = 10 + header.Length + 1;
        header = header.PadRight(header.Length + (64 - unpadded % 64) % 64) + "\n";
        Span<byte> prefix = stackalloc byte[10];
        prefix[0] = 0x93;
        "NUMPY"u8.CopyTo(prefix[1..]);
        prefix[6] = 1;
        prefix[7] = 0;
        BinaryPrimitives.WriteUInt16LittleEndian(prefix[8..], (ushort)header.Length);
        stream.Write(prefix);
        stream.Write(Encoding.ASCII.GetBytes(header));
        var bytes = new byte[values.Length * 4];
        for (int i = 0; i < values.Length; i++) BinaryPrimitives.WriteSingleLittleEndian(bytes.AsSpan(4 * i), values[i]);
        stream.Write(bytes);
    }
}
