using System.Globalization;
using System.Text;
using System.Text.Json;
using ActorTrain.Core;

namespace ActorTrain.Experiments.Telemetry;

/// <summary>One span read back from an OTLP JSON file.</summary>
public sealed record SpanRecord(string TraceId, string SpanId, string? ParentId, string Name, long StartNanos, long EndNanos,
    IReadOnlyDictionary<string, string> Attributes, IReadOnlyList<string> Links)
{
    public double Seconds => (EndNanos - StartNanos) / 1e9;

    /// <summary>The process that recorded the span: an index into <see cref="TraceFile.Nodes"/> (0: the first in the file, the coordinator's).</summary>
    public int Node { get; init; }

    public long? Int(string key) => Attributes.TryGetValue(key, out var v) && long.TryParse(v, NumberStyles.Integer, CultureInfo.InvariantCulture, out long n) ? n : null;
}

/// <summary>
/// The spans of a run as the file exporter wrote them (traces.jsonl), with what `actortrain trace`
/// computes from them: a time breakdown per role and per worker, stragglers, the critical path of
/// a BSP step, and a Chrome Trace Event export.
/// </summary>
public sealed class TraceFile
{
    private readonly Dictionary<string, SpanRecord> _byId;

    public IReadOnlyList<SpanRecord> Spans { get; }

    /// <summary>
    /// The processes whose spans the file holds, in order of first appearance, each named by its
    /// resource's service.name (actortrain, actortrain-ps, actortrain-worker): one in a one-process run,
    /// one per node in a cluster run.
    /// </summary>
    public IReadOnlyList<string> Nodes { get; }

    private TraceFile(List<SpanRecord> spans, List<string> nodes)
    {
        Spans = spans;
        Nodes = nodes;
        _byId = spans.ToDictionary(s => s.SpanId);
    }

    /// <summary>Reads a run folder's traces.jsonl.gz or traces.jsonl, or the given file (plain or gzip). Errors name the file and line.</summary>
    public static TraceFile Read(string path)
    {
        string? file = Directory.Exists(path) ? TraceStore.Find(path) : path;
        if (file is null || !File.Exists(file))
            throw new ActorTrainException(Directory.Exists(path)
                ? $"{path}: no {TraceStore.Compressed} or {TraceStore.Plain} in this run folder (was it run with telemetry.exporter = file?)"
                : $"{path}: trace file not found");
        var spans = new List<SpanRecord>();
        // a node is a resource: its service.instance.id (one per process), else its service name
        var nodes = new Dictionary<string, int>();
        var names = new List<string>();
        int lineNumber = 0;
        foreach (string line in TraceStore.ReadLines(file))
        {
            lineNumber++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            try
            {
                using var doc = JsonDocument.Parse(line);
                foreach (var resource in doc.RootElement.GetProperty("resourceSpans").EnumerateArray())
                {
                    var attributes = resource.TryGetProperty("resource", out var r) && r.TryGetProperty("attributes", out var a) ? Attributes(a) : [];
                    string service = attributes.GetValueOrDefault("service.name", "unknown");
                    string key = attributes.GetValueOrDefault("service.instance.id", service);
                    if (!nodes.TryGetValue(key, out int node))
                    {
                        nodes[key] = node = names.Count;
                        names.Add(service);
                    }
                    foreach (var scope in resource.GetProperty("scopeSpans").EnumerateArray())
                        foreach (var span in scope.GetProperty("spans").EnumerateArray())
                            spans.Add(Parse(span) with { Node = node });
                }
            }
            catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException or FormatException)
            {
                throw new ActorTrainException($"{file}:{lineNumber}: not OTLP JSON spans ({e.Message.Split('\n')[0]})", e);
            }
        }
        if (spans.Count == 0) throw new ActorTrainException($"{file}: no spans");
        return new TraceFile(spans, names);
    }

    /// <summary>An OTLP attribute list as key -> value text.</summary>
    private static Dictionary<string, string> Attributes(JsonElement list)
    {
        var attributes = new Dictionary<string, string>();
        foreach (var a in list.EnumerateArray())
        {
            var value = a.GetProperty("value").EnumerateObject().First().Value;
            attributes[a.GetProperty("key").GetString()!] = value.ValueKind == JsonValueKind.String ? value.GetString()! : value.GetRawText();
        }
        return attributes;
    }

    private static SpanRecord Parse(JsonElement span)
    {
        var attributes = span.TryGetProperty("attributes", out var list) ? Attributes(list) : [];
        var links = span.TryGetProperty("links", out var l) ? l.EnumerateArray().Select(x => x.GetProperty("spanId").GetString()!).ToList() : [];
        return new SpanRecord(span.GetProperty("traceId").GetString()!, span.GetProperty("spanId").GetString()!,
            span.TryGetProperty("parentSpanId", out var p) ? p.GetString() : null, span.GetProperty("name").GetString()!,
            long.Parse(span.GetProperty("startTimeUnixNano").GetString()!, CultureInfo.InvariantCulture),
            long.Parse(span.GetProperty("endTimeUnixNano").GetString()!, CultureInfo.InvariantCulture), attributes, links);
    }

    public SpanRecord? Parent(SpanRecord span) => span.ParentId is { } id && _byId.TryGetValue(id, out var p) ? p : null;

    /// <summary>The worker step that sent a push's transfer (linked from it; traces before the change had it as the parent).</summary>
    public SpanRecord? SenderStep(SpanRecord transfer) =>
        transfer.Links.Select(id => _byId.GetValueOrDefault(id)).FirstOrDefault(s => s is { Name: "worker.step" }) ?? (Parent(transfer) is { Name: "worker.step" } p ? p : null);

    /// <summary>
    /// What is inconsistent in the span tree: a span ending before it starts, a child outside its
    /// parent's interval, a parent or link that is not in the file (with trace-every = 1 every one
    /// must resolve). Empty for a well-formed trace.
    /// </summary>
    public List<string> Problems()
    {
        var problems = new List<string>();
        foreach (var span in Spans)
        {
            if (span.EndNanos < span.StartNanos) problems.Add($"{span.Name} {span.SpanId} ends before it starts");
            if (span.ParentId is { } parentId)
            {
                if (!_byId.TryGetValue(parentId, out var parent)) problems.Add($"{span.Name} {span.SpanId}: parent {parentId} is not in the trace");
                else if (span.StartNanos < parent.StartNanos || span.EndNanos > parent.EndNanos)
                    problems.Add($"{span.Name} {span.SpanId} [{span.StartNanos}, {span.EndNanos}] is outside its parent {parent.Name} [{parent.StartNanos}, {parent.EndNanos}]");
            }
            foreach (string link in span.Links)
                if (!_byId.ContainsKey(link)) problems.Add($"{span.Name} {span.SpanId}: link {link} is not in the trace");
        }
        return problems;
    }

    public SpanRecord Run => Spans.FirstOrDefault(s => s.Name == "run") ?? throw new ActorTrainException("the trace has no run span (was the run cut short?)");

    /// <summary>A cluster run's building of its shards and workers on the nodes (null in one process): before training.</summary>
    public SpanRecord? Placement => Spans.FirstOrDefault(s => s.Name == "placement");

    /// <summary>When training began: after the placement in a cluster run, with the run otherwise.</summary>
    public long TrainingStartNanos => Placement?.EndNanos ?? Run.StartNanos;

    /// <summary>Seconds from the start of training to the end of the run.</summary>
    public double TrainingSeconds => (Run.EndNanos - TrainingStartNanos) / 1e9;

    /// <summary>The worker a span belongs to: its own attribute, or its parent step's.</summary>
    public long? WorkerOf(SpanRecord span) => span.Int("actortrain.worker") ?? (Parent(span) is { Name: "worker.step" } p ? p.Int("actortrain.worker") : null);

    public static readonly string[] WorkerKinds = ["compute", "compress", "network", "wait"];

    /// <summary>
    /// Seconds per worker and kind: compute (with training.overlap its forward and backward spans),
    /// compress, network, wait (the children of its
    /// worker.step spans), and outside (from the run's start to its first step, and from its last
    /// step to the run's end: start-up, and the final snapshots after its last push). The step spans
    /// of a worker tile its time, so the kinds add up to the run's time; `summarize` shows by how much.
    /// </summary>
    public SortedDictionary<long, Dictionary<string, double>> WorkerBreakdown()
    {
        var run = Run;
        var result = new SortedDictionary<long, Dictionary<string, double>>();
        var first = new Dictionary<long, long>();
        var last = new Dictionary<long, long>();
        foreach (var span in Spans)
        {
            if (span.Name == "worker.step" && span.Int("actortrain.worker") is { } sw)
            {
                first[sw] = Math.Min(first.GetValueOrDefault(sw, long.MaxValue), span.StartNanos);
                last[sw] = Math.Max(last.GetValueOrDefault(sw, long.MinValue), span.EndNanos);
                continue;
            }
            // with training.overlap the compute is a forward and a backward span (the parts leave during the backward)
            string kind = span.Name is "forward" or "backward" ? "compute" : span.Name;
            if (!WorkerKinds.Contains(kind) || Parent(span) is not { Name: "worker.step" } step || step.Int("actortrain.worker") is not { } w) continue;
            if (!result.TryGetValue(w, out var kinds)) result[w] = kinds = WorkerKinds.ToDictionary(k => k, _ => 0.0);
            kinds[kind] += span.Seconds;
        }
        foreach (var (w, kinds) in result)
            kinds["outside"] = (first[w] - TrainingStartNanos) / 1e9 + Math.Max(0, run.EndNanos - last[w]) / 1e9;
        return result;
    }

    /// <summary>
    /// `trace summarize`: a run folder or trace file; a comparison or sweep folder (no trace of its
    /// own, one per variant folder) variant by variant.
    /// </summary>
    public static string SummarizeFolder(string path)
    {
        if (!Directory.Exists(path) || TraceStore.Find(path) is not null) return Read(path).Summarize();
        var variants = Directory.GetDirectories(path).Where(d => TraceStore.Find(d) is not null).Order(StringComparer.Ordinal).ToList();
        if (variants.Count == 0)
            throw new ActorTrainException($"{path}: no {TraceStore.Compressed} or {TraceStore.Plain} here nor in a variant folder (was it run with telemetry.exporter = file?)");
        var sb = new StringBuilder();
        foreach (string variant in variants)
        {
            sb.AppendLine($"== {Path.GetFileName(variant)}");
            sb.AppendLine(Read(variant).Summarize());
        }
        return sb.ToString();
    }

    public string Summarize()
    {
        var run = Run;
        var sb = new StringBuilder();
        if (run.Int("actortrain.trace_every") is > 1 and var every)
            sb.AppendLine($"note: telemetry.trace-every = {every}: one step in {every} per worker is traced, so the times below cover that sample, not the whole run");
        string F(double s) => Core.Simulation.Quantity.FormatSeconds(s);
        string P(double part) => (100 * part / TrainingSeconds).ToString("0.0", CultureInfo.InvariantCulture) + "%";
        if (Placement is { } placement) sb.AppendLine($"placement of the shards and workers on the nodes: {F(placement.Seconds)} (before the run's time below)");
        sb.AppendLine($"run: {F(TrainingSeconds)} ({run.Attributes.GetValueOrDefault("actortrain.clock", "?")} clock), {Spans.Count} spans; " +
                      $"{run.Attributes.GetValueOrDefault("actortrain.workers", "?")} workers, {run.Attributes.GetValueOrDefault("actortrain.shards", "?")} shards, " +
                      $"{run.Attributes.GetValueOrDefault("actortrain.policy", "?")}, codec {run.Attributes.GetValueOrDefault("actortrain.codec", "?")}");
        sb.AppendLine();
        var workers = WorkerBreakdown();
        sb.AppendLine("| worker | compute | compress | network | wait | outside its steps | sum | of the run |");
        sb.AppendLine("|---:|---:|---:|---:|---:|---:|---:|---:|");
        foreach (var (w, k) in workers)
        {
            double total = k.Values.Sum();
            sb.AppendLine($"| {w} | {F(k["compute"])} | {F(k["compress"])} | {F(k["network"])} | {F(k["wait"])} | {F(k["outside"])} | {F(total)} | {P(total)} |");
        }
        sb.AppendLine();
        sb.AppendLine("(network: its messages in transit and queued; wait: the shards holding their answer; outside: start-up and the end of the run after its last push.)");
        sb.AppendLine();
        sb.AppendLine("By role (sums over the actors of the role):");
        foreach (string kind in WorkerKinds)
            sb.AppendLine($"- workers, {kind}: {F(workers.Values.Sum(k => k[kind]))}");
        var applies = Spans.Where(s => s.Name == "shard.apply").ToList();
        var transfers = Spans.Where(s => s.Name == "transfer" && Parent(s) is not { Name: "allreduce" }).ToList();
        foreach (var shard in applies.Concat(transfers).GroupBy(s => s.Int("actortrain.shard") ?? -1).OrderBy(g => g.Key))
            sb.AppendLine($"- shard {shard.Key}: apply {F(shard.Where(s => s.Name == "shard.apply").Sum(s => s.Seconds))} over " +
                          $"{shard.Count(s => s.Name == "shard.apply")} steps; pushes in transit {F(shard.Where(s => s.Name == "transfer").Sum(s => s.Seconds))}");
        AllReducePhases(sb, F);
        var evaluations = Spans.Where(s => s.Name == "evaluation").ToList();
        double evaluating = evaluations.Sum(s => s.Attributes.TryGetValue("actortrain.real_seconds", out var real)
            && double.TryParse(real, NumberStyles.Float, CultureInfo.InvariantCulture, out double r) ? r : s.Seconds);
        sb.AppendLine($"- coordinator: {evaluations.Count} evaluations, {F(evaluating)} (real time: evaluation is not simulated)");
        sb.AppendLine();

        if (workers.Count > 1)
        {
            double median = Median(workers.Values.Select(k => k["compute"]).ToList());
            sb.AppendLine("Stragglers (compute time against the median worker's):");
            foreach (var (w, k) in workers.OrderByDescending(x => x.Value["compute"]).Take(5))
                sb.AppendLine($"- worker {w}: compute {F(k["compute"])} ({(k["compute"] / median).ToString("0.00", CultureInfo.InvariantCulture)}x), waited {F(k["wait"])}");
            sb.AppendLine();
        }
        var path = CriticalPath();
        if (path.Count > 0)
        {
            sb.AppendLine($"Critical path of the slowest BSP step (the last push to reach its shard decides when the step can happen):");
            foreach (var (what, seconds) in path) sb.AppendLine($"- {what}: {F(seconds)}");
        }
        return sb.ToString();
    }

    /// <summary>
    /// Under all-reduce: the collectives' time per phase (reduce-scatter, all-gather, and the
    /// intra- / inter-host phases of the hierarchical algorithm), summed over the workers, and the
    /// chunks' time in transit with the bytes they carried.
    /// </summary>
    private void AllReducePhases(StringBuilder sb, Func<double, string> f)
    {
        var collectives = Spans.Where(s => s.Name == "allreduce").ToList();
        if (collectives.Count == 0) return;
        var ids = collectives.Select(s => s.SpanId).ToHashSet();
        var children = Spans.Where(s => s.ParentId is { } p && ids.Contains(p)).ToList();
        sb.AppendLine($"- workers, all-reduce: {f(collectives.Sum(s => s.Seconds))} over {collectives.Count} collectives ({collectives[0].Attributes.GetValueOrDefault("actortrain.algorithm", "?")}), by phase:");
        foreach (var phase in children.Where(s => s.Name != "transfer").GroupBy(s => s.Name).OrderBy(g => g.Min(s => s.StartNanos)))
            sb.AppendLine($"  - {phase.Key}: {f(phase.Sum(s => s.Seconds))}");
        var chunks = children.Where(s => s.Name == "transfer").ToList();
        sb.AppendLine($"  - chunks in transit: {chunks.Count}, {f(chunks.Sum(s => s.Seconds))}, {chunks.Sum(s => s.Int("actortrain.encoded_bytes") ?? 0)} bytes");
    }

    private static double Median(List<double> values)
    {
        values.Sort();
        return values.Count == 0 ? 0 : values[values.Count / 2];
    }

    /// <summary>
    /// For the BSP aggregation (a shard.apply linked to several pushes) that took longest from its
    /// first linked step's start: the linked step whose push arrived last, its compute, compress and
    /// transfer, then the apply.
    /// </summary>
    public List<(string What, double Seconds)> CriticalPath()
    {
        var transfersByStep = Spans.Where(s => s.Name == "transfer").Select(s => (Step: SenderStep(s), Transfer: s)).Where(x => x.Step is not null)
            .ToLookup(x => x.Step!.SpanId, x => x.Transfer);
        var childrenByStep = Spans.Where(s => s.ParentId is not null && WorkerKinds.Contains(s.Name)).ToLookup(s => s.ParentId!);
        (SpanRecord Apply, SpanRecord Step, SpanRecord Transfer)? slowest = null;
        double longest = -1;
        foreach (var apply in Spans.Where(s => s.Name == "shard.apply" && s.Links.Count > 1))
        {
            long shard = apply.Int("actortrain.shard") ?? -1;
            SpanRecord? lastStep = null, lastTransfer = null;
            foreach (string linked in apply.Links)
            {
                if (!_byId.TryGetValue(linked, out var step)) continue;
                var transfer = transfersByStep[linked].FirstOrDefault(t => t.Int("actortrain.shard") == shard);
                if (transfer is null) continue;
                if (lastTransfer is null || transfer.EndNanos > lastTransfer.EndNanos) (lastStep, lastTransfer) = (step, transfer);
            }
            if (lastStep is null || lastTransfer is null) continue;
            var compute = childrenByStep[lastStep.SpanId].FirstOrDefault(c => c.Name == "compute");
            double span = (apply.EndNanos - (compute?.StartNanos ?? lastStep.StartNanos)) / 1e9;
            if (span > longest) (longest, slowest) = (span, (apply, lastStep, lastTransfer));
        }
        if (slowest is not { } s) return [];
        var kids = childrenByStep[s.Step.SpanId].ToDictionary(c => c.Name, c => c.Seconds);
        return
        [
            ($"step {s.Apply.Int("actortrain.version")} at shard {s.Apply.Int("actortrain.shard")}: worker {s.Step.Int("actortrain.worker")} pushed last; its compute", kids.GetValueOrDefault("compute")),
            ("its compress", kids.GetValueOrDefault("compress")),
            ("its push on the network (transfer)", s.Transfer.Seconds),
            ("the shard waiting for its turn after the push arrived", Math.Max(0, (s.Apply.StartNanos - s.Transfer.EndNanos) / 1e9)),
            ("shard.apply (accumulate, optimizer step)", s.Apply.Seconds),
            ("total, compute to applied", longest),
        ];
    }

    /// <summary>
    /// Chrome Trace Event JSON (opens in Perfetto and chrome://tracing): a process per role
    /// (coordinator, shards, network, workers, all-reduce, pipeline stages: the pipeline diagram, a
    /// track per stage with its micro-batches' forward and backward passes) of each node (a cluster run: "workers @
    /// node 2 (actortrain-worker)", pids 10 apart per node) and a track per actor in it; spans as
    /// nested "X" slices in microseconds from the run's start, attributes as args; pushes and
    /// chunks in transit as async begin/end pairs (they overlap on one link); a flow arrow from each
    /// step whose push a BSP shard.apply summed to that apply.
    /// </summary>
    public void WriteChrome(Stream output)
    {
        var run = Run;
        using var json = new Utf8JsonWriter(output, new JsonWriterOptions { Indented = false });
        json.WriteStartObject();
        json.WriteString("displayTimeUnit", "ms");
        json.WriteStartArray("traceEvents");
        double Us(long nanos) => (nanos - run.StartNanos) / 1000.0;
        var tracks = new SortedDictionary<(int Pid, int Tid), string>();
        var slices = new Dictionary<string, (int Pid, int Tid)>();
        long asyncId = 0;
        foreach (var span in Spans)
        {
            // a process per role; push transfers are async events (they overlap on one link), the rest nested slices
            (int pid, int tid, string track) = span.Name switch
            {
                "run" or "evaluation" or "placement" => (CoordinatorPid, 0, "coordinator"),
                "shard.apply" => (ShardPid, (int)(span.Int("actortrain.shard") ?? 0), $"shard-{span.Int("actortrain.shard") ?? 0}"),
                "transfer" when span.Int("actortrain.shard") is { } shard => (NetworkPid, (int)shard, $"to shard-{shard}"),
                // a track per stage of each replica (replica r's stage s: tid 1000 r + s)
                "stage.forward" or "stage.backward" when span.Int("actortrain.stage") is { } stage =>
                    (span.Int("actortrain.replica") ?? 0) is var replica && replica > 0
                        ? (PipelinePid, (int)(1000 * replica + stage), $"replica-{replica} stage-{stage}")
                        : (PipelinePid, (int)stage, $"stage-{stage}"),
                _ when InAllReduce(span) && WorkerOf(span) is { } w => (AllReducePid, (int)w, $"worker-{w} all-reduce"),
                _ when WorkerOf(span) is { } w => (WorkerPid, (int)w, $"worker-{w}"),
                _ => (-1, 0, ""),
            };
            if (pid < 0) continue;
            pid += RolesPerNode * span.Node; // a process per role of each node (the first node keeps pids 1..5)
            tracks.TryAdd((pid, tid), track);
            bool async = span.Name == "transfer";
            if (async)
            {
                long id = ++asyncId;
                Event(json, span.Name, "network", "b", Us(span.StartNanos), pid, tid, id, span.Attributes);
                Event(json, span.Name, "network", "e", Us(span.EndNanos), pid, tid, id, null);
                continue;
            }
            slices[span.SpanId] = (pid, tid);
            json.WriteStartObject();
            json.WriteString("name", span.Name);
            json.WriteString("cat", ProcessNames[pid % RolesPerNode]);
            json.WriteString("ph", "X");
            json.WriteNumber("ts", Us(span.StartNanos));
            json.WriteNumber("dur", Math.Max(0, (span.EndNanos - span.StartNanos) / 1000.0));
            json.WriteNumber("pid", pid);
            json.WriteNumber("tid", tid);
            json.WriteStartObject("args");
            foreach (var (key, value) in span.Attributes) json.WriteString(key, value);
            json.WriteEndObject();
            json.WriteEndObject();
        }
        // a flow arrow from each step whose push a shard.apply summed to that apply
        long flow = 0;
        foreach (var apply in Spans.Where(x => x.Name == "shard.apply" && slices.ContainsKey(x.SpanId)))
            foreach (string linked in apply.Links)
            {
                if (!_byId.TryGetValue(linked, out var step) || !slices.TryGetValue(linked, out var from)) continue;
                long id = ++flow;
                var (toPid, toTid) = slices[apply.SpanId];
                Event(json, "push", "flow", "s", Us(step.EndNanos) - 0.001, from.Pid, from.Tid, id, null);
                Event(json, "push", "flow", "f", Us(apply.StartNanos), toPid, toTid, id, null, bindEnclosing: true);
            }
        foreach (var ((pid, tid), name) in tracks)
            Metadata(json, "thread_name", pid, tid, name);
        foreach (int pid in tracks.Keys.Select(k => k.Pid).Distinct())
            Metadata(json, "process_name", pid, null,
                Nodes.Count > 1 ? $"{ProcessNames[pid % RolesPerNode]} @ node {pid / RolesPerNode} ({Nodes[pid / RolesPerNode]})" : ProcessNames[pid]);
        json.WriteEndArray();
        json.WriteEndObject();
    }

    private const int CoordinatorPid = 1, ShardPid = 2, NetworkPid = 3, WorkerPid = 4, AllReducePid = 5, PipelinePid = 6, RolesPerNode = 10;

    private static readonly Dictionary<int, string> ProcessNames = new()
    {
        [CoordinatorPid] = "coordinator", [ShardPid] = "shards", [NetworkPid] = "network (pushes)", [WorkerPid] = "workers", [AllReducePid] = "all-reduce",
        [PipelinePid] = "pipeline stages",
    };

    /// <summary>An all-reduce span or one under it (its phases, its chunks' transfers): they overlap the worker's next step, so they get their own track.</summary>
    private bool InAllReduce(SpanRecord span)
    {
        for (var s = span; s is not null; s = Parent(s))
            if (s.Name == "allreduce") return true;
        return false;
    }

    private static void Event(Utf8JsonWriter json, string name, string cat, string ph, double ts, int pid, int tid, long id,
        IReadOnlyDictionary<string, string>? args, bool bindEnclosing = false)
    {
        json.WriteStartObject();
        json.WriteString("name", name);
        json.WriteString("cat", cat);
        json.WriteString("ph", ph);
        json.WriteNumber("ts", ts);
        json.WriteNumber("pid", pid);
        json.WriteNumber("tid", tid);
        json.WriteNumber("id", id);
        if (bindEnclosing) json.WriteString("bp", "e");
        if (args is not null)
        {
            json.WriteStartObject("args");
            foreach (var (key, value) in args) json.WriteString(key, value);
            json.WriteEndObject();
        }
        json.WriteEndObject();
    }

    private static void Metadata(Utf8JsonWriter json, string what, int pid, int? tid, string name)
    {
        json.WriteStartObject();
        json.WriteString("name", what);
        json.WriteString("ph", "M");
        json.WriteNumber("pid", pid);
        if (tid is { } t) json.WriteNumber("tid", t);
        json.WriteStartObject("args");
        json.WriteString("name", name);
        json.WriteEndObject();
        json.WriteEndObject();
    }
}
