using ActorTrain.Core;

namespace ActorTrain.Experiments;

/// <summary>
/// A results folder while it is written: a hidden folder of this process alone
/// (.name.pid-random.partial), renamed to <c>name</c> only when everything is in it. Two runs that
/// want the same name (same experiment, same second) never share a folder: each writes its own
/// partial folder, and the rename takes the first free name of name, name-2, name-3, ...
/// (a rename onto a folder that exists fails rather than merging).
/// </summary>
internal sealed class RunFolder
{
    private RunFolder(string root, string name, string partial)
    {
        Root = root;
        Name = name;
        Partial = partial;
    }

    public string Root { get; }

    /// <summary>The name the folder gets when published (or the first free name after it).</summary>
    public string Name { get; }

    /// <summary>Where everything is written until it is published.</summary>
    public string Partial { get; }

    /// <summary>Creates the partial folder under <paramref name="root"/>; an unwritable root is bad input naming output.directory.</summary>
    public static RunFolder Create(string root, string name)
    {
        string partial = Path.Combine(root, $".{name}.{Environment.ProcessId}-{Random.Shared.Next():x8}.partial");
        try
        {
            Directory.CreateDirectory(root);
            Directory.CreateDirectory(partial);
            File.WriteAllText(Path.Combine(partial, ".write-test"), "");
            File.Delete(Path.Combine(partial, ".write-test"));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            TryDelete(partial);
            throw new ActorTrainException($"output.directory: cannot write to {root} ({e.Message}); choose another with --out", e);
        }
        return new RunFolder(root, name, partial);
    }

    /// <summary>Renames the partial folder to its name (with <paramref name="suffix"/>), or the first free name after it; returns the path.</summary>
    public string Publish(string suffix = "")
    {
        string name = Name + suffix;
        for (int i = 1; ; i++)
        {
            string path = Path.Combine(Root, i == 1 ? name : $"{name}-{i}");
            if (Directory.Exists(path) || File.Exists(path)) continue;
            try
            {
                Directory.Move(Partial, path);
                return path;
            }
            catch (IOException) when (Directory.Exists(path) && Directory.Exists(Partial))
            {
                // another run took the name between the check and the rename: try the next
            }
        }
    }

    public void Discard() => TryDelete(Partial);

    internal static void TryDelete(string folder)
    {
        try
        {
            if (Directory.Exists(folder)) Directory.Delete(folder, recursive: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // Best effort: the folder keeps its ".partial" name, which never looks finished.
        }
    }
}
