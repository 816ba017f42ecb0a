using System.Reflection;
using System.Text.Json;

namespace ActorTrain.Core.Models;

/// <summary>One layer of a workload table: what it owns and costs per sample (FP32 activation bytes).</summary>
public sealed record WorkloadLayer(string Name, long Parameters, double ForwardFlops, double ActivationBytes);

/// <summary>
/// A published architecture as model.workload sees it: its layers in forward order with their
/// parameter counts, forward FLOPs and activation bytes per sample. The built-in tables
/// (hocon/workloads/*.json, embedded) were derived by benchmarks/workloads/derive_workloads.py from
/// torchvision's definitions and the transformers' published shapes; a user's own table is a JSON
/// file of the same shape: <c>{"name": ..., "layers": [{"name", "parameters", "forward_flops",
/// "activation_bytes"}, ...]}</c>.
/// </summary>
public sealed record Workload(string Name, string Source, IReadOnlyList<WorkloadLayer> Layers)
{
    public static readonly IReadOnlyList<string> BuiltIn = ["resnet50", "resnet101", "vgg16", "inception-v3", "bert-large", "gpt2-xl"];

    public long Parameters => Layers.Sum(l => l.Parameters);

    /// <summary>A built-in name or the path of a JSON table; <paramref name="key"/> names the setting in errors.</summary>
    public static Workload Load(string nameOrPath, string key = "model.workload")
    {
        if (BuiltIn.Contains(nameOrPath))
        {
            using var stream = typeof(Workload).Assembly.GetManifestResourceStream($"ActorTrain.Workloads.{nameOrPath}.json")
                ?? throw new InvalidOperationException($"the built-in workload {nameOrPath} is not embedded in {typeof(Workload).Assembly.GetName().Name}");
            return Parse(stream, $"built-in workload {nameOrPath}");
        }
        if (!File.Exists(nameOrPath))
            throw new ActorTrainException($"{key} = \"{nameOrPath}\" is neither a built-in workload ({string.Join(", ", BuiltIn)}) nor a JSON file that exists");
        using var file = File.OpenRead(nameOrPath);
        return Parse(file, $"{key} file {nameOrPath}");
    }

    public static Workload Parse(Stream json, string what)
    {
        JsonDocument doc;
        try { doc = JsonDocument.Parse(json); }
        catch (JsonException e) { throw new ActorTrainException($"{what} is not valid JSON: {e.Message}"); }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("layers", out var array) || array.ValueKind != JsonValueKind.Array)
                throw new ActorTrainException($"{what}: expected an object with a \"layers\" array");
            string name = root.TryGetProperty("name", out var n) && n.ValueKind == JsonValueKind.String ? n.GetString()! : Path.GetFileNameWithoutExtension(what);
            string source = root.TryGetProperty("source", out var s) && s.ValueKind == JsonValueKind.String ? s.GetString()! : "";
            var layers = new List<WorkloadLayer>();
            int i = 0;
            foreach (var layer in array.EnumerateArray())
            {
                string at = $"{what}: layers[{i++}]";
                if (layer.ValueKind != JsonValueKind.Object) throw new ActorTrainException($"{at} is not an object");
                string layerName = layer.TryGetProperty("name", out var ln) && ln.ValueKind == JsonValueKind.String ? ln.GetString()! : $"layer{i - 1}";
                long parameters = (long)Number(layer, "parameters", at, integer: true);
                double flops = Number(layer, "forward_flops", at, integer: false);
                double bytes = Number(layer, "activation_bytes", at, integer: false);
                layers.Add(new WorkloadLayer(layerName, parameters, flops, bytes));
            }
            if (layers.Count == 0) throw new ActorTrainException($"{what}: \"layers\" is empty");
            if (layers.All(l => l.Parameters == 0)) throw new ActorTrainException($"{what}: no layer has parameters, so there is no gradient to exchange");
            return new Workload(name, source, layers);
        }
    }

    private static double Number(JsonElement layer, string property, string at, bool integer)
    {
        if (!layer.TryGetProperty(property, out var value) || value.ValueKind != JsonValueKind.Number)
            throw new ActorTrainException($"{at}: \"{property}\" is missing or not a number");
        double v = value.GetDouble();
        if (!double.IsFinite(v) || v < 0 || (integer && v != Math.Floor(v)))
            throw new ActorTrainException($"{at}: \"{property}\" = {value.GetRawText()} must be a {(integer ? "whole " : "")}number >= 0");
        return v;
    }
}
