using System.IO.Compression;
using System.Text;

namespace ActorTrain.Experiments.Telemetry;

/// <summary>
/// Where a run folder keeps its spans: traces.jsonl.gz (gzip, the default: telemetry.compress-traces)
/// or traces.jsonl. Either holds OTLP JSON, one export batch per line. A gzip file may hold several
/// members (a cluster run appends each node's spans as one more), and every batch is flushed, so a
/// file cut short by a killed process still reads up to its last whole batch.
/// </summary>
public static class TraceStore
{
    public const string Plain = "traces.jsonl";
    public const string Compressed = "traces.jsonl.gz";

    /// <summary>The file a run folder's spans are written to.</summary>
    public static string PathIn(string folder, bool compressed) => Path.Combine(folder, compressed ? Compressed : Plain);

    /// <summary>The spans file a run folder holds (the compressed one first), or null.</summary>
    public static string? Find(string folder) =>
        new[] { Compressed, Plain }.Select(name => Path.Combine(folder, name)).FirstOrDefault(File.Exists);

    /// <summary>A writer that starts the file (or, with <paramref name="append"/>, adds to it), gzip when the name ends in .gz.</summary>
    public static StreamWriter OpenWriter(string path, bool append = false)
    {
        var file = new FileStream(path, append ? FileMode.Append : FileMode.Create, FileAccess.Write, FileShare.Read);
        Stream stream = path.EndsWith(".gz", StringComparison.Ordinal) ? new GZipStream(file, CompressionLevel.Optimal) : file;
        return new StreamWriter(stream, new UTF8Encoding(false)) { NewLine = "\n" };
    }

    /// <summary>Adds OTLP JSON lines (another node's spans) to a spans file.</summary>
    public static void Append(string path, string lines)
    {
        if (lines.Length == 0) return;
        using var writer = OpenWriter(path, append: true);
        writer.Write(lines);
    }

    /// <summary>The whole text of a spans file, plain or gzip (told by its first two bytes, not its name).</summary>
    public static string ReadAllText(string path) => string.Join("", ReadLines(path).Select(line => line + "\n"));

    /// <summary>
    /// The lines of a spans file, plain or gzip. A gzip stream that ends early (a process killed
    /// while writing) ends the lines at its last whole line: what was flushed before is intact, and
    /// a batch cut in half is left out rather than reported as broken JSON.
    /// </summary>
    public static IEnumerable<string> ReadLines(string path)
    {
        using var file = File.OpenRead(path);
        bool gzip = file.ReadByte() == 0x1f && file.ReadByte() == 0x8b;
        file.Position = 0;
        using var reader = new StreamReader(gzip ? new GZipStream(file, CompressionMode.Decompress) : file, Encoding.UTF8);
        var line = new StringBuilder();
        var buffer = new char[1 << 16];
        while (true)
        {
            int read;
            try
            {
                read = reader.Read(buffer, 0, buffer.Length);
            }
            catch (Exception e) when (gzip && e is InvalidDataException or EndOfStreamException)
            {
                yield break;
            }
            if (read == 0) break;
            int start = 0;
            for (int i = 0; i < read; i++)
            {
                if (buffer[i] != '\n') continue;
                line.Append(buffer, start, i - start);
                yield return line.ToString();
                line.Clear();
                start = i + 1;
            }
            line.Append(buffer, start, read - start);
        }
        // a plain file's last line may lack its newline (written by hand); a gzip file's is cut short
        if (!gzip && line.Length > 0) yield return line.ToString();
    }
}
