using System.Globalization;
using System.Reflection;
using System.Text;
using ActorTrain.Core;
using Akka.Configuration;
using Akka.Configuration.Hocon;

namespace ActorTrain.Experiments;

/// <summary>
/// Reads experiment HOCON against the reference file (hocon/actortrain.conf, embedded): merges the
/// file and --set overrides over the defaults, rejects keys the reference does not have (with the
/// closest valid key), and reads typed values with errors that name the key and the accepted values.
/// </summary>
public sealed class ConfigReader
{
    private readonly Config _config;

    private readonly HashSet<string> _set;

    private ConfigReader(Config config, IReadOnlyList<string> keys, HashSet<string> set)
    {
        _config = config;
        Keys = keys;
        _set = set;
    }

    /// <summary>Whether the experiment file or a --set gave <paramref name="key"/> (not the reference's default).</summary>
    public bool IsSet(string key) => _set.Contains(key);

    /// <summary>Every leaf key of the reference, in file order.</summary>
    public IReadOnlyList<string> Keys { get; }

    public static string ReferenceText => Resource("actortrain.conf");
    public static string QuickstartText => Resource("quickstart.conf");

    private static string Resource(string name)
    {
        using var stream = Assembly.GetExecutingAssembly().GetManifestResourceStream(name)
            ?? throw new InvalidOperationException($"embedded resource {name} is missing");
        return new StreamReader(stream).ReadToEnd();
    }

    /// <param name="source">Where the text came from, for messages (a path, or "quickstart").</param>
    /// <param name="folder">The folder `include "file"` is relative to: the experiment file's; null: includes are refused.</param>
    public static ConfigReader Load(string text, string source, IEnumerable<string> overrides, string? folder = null)
    {
        var reference = Parse(ReferenceText, "hocon/actortrain.conf (embedded)");
        var referenceKeys = LeafKeys(reference);
        var file = Parse(text, source, folder);
        CheckKeys(file, referenceKeys, source);
        var merged = file.WithFallback(reference);
        var set = new HashSet<string>(LeafKeys(file));
        foreach (string assignment in overrides)
        {
            int eq = assignment.IndexOf('=');
            if (eq <= 0) throw new ActorTrainException($"--set {assignment}: expected key=value, e.g. --set optimizer.learning-rate=0.05");
            string key = assignment[..eq].Trim();
            string value = assignment[(eq + 1)..].Trim();
            var single = ParseOverride(key, value);
            CheckKeys(single, referenceKeys, $"--set {assignment}");
            merged = single.WithFallback(merged);
            set.UnionWith(LeafKeys(single));
        }
        return new ConfigReader(merged, referenceKeys, set);
    }

    /// <summary>True when <paramref name="text"/> (valid HOCON) sets no key at all: an empty file, or comments only.</summary>
    public static bool SetsNoKeys(string text) => string.IsNullOrWhiteSpace(text) ||
        ConfigurationFactory.ParseString(text, _ => Parser.Parse("included = true", null)) is not { Root: not null } config || LeafKeys(config).Count == 0;

    private static Config ParseOverride(string key, string value)
    {
        // A value that opens a list or object must be one: "[64" or "{" is a typo, not a string.
        if (value.StartsWith('[') || value.StartsWith('{'))
            return Parse($"{key} = {value}", $"--set {key}={value}");
        try
        {
            return ConfigurationFactory.ParseString($"{key} = {value}");
        }
        catch (Exception)
        {
            // Not a HOCON value as written (a path with odd characters, say): take it as a string.
            return Parse($"{key} = \"{value.Replace("\\", "\\\\").Replace("\"", "\\\"")}\"", $"--set {key}={value}");
        }
    }

    private static Config Parse(string text, string source, string? folder = null)
    {
        CheckBrackets(text, source);
        try
        {
            var config = ConfigurationFactory.ParseString(text, Includer(source, folder, 0));
            if (config.Root is null) throw new ActorTrainException($"{source}: empty configuration");
            return config;
        }
        catch (ActorTrainException)
        {
            throw;
        }
        catch (Exception e)
        {
            throw new ActorTrainException($"{source}: malformed HOCON: {FirstLine(e.Message)}", e);
        }
    }

    /// <summary>
    /// Akka's HOCON parser accepts an unclosed brace and silently ends the object at end of file;
    /// an experiment with a missing '}' would then run with keys in the wrong section. Braces and
    /// brackets are matched here first, outside strings and comments.
    /// </summary>
    private static void CheckBrackets(string text, string source)
    {
        var open = new Stack<(char Bracket, int Line)>();
        int line = 1;
        for (int i = 0; i < text.Length; i++)
        {
            char ch = text[i];
            if (ch == '\n') { line++; continue; }
            if (ch == '#' || (ch == '/' && i + 1 < text.Length && text[i + 1] == '/'))
            {
                while (i + 1 < text.Length && text[i + 1] != '\n') i++;
                continue;
            }
            if (ch == '"')
            {
                bool triple = i + 2 < text.Length && text[i + 1] == '"' && text[i + 2] == '"';
                i += triple ? 3 : 1;
                for (; i < text.Length; i++)
                {
                    if (text[i] == '\n') line++;
                    if (!triple && text[i] == '\\') { i++; continue; }
                    if (triple ? i + 2 < text.Length && text[i] == '"' && text[i + 1] == '"' && text[i + 2] == '"' : text[i] == '"') break;
                }
                if (triple) i += 2;
                continue;
            }
            if (ch is '{' or '[') open.Push((ch, line));
            else if (ch is '}' or ']')
            {
                char expected = ch == '}' ? '{' : '[';
                if (open.Count == 0 || open.Peek().Bracket != expected)
                    throw new ActorTrainException($"{source}: malformed HOCON: unexpected '{ch}' on line {line}");
                open.Pop();
            }
        }
        if (open.Count > 0)
        {
            var (bracket, at) = open.Peek();
            throw new ActorTrainException($"{source}: malformed HOCON: '{bracket}' opened on line {at} is never closed");
        }
    }

    /// <summary>
    /// Resolves `include "file"` relative to the including file's folder, as Akka's own configs
    /// compose; included files may include others (at most 16 deep, which also ends a cycle).
    /// </summary>
    private static Func<string, HoconRoot> Includer(string source, string? folder, int depth) => name =>
    {
        name = name.Trim().Trim('"');
        if (folder is null)
            throw new ActorTrainException($"{source}: include \"{name}\": only an experiment file can include (files are found relative to it)");
        if (depth >= 16) throw new ActorTrainException($"{source}: include \"{name}\": includes nest more than 16 deep (an include cycle?)");
        string path = Path.GetFullPath(Path.Combine(folder, name));
        if (!File.Exists(path)) throw new ActorTrainException($"{source}: include \"{name}\": {path} not found");
        string text;
        try
        {
            text = File.ReadAllText(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ActorTrainException($"{source}: include \"{name}\": cannot read {path} ({e.Message})", e);
        }
        CheckBrackets(text, path);
        return Parser.Parse(text, Includer(path, Path.GetDirectoryName(path), depth + 1));
    };

    private static string FirstLine(string message) => message.Split('\n')[0].Trim();

    internal static List<string> LeafKeys(Config config)
    {
        var keys = new List<string>();
        if (config.Root?.IsObject() == true) Walk(config.Root.GetObject(), "", keys);
        return keys;
    }

    private static void Walk(HoconObject obj, string prefix, List<string> keys)
    {
        foreach (var (name, value) in obj.Items)
        {
            string path = prefix.Length == 0 ? name : $"{prefix}.{name}";
            if (value.IsObject()) Walk(value.GetObject(), path, keys);
            else keys.Add(path);
        }
    }

    public const string SweepValues = "sweep.values";

    private static void CheckKeys(Config config, IReadOnlyList<string> valid, string source)
    {
        var known = new HashSet<string>(valid);
        var sections = new HashSet<string>(valid.Select(k => k.Contains('.') ? k[..k.LastIndexOf('.')] : k));
        foreach (string key in LeafKeys(config))
        {
            if (known.Contains(key)) continue;
            if (key.StartsWith(SweepValues + ".", StringComparison.Ordinal))
            {
                string swept = key[(SweepValues.Length + 1)..];
                if (known.Contains(swept) && !swept.StartsWith("sweep.", StringComparison.Ordinal) && swept != "compare") continue;
                throw new ActorTrainException($"{source}: {SweepValues} lists '{swept}', which is not a key that can be swept; did you mean '{valid.MinBy(k => Levenshtein(k, swept))}'?");
            }
            if (sections.Contains(key))
                throw new ActorTrainException($"{source}: '{key}' is a section, not a value; set one of its keys, e.g. {valid.First(k => k.StartsWith(key + ".", StringComparison.Ordinal))}");
            string closest = valid.MinBy(k => Levenshtein(k, key))!;
            throw new ActorTrainException($"{source}: unknown key '{key}'; did you mean '{closest}'? (every key is listed in hocon/actortrain.conf)");
        }
    }

    internal static int Levenshtein(string a, string b)
    {
        var prev = new int[b.Length + 1];
        var cur = new int[b.Length + 1];
        for (int j = 0; j <= b.Length; j++) prev[j] = j;
        for (int i = 1; i <= a.Length; i++)
        {
            cur[0] = i;
            for (int j = 1; j <= b.Length; j++)
                cur[j] = Math.Min(Math.Min(cur[j - 1] + 1, prev[j] + 1), prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1));
            (prev, cur) = (cur, prev);
        }
        return prev[b.Length];
    }

    private HoconValue Value(string key) =>
        _config.GetValue(key) ?? throw new InvalidOperationException($"reference configuration lacks {key}");

    public string String(string key)
    {
        var value = Value(key);
        if (value.IsArray() || value.IsObject()) throw new ActorTrainException($"{key} must be a single value, not a list or section");
        return value.GetString() ?? "";
    }

    /// <summary>One word or a list of words, each one of <paramref name="allowed"/> (e.g. exporter = file, or [file, otlp]).</summary>
    public string[] Words(string key, params string[] allowed)
    {
        var value = Value(key);
        string[] words = value.IsArray() ? value.GetArray().Select(v => (v.GetString() ?? "").Trim()).ToArray() : [Choice(key, allowed)];
        foreach (var (word, i) in words.Select((w, i) => (w, i)))
            if (!allowed.Contains(word))
                throw new ActorTrainException($"{key}[{i}] = \"{word}\" is not one of: {string.Join(", ", allowed)}");
        return words;
    }

    public string Choice(string key, params string[] allowed)
    {
        string v = String(key).ToLowerInvariant();
        if (!allowed.Contains(v))
            throw new ActorTrainException($"{key} = \"{String(key)}\" is not one of: {string.Join(", ", allowed)}");
        return v;
    }

    public double Double(string key, double min = double.NegativeInfinity, double max = double.PositiveInfinity, bool minExclusive = false, bool maxExclusive = false)
    {
        string raw = String(key);
        if (!double.TryParse(raw, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) || !double.IsFinite(v))
            throw new ActorTrainException($"{key} = \"{raw}\" is not a number");
        bool below = minExclusive ? v <= min : v < min;
        bool above = maxExclusive ? v >= max : v > max;
        if (below || above)
            throw new ActorTrainException($"{key} = {raw} is out of range: must be in {(minExclusive ? "(" : "[")}{Show(min)}, {Show(max)}{(maxExclusive ? ")" : "]")}");
        return v;
    }

    public long Long(string key, long min = long.MinValue, long max = long.MaxValue)
    {
        string raw = String(key);
        if (!long.TryParse(raw, NumberStyles.Integer, CultureInfo.InvariantCulture, out long v))
            throw new ActorTrainException($"{key} = \"{raw}\" is not a whole number");
        if (v < min || v > max) throw new ActorTrainException($"{key} = {raw} is out of range: must be in [{min}, {(max == long.MaxValue ? "inf" : max)}]");
        return v;
    }

    public int Int(string key, int min = int.MinValue, int max = int.MaxValue) => (int)Long(key, min, max);

    public bool Bool(string key) => String(key).ToLowerInvariant() switch
    {
        "on" or "true" or "yes" => true,
        "off" or "false" or "no" => false,
        var other => throw new ActorTrainException($"{key} = \"{other}\" is not on/off (or true/false)"),
    };

    /// <summary>Akka's HOCON does not report an empty list `[]` as an array.</summary>
    private static bool IsEmptyList(HoconValue value)
    {
        if (value.IsArray()) return value.GetArray().Count == 0;
        try
        {
            return !value.IsObject() && string.IsNullOrEmpty(value.GetString());
        }
        catch (Exception)
        {
            return false;
        }
    }

    public int[] IntList(string key, int min) =>
        List<int>(key, "[64, 32]", raw => int.TryParse(raw, NumberStyles.Integer, CultureInfo.InvariantCulture, out int v) && v >= min ? v : (int?)null,
            $"a whole number >= {min}");

    public double[] DoubleList(string key, double exclusiveMin) =>
        List<double>(key, "[0.01, 0.1]",
            raw => double.TryParse(raw, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) && double.IsFinite(v) && v > exclusiveMin ? v : (double?)null,
            $"a number above {exclusiveMin.ToString(CultureInfo.InvariantCulture)}");

    /// <summary>A list of plain values, each parsed by <paramref name="parse"/> (null: rejected, naming the element).</summary>
    private T[] List<T>(string key, string example, Func<string, T?> parse, string requirement) where T : struct
    {
        var value = Value(key);
        if (IsEmptyList(value)) return [];
        if (!value.IsArray()) throw new ActorTrainException($"{key} must be a list, e.g. {example}");
        var items = value.GetArray();
        var result = new T[items.Count];
        for (int i = 0; i < items.Count; i++)
        {
            string raw = items[i].GetString();
            result[i] = parse(raw) ?? throw new ActorTrainException($"{key}[{i}] = \"{raw}\" must be {requirement}");
        }
        return result;
    }

    /// <summary>
    /// A list of override blocks (compare = [{ name = a, sync.policy = asp }, ...]): for each, its name
    /// and its keys as key=value assignments, every key checked against the reference.
    /// </summary>
    public IReadOnlyList<(string Name, string[] Assignments)> OverrideBlocks(string key)
    {
        var value = Value(key);
        if (IsEmptyList(value)) return [];
        if (!value.IsArray()) throw new ActorTrainException($"{key} must be a list of blocks, e.g. [{{ name = a, sync.policy = asp }}]");
        var blocks = new List<(string, string[])>();
        var names = new HashSet<string>();
        var items = value.GetArray();
        for (int i = 0; i < items.Count; i++)
        {
            if (!items[i].IsObject()) throw new ActorTrainException($"{key}[{i}] must be a block {{ name = ..., key = value, ... }}");
            var leaves = new List<string>();
            Walk(items[i].GetObject(), "", leaves);
            string? name = null;
            var assignments = new List<string>();
            foreach (string leaf in leaves)
            {
                var leafValue = Leaf(items[i], leaf);
                string rendered = RenderValue(leafValue);
                if (leaf == "name") name = leafValue.GetString();
                else if (!Keys.Contains(leaf) || leaf == key)
                    throw new ActorTrainException($"{key}[{i}]: unknown key '{leaf}'; did you mean '{Keys.MinBy(k => Levenshtein(k, leaf))}'?");
                else assignments.Add($"{leaf}={rendered}");
            }
            if (string.IsNullOrWhiteSpace(name) || name.IndexOfAny(Path.GetInvalidFileNameChars()) >= 0)
                throw new ActorTrainException($"{key}[{i}] needs a file-name-safe name = ... (it names the variant's folder)");
            if (!names.Add(name)) throw new ActorTrainException($"{key}: two variants are named '{name}'");
            blocks.Add((name, assignments.ToArray()));
        }
        return blocks;
    }

    /// <summary>
    /// A list of blocks with their own keys (network.links, faults, simulation.devices): each block's
    /// leaves as raw strings, keys checked against <paramref name="allowed"/>.
    /// </summary>
    public IReadOnlyList<IReadOnlyDictionary<string, string>> BlockList(string key, string[] allowed, string example)
    {
        var value = Value(key);
        if (IsEmptyList(value)) return [];
        if (!value.IsArray()) throw new ActorTrainException($"{key} must be a list of blocks, e.g. {example}");
        var items = value.GetArray();
        var blocks = new List<IReadOnlyDictionary<string, string>>();
        for (int i = 0; i < items.Count; i++)
        {
            if (!items[i].IsObject()) throw new ActorTrainException($"{key}[{i}] must be a block, e.g. {example}");
            var leaves = new List<string>();
            Walk(items[i].GetObject(), "", leaves);
            var block = new Dictionary<string, string>();
            foreach (string leaf in leaves)
            {
                if (!allowed.Contains(leaf))
                    throw new ActorTrainException($"{key}[{i}]: unknown key '{leaf}'; did you mean '{allowed.MinBy(k => Levenshtein(k, leaf))}'? (a block takes {string.Join(", ", allowed)})");
                var leafValue = Leaf(items[i], leaf);
                if (leafValue.IsArray() || leafValue.IsObject()) throw new ActorTrainException($"{key}[{i}].{leaf} must be a single value");
                block[leaf] = leafValue.GetString() ?? "";
            }
            blocks.Add(block);
        }
        return blocks;
    }

    /// <summary>A duration such as 250ms, 30s, 5m, 1h; 0 (any unit) means off.</summary>
    public TimeSpan Duration(string key)
    {
        string raw = String(key).Trim();
        int split = 0;
        while (split < raw.Length && (char.IsDigit(raw[split]) || raw[split] == '.')) split++;
        if (split == 0 || !double.TryParse(raw[..split], NumberStyles.Float, CultureInfo.InvariantCulture, out double amount))
            throw new ActorTrainException($"{key} = \"{raw}\" is not a duration: write a number and a unit, e.g. 30s, 5m, 250ms");
        string unit = raw[split..].Trim().ToLowerInvariant();
        return unit switch
        {
            "ms" => TimeSpan.FromMilliseconds(amount),
            "s" => TimeSpan.FromSeconds(amount),
            "m" or "min" => TimeSpan.FromMinutes(amount),
            "h" => TimeSpan.FromHours(amount),
            _ => throw new ActorTrainException($"{key} = \"{raw}\": unknown unit '{unit}' (use ms, s, m or h)"),
        };
    }

    /// <summary>The swept keys and their values (rendered as HOCON values), in file order.</summary>
    public IReadOnlyList<(string Key, string[] Values)> Swept()
    {
        var value = _config.GetValue(SweepValues);
        if (value is null || !value.IsObject()) return [];
        var leaves = new List<string>();
        Walk(value.GetObject(), "", leaves);
        var swept = new List<(string, string[])>();
        foreach (string leaf in leaves)
        {
            var v = Leaf(value, leaf);
            string[] values = v.IsArray() ? v.GetArray().Select(RenderValue).ToArray() : IsEmptyList(v) ? [] : [RenderValue(v)];
            if (values.Length == 0) throw new ActorTrainException($"{SweepValues}.{leaf} is an empty list: give at least one value");
            if (values.Distinct().Count() != values.Length) throw new ActorTrainException($"{SweepValues}.{leaf} lists a value twice");
            swept.Add((leaf, values));
        }
        return swept;
    }

    /// <summary>
    /// The merged configuration, one `key = value` line per reference key (and the swept keys of a
    /// sweep unless <paramref name="withSweep"/> is off), loadable again as an experiment.
    /// </summary>
    public string Render(bool withSweep = true)
    {
        var sb = new StringBuilder();
        sb.AppendLine("# Resolved configuration of this run: every key, defaults included.");
        foreach (string key in Keys)
        {
            var value = Value(key);
            sb.Append(key).Append(" = ").AppendLine(RenderValue(value));
        }
        if (withSweep)
            foreach (var (key, values) in Swept())
                sb.Append(SweepValues).Append('.').Append(key).Append(" = [").Append(string.Join(", ", values)).AppendLine("]");
        return sb.ToString();
    }

    private static HoconValue Leaf(HoconValue obj, string dottedPath)
    {
        var parts = dottedPath.Split('.');
        var value = obj.GetObject().GetKey(parts[0]);
        foreach (string part in parts.Skip(1)) value = value.GetChildObject(part);
        return value;
    }

    private static string RenderValue(HoconValue value)
    {
        if (IsEmptyList(value)) return "[]";
        if (value.IsArray()) return "[" + string.Join(", ", value.GetArray().Select(RenderValue)) + "]";
        if (value.IsObject())
        {
            // Dotted keys rather than nested braces: Akka's parser rejects "}, key" inside an object.
            var leaves = new List<string>();
            Walk(value.GetObject(), "", leaves);
            return "{ " + string.Join(", ", leaves.Select(leaf => $"{leaf} = {RenderValue(Leaf(value, leaf))}")) + " }";
        }
        return Quote(value.GetString());
    }

    private static string Quote(string s) =>
        double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out _) ? s : "\"" + s.Replace("\\", "\\\\").Replace("\"", "\\\"") + "\"";

    private static string Show(double v) => double.IsInfinity(v) ? (v > 0 ? "inf" : "-inf") : v.ToString(CultureInfo.InvariantCulture);
}
