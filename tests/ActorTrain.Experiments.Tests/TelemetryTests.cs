using System.Globalization;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using ActorTrain.Cluster.Actors;
using ActorTrain.Cluster.Telemetry;
using ActorTrain.Experiments.Telemetry;
using OpenTelemetry;
using OpenTelemetry.Trace;

namespace ActorTrain.Experiments.Tests;

/// <summary>Spans, their export, and what `actortrain trace` computes from them.</summary>
public sealed class TelemetryTests() : TempFolderTest("actortrain-telemetry-")
{
    internal static readonly string[] TwoWorkerBsp =
        ["dataset.samples=600", "topology.workers=2", "topology.shards=2", "training.max-steps=12", "training.eval-every=6", "compute.engine=simd", "output.plots=off"];

    private sealed class TraceIdObserver : IRunObserver
    {
        public ActivityTraceId TraceId;
        public void OnEvaluation(EvaluationPoint point) { }
        public void OnTrace(ActivityTraceId traceId) => TraceId = traceId;
    }

    [Fact]
    public async Task A_two_worker_bsp_run_has_the_span_tree_links_and_attributes()
    {
        var spans = new List<Activity>();
        using (Sdk.CreateTracerProviderBuilder().AddSource(RunTelemetry.Name).AddInMemoryExporter(spans).Build())
        {
            var observer = new TraceIdObserver();
            await ExperimentRunner.RunAsync(ExperimentSpec.Load(null, [.. TwoWorkerBsp, "telemetry.exporter=none"]), Root, observer);
            // other tests' runs in this process emit spans too: keep this run's trace
            spans = spans.Where(s => s.TraceId == observer.TraceId).ToList();
        }
        var byId = spans.ToDictionary(s => s.SpanId);
        var run = Assert.Single(spans, s => s.DisplayName == "run");
        Assert.Equal(default, run.ParentSpanId);
        Assert.Equal(2, run.GetTagItem("actortrain.workers"));

        var steps = spans.Where(s => s.DisplayName == "worker.step").ToList();
        Assert.All(steps, s => Assert.Equal(run.SpanId, s.ParentSpanId));
        foreach (int w in new[] { 0, 1 })
        {
            var mine = steps.Where(s => (int)s.GetTagItem("actortrain.worker")! == w).OrderBy(s => s.StartTimeUtc).ToList();
            Assert.True(mine.Count >= 12, $"worker {w} has {mine.Count} steps");
            Assert.Equal(Enumerable.Range(0, mine.Count).Select(c => (long)c), mine.Select(s => (long)s.GetTagItem("actortrain.clock")!));
            foreach (var step in mine)
            {
                Assert.Equal("none", step.GetTagItem("actortrain.codec"));
                Assert.True((long)step.GetTagItem("actortrain.encoded_bytes")! > 0);
                Assert.Equal(1f, step.GetTagItem("actortrain.loss_scale"));
                var children = spans.Where(s => s.ParentSpanId == step.SpanId).Select(s => s.DisplayName).Order();
                Assert.Equal(["compress", "compute", "network", "wait"], children);
                // a push to each shard, in transit from the step's end: children of the run, linked to the step
                var transfers = spans.Where(s => s.DisplayName == "transfer" && s.Links.Any(l => l.Context.SpanId == step.SpanId)).ToList();
                Assert.All(transfers, t => Assert.Equal(run.SpanId, t.ParentSpanId));
                Assert.Equal([0, 1], transfers.Select(t => (int)t.GetTagItem("actortrain.shard")!).Order());
            }
        }

        var applies = spans.Where(s => s.DisplayName == "shard.apply").ToList();
        Assert.Equal(12 * 2, applies.Count);
        foreach (var apply in applies)
        {
            Assert.Equal(run.SpanId, apply.ParentSpanId);
            Assert.Equal(2, apply.GetTagItem("actortrain.pushes"));
            // a BSP aggregation links to the two pushes (worker steps) of the clock it applied
            var linked = apply.Links.Select(l => byId[l.Context.SpanId]).ToList();
            Assert.Equal(2, linked.Count);
            Assert.All(linked, s => Assert.Equal("worker.step", s.DisplayName));
            Assert.Equal([0, 1], linked.Select(s => (int)s.GetTagItem("actortrain.worker")!).Order());
            Assert.All(linked, s => Assert.Equal((long)apply.GetTagItem("actortrain.version")! - 1, (long)s.GetTagItem("actortrain.clock")!));
        }
        Assert.Equal(3, spans.Count(s => s.DisplayName == "evaluation" && s.ParentSpanId == run.SpanId)); // steps 0, 6, 12
        // virtual time: spans sit at the link's epoch + virtual seconds, inside the run span; evaluations
        // take no virtual time (what they really took is an attribute)
        Assert.All(spans, s => Assert.True(s.StartTimeUtc >= run.StartTimeUtc && s.StartTimeUtc + s.Duration <= run.StartTimeUtc + run.Duration + TimeSpan.FromTicks(2),
            $"{s.DisplayName} outside the run"));
        Assert.All(spans.Where(s => s.DisplayName == "evaluation"), s =>
        {
            Assert.True(s.Duration <= TimeSpan.FromTicks(1), $"{s.Duration}"); // the span helper's least duration
            Assert.True((double)s.GetTagItem("actortrain.real_seconds")! > 0);
        });
    }

    /// <summary>
    /// A minimal OTLP/HTTP receiver: counts the spans in each ExportTraceServiceRequest by walking
    /// the protobuf wire format (resource_spans = 1, scope_spans = 2, spans = 2), answers 200.
    /// </summary>
    private sealed class OtlpReceiver : IDisposable
    {
        private readonly HttpListener _listener = new();
        private readonly Task _loop;
        private readonly int _status;
        public int Port { get; }
        public int Spans;
        public readonly HashSet<string> Paths = [];

        /// <param name="status">what the receiver answers every request with (200: accepted)</param>
        public OtlpReceiver(int status = 200)
        {
            _status = status;
            Port = FreePort();
            _listener.Prefixes.Add($"http://127.0.0.1:{Port}/");
            _listener.Start();
            _loop = Task.Run(Loop);
        }

        private async Task Loop()
        {
            while (_listener.IsListening)
            {
                HttpListenerContext context;
                try
                {
                    context = await _listener.GetContextAsync();
                }
                catch (Exception e) when (e is HttpListenerException or ObjectDisposedException)
                {
                    return;
                }
                using var body = new MemoryStream();
                await context.Request.InputStream.CopyToAsync(body);
                lock (Paths) Paths.Add(context.Request.Url!.AbsolutePath);
                if (context.Request.Url!.AbsolutePath == "/v1/traces") Interlocked.Add(ref Spans, CountSpans(body.ToArray()));
                context.Response.StatusCode = _status;
                context.Response.Close();
            }
        }

        private static int CountSpans(byte[] message)
        {
            int count = 0;
            foreach (var resource in Fields(message, 1))
                foreach (var scope in Fields(resource, 2))
                    count += Fields(scope, 2).Count();
            return count;
        }

        /// <summary>The length-delimited fields numbered <paramref name="wanted"/> of a protobuf message.</summary>
        private static IEnumerable<byte[]> Fields(byte[] message, int wanted)
        {
            int i = 0;
            ulong Varint()
            {
                ulong v = 0;
                for (int shift = 0; ; shift += 7)
                {
                    byte b = message[i++];
                    v |= (ulong)(b & 0x7F) << shift;
                    if (b < 0x80) return v;
                }
            }
            var result = new List<byte[]>();
            while (i < message.Length)
            {
                ulong key = Varint();
                int field = (int)(key >> 3), type = (int)(key & 7);
                switch (type)
                {
                    case 0: Varint(); break;
                    case 1: i += 8; break;
                    case 5: i += 4; break;
                    case 2:
                        int length = (int)Varint();
                        if (field == wanted) result.Add(message[i..(i + length)]);
                        i += length;
                        break;
                    default: throw new InvalidDataException($"protobuf wire type {type}");
                }
            }
            return result;
        }

        public void Dispose()
        {
            _listener.Stop();
            _listener.Close();
            _loop.Wait(TimeSpan.FromSeconds(5));
        }
    }

    private static int FreePort()
    {
        var probe = new TcpListener(IPAddress.Loopback, 0);
        probe.Start();
        int port = ((IPEndPoint)probe.LocalEndpoint).Port;
        probe.Stop();
        return port;
    }

    [Fact]
    public async Task Spans_sent_over_otlp_http_arrive_whole()
    {
        // the same run twice (virtual clock: identical), once to a file and once over OTLP/HTTP
        var toFile = await ExperimentRunner.RunAsync(ExperimentSpec.Load(null, TwoWorkerBsp), Root);
        int expected = TraceFile.Read(toFile.Folder).Spans.Count;
        Assert.Null(toFile.Summary.Telemetry); // no otlp exporter: nothing to count
        using var receiver = new OtlpReceiver();
        var sent = await ExperimentRunner.RunAsync(ExperimentSpec.Load(null, [.. TwoWorkerBsp, "telemetry.exporter=otlp", $"telemetry.endpoint=\"http://127.0.0.1:{receiver.Port}\""]), Root);
        Assert.Equal(expected, receiver.Spans);
        Assert.Contains("/v1/traces", receiver.Paths);
        Assert.Contains("/v1/metrics", receiver.Paths);
        var delivery = sent.Summary.Telemetry!;
        Assert.Equal((expected, 0L, 0L), (delivery.SpansExported, delivery.SpansDropped, delivery.MetricExportsFailed));
        Assert.Null(delivery.Warning);
        using var summary = JsonDocument.Parse(File.ReadAllText(Path.Combine(sent.Folder, "summary.json")));
        Assert.Equal(expected, summary.RootElement.GetProperty("telemetry").GetProperty("spans_exported").GetInt64());
    }

    /// <summary>
    /// A server that speaks the wrong protocol: to whatever arrives it answers an HTTP/2 GOAWAY
    /// frame (PROTOCOL_ERROR) and hangs up, as a gRPC-only port answers HTTP/1.1.
    /// </summary>
    private sealed class WrongProtocolServer : IDisposable
    {
        private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
        private readonly Task _loop;
        public int Port { get; }

        public WrongProtocolServer()
        {
            _listener.Start();
            Port = ((IPEndPoint)_listener.LocalEndpoint).Port;
            _loop = Task.Run(async () =>
            {
                byte[] goAway = [0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
                while (true)
                {
                    TcpClient client;
                    try
                    {
                        client = await _listener.AcceptTcpClientAsync();
                    }
                    catch (Exception e) when (e is SocketException or ObjectDisposedException)
                    {
                        return;
                    }
                    using (client)
                    {
                        var stream = client.GetStream();
                        _ = await stream.ReadAsync(new byte[4096]); // whatever the request was
                        await stream.WriteAsync(goAway);
                    }
                }
            });
        }

        public void Dispose()
        {
            _listener.Stop();
            _loop.Wait(TimeSpan.FromSeconds(5));
        }
    }

    [Theory]
    [InlineData("dead port", "http")]
    [InlineData("dead port", "grpc")]
    [InlineData("wrong protocol", "http")]
    [InlineData("wrong protocol", "grpc")]
    [InlineData("http 503", "http")]
    public async Task Spans_that_do_not_reach_the_collector_are_counted_and_warned_about(string endpoint, string protocol)
    {
        using var wrong = endpoint == "wrong protocol" ? new WrongProtocolServer() : null;
        using var refusing = endpoint == "http 503" ? new OtlpReceiver(503) : null;
        int port = wrong?.Port ?? refusing?.Port ?? FreePort();
        var result = await ExperimentRunner.RunAsync(ExperimentSpec.Load(null, [.. TwoWorkerBsp, "telemetry.exporter=[otlp, file]", $"telemetry.protocol={protocol}",
            $"telemetry.endpoint=\"http://127.0.0.1:{port}\""]), Root);
        // the file beside it holds every span: none reached the collector, all of them are counted
        int spans = TraceFile.Read(result.Folder).Spans.Count;
        var delivery = result.Summary.Telemetry!;
        Assert.Equal((0L, (long)spans), (delivery.SpansExported, delivery.SpansDropped));
        Assert.True(delivery.MetricExportsFailed >= 1);
        Assert.Equal($"http://127.0.0.1:{port}", delivery.Endpoint);
        Assert.Contains($"{spans} of {spans} span(s)", delivery.Warning);
        Assert.Contains($"http://127.0.0.1:{port} ({(protocol == "grpc" ? "grpc" : "http/protobuf")})", delivery.Warning);
    }

    [Fact]
    public async Task The_chrome_export_of_an_all_reduce_run_nests_on_every_track()
    {
        var result = await ExperimentRunner.RunAsync(ExperimentSpec.Load(null, [.. TwoWorkerBsp, "topology.aggregation=ring-allreduce", "training.overlap=layer",
            "simulation.compute-time=1ms", "model.hidden=[32, 32]"]), Root);
        using var buffer = new MemoryStream();
        TraceFile.Read(result.Folder).WriteChrome(buffer);
        using var doc = JsonDocument.Parse(buffer.ToArray());
        var complete = doc.RootElement.GetProperty("traceEvents").EnumerateArray().Where(e => e.GetProperty("ph").GetString() == "X").ToList();
        Assert.Contains(complete, e => e.GetProperty("name").GetString() == "allreduce" && e.GetProperty("pid").GetInt32() == 5);
        foreach (var track in complete.GroupBy(e => (e.GetProperty("pid").GetInt32(), e.GetProperty("tid").GetInt32())))
        {
            var spans = track.Select(e => (Start: e.GetProperty("ts").GetDouble(), End: e.GetProperty("ts").GetDouble() + e.GetProperty("dur").GetDouble())).ToList();
            foreach (var a in spans)
                foreach (var b in spans)
                    Assert.True(a.End <= b.Start + 1e-6 || b.End <= a.Start + 1e-6 || (a.Start >= b.Start - 1e-6 && a.End <= b.End + 1e-6) || (b.Start >= a.Start - 1e-6 && b.End <= a.End + 1e-6),
                        $"track {track.Key}: [{a.Start}, {a.End}] and [{b.Start}, {b.End}] overlap without nesting");
        }
    }

    [Fact]
    public async Task The_chrome_export_is_trace_event_json_with_one_track_per_actor()
    {
        var result = await ExperimentRunner.RunAsync(ExperimentSpec.Load(null, TwoWorkerBsp), Root);
        var trace = TraceFile.Read(result.Folder);
        using var buffer = new MemoryStream();
        trace.WriteChrome(buffer);
        using var doc = JsonDocument.Parse(buffer.ToArray());
        var events = doc.RootElement.GetProperty("traceEvents").EnumerateArray().ToList();
        string Ph(JsonElement e) => e.GetProperty("ph").GetString()!;
        (int, int) Track(JsonElement e) => (e.GetProperty("pid").GetInt32(), e.GetProperty("tid").GetInt32());
        var complete = events.Where(e => Ph(e) == "X").ToList();
        // every span is a slice, except the pushes in transit, which are async begin/end pairs
        int transfers = trace.Spans.Count(x => x.Name == "transfer");
        Assert.Equal(trace.Spans.Count - transfers, complete.Count);
        Assert.Equal(transfers, events.Count(e => Ph(e) == "b"));
        Assert.Equal(events.Where(e => Ph(e) == "b").Select(e => e.GetProperty("id").GetInt64()).Order(), events.Where(e => Ph(e) == "e").Select(e => e.GetProperty("id").GetInt64()).Order());
        foreach (var e in complete)
        {
            Assert.False(string.IsNullOrEmpty(e.GetProperty("name").GetString()));
            Assert.True(e.GetProperty("ts").GetDouble() >= 0);
            Assert.True(e.GetProperty("dur").GetDouble() >= 0);
        }
        // slices on one track nest: any two are disjoint or one holds the other
        foreach (var track in complete.GroupBy(Track))
        {
            var spans = track.Select(e => (Start: e.GetProperty("ts").GetDouble(), End: e.GetProperty("ts").GetDouble() + e.GetProperty("dur").GetDouble())).ToList();
            foreach (var a in spans)
                foreach (var b in spans)
                    Assert.True(a.End <= b.Start + 1e-6 || b.End <= a.Start + 1e-6 || (a.Start >= b.Start - 1e-6 && a.End <= b.End + 1e-6) || (b.Start >= a.Start - 1e-6 && b.End <= a.End + 1e-6),
                        $"track {track.Key}: [{a.Start}, {a.End}] and [{b.Start}, {b.End}] overlap without nesting");
        }
        // a flow arrow per push a BSP apply summed: start on the worker's track, finish on the shard's
        var starts = events.Where(e => Ph(e) == "s").ToDictionary(e => e.GetProperty("id").GetInt64());
        var finishes = events.Where(e => Ph(e) == "f").ToDictionary(e => e.GetProperty("id").GetInt64());
        Assert.Equal(trace.Spans.Where(x => x.Name == "shard.apply").Sum(x => x.Links.Count), starts.Count);
        Assert.Equal(starts.Keys.Order(), finishes.Keys.Order());
        Assert.All(starts.Values, e => Assert.Equal(4, e.GetProperty("pid").GetInt32()));
        Assert.All(finishes.Values, e => Assert.Equal(2, e.GetProperty("pid").GetInt32()));
        var processes = events.Where(e => Ph(e) == "M" && e.GetProperty("name").GetString() == "process_name")
            .Select(e => e.GetProperty("args").GetProperty("name").GetString()).Order();
        Assert.Equal(["coordinator", "network (pushes)", "shards", "workers"], processes);
        var names = events.Where(e => Ph(e) == "M" && e.GetProperty("name").GetString() == "thread_name")
            .ToDictionary(Track, e => e.GetProperty("args").GetProperty("name").GetString());
        Assert.Equal(["coordinator", "shard-0", "shard-1", "to shard-0", "to shard-1", "worker-0", "worker-1"], names.Values.Order());
        // a worker's track holds only that worker's spans
        var worker1 = names.Single(n => n.Value == "worker-1").Key;
        Assert.All(complete.Where(e => Track(e) == worker1 && e.GetProperty("name").GetString() == "worker.step"),
            e => Assert.Equal("1", e.GetProperty("args").GetProperty("actortrain.worker").GetString()));
    }

    [Theory]
    [InlineData("bsp")]
    [InlineData("ssp")]
    public async Task Summarize_breakdown_adds_up_to_the_run_time_within_one_percent(string policy)
    {
        var result = await ExperimentRunner.RunAsync(ExperimentSpec.Load(null,
            [.. TwoWorkerBsp, $"sync.policy={policy}", "training.max-steps=200", "stragglers.workers=[0]", "stragglers.factor=3", "simulation.compute-time=1ms"]), Root);
        var trace = TraceFile.Read(result.Folder);
        double run = trace.Run.Seconds;
        // BSP: the run span ends at the final snapshot; SSP: at the end of the straggler's step still
        // in flight then (3 ms of compute at most), which the run span must hold
        if (policy == "bsp") Assert.Equal(result.Outcome.ElapsedSeconds, run, 6);
        else Assert.InRange(run, result.Outcome.ElapsedSeconds, result.Outcome.ElapsedSeconds + 0.004);
        foreach (var (worker, kinds) in trace.WorkerBreakdown())
            Assert.True(Math.Abs(kinds.Values.Sum() - run) <= 0.01 * run, $"worker {worker}: {kinds.Values.Sum()} s of {run} s");
        var breakdown = trace.WorkerBreakdown();
        Assert.True(breakdown[0]["compute"] > 2.5 * breakdown[1]["compute"], "worker 0 is the 3x straggler");
        string summary = trace.Summarize();
        Assert.Contains("Stragglers", summary);
        Assert.Contains("- worker 0: compute", summary.Split("Stragglers")[1].Split('\n')[1]);
        if (policy == "bsp") Assert.Contains("worker 0 pushed last", summary);
    }

    /// <summary>No span ends before it starts, no child outlives its parent, every parent and link resolves.</summary>
    [Theory]
    [InlineData("topology.aggregation=ps")]
    [InlineData("topology.aggregation=ring-allreduce")]
    [InlineData("training.overlap=layer")]
    [InlineData("sync.policy=asp")]
    [InlineData("sync.policy=ssp;stragglers.workers=[1];stragglers.factor=2.5")]
    public async Task The_span_tree_is_consistent(string settings)
    {
        var result = await ExperimentRunner.RunAsync(ExperimentSpec.Load(null, [.. TwoWorkerBsp, "simulation.compute-time=1ms", "fabric.topology=switch", .. settings.Split(';')]), Root);
        var problems = TraceFile.Read(result.Folder).Problems();
        Assert.True(problems.Count == 0, string.Join("\n", problems.Take(10)));
    }

    /// <summary>With training.overlap a step shows a forward and a backward span, and its parts in transit while the backward goes on.</summary>
    [Theory]
    [InlineData("ps")]
    [InlineData("ring-allreduce")]
    public async Task Overlap_shows_in_the_spans(string aggregation)
    {
        var result = await ExperimentRunner.RunAsync(ExperimentSpec.Load(null,
            [.. TwoWorkerBsp, "model.hidden=[64, 64]", "training.overlap=layer", "simulation.compute-time=2ms", "fabric.topology=switch", $"topology.aggregation={aggregation}"]), Root);
        var trace = TraceFile.Read(result.Folder);
        var steps = trace.Spans.Where(s => s.Name == "worker.step").ToList();
        var children = trace.Spans.Where(s => s.ParentId is not null).ToLookup(s => s.ParentId!);
        Assert.All(steps, step =>
        {
            Assert.Contains(children[step.SpanId], c => c.Name == "forward");
            Assert.Contains(children[step.SpanId], c => c.Name == "backward");
            Assert.DoesNotContain(children[step.SpanId], c => c.Name == "compute");
        });
        var backward = trace.Spans.Where(s => s.Name == "backward").ToList();
        // something left (a push's transfer, or a bucket's all-reduce phase) before its step's backward was over
        var parts = aggregation == "ps"
            ? trace.Spans.Where(s => s.Name == "transfer" && s.Attributes.ContainsKey("actortrain.shard")).ToList()
            : trace.Spans.Where(s => s.Name is "reduce-scatter" or "all-gather").ToList();
        Assert.Contains(parts, part => backward.Any(b => part.StartNanos > b.StartNanos && part.StartNanos < b.EndNanos));
    }

    [Fact]
    public async Task Trace_every_n_traces_one_step_in_n_and_keeps_the_links_whole()
    {
        var result = await ExperimentRunner.RunAsync(ExperimentSpec.Load(null, [.. TwoWorkerBsp, "training.max-steps=20", "telemetry.trace-every=5"]), Root);
        var trace = TraceFile.Read(result.Folder);
        var steps = trace.Spans.Where(s => s.Name == "worker.step").ToList();
        Assert.All(steps, s => Assert.Equal(0, s.Int("actortrain.clock")!.Value % 5));
        Assert.InRange(steps.Count, 2 * 4, 2 * 5); // clocks 0, 5, 10, 15 (and 20 if pushed before the end)
        var ids = steps.Select(s => s.SpanId).ToHashSet();
        var applies = trace.Spans.Where(s => s.Name == "shard.apply").ToList();
        Assert.All(applies, a => Assert.All(a.Links, l => Assert.Contains(l, ids)));
        Assert.All(trace.Spans.Where(s => s.Name == "transfer"), t => Assert.Contains(trace.SenderStep(t)!.SpanId, ids));
        Assert.Empty(trace.Problems());
    }

    [Fact]
    public async Task Traces_are_written_compressed_and_read_back_like_the_plain_file()
    {
        var compressed = await ExperimentRunner.RunAsync(ExperimentSpec.Load(null, TwoWorkerBsp), Root);
        var plain = await ExperimentRunner.RunAsync(ExperimentSpec.Load(null, [.. TwoWorkerBsp, "telemetry.compress-traces=off"]), Root);
        string gz = Path.Combine(compressed.Folder, TraceStore.Compressed);
        Assert.Equal([0x1f, 0x8b], File.ReadAllBytes(gz)[..2]);
        Assert.False(File.Exists(Path.Combine(compressed.Folder, TraceStore.Plain)));
        Assert.True(File.Exists(Path.Combine(plain.Folder, TraceStore.Plain)));
        // the same spans (the virtual clock: the same run; ids are random), from either file
        var a = TraceFile.Read(compressed.Folder).Spans;
        var b = TraceFile.Read(plain.Folder).Spans;
        long a0 = a.Min(s => s.StartNanos), b0 = b.Min(s => s.StartNanos);
        Assert.Equal(b.Select(s => (s.Name, s.StartNanos - b0, s.EndNanos - s.StartNanos)).Order(), a.Select(s => (s.Name, s.StartNanos - a0, s.EndNanos - s.StartNanos)).Order());
        // gzip is a fraction of the plain file, and under 2 KB per step (issue 20's bound)
        long gzBytes = new FileInfo(gz).Length, plainBytes = new FileInfo(Path.Combine(plain.Folder, TraceStore.Plain)).Length;
        Assert.True(gzBytes * 5 < plainBytes, $"{gzBytes} vs {plainBytes}");
        Assert.True(gzBytes < 2048 * compressed.Summary.Steps, $"{gzBytes / (double)compressed.Summary.Steps:0} bytes per step");
        // no span writes an empty attribute list
        Assert.DoesNotContain("\"attributes\":[]", File.ReadAllText(Path.Combine(plain.Folder, TraceStore.Plain)));
    }

    [Fact]
    public void A_gzip_trace_cut_short_reads_up_to_its_last_whole_batch()
    {
        string path = Path.Combine(Root, "cut.jsonl.gz");
        using (var writer = TraceStore.OpenWriter(path))
        {
            writer.WriteLine("{\"first\":1}");
            writer.Flush(); // each batch is flushed, as the exporter does
            writer.WriteLine("{\"second\":" + new string('2', 5000) + "}");
            writer.Flush();
        }
        byte[] whole = File.ReadAllBytes(path);
        Assert.Equal(["{\"first\":1}", "{\"second\":" + new string('2', 5000) + "}"], TraceStore.ReadLines(path));
        // a process killed while writing the second batch: every cut keeps the first line, never half of the second
        for (int cut = whole.Length - 1; cut > 20; cut -= 7)
        {
            File.WriteAllBytes(path, whole[..cut]);
            var lines = TraceStore.ReadLines(path).ToList();
            Assert.True(lines.Count <= 2 && (lines.Count == 0 || lines[0] == "{\"first\":1}"), $"cut at {cut}: {lines.Count} lines");
            if (lines.Count == 2) Assert.EndsWith("}", lines[1]);
        }
        // appended members (a cluster node's spans) read as one file
        File.WriteAllBytes(path, whole);
        TraceStore.Append(path, "{\"third\":3}\n");
        Assert.Equal(3, TraceStore.ReadLines(path).Count());
    }

    [Fact]
    public void Summarize_names_a_folder_without_a_trace()
    {
        var e = Assert.Throws<Core.ActorTrainException>(() => TraceFile.Read(Root));
        Assert.Contains("no traces.jsonl", e.Message);
    }
}

/// <summary>
/// What a run's metrics file holds. The SDK's meter is process-wide, so a run beside it in the same
/// process would record into this run's histograms: these tests run alone (their collection is not
/// parallelised with the others). A user's process runs one run at a time.
/// </summary>
[Collection(SoloMetricsCollection.Name)]
public sealed class SoloMetricsTests() : TempFolderTest("actortrain-metrics-")
{
    /// <summary>
    /// Duration histograms are bucketed in seconds (not the SDK's millisecond defaults) and written
    /// with their bounds, counts and temporality: a 0.1-0.3 ms step lands in a sub-millisecond bucket.
    /// </summary>
    [Fact]
    public async Task Metrics_file_histograms_have_second_buckets_counts_and_temporality()
    {
        var result = await ExperimentRunner.RunAsync(ExperimentSpec.Load(null, [.. TelemetryTests.TwoWorkerBsp, "simulation.compute-time=100us"]), Root);
        string last = File.ReadAllLines(Path.Combine(result.Folder, "metrics.jsonl"))[^1];
        using var doc = System.Text.Json.JsonDocument.Parse(last);
        var metrics = doc.RootElement.GetProperty("resourceMetrics")[0].GetProperty("scopeMetrics")[0].GetProperty("metrics").EnumerateArray()
            .ToDictionary(m => m.GetProperty("name").GetString()!);
        var step = metrics["actortrain.step.duration"].GetProperty("histogram");
        Assert.Equal(2, step.GetProperty("aggregationTemporality").GetInt32());
        foreach (var point in step.GetProperty("dataPoints").EnumerateArray())
        {
            double[] bounds = point.GetProperty("explicitBounds").EnumerateArray().Select(b => b.GetDouble()).ToArray();
            long[] counts = point.GetProperty("bucketCounts").EnumerateArray().Select(c => long.Parse(c.GetString()!, CultureInfo.InvariantCulture)).ToArray();
            Assert.Equal(Cluster.Telemetry.RunTelemetry.SecondsBuckets, bounds);
            Assert.Equal(bounds.Length + 1, counts.Length);
            long total = long.Parse(point.GetProperty("count").GetString()!, CultureInfo.InvariantCulture);
            Assert.Equal(total, counts.Sum());
            // the median step's bucket: its upper bound is under a millisecond (the defaults gave 5 s)
            long seen = 0;
            int median = Array.FindIndex(counts, c => (seen += c) * 2 >= total);
            Assert.InRange(bounds[median], 1e-4, 1e-3);
        }
        Assert.Equal(2, metrics["actortrain.staleness"].GetProperty("histogram").GetProperty("aggregationTemporality").GetInt32());
        // counters that stayed at zero are there, at zero
        foreach (string counter in new[] { "actortrain.pushes.dropped", "actortrain.pushes.skipped" })
            Assert.All(metrics[counter].GetProperty("sum").GetProperty("dataPoints").EnumerateArray(), p => Assert.Equal("0", p.GetProperty("asInt").GetString()));
    }
}

[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class SoloMetricsCollection
{
    public const string Name = "solo-metrics";
}
