namespace ActorTrain.Core;

/// <summary>
/// An error caused by the user's input (a configuration value, a data file) rather than by a bug:
/// the message is written to be shown as-is, naming the key or file and how to fix it.
/// </summary>
public class ActorTrainException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>A data file that is missing, truncated or not in the format it claims.</summary>
public sealed class DataFormatException(string path, string problem, Exception? inner = null)
    : ActorTrainException($"{path}: {problem}", inner)
{
    public string Path { get; } = path;
}

/// <summary>
/// A run that started and could not finish (it stalled, a shard was lost, every worker died): not
/// bad input, so the command exits 1; the message is written to be shown as-is and names the cause.
/// </summary>
public class RunFailedException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>A label outside the classes (given by dataset.classes, or 0..K-1 read from the labels).</summary>
public sealed class LabelOutOfRangeException(string path, string problem) : ActorTrainException($"{path}: {problem}");
