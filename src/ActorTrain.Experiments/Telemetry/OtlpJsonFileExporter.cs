using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using OpenTelemetry;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;

namespace ActorTrain.Experiments.Telemetry;

/// <summary>
/// Spans as OTLP JSON (the protocol's JSON encoding of ExportTraceServiceRequest: resourceSpans /
/// scopeSpans / spans, ids in hex, times in Unix nanoseconds as strings), one export batch per line.
/// `actortrain trace` reads this back; any OTLP JSON tool can too.
/// </summary>
public sealed class OtlpJsonFileExporter(string path, Resource resource) : BaseExporter<Activity>
{
    private readonly StreamWriter _writer = TraceStore.OpenWriter(path);

    public override ExportResult Export(in Batch<Activity> batch)
    {
        var spans = new List<Activity>();
        foreach (var span in batch) spans.Add(span);
        OtlpJson.WriteLine(_writer, "resourceSpans", "scopeSpans", "spans", resource, json =>
        {
            foreach (var span in spans) WriteSpan(json, span);
        });
        return ExportResult.Success;
    }

    private static void WriteSpan(Utf8JsonWriter json, Activity span)
    {
        json.WriteStartObject();
        json.WriteString("traceId", span.TraceId.ToHexString());
        json.WriteString("spanId", span.SpanId.ToHexString());
        if (span.ParentSpanId != default) json.WriteString("parentSpanId", span.ParentSpanId.ToHexString());
        json.WriteString("name", span.DisplayName);
        json.WriteNumber("kind", span.Kind switch
        {
            ActivityKind.Server => 2,
            ActivityKind.Client => 3,
            ActivityKind.Producer => 4,
            ActivityKind.Consumer => 5,
            _ => 1,
        });
        json.WriteString("startTimeUnixNano", OtlpJson.Nanos(span.StartTimeUtc));
        json.WriteString("endTimeUnixNano", OtlpJson.Nanos(span.StartTimeUtc + span.Duration));
        if (span.TagObjects.Any())
        {
            json.WriteStartArray("attributes"); // omitted when empty, as OTLP JSON allows for repeated fields
            foreach (var (key, value) in span.TagObjects) OtlpJson.WriteAttribute(json, key, value);
            json.WriteEndArray();
        }
        if (span.Links.Any())
        {
            json.WriteStartArray("links");
            foreach (var link in span.Links)
            {
                json.WriteStartObject();
                json.WriteString("traceId", link.Context.TraceId.ToHexString());
                json.WriteString("spanId", link.Context.SpanId.ToHexString());
                json.WriteEndObject();
            }
            json.WriteEndArray();
        }
        if (span.Status != ActivityStatusCode.Unset)
        {
            json.WriteStartObject("status");
            json.WriteNumber("code", span.Status == ActivityStatusCode.Ok ? 1 : 2);
            if (span.StatusDescription is { } message) json.WriteString("message", message);
            json.WriteEndObject();
        }
        json.WriteEndObject();
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing) _writer.Dispose();
        base.Dispose(disposing);
    }
}

/// <summary>Metrics as OTLP JSON lines (resourceMetrics / scopeMetrics / metrics with sum, gauge or histogram data points).</summary>
public sealed class OtlpJsonMetricFileExporter(string path) : BaseExporter<Metric>
{
    private readonly StreamWriter _writer = new(path, append: false) { NewLine = "\n" };

    public override ExportResult Export(in Batch<Metric> batch)
    {
        var metrics = new List<Metric>();
        foreach (var metric in batch) metrics.Add(metric);
        OtlpJson.WriteLine(_writer, "resourceMetrics", "scopeMetrics", "metrics", ParentProvider?.GetResource() ?? Resource.Empty, json =>
        {
            foreach (var metric in metrics) WriteMetric(json, metric);
        });
        return ExportResult.Success;
    }

    private static void WriteMetric(Utf8JsonWriter json, Metric metric)
    {
        json.WriteStartObject();
        json.WriteString("name", metric.Name);
        json.WriteString("unit", metric.Unit);
        json.WriteString("description", metric.Description);
        bool histogram = metric.MetricType is MetricType.Histogram;
        bool sum = metric.MetricType is MetricType.LongSum or MetricType.DoubleSum;
        json.WriteStartObject(histogram ? "histogram" : sum ? "sum" : "gauge");
        json.WriteStartArray("dataPoints");
        foreach (ref readonly var point in metric.GetMetricPoints())
        {
            json.WriteStartObject();
            json.WriteStartArray("attributes");
            foreach (var (key, value) in point.Tags) OtlpJson.WriteAttribute(json, key, value);
            json.WriteEndArray();
            json.WriteString("startTimeUnixNano", OtlpJson.Nanos(point.StartTime.UtcDateTime));
            json.WriteString("timeUnixNano", OtlpJson.Nanos(point.EndTime.UtcDateTime));
            switch (metric.MetricType)
            {
                case MetricType.Histogram:
                    json.WriteString("count", point.GetHistogramCount().ToString(CultureInfo.InvariantCulture));
                    OtlpJson.Number(json, "sum", point.GetHistogramSum());
                    // OTLP's explicit-bucket histogram: n bounds, n + 1 counts (the last is above the last bound)
                    var counts = new List<long>();
                    json.WriteStartArray("explicitBounds");
                    foreach (var bucket in point.GetHistogramBuckets())
                    {
                        counts.Add(bucket.BucketCount);
                        if (double.IsFinite(bucket.ExplicitBound)) json.WriteNumberValue(bucket.ExplicitBound);
                    }
                    json.WriteEndArray();
                    json.WriteStartArray("bucketCounts");
                    foreach (long c in counts) json.WriteStringValue(c.ToString(CultureInfo.InvariantCulture));
                    json.WriteEndArray();
                    if (point.TryGetHistogramMinMaxValues(out double min, out double max))
                    {
                        OtlpJson.Number(json, "min", min);
                        OtlpJson.Number(json, "max", max);
                    }
                    break;
                case MetricType.LongSum:
                    json.WriteString("asInt", point.GetSumLong().ToString(CultureInfo.InvariantCulture));
                    break;
                case MetricType.DoubleSum:
                    OtlpJson.Number(json, "asDouble", point.GetSumDouble());
                    break;
                case MetricType.LongGauge:
                    json.WriteString("asInt", point.GetGaugeLastValueLong().ToString(CultureInfo.InvariantCulture));
                    break;
                default:
                    OtlpJson.Number(json, "asDouble", point.GetGaugeLastValueDouble());
                    break;
            }
            json.WriteEndObject();
        }
        json.WriteEndArray();
        // 2: cumulative (the reader exports once, at the end of the run, everything since its start)
        if (sum || histogram) json.WriteNumber("aggregationTemporality", 2);
        if (sum) json.WriteBoolean("isMonotonic", true);
        json.WriteEndObject();
        json.WriteEndObject();
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing) _writer.Dispose();
        base.Dispose(disposing);
    }
}

internal static class OtlpJson
{
    /// <summary>One export request as a line: {resourceX: [{resource, scopeX: [{scope: ActorTrain, items: [...]}]}]}.</summary>
    public static void WriteLine(StreamWriter writer, string resources, string scopes, string items, Resource resource, Action<Utf8JsonWriter> writeItems)
    {
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            json.WriteStartArray(resources);
            json.WriteStartObject();
            WriteResource(json, resource);
            json.WriteStartArray(scopes);
            json.WriteStartObject();
            json.WriteStartObject("scope");
            json.WriteString("name", "ActorTrain");
            json.WriteEndObject();
            json.WriteStartArray(items);
            writeItems(json);
            json.WriteEndArray();
            json.WriteEndObject();
            json.WriteEndArray();
            json.WriteEndObject();
            json.WriteEndArray();
            json.WriteEndObject();
        }
        lock (writer)
        {
            writer.WriteLine(System.Text.Encoding.UTF8.GetString(buffer.GetBuffer(), 0, (int)buffer.Length));
            writer.Flush();
        }
    }

    /// <summary>JSON has no NaN or infinity: those go as strings, as the OTLP JSON mapping of doubles allows.</summary>
    public static void Number(Utf8JsonWriter json, string name, double value)
    {
        if (double.IsFinite(value)) json.WriteNumber(name, value);
        else json.WriteString(name, double.IsNaN(value) ? "NaN" : value > 0 ? "Infinity" : "-Infinity");
    }

    public static string Nanos(DateTime utc) => ((utc.Ticks - DateTime.UnixEpoch.Ticks) * 100).ToString(CultureInfo.InvariantCulture);

    public static void WriteResource(Utf8JsonWriter json, Resource resource)
    {
        json.WriteStartObject("resource");
        json.WriteStartArray("attributes");
        foreach (var (key, value) in resource.Attributes) WriteAttribute(json, key, value);
        json.WriteEndArray();
        json.WriteEndObject();
    }

    public static void WriteAttribute(Utf8JsonWriter json, string key, object? value)
    {
        json.WriteStartObject();
        json.WriteString("key", key);
        json.WriteStartObject("value");
        switch (value)
        {
            case bool b: json.WriteBoolean("boolValue", b); break;
            case int or long or short or byte: json.WriteString("intValue", Convert.ToInt64(value, CultureInfo.InvariantCulture).ToString(CultureInfo.InvariantCulture)); break;
            case float or double: Number(json, "doubleValue", Convert.ToDouble(value, CultureInfo.InvariantCulture)); break;
            default: json.WriteString("stringValue", Convert.ToString(value, CultureInfo.InvariantCulture)); break;
        }
        json.WriteEndObject();
        json.WriteEndObject();
    }
}
