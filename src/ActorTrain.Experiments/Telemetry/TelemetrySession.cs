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
public sealed record TelemetrySection(TelemetryExporter Exporter, string Endpoint, OtlpExportProtocol Protocol, bool Traces, bool Metrics, int TraceEvery = 1)
{
    public static TelemetrySection Read(ConfigReader c)
    {
        var exporter = c.Choice("telemetry.exporter", "file", "otlp", "console", "none") switch
        {
            "file" => TelemetryExporter.File,
            "otlp" => TelemetryExporter.Otlp,
            "console" => TelemetryExporter.Console,
            _ => TelemetryExporter.None,
        };
        string endpoint = c.String("telemetry.endpoint").Trim();
        if (exporter == TelemetryExporter.Otlp && !Uri.TryCreate(endpoint, UriKind.Absolute, out _))
            throw new ActorTrainException($"telemetry.endpoint = \"{endpoint}\" is not a URL, e.g. http://localhost:4318 (http) or http://localhost:4317 (grpc)");
        var protocol = c.Choice("telemetry.protocol", "http", "grpc") == "grpc" ? OtlpExportProtocol.Grpc : OtlpExportProtocol.HttpProtobuf;
        return new TelemetrySection(exporter, endpoint, protocol, c.Bool("telemetry.traces"), c.Bool("telemetry.metrics"), c.Int("telemetry.trace-every", 1));
    }
}

/// <summary>
/// The OpenTelemetry SDK for one run: a tracer provider and a meter provider listening to the
/// ActorTrain source and meter, exporting to the run folder (traces.jsonl, metrics.jsonl: OTLP JSON,
/// one export batch per line), an OTLP endpoint or the console. The source and meter are
/// process-wide, so spans are kept only when they belong to this run's trace (its id is learnt
/// from the coordinator's run span): runs side by side in one process (tests) do not mix.
/// Disposing flushes everything.
/// </summary>
public sealed class TelemetrySession : IDisposable
{
    public const string TracesFile = "traces.jsonl";
    public const string MetricsFile = "metrics.jsonl";

    private readonly TracerProvider? _tracer;
    private readonly MeterProvider? _meter;
    private RunFilter? _filter;

    private TelemetrySession(TelemetrySection settings, string folder, string serviceName, IReadOnlyDictionary<string, object> resource)
    {
        var resourceBuilder = ResourceBuilder.CreateEmpty().AddService(serviceName, serviceVersion: "1.0").AddAttributes(resource);
        var builtResource = resourceBuilder.Build();
        if (settings.Traces)
        {
            var builder = Sdk.CreateTracerProviderBuilder().AddSource(RunTelemetry.Name).SetResourceBuilder(resourceBuilder).SetSampler(new AlwaysOnSampler());
            BaseExporter<Activity> exporter = settings.Exporter switch
            {
                TelemetryExporter.File => new OtlpJsonFileExporter(Path.Combine(folder, TracesFile), builtResource),
                TelemetryExporter.Console => new ConsoleActivityExporter(new ConsoleExporterOptions()),
                _ => new OtlpTraceExporter(new OtlpExporterOptions { Endpoint = Signal(settings, "traces"), Protocol = settings.Protocol }),
            };
            _filter = new RunFilter(new BatchActivityExportProcessor(exporter, maxQueueSize: 65536, maxExportBatchSize: 2048));
            _tracer = builder.AddProcessor(_filter).Build();
        }
        if (settings.Metrics)
        {
            var builder = Sdk.CreateMeterProviderBuilder().AddMeter(RunTelemetry.Name).SetResourceBuilder(resourceBuilder);
            builder = settings.Exporter switch
            {
                TelemetryExporter.File => builder.AddReader(new PeriodicExportingMetricReader(new OtlpJsonMetricFileExporter(Path.Combine(folder, MetricsFile)), 3_600_000)),
                TelemetryExporter.Console => builder.AddConsoleExporter(),
                _ => builder.AddOtlpExporter(o =>
                {
                    o.Endpoint = Signal(settings, "metrics");
                    o.Protocol = settings.Protocol;
                }),
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
        settings.Exporter == TelemetryExporter.None || !(settings.Traces || settings.Metrics) ? null : new TelemetrySession(settings, folder, serviceName, resource);

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
    private sealed class RunFilter(BaseProcessor<Activity> next) : CompositeProcessor<Activity>([next])
    {
        public ActivityTraceId TraceId;
        public bool KeepAll;

        public override void OnStart(Activity data)
        {
        }

        public override void OnEnd(Activity data)
        {
            if (KeepAll || data.TraceId == TraceId) base.OnEnd(data);
        }
    }
}
