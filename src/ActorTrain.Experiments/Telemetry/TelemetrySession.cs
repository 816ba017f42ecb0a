using System.Diagnostics;
using ActorTrain.Cluster.Telemetry;
using ActorTrain.Core;
using OpenTelemetry;
using OpenTelemetry.Exporter;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;
using OpenTelemetry.Trace;

namespace ActorTrain.Experiments.Telemetry;

public enum TelemetryExporter
{
    None,
    File,
    Otlp,
    Console,
}

/// <summary>telemetry { exporter, endpoint, protocol, traces, metrics }: where a run's spans and metrics go.</summary>
/// <summary>
/// telemetry.* with the OpenTelemetry environment variables under them: OTEL_EXPORTER_OTLP_ENDPOINT
/// and OTEL_EXPORTER_OTLP_PROTOCOL stand in for telemetry.endpoint and telemetry.protocol when
/// neither the experiment file nor a --set gives them (environment &lt; file &lt; command line);
/// OTEL_SERVICE_NAME names the service (default actortrain) and OTEL_RESOURCE_ATTRIBUTES
/// (key=value,key=value, values percent-encoded) adds resource attributes, under the run's own.
/// </summary>
public sealed record TelemetrySection(IReadOnlyList<TelemetryExporter> Exporters, string Endpoint, OtlpExportProtocol Protocol, bool Traces, bool Metrics, int TraceEvery = 1,
    string? ServiceName = null, IReadOnlyDictionary<string, object>? ResourceAttributes = null, bool CompressTraces = true)
{
    /// <summary>Whether the run exports to <paramref name="exporter"/> (telemetry.exporter may name several: [file, otlp]).</summary>
    public bool Has(TelemetryExporter exporter) => Exporters.Contains(exporter);

    public static TelemetrySection Read(ConfigReader c) => Read(c, Environment.GetEnvironmentVariable);

    public static TelemetrySection Read(ConfigReader c, Func<string, string?> environment)
    {
        var exporters = c.Words("telemetry.exporter", "file", "otlp", "console", "none").Select(word => word switch
        {
            "file" => TelemetryExporter.File,
            "otlp" => TelemetryExporter.Otlp,
            "console" => TelemetryExporter.Console,
            _ => TelemetryExporter.None,
        }).Distinct().ToList();
        if (exporters.Count == 0 || (exporters.Contains(TelemetryExporter.None) && exporters.Count > 1))
            throw new ActorTrainException($"telemetry.exporter = [{string.Join(", ", exporters.Select(e => e.ToString().ToLowerInvariant()))}]: name one or more of file, otlp, console, or none alone");
        exporters.Remove(TelemetryExporter.None);
        string? Env(string name) => environment(name) is { Length: > 0 } v ? v.Trim() : null;
        string endpoint = c.String("telemetry.endpoint").Trim();
        string endpointKey = "telemetry.endpoint";
        if (!c.IsSet("telemetry.endpoint") && Env("OTEL_EXPORTER_OTLP_ENDPOINT") is { } fromEnv)
            (endpoint, endpointKey) = (fromEnv, "OTEL_EXPORTER_OTLP_ENDPOINT");
        if (exporters.Contains(TelemetryExporter.Otlp) && !Uri.TryCreate(endpoint, UriKind.Absolute, out _))
            throw new ActorTrainException($"{endpointKey} = \"{endpoint}\" is not a URL, e.g. http://localhost:4318 (http) or http://localhost:4317 (grpc)");
        var protocol = c.Choice("telemetry.protocol", "http", "grpc") == "grpc" ? OtlpExportProtocol.Grpc : OtlpExportProtocol.HttpProtobuf;
        if (!c.IsSet("telemetry.protocol") && Env("OTEL_EXPORTER_OTLP_PROTOCOL") is { } p)
            protocol = p switch
            {
                "grpc" => OtlpExportProtocol.Grpc,
                "http/protobuf" => OtlpExportProtocol.HttpProtobuf,
                _ => throw new ActorTrainException($"OTEL_EXPORTER_OTLP_PROTOCOL = \"{p}\": use grpc or http/protobuf (http/json is not supported by the OTLP exporter here)"),
            };
        return new TelemetrySection(exporters, endpoint, protocol, c.Bool("telemetry.traces"), c.Bool("telemetry.metrics"), c.Int("telemetry.trace-every", 1),
            Env("OTEL_SERVICE_NAME"), ResourceAttributesOf(Env("OTEL_RESOURCE_ATTRIBUTES")), c.Bool("telemetry.compress-traces"));
    }

    /// <summary>OTEL_RESOURCE_ATTRIBUTES: comma-separated key=value pairs, values percent-encoded; a pair without '=' is refused.</summary>
    private static Dictionary<string, object>? ResourceAttributesOf(string? text)
    {
        if (text is null) return null;
        var attributes = new Dictionary<string, object>();
        foreach (string pair in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            int eq = pair.IndexOf('=');
            if (eq <= 0) throw new ActorTrainException($"OTEL_RESOURCE_ATTRIBUTES: \"{pair}\" is not key=value (e.g. deployment.environment=lab,team=ml)");
            attributes[pair[..eq].Trim()] = Uri.UnescapeDataString(pair[(eq + 1)..].Trim());
        }
        return attributes;
    }
}

/// <summary>
/// The OpenTelemetry SDK for one run: a tracer provider and a meter provider listening to the
/// ActorTrain source and meter, exporting to the run folder (traces.jsonl.gz or traces.jsonl, metrics.jsonl: OTLP JSON,
/// one export batch per line), an OTLP endpoint or the console. The source and meter are
/// process-wide, so spans are kept only when they belong to this run's trace (its id is learnt
/// from the coordinator's run span): runs side by side in one process (tests) do not mix.
/// Disposing flushes everything.
/// </summary>
public sealed class TelemetrySession : IDisposable
{
    public const string MetricsFile = "metrics.jsonl";

    private readonly TracerProvider? _tracer;
    private readonly MeterProvider? _meter;
    private RunFilter? _filter;
    private readonly OtlpTally? _otlp;

    private TelemetrySession(TelemetrySection settings, string folder, string serviceName, IReadOnlyDictionary<string, object> resource)
    {
        // OTEL_RESOURCE_ATTRIBUTES under the run's own attributes; OTEL_SERVICE_NAME over the default name
        var attributes = new Dictionary<string, object>(settings.ResourceAttributes ?? new Dictionary<string, object>());
        foreach (var (key, value) in resource) attributes[key] = value;
        attributes.Remove("service.name");
        var resourceBuilder = ResourceBuilder.CreateEmpty().AddService(settings.ServiceName ?? serviceName, serviceVersion: "1.0").AddAttributes(attributes);
        var builtResource = resourceBuilder.Build();
        if (settings.Has(TelemetryExporter.Otlp)) _otlp = new OtlpTally(settings.Endpoint, settings.Protocol);
        if (settings.Traces)
        {
            var builder = Sdk.CreateTracerProviderBuilder().AddSource(RunTelemetry.Name).SetResourceBuilder(resourceBuilder).SetSampler(new AlwaysOnSampler());
            var processors = settings.Exporters.Select(e => (BaseProcessor<Activity>)new BatchActivityExportProcessor(e switch
            {
                TelemetryExporter.File => new OtlpJsonFileExporter(TraceStore.PathIn(folder, settings.CompressTraces), builtResource),
                TelemetryExporter.Console => new ConsoleActivityExporter(new ConsoleExporterOptions()),
                _ => new CountingOtlpTraceExporter(new OtlpExporterOptions { Endpoint = Signal(settings, "traces"), Protocol = settings.Protocol }, _otlp!),
            }, maxQueueSize: 65536, maxExportBatchSize: 2048)).ToList();
            _filter = new RunFilter(processors);
            _tracer = builder.AddProcessor(_filter).Build();
        }
        if (settings.Metrics)
        {
            var builder = Sdk.CreateMeterProviderBuilder().AddMeter(RunTelemetry.Name).SetResourceBuilder(resourceBuilder);
            foreach (var e in settings.Exporters)
                builder = e switch
                {
                    TelemetryExporter.File => builder.AddReader(new PeriodicExportingMetricReader(new OtlpJsonMetricFileExporter(Path.Combine(folder, MetricsFile)), 3_600_000)),
                    TelemetryExporter.Console => builder.AddConsoleExporter(),
                    _ => builder.AddReader(new PeriodicExportingMetricReader(new CountingOtlpMetricExporter(
                        new OtlpExporterOptions { Endpoint = Signal(settings, "metrics"), Protocol = settings.Protocol }, _otlp!), 60_000)),
                };
            _meter = builder.Build();
        }
    }

    /// <summary>The OTLP endpoint of one signal: HTTP needs the /v1/traces or /v1/metrics path, gRPC the bare endpoint.</summary>
    private static Uri Signal(TelemetrySection settings, string signal)
    {
        var root = new Uri(settings.Endpoint);
        if (settings.Protocol == OtlpExportProtocol.Grpc || root.AbsolutePath.Contains("/v1/", StringComparison.Ordinal)) return root;
        return new Uri(root, root.AbsolutePath.TrimEnd('/') + "/v1/" + signal);
    }

    /// <returns>null when the exporter is none (nothing is listening, and the actors skip span work).</returns>
    public static TelemetrySession? Start(TelemetrySection settings, string folder, string serviceName, IReadOnlyDictionary<string, object> resource) =>
        settings.Exporters.Count == 0 || !(settings.Traces || settings.Metrics) ? null : new TelemetrySession(settings, folder, serviceName, resource);

    /// <summary>
    /// A ps or worker node's session: it holds one run only, so it keeps every span (it never sees
    /// the coordinator's run span, whose trace id the filter would need).
    /// </summary>
    public static TelemetrySession? StartForNode(TelemetrySection settings, string folder, string serviceName, IReadOnlyDictionary<string, object> resource)
    {
        var session = Start(settings, folder, serviceName, resource);
        if (session?._filter is { } filter) filter.KeepAll = true;
        return session;
    }

    /// <summary>Keeps only spans of the run whose root span has this trace id (called when the run span starts).</summary>
    public void OwnTrace(ActivityTraceId traceId)
    {
        if (_filter is not null) _filter.TraceId = traceId;
    }

    /// <summary>
    /// What reached the OTLP endpoint (null without an otlp exporter); final once the session is
    /// disposed. Every span the run kept and the collector did not accept counts as dropped: failed
    /// exports, and spans the export queue had no room for.
    /// </summary>
    public OtlpDelivery? Delivery => _otlp?.Report() is { } report
        ? report with { SpansDropped = Math.Max(report.SpansDropped, (_filter?.KeptSpans ?? 0) - report.SpansExported) }
        : null;

    public void Dispose()
    {
        _tracer?.ForceFlush();
        _tracer?.Dispose();
        _meter?.ForceFlush();
        _meter?.Dispose();
    }

    /// <summary>
    /// Passes on only this run's spans. A composite processor, so that the exporter inside it is
    /// attached to the provider (and gets its resource: service name, run name).
    /// </summary>
    private sealed class RunFilter(IEnumerable<BaseProcessor<Activity>> next) : CompositeProcessor<Activity>(next)
    {
        public ActivityTraceId TraceId;
        public bool KeepAll;
        private long _kept;

        public long KeptSpans => Interlocked.Read(ref _kept);

        public override void OnStart(Activity data)
        {
        }

        public override void OnEnd(Activity data)
        {
            if (!KeepAll && data.TraceId != TraceId) return;
            Interlocked.Increment(ref _kept);
            base.OnEnd(data);
        }
    }
}
