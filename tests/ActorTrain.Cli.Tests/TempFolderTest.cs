namespace ActorTrain.Cli.Tests;

/// <summary>A test class whose runs write into a fresh temporary folder, removed afterwards.</summary>
public abstract class TempFolderTest(string prefix) : IDisposable
{
    protected string Root { get; } = Directory.CreateTempSubdirectory(prefix).FullName;

    public void Dispose()
    {
        Directory.Delete(Root, recursive: true);
        GC.SuppressFinalize(this);
    }
}

/// <summary>The command as a test calls it: exit code and what it wrote to stdout and stderr.</summary>
internal static class Command
{
    public static async Task<(int Code, string Out, string Err)> Invoke(params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int code = await ActorTrainCommand.RunAsync(args, stdout, stderr);
        return (code, stdout.ToString(), stderr.ToString());
    }
}
