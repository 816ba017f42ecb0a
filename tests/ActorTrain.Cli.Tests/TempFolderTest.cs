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
