using System.Diagnostics;
using System.Diagnostics.Metrics;
using ActorTrain.Cluster.Transport;

namespace ActorTrain.Cluster.Telemetry;

/// <summary>
/// The one ActivitySource and the one Meter named ActorTrain (DESIGN.md section 5), and the helpers
/// the actors use to record spans on the run's clock: a span's start and end are the link's times
/// (virtual seconds under the virtual clock) placed after the link's epoch, so a trace viewer shows
/// the simulated cluster's timeline. Parents and links are always explicit: actors share dispatcher
/// threads, so Activity.Current means nothing here.
/// Span names: run, worker.step, compute, compress, network, wait, transfer, shard.apply, evaluation.
/// </summary>
public static class RunTelemetry
{
    public const string Name = "ActorTrain";

    public static readonly ActivitySource Source = new(Name, "1.0");
    public static readonly Meter Meter = new(Name, "1.0");

    public static readonly Counter<long> Bytes = Meter.CreateCounter<long>("actortrain.bytes", "By", "Encoded bytes received by shards (worker_to_shard) and sent by them (shard_to_worker).");
    public static readonly Counter<long> Pushes = Meter.CreateCounter<long>("actortrain.pushes", "{push}", "Gradient pushes received by shards.");
    public static readonly Counter<long> DroppedPushes = Meter.CreateCounter<long>("actortrain.pushes.dropped", "{push}", "Pushes dropped: late (BSP backup workers), or from a killed worker's predecessor (reason = predecessor).");
    public static readonly Counter<long> SkippedPushes = Meter.CreateCounter<long>("actortrain.pushes.skipped", "{push}", "Pushes skipped as non-finite or malformed.");
    /// <summary>
    /// Bucket boundaries for durations in seconds, 1 us to 100 s, 1-2.5-5 per decade: the SDK's
    /// default boundaries are for milliseconds (0 to 10,000), which put every step of under 5 s in
    /// one bucket and made a dashboard read P50 = P99 = 5 s for 0.1 ms steps.
    /// </summary>
    public static readonly double[] SecondsBuckets =
        [1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100];

    /// <summary>Staleness in versions: every value up to 8, then doubling to 64 (the shards' own histogram stops at 63+).</summary>
    public static readonly long[] StalenessBuckets = [0, 1, 2, 3, 4, 5, 6, 7, 8, 16, 32, 64];

    public static readonly Histogram<long> Staleness = Meter.CreateHistogram("actortrain.staleness", "{version}", "Staleness of applied pushes.",
        advice: new InstrumentAdvice<long> { HistogramBucketBoundaries = StalenessBuckets });
    public static readonly Histogram<double> StepTime = Meter.CreateHistogram("actortrain.step.duration", "s", "A worker's step on the run's clock: network, wait, compute, compress.",
        advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = SecondsBuckets });
    public static readonly Histogram<double> WaitTime = Meter.CreateHistogram("actortrain.wait.duration", "s", "Time a worker's answer was held by the shards (barrier, staleness bound, apply).",
        advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = SecondsBuckets });
    public static readonly Gauge<double> Loss = Meter.CreateGauge<double>("actortrain.loss", "1", "Test loss at the latest evaluation.");
    public static readonly Gauge<double> LossScale = Meter.CreateGauge<double>("actortrain.loss_scale", "1", "A worker's current loss scale.");

    /// <summary>True when a listener samples ActorTrain spans: the actors skip all span work otherwise.</summary>
    public static bool Tracing => Source.HasListeners();

    /// <summary>A span from <paramref name="start"/> to <paramref name="end"/> (run seconds); null when not sampled. Attributes go on before <see cref="End"/>.</summary>
    public static Activity? Begin(string name, ActivityContext parent, ILink link, double start, IEnumerable<ActivityLink>? links = null,
        ActivityKind kind = ActivityKind.Internal)
    {
        if (!Source.HasListeners()) return null;
        // Only a root (the run) would take Activity.Current as its parent; every other span names its
        // parent, so what Current holds on a shared dispatcher thread never matters, and it is not
        // saved and restored around each span (an AsyncLocal write each way).
        if (parent == default) Activity.Current = null;
        return Source.StartActivity(name, kind, parent, null, links, link.Epoch.AddSeconds(start));
    }

    /// <summary>Ends a span at run time <paramref name="end"/> (at least one tick after its start: a zero duration would mean "now" to Activity).</summary>
    public static void End(Activity? span, ILink link, double end)
    {
        if (span is null) return;
        EndAt(span, link.Epoch.AddSeconds(end).UtcDateTime);
    }

    private static void EndAt(Activity span, DateTime at)
    {
        if (at <= span.StartTimeUtc) at = span.StartTimeUtc.AddTicks(1);
        // a direct child of an open run span moves the run's end out to its own
        if (span.ParentSpanId != default && LatestChildEnd.TryGetValue(span.ParentSpanId, out long latest) && at.Ticks > latest)
            LatestChildEnd.AddOrUpdate(span.ParentSpanId, at.Ticks, (_, seen) => Math.Max(seen, at.Ticks));
        span.SetEndTime(at);
        span.Stop();
    }

    /// <summary>The latest end (UTC ticks) of the direct children of each open run span.</summary>
    private static readonly System.Collections.Concurrent.ConcurrentDictionary<ActivitySpanId, long> LatestChildEnd = new();

    /// <summary>
    /// Begins a run span: a root whose end <see cref="EndRun"/> places after every direct child
    /// recorded in this process (a worker's step in flight when the run stopped ends after the
    /// final snapshot, under ASP and SSP).
    /// </summary>
    public static Activity? BeginRun(ILink link, double start)
    {
        var run = Begin("run", default, link, start, kind: ActivityKind.Server);
        if (run is not null) LatestChildEnd[run.SpanId] = 0;
        return run;
    }

    /// <summary>Ends a run span at <paramref name="end"/> or at its latest child's end, whichever is later; call once no child is still being recorded.</summary>
    public static void EndRun(Activity? run, ILink link, double end)
    {
        if (run is null) return;
        LatestChildEnd.TryRemove(run.SpanId, out long latest);
        var at = link.Epoch.AddSeconds(end).UtcDateTime;
        EndAt(run, latest > at.Ticks ? new DateTime(latest, DateTimeKind.Utc) : at);
    }

    /// <summary>
    /// A closed span in one call, for intervals known after the fact. An empty interval lasts one
    /// tick (a span cannot be empty); <paramref name="endsParent"/>: the tick before its end, so
    /// that a span closing its parent's interval stays inside it.
    /// </summary>
    public static ActivityContext Record(string name, ActivityContext parent, ILink link, double start, double end,
        ReadOnlySpan<KeyValuePair<string, object?>> tags = default, IEnumerable<ActivityLink>? links = null, bool endsParent = false)
    {
        if (endsParent && end <= start) start = end - TimeSpan.FromTicks(1).TotalSeconds;
        var span = Begin(name, parent, link, start, links);
        if (span is null) return default;
        foreach (var (key, value) in tags) span.SetTag(key, value);
        End(span, link, end);
        return span.Context;
    }
}
