using ActorTrain.Experiments.Telemetry;
using OpenTelemetry.Exporter;

namespace ActorTrain.Experiments.Tests;

/// <summary>The OpenTelemetry environment variables: under the experiment file and the command line, as the specification has them.</summary>
public class TelemetryEnvironmentTests
{
    private static TelemetrySection Read(string text, string[] overrides, Dictionary<string, string> environment) =>
        TelemetrySection.Read(ConfigReader.Load(text, "test.conf", overrides), name => environment.GetValueOrDefault(name));

    private static readonly Dictionary<string, string> Otel = new()
    {
        ["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://collector:4317",
        ["OTEL_EXPORTER_OTLP_PROTOCOL"] = "grpc",
        ["OTEL_SERVICE_NAME"] = "lab-sim",
        ["OTEL_RESOURCE_ATTRIBUTES"] = "deployment.environment=lab, team=ml%2Fsystems",
    };

    [Fact]
    public void Environment_applies_where_the_file_and_the_command_line_are_silent()
    {
        var t = Read("telemetry.exporter = otlp\n", [], Otel);
        Assert.Equal("http://collector:4317", t.Endpoint);
        Assert.Equal(OtlpExportProtocol.Grpc, t.Protocol);
        Assert.Equal("lab-sim", t.ServiceName);
        Assert.Equal("lab", t.ResourceAttributes!["deployment.environment"]);
        Assert.Equal("ml/systems", t.ResourceAttributes["team"]);
    }

    [Fact]
    public void The_file_beats_the_environment_and_the_command_line_beats_the_file()
    {
        var file = Read("telemetry { exporter = otlp, endpoint = \"http://file:4318\", protocol = http }\n", [], Otel);
        Assert.Equal("http://file:4318", file.Endpoint);
        Assert.Equal(OtlpExportProtocol.HttpProtobuf, file.Protocol);
        var cli = Read("telemetry { exporter = otlp, endpoint = \"http://file:4318\" }\n", ["telemetry.endpoint=\"http://cli:4318\""], Otel);
        Assert.Equal("http://cli:4318", cli.Endpoint);
        var none = Read("telemetry.exporter = otlp\n", [], []);
        Assert.Equal("http://localhost:4318", none.Endpoint);
        Assert.Null(none.ServiceName);
    }

    [Fact]
    public void The_exporter_may_be_a_list()
    {
        Assert.Equal([TelemetryExporter.File, TelemetryExporter.Otlp], Read("telemetry.exporter = [file, otlp]\n", [], []).Exporters);
        Assert.Equal([TelemetryExporter.File], Read("", [], []).Exporters);
        Assert.Empty(Read("telemetry.exporter = none\n", [], []).Exporters);
        Assert.True(Read("", ["telemetry.exporter=[console, file]"], []).Has(TelemetryExporter.Console));
        Assert.Contains("none alone", Assert.Throws<Core.ActorTrainException>(() => Read("telemetry.exporter = [file, none]\n", [], [])).Message);
        Assert.Contains("telemetry.exporter[1] = \"jaeger\"", Assert.Throws<Core.ActorTrainException>(() => Read("telemetry.exporter = [file, jaeger]\n", [], [])).Message);
    }

    [Theory]
    [InlineData("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json", "http/json is not supported")]
    [InlineData("OTEL_EXPORTER_OTLP_ENDPOINT", "collector", "OTEL_EXPORTER_OTLP_ENDPOINT = \"collector\" is not a URL")]
    [InlineData("OTEL_RESOURCE_ATTRIBUTES", "lab", "OTEL_RESOURCE_ATTRIBUTES: \"lab\" is not key=value")]
    public void A_bad_variable_is_named(string name, string value, string message)
    {
        var e = Assert.Throws<Core.ActorTrainException>(() => Read("telemetry.exporter = otlp\n", [], new() { [name] = value }));
        Assert.Contains(message, e.Message);
    }
}

/// <summary>summary.json against its published JSON Schema (docs/summary.schema.json), for a PS run on a fabric and an all-reduce workload.</summary>
public sealed class SummarySchemaTests() : TempFolderTest("actortrain-schema-")
{
    // read once: the library registers a schema by its $id, and a second registration is an error
    private static readonly Lazy<Json.Schema.JsonSchema> Schema = new(() => Json.Schema.JsonSchema.FromFile(Path.Combine(RepoRoot.Path, "docs", "summary.schema.json")));

    [Theory]
    [InlineData("fabric.topology=switch")]
    [InlineData("model.type=workload;model.workload=resnet50;topology.aggregation=ring-allreduce;training.max-steps=4;training.eval-every=2")]
    [InlineData("telemetry.exporter=[file, otlp];telemetry.endpoint=\"http://127.0.0.1:9\"")] // the delivery counts (nothing listens on the discard port)
    [InlineData("parallelism.pipeline-stages=2;topology.workers=1;parallelism.micro-batches=4")] // the pipeline report
    public async Task Summary_json_validates_against_its_schema(string settings)
    {
        var result = await ExperimentRunner.RunAsync(ExperimentSpec.Load(null, [.. ExperimentRunnerTests.Small, "output.plots=off", .. settings.Split(';')]), Root);
        var schema = Schema.Value;
        using var summary = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(result.Folder, "summary.json")));
        var verdict = schema.Evaluate(summary.RootElement, new Json.Schema.EvaluationOptions { OutputFormat = Json.Schema.OutputFormat.List });
        Assert.True(verdict.IsValid, string.Join("\n", (verdict.Details ?? []).Where(d => d.Errors is { Count: > 0 }).SelectMany(d => d.Errors!.Select(e => $"{d.InstanceLocation}: {e.Value}")).Take(10)));
        Assert.Equal(RunSummary.CurrentSchemaVersion, summary.RootElement.GetProperty("schema_version").GetInt32());
        Assert.Equal(result.Summary.Seed, summary.RootElement.GetProperty("seed").GetUInt64());
        Assert.Equal(settings.Contains("otlp") ? System.Text.Json.JsonValueKind.Object : System.Text.Json.JsonValueKind.Null, summary.RootElement.GetProperty("telemetry").ValueKind);
        // and the schema is not vacuous: without its seed, or with a text for the steps, the file is refused
        var node = System.Text.Json.Nodes.JsonNode.Parse(summary.RootElement.GetRawText())!.AsObject();
        node.Remove("seed");
        Assert.False(schema.Evaluate(System.Text.Json.JsonDocument.Parse(node.ToJsonString()).RootElement).IsValid);
        node["seed"] = 1;
        node["steps"] = "forty";
        Assert.False(schema.Evaluate(System.Text.Json.JsonDocument.Parse(node.ToJsonString()).RootElement).IsValid);
    }
}

/// <summary>weights.npz: the final weights, one .npy array per layer block, as numpy reads them.</summary>
public sealed class NpzTests() : TempFolderTest("actortrain-npz-")
{
    [Fact]
    public async Task The_run_folder_holds_the_final_weights_as_npy_arrays_per_layer()
    {
        var spec = ExperimentSpec.Load(null, [.. ExperimentRunnerTests.Small, "output.plots=off", "model.hidden=[16]"]);
        var result = await ExperimentRunner.RunAsync(spec, Root);
        var model = ExperimentData.Build(spec).Model;
        using var zip = System.IO.Compression.ZipFile.OpenRead(Path.Combine(result.Folder, NpzWriter.WeightsFile));
        Assert.Equal(model.Layout.Select(b => b.Name + ".npy"), zip.Entries.Select(e => e.FullName));
        foreach (var block in model.Layout)
        {
            using var stream = zip.GetEntry(block.Name + ".npy")!.Open();
            using var memory = new MemoryStream();
            stream.CopyTo(memory);
            byte[] bytes = memory.ToArray();
            Assert.Equal([0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y', 1, 0], bytes[..8]);
            int headerLength = BitConverter.ToUInt16(bytes, 8);
            string header = System.Text.Encoding.ASCII.GetString(bytes, 10, headerLength);
            Assert.Equal(0, (10 + headerLength) % 64);
            Assert.Contains("'descr': '<f4'", header);
            Assert.Contains(block.Name.EndsWith(".bias") ? $"'shape': ({block.Columns},)" : $"'shape': ({block.Rows}, {block.Columns})", header);
            var values = new float[block.Length];
            Buffer.BlockCopy(bytes, 10 + headerLength, values, 0, 4 * block.Length);
            Assert.Equal(result.Outcome.FinalWeights.AsSpan(block.Offset, block.Length).ToArray(), values);
        }
    }
}
