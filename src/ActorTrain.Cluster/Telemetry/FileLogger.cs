using System.Globalization;
using Akka.Actor;
using Akka.Event;

namespace ActorTrain.Cluster.Telemetry;

/// <summary>
/// Akka's log as a file (akka.loggers): actor failures, dead letters and remoting warnings go to
/// <c>actortrain.log-file</c> (akka.log in the run folder) instead of the console, where a stack
/// trace would bury the one-line error the command prints. Each line is flushed, so a crashed run's
/// log is whole up to the crash.
/// </summary>
public sealed class FileLogger : ReceiveActor
{
    public const string PathKey = "actortrain.log-file";

    private StreamWriter? _writer;

    public FileLogger()
    {
        string path = Context.System.Settings.Config.GetString(PathKey, "");
        Receive<InitializeLogger>(_ => Sender.Tell(new LoggerInitialized()));
        Receive<LogEvent>(e =>
        {
            if (path.Length == 0) return;
            try
            {
                _writer ??= new StreamWriter(new FileStream(path, FileMode.Append, FileAccess.Write, FileShare.ReadWrite)) { AutoFlush = true };
                _writer.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"[{e.LogLevel().ToString().Replace("Level", "").ToUpperInvariant()}][{e.Timestamp:yyyy-MM-dd HH:mm:ss.fff}][{e.LogSource}] {e.Message}"));
                if (e is Error { Cause: { } cause }) _writer.WriteLine(cause);
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                path = ""; // the run folder is gone (the run failed): nothing more to keep
            }
        });
    }

    protected override void PostStop() => _writer?.Dispose();

    /// <summary>Akka settings that send the log to <paramref name="path"/> and nothing to the console.</summary>
    public static string Config(string path) => $$"""
        akka.loggers = ["{{typeof(FileLogger).AssemblyQualifiedName}}"]
        akka.stdout-loglevel = OFF
        {{PathKey}} = "{{path.Replace("\\", "\\\\").Replace("\"", "\\\"")}}"
        """;
}
