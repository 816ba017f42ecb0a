using System.Diagnostics;
using OpenTelemetry;
using OpenTelemetry.Exporter;
using OpenTelemetry.Metrics;

namespace ActorTrain.Experiments.Telemetry;

/// <summary>
/// What the OTLP exporters delivered over a run (summary.json's telemetry): spans the collector
/// accepted and spans lost to failed exports (a dead endpoint, HTTP sent to a gRPC port, a
/// collector answering an error), and metric exports that failed. The SDK retries nothing and
/// reports nothing on its own: without this, a dead endpoint is a silent exit 0.
/// </summary>
public sealed record OtlpDelivery(string Endpoint, string Protocol, long SpansExported, long SpansDropped, long MetricExportsFailed)
{
    /// <summary>The one warning a run prints when something did not arrive; null when all did.</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public string? Warning => SpansDropped == 0 && MetricExportsFailed == 0
        ? null
        : FormattableString.Invariant(
            $"warning: telemetry: {SpansDropped} of {SpansExported + SpansDropped} span(s) and {MetricExportsFailed} metric export(s) did not reach {Endpoint} ({Protocol}); ") +
          "is a collector listening there, and does it speak that protocol (4318: http/protobuf, 4317: grpc)? Add file to telemetry.exporter to keep a copy in the run folder.";
}

/// <summary>Counts what the OTLP exporters sent and lost; shared by the trace and metric exporters of one session.</summary>
internal sealed class OtlpTally(string endpoint, OtlpExportProtocol protocol)
{
    private long _exported, _dropped, _metricFailures;

    public void Spans(long count, ExportResult result) => Interlocked.Add(ref result == ExportResult.Success ? ref _exported : ref _dropped, count);

    public void Metrics(ExportResult result)
    {
        if (result != ExportResult.Success) Interlocked.Increment(ref _metricFailures);
    }

    public OtlpDelivery Report() => new(endpoint, protocol == OtlpExportProtocol.Grpc ? "grpc" : "http/protobuf",
        Interlocked.Read(ref _exported), Interlocked.Read(ref _dropped), Interlocked.Read(ref _metricFailures));
}

/// <summary>The SDK's OTLP span exporter, counting each batch as exported or dropped.</summary>
internal sealed class CountingOtlpTraceExporter(OtlpExporterOptions options, OtlpTally tally) : OtlpTraceExporter(options)
{
    public override ExportResult Export(in Batch<Activity> batch)
    {
        var result = base.Export(batch);
        tally.Spans(batch.Count, result);
        return result;
    }
}

/// <summary>The SDK's OTLP metric exporter, counting failed exports.</summary>
internal sealed class CountingOtlpMetricExporter(OtlpExporterOptions options, OtlpTally tally) : OtlpMetricExporter(options)
{
    public override ExportResult Export(in Batch<Metric> batch)
    {
        var result = base.Export(batch);
        tally.Metrics(result);
        return result;
    }
}
