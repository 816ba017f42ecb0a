using System.CommandLine;
using ActorTrain.Cluster.Actors;
using ActorTrain.Compute;
using ActorTrain.Compute.Ilgpu;
using ActorTrain.Core;
using ActorTrain.Experiments;
using Spectre.Console;

namespace ActorTrain.Cli;

/// <summary>
/// The `actortrain` command. Exit codes: 0 success (a diverged run too), 130 interrupted (SIGINT/SIGTERM; results so far kept), 2 bad input (configuration, data files, output
/// folder, command line), 1 failure during the run. Errors are one line, without a stack trace
/// (set ACTORTRAIN_DEBUG=1 to get it).
/// </summary>
public static class ActorTrainCommand
{
    public const int Ok = 0, RunFailed = 1, BadInput = 2, Interrupted = 130;

    public static async Task<int> RunAsync(string[] args, TextWriter stdout, TextWriter stderr)
    {
        bool terminal = stdout == Console.Out && !Console.IsOutputRedirected;
        var console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Out = new AnsiConsoleOutput(stdout),
            Ansi = terminal ? AnsiSupport.Detect : AnsiSupport.No,
            Interactive = terminal ? InteractionSupport.Detect : InteractionSupport.No,
        });
        // Redirected output (a log, CI) is read whole: no wrapping of the tables at 80 columns.
        if (!terminal) console.Profile.Width = 200;
        var root = new RootCommand("ActorTrain: actor-based simulation of data-parallel cluster training.");

        var experiment = new Argument<string?>("experiment")
        {
            Description = "Experiment file (.conf); omitted: the embedded quickstart (hocon/experiments/quickstart.conf).",
            Arity = ArgumentArity.ZeroOrOne,
        };
        var set = new Option<string[]>("--set")
        {
            Description = "Override a key of the experiment, e.g. --set optimizer.learning-rate=0.05 (repeatable).",
            AllowMultipleArgumentsPerToken = false,
        };
        var outDir = new Option<string?>("--out") { Description = "Parent folder of the run folder (default: output.directory, \"runs\")." };
        var exporter = new Option<string?>("--exporter") { Description = "Where spans and metrics go: file (traces.jsonl.gz and metrics.jsonl in the run folder; the default) | otlp | console | none, or a list: \"[file, otlp]\"." };
        var endpoint = new Option<string?>("--otlp-endpoint") { Description = "OTLP collector, e.g. http://localhost:4318 (what `actortrain dashboard` prints); implies --exporter otlp unless the exporter is named." };
        string[] Overrides(ParseResult parse)
        {
            var list = new List<string>(parse.GetValue(set) ?? []);
            if (parse.GetValue(exporter) is { } e) list.Add($"telemetry.exporter={e}");
            if (parse.GetValue(endpoint) is { } u)
            {
                list.Add($"telemetry.endpoint=\"{u}\"");
                // the endpoint implies the otlp exporter, unless the exporter is named (--exporter, or a --set of it)
                if (parse.GetValue(exporter) is null && !list.Any(o => o.TrimStart().StartsWith("telemetry.exporter", StringComparison.Ordinal)))
                    list.Add("telemetry.exporter=otlp");
            }
            return list.ToArray();
        }
        var nodes = new Option<int>("--nodes")
        {
            Description = "Run across N local processes on loopback (this one is the coordinator; a third of the others ps nodes, the rest worker nodes). 1: one process (the default).",
            DefaultValueFactory = _ => 1,
        };
        var clusterConfig = new Option<string?>("--cluster-config") { Description = "Cluster settings over the embedded hocon/cluster.conf (ports, failure detector, TLS, chunk size)." };
        var resume = new Option<string?>("--resume") { Description = "Go on with the run in this folder from its last checkpoint (training.checkpoint-every), into a new folder name-resumed-... (with --nodes: on a local cluster)." };
        var checkpoint = new Option<long?>("--checkpoint") { Description = "With --resume: the step of the checkpoint to go on from (default: the last)." };
        var run = new Command("run", "Train an experiment on a coordinator, parameter-server shards and workers; write the run folder.")
        {
            experiment, set, outDir, exporter, endpoint, nodes, clusterConfig, resume, checkpoint,
        };
        run.SetAction((parse, token) => Guard(stderr, () => parse.GetValue(checkpoint) is { } step && parse.GetValue(resume) is null
            ? throw new ActorTrainException($"--checkpoint {step} picks a checkpoint of the run given with --resume <run-dir>; add --resume")
            : parse.GetValue(resume) is { } folder
            ? Resume(folder, parse.GetValue(checkpoint), parse.GetValue(experiment), parse.GetValue(nodes), parse.GetValue(clusterConfig), Overrides(parse),
                parse.GetValue(outDir), console, stdout, stderr, token)
            : Run(parse.GetValue(experiment), Overrides(parse), parse.GetValue(outDir), parse.GetValue(nodes), parse.GetValue(clusterConfig), console, stdout, stderr, token)));

        var role = new Option<string>("--role") { Description = "coordinator (runs the experiment), ps (hosts shards) or worker (hosts workers).", Required = true };
        var nodeConfig = new Option<string?>("--config") { Description = "Cluster settings over the embedded hocon/cluster.conf." };
        var seed = new Option<string[]>("--seed") { Description = "A seed node as host:port (repeatable; replaces akka.cluster.seed-nodes).", AllowMultipleArgumentsPerToken = false };
        var port = new Option<int?>("--port") { Description = "Port this node listens on (default: akka.remote.dot-netty.tcp.port; 0 = any free port)." };
        var insecure = new Option<bool>("--insecure")
        {
            Description = "Listen beyond loopback without TLS (refused otherwise: anyone who reaches the port could send messages to the run).",
        };
        var node = new Command("node", "Start one node of a multi-node run. The coordinator runs the experiment once its ps and worker nodes are Up; every node leaves the cluster at the end.")
        {
            experiment, role, nodeConfig, seed, port, insecure, set, outDir, exporter, endpoint,
        };
        node.SetAction((parse, token) => Guard(stderr, () => Node(parse.GetValue(role)!, parse.GetValue(experiment), parse.GetValue(nodeConfig),
            parse.GetValue(seed) ?? [], parse.GetValue(port), parse.GetValue(insecure), Overrides(parse), parse.GetValue(outDir), console, stdout, stderr, token)));

        var sweepFile = new Argument<string>("experiment") { Description = "Experiment file (.conf) with a sweep block, or any experiment with --values." };
        var values = new Option<string[]>("--values")
        {
            Description = "Sweep a key over values, e.g. --values optimizer.learning-rate=0.01,0.05,0.1 (repeatable; adds to or replaces sweep.values).",
            AllowMultipleArgumentsPerToken = false,
        };
        var sweep = new Command("sweep", "Run every point of the experiment's sweep (grid or random sample) into one folder with a results table, plots and report.md.")
        {
            sweepFile, values, set, outDir, exporter, endpoint,
        };
        sweep.SetAction((parse, token) => Guard(stderr, () =>
            Sweep(parse.GetValue(sweepFile)!, parse.GetValue(values) ?? [], Overrides(parse), parse.GetValue(outDir), console, stdout, stderr, token)));

        var tuneFile = new Argument<string?>("experiment")
        {
            Description = "Experiment file (.conf) whose tune block says what to search; omitted: the embedded quickstart.",
            Arity = ArgumentArity.ZeroOrOne,
        };
        var tune = new Command("tune", "Hyperparameter search: learning rate (with warm-up), then batch size, judged on a validation split; the chosen setting then runs on the test split.")
        {
            tuneFile, set, outDir,
        };
        tune.SetAction((parse, token) => Guard(stderr, () => Tune(parse.GetValue(tuneFile), parse.GetValue(set) ?? [], parse.GetValue(outDir), console, stdout, token)));

        var validateFile = new Argument<string>("experiment") { Description = "Experiment file (.conf) to check." };
        var validate = new Command("validate", "Check an experiment file (keys, values, data) without training.") { validateFile, set };
        validate.SetAction((parse, token) => Guard(stderr, () => Task.FromResult(Validate(parse.GetValue(validateFile)!, parse.GetValue(set) ?? [], console, stderr))));

        var devices = new Command("devices", "List the accelerators ILGPU sees and the engine compute.engine = auto picks.");
        devices.SetAction((parse, token) => Guard(stderr, () => Task.FromResult(Devices(console))));

        root.Subcommands.Add(run);
        root.Subcommands.Add(node);
        root.Subcommands.Add(sweep);
        root.Subcommands.Add(tune);
        root.Subcommands.Add(TraceCommand(console, stdout, stderr));
        root.Subcommands.Add(Dashboard.Command(stdout, stderr, Guard));
        root.Subcommands.Add(ExportCommand(stdout, stderr));
        root.Subcommands.Add(validate);
        root.Subcommands.Add(devices);

        var result = root.Parse(args);
        if (result.Errors.Count > 0 && result.CommandResult.Command == root && !args.Contains("--help") && !args.Contains("-h"))
        {
            string commands = string.Join(", ", root.Subcommands.Select(c => c.Name));
            stderr.WriteLine(args.Length == 0 || args[0].StartsWith('-')
                ? $"error: no command given; use one of {commands} (actortrain --help)"
                : $"error: unknown command '{args[0]}'; use one of {commands} (actortrain --help)");
            return BadInput;
        }
        if (result.Errors.Count > 0)
        {
            foreach (var error in result.Errors) stderr.WriteLine($"error: {error.Message}");
            stderr.WriteLine("Try 'actortrain --help'.");
            return BadInput;
        }
        return await result.InvokeAsync(new InvocationConfiguration { Output = stdout, Error = stderr, EnableDefaultExceptionHandler = false });
    }

    private static async Task<int> Guard(TextWriter stderr, Func<Task<int>> action)
    {
        try
        {
            return await action();
        }
        catch (RunFailedWithCheckpointException e)
        {
            stderr.WriteLine($"run failed: {e.Message}");
            Debug(stderr, e);
            return RunFailed;
        }
        catch (Exception e) when (Find<RunFailedException>(e) is { } failed)
        {
            stderr.WriteLine($"run failed: {failed.Message}{Kept(e)}");
            Debug(stderr, e);
            return RunFailed;
        }
        catch (Exception e) when (Find<ActorTrainException>(e) is { } user)
        {
            stderr.WriteLine($"error: {user.Message}");
            Debug(stderr, e);
            return BadInput;
        }
        catch (OperationCanceledException)
        {
            stderr.WriteLine("cancelled: no run folder was kept");
            return RunFailed;
        }
        catch (Exception e)
        {
            var inner = e is AggregateException { InnerException: { } i } ? i : e;
            stderr.WriteLine($"run failed: {inner.GetType().Name}: {inner.Message.Split('\n')[0]}{Kept(e)}");
            Debug(stderr, e);
            return RunFailed;
        }
    }

    /// <summary>"; what it wrote is kept in F" for a run whose folder was kept as failed.</summary>
    private static string Kept(Exception e) => e.Data[ExperimentRunner.KeptFolderKey] is string folder ? $"; what it wrote is kept in {folder}" : "";

    private static T? Find<T>(Exception? e) where T : Exception
    {
        for (; e is not null; e = e.InnerException)
            if (e is T t) return t;
        return null;
    }

    private static void Warn(TextWriter stderr, ExperimentSpec spec)
    {
        foreach (string warning in spec.Warnings) stderr.WriteLine($"warning: {warning}");
    }

    private static void Debug(TextWriter stderr, Exception e)
    {
        if (Environment.GetEnvironmentVariable("ACTORTRAIN_DEBUG") == "1") stderr.WriteLine(e);
    }

    private static async Task<int> Run(string? file, string[] overrides, string? outDir, int nodes, string? clusterConfig, IAnsiConsole console,
        TextWriter stdout, TextWriter stderr, CancellationToken token)
    {
        if (file is not null && file.StartsWith('-'))
            throw new ActorTrainException($"unknown option '{file}'; see 'actortrain run --help'");
        var spec = ExperimentSpec.Load(file, overrides);
        Warn(stderr, spec);
        if (nodes > 1) return await RunOnLocalCluster(spec, nodes, clusterConfig, outDir, console, stdout, stderr, token);
        if (nodes < 1) throw new ActorTrainException($"--nodes {nodes}: use 1 (one process) or 3 and more");
        if (spec.Variants.Count > 0) return await Compare(spec, outDir, console, stdout, stderr, token);
        var result = await RunOne(spec, (observer, t) => ExperimentRunner.RunAsync(spec, outDir, observer, t), console, stdout, stderr, token);
        return PrintSummary(console, result, stderr);
    }

    private static async Task<int> Resume(string folder, long? step, string? file, int nodes, string? clusterConfig, string[] overrides, string? outDir,
        IAnsiConsole console, TextWriter stdout, TextWriter stderr, CancellationToken token)
    {
        if (file is not null) throw new ActorTrainException("--resume: the experiment is the run folder's config.conf; give no experiment file");
        if (overrides.Length > 0) throw new ActorTrainException("--resume: a resumed run keeps its config; --set and the telemetry options are not taken");
        var resumption = Resumption.Read(folder, step);
        outDir ??= Path.GetDirectoryName(Path.GetFullPath(folder));
        if (nodes > 1)
            return await RunOnLocalCluster(resumption.Spec, nodes, clusterConfig, outDir, console, stdout, stderr, token,
                (cluster, observer, t) => ClusterRunner.ResumeAsync(folder, step, cluster.CoordinatorOptions, outDir, observer, t, cluster.Launch));
        if (nodes < 1) throw new ActorTrainException($"--nodes {nodes}: use 1 (one process) or 3 and more");
        var result = await RunOne(resumption.Spec, (observer, t) => ExperimentRunner.ResumeAsync(folder, step, outDir, observer, t), console, stdout, stderr, token);
        return PrintSummary(console, result, stderr);
    }

    private static async Task<int> RunOnLocalCluster(ExperimentSpec spec, int nodes, string? clusterConfig, string? outDir, IAnsiConsole console,
        TextWriter stdout, TextWriter stderr, CancellationToken token, Func<LocalCluster, IRunObserver, CancellationToken, Task<RunResult>>? runner = null)
    {
        runner ??= (cluster, observer, t) => ClusterRunner.RunAsync(spec, cluster.CoordinatorOptions, outDir, observer, t, cluster.Launch);
        string root = outDir ?? spec.Output.Directory;
        var cluster = LocalCluster.Plan(nodes, spec, typeof(ActorTrainCommand).Assembly.Location, clusterConfig,
            Path.Combine(root, $".{spec.Name}-nodes-{Environment.ProcessId}"));
        console.MarkupLine($"cluster on loopback: coordinator (this process, seed 127.0.0.1:{cluster.SeedPort}), {cluster.PsNodes} ps and {cluster.WorkerNodes} worker node(s); logs in {Markup.Escape(cluster.LogFolder)}");
        RunResult result;
        try
        {
            result = await RunOne(spec, (observer, t) => runner(cluster, observer, t), console, stdout, stderr, token);
        }
        catch
        {
            cluster.KillAll();
            await cluster.DisposeAsync();
            throw;
        }
        await cluster.DisposeAsync();
        cluster.MoveLogs(result.Folder);
        return PrintSummary(console, result, stderr);
    }

    private static async Task<int> Node(string role, string? file, string? clusterConfig, string[] seeds, int? port, bool insecure, string[] overrides, string? outDir,
        IAnsiConsole console, TextWriter stdout, TextWriter stderr, CancellationToken token)
    {
        var options = new ClusterNodeOptions(role, clusterConfig, port, seeds, Insecure: insecure);
        if (role != "coordinator")
        {
            if (file is not null) throw new ActorTrainException($"--role {role}: only the coordinator takes an experiment (it sends it to the other nodes)");
            ClusterRunner.LoadConfig(options); // bad settings fail here, before the node starts
            stdout.WriteLine($"{role} node starting; it serves until the coordinator's run is over");
            await ClusterRunner.ServeAsync(options, token);
            stdout.WriteLine($"{role} node left the cluster");
            return Ok;
        }
        var spec = ExperimentSpec.Load(file, overrides);
        Warn(stderr, spec);
        var result = await RunOne(spec, (observer, t) => ClusterRunner.RunAsync(spec, options, outDir, observer, t), console, stdout, stderr, token);
        return PrintSummary(console, result, stderr);
    }

    private static async Task<int> Sweep(string file, string[] values, string[] overrides, string? outDir, IAnsiConsole console, TextWriter stdout,
        TextWriter stderr, CancellationToken token)
    {
        var swept = values.Select(v =>
        {
            int eq = v.IndexOf('=');
            if (eq <= 0 || eq == v.Length - 1)
                throw new ActorTrainException($"--values {v}: expected key=value1,value2,..., e.g. --values optimizer.learning-rate=0.01,0.1");
            var items = v[(eq + 1)..].Split(',', StringSplitOptions.TrimEntries);
            if (items.Any(i => i.Length == 0)) throw new ActorTrainException($"--values {v}: an empty value between commas");
            return $"{ConfigReader.SweepValues}.{v[..eq].Trim()}=[{string.Join(", ", items.Select(Hocon))}]";
        }).ToArray();
        var spec = ExperimentSpec.Load(file, [.. overrides, .. swept]);
        Warn(stderr, spec);
        if (spec.Sweep.Values.Count == 0)
            throw new ActorTrainException($"{file}: no sweep: add sweep.values {{ key = [a, b] }} to the file or --values key=a,b to the command");
        console.MarkupLine(Markup.Escape(FormattableString.Invariant(
            $"sweep over {string.Join(" x ", spec.Sweep.Values.Select(v => $"{v.Key} ({v.Values.Length})"))}: {spec.Variants.Count} of {spec.Sweep.GridSize} points")));
        return await Compare(spec, outDir, console, stdout, stderr, token);
    }

    private static Command TraceCommand(IAnsiConsole console, TextWriter stdout, TextWriter stderr)
    {
        var source = new Argument<string>("run") { Description = "A run folder (its traces.jsonl.gz or traces.jsonl) or an OTLP JSON trace file, plain or gzip." };
        var summarize = new Command("summarize", "Time breakdown per role and per worker (compute, compress, network, wait), stragglers ranked, the critical path of the slowest BSP step.")
        {
            source,
        };
        summarize.SetAction((parse, token) => Guard(stderr, () =>
        {
            stdout.Write(Experiments.Telemetry.TraceFile.SummarizeFolder(parse.GetValue(source)!));
            return Task.FromResult(Ok);
        }));
        var exportSource = new Argument<string>("run") { Description = "A run folder (its traces.jsonl.gz or traces.jsonl) or an OTLP JSON trace file, plain or gzip." };
        var format = new Option<string>("--format") { Description = "chrome: Trace Event JSON for Perfetto (ui.perfetto.dev) and chrome://tracing.", DefaultValueFactory = _ => "chrome" };
        var output = new Option<string?>("--output", "-o") { Description = "File to write (default: trace.chrome.json beside the trace)." };
        var export = new Command("export", "Convert a run's trace for a trace viewer.") { exportSource, format, output };
        export.SetAction((parse, token) => Guard(stderr, () =>
        {
            if (parse.GetValue(format) != "chrome") throw new ActorTrainException($"--format {parse.GetValue(format)}: the only format is chrome");
            string from = parse.GetValue(exportSource)!;
            var trace = Experiments.Telemetry.TraceFile.Read(from);
            string to = parse.GetValue(output) ?? Path.Combine(Directory.Exists(from) ? from : Path.GetDirectoryName(Path.GetFullPath(from))!, "trace.chrome.json");
            string partial = to + ".partial";
            try
            {
                using (var file = File.Create(partial)) trace.WriteChrome(file);
                File.Move(partial, to, overwrite: true);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                File.Delete(partial);
                throw new ActorTrainException($"--output {to}: cannot write ({e.Message})", e);
            }
            stdout.WriteLine($"wrote {to} ({trace.Spans.Count} spans): open it at https://ui.perfetto.dev or chrome://tracing");
            return Task.FromResult(Ok);
        }));
        return new Command("trace", "Inspect a run's OpenTelemetry trace.") { summarize, export };
    }

    private static Command ExportCommand(TextWriter stdout, TextWriter stderr)
    {
        var source = new Argument<string>("run") { Description = "A run folder." };
        var format = new Option<string>("--format") { Description = "npz: NumPy arrays, one per layer's weight and bias (numpy.load).", DefaultValueFactory = _ => "npz" };
        var checkpoint = new Option<long?>("--checkpoint") { Description = "The step of one of the run's checkpoints (default: the final weights, the run's weights.npz)." };
        var output = new Option<string?>("--output", "-o") { Description = "File to write (default: weights-step<N>.npz in the run folder; with no checkpoint, a copy of weights.npz)." };
        var export = new Command("export", "Write a run's weights for other tools: the final ones or a checkpoint's.") { source, format, checkpoint, output };
        export.SetAction((parse, token) => Guard(stderr, () =>
        {
            if (parse.GetValue(format) != "npz") throw new ActorTrainException($"--format {parse.GetValue(format)}: the only format is npz");
            string run = parse.GetValue(source)!;
            if (!Directory.Exists(run)) throw new ActorTrainException($"{run}: run folder not found");
            string written;
            if (parse.GetValue(checkpoint) is { } step) written = Resumption.ExportCheckpoint(run, step, parse.GetValue(output));
            else
            {
                string final = Path.Combine(run, NpzWriter.WeightsFile);
                if (!File.Exists(final))
                    throw new ActorTrainException($"{run}: no {NpzWriter.WeightsFile} (a workload has no weights; a run of an earlier build wrote none: use --checkpoint N if it kept checkpoints)");
                written = parse.GetValue(output) is { } to ? CopyTo(final, to) : final;
            }
            stdout.WriteLine(written);
            return Task.FromResult(Ok);
        }));
        return export;

        static string CopyTo(string from, string to)
        {
            File.Copy(from, to, overwrite: true);
            return to;
        }
    }

    private static async Task<int> Tune(string? file, string[] overrides, string? outDir, IAnsiConsole console, TextWriter stdout, CancellationToken token)
    {
        if (file is not null && file.StartsWith('-')) throw new ActorTrainException($"unknown option '{file}'; see 'actortrain tune --help'");
        var result = await HyperparameterSearch.RunAsync(file, overrides, outDir, name =>
        {
            stdout.WriteLine($"== {name}");
            return null;
        }, token);
        var table = new Table().Title("[bold]hyperparameter search[/] (validation split)");
        foreach (string h in new[] { "stage", "candidate", "learning rate", "batch", "steps", "validation loss", "validation accuracy" }) table.AddColumn(h);
        foreach (var c in result.Candidates)
            table.AddRow(Markup.Escape(c.Stage), Markup.Escape(c.Name + (c == result.Best ? " (chosen)" : "")), FormattableString.Invariant($"{c.LearningRate}"),
                c.BatchSize.ToString(System.Globalization.CultureInfo.InvariantCulture), c.Steps.ToString(System.Globalization.CultureInfo.InvariantCulture),
                FormattableString.Invariant($"{c.ValidationLoss:0.0000}"), FormattableString.Invariant($"{c.ValidationAccuracy:0.0000}"));
        console.Write(table);
        var s = result.Final.Summary;
        console.WriteLine(FormattableString.Invariant(
            $"chosen: learning rate {result.Best.LearningRate}, batch {result.Best.BatchSize}; on the test split: loss {s.FinalTestLoss:0.0000}, accuracy {s.FinalTestAccuracy:0.0000}"));
        console.WriteLine($"results: {result.Folder} (report.md, tune.csv, best.conf, a folder per candidate, best/)");
        return Ok;
    }

    /// <summary>A command-line value as HOCON: numbers and plain words as they are, anything else quoted.</summary>
    private static string Hocon(string value) =>
        value.All(ch => char.IsLetterOrDigit(ch) || ch is '.' or '-' or '_') ? value : "\"" + value.Replace("\\", "\\\\").Replace("\"", "\\\"") + "\"";

    private static async Task<int> Compare(ExperimentSpec spec, string? outDir, IAnsiConsole console, TextWriter stdout, TextWriter stderr, CancellationToken token)
    {
        console.MarkupLine($"[bold]{Markup.Escape(spec.Name)}[/]: comparing {spec.Variants.Count} variants: {Markup.Escape(string.Join(", ", spec.Variants.Select(v => v.Name)))}");
        var result = await ExperimentRunner.RunComparisonAsync(spec, outDir, variant =>
        {
            stdout.WriteLine($"== {variant.Name}: {variant.Spec.Sync.Describe()}, {variant.Spec.Compression.Describe()}");
            return new ProgressObserver(p => stdout.WriteLine(Line(p)), steps => stdout.WriteLine($"training for up to {steps} steps"), w => stderr.WriteLine($"{variant.Name}: {w}"));
        }, token);
        var c = result.Comparison;
        var table = new Table().Title($"[bold]{Markup.Escape(c.Name)}[/]" + (c.TargetLoss is { } t ? FormattableString.Invariant($" (target test loss {t})") : ""));
        // workloads have no loss: their column is the time per step
        bool workloads = c.Rows.Count > 0 && c.Rows.All(r => double.IsNaN(r.FinalTestAccuracy));
        // a sweep's rows differ by the swept keys: a column each (their last segment), as in comparison.md
        var swept = spec.Sweep.Values.Count > 0 ? c.ParameterKeys : [];
        table.AddColumn(new TableColumn("variant").NoWrap());
        foreach (string key in swept) table.AddColumn(key[(key.LastIndexOf('.') + 1)..] is var last && last is "policy" or "compression" or "updates" ? key : last);
        foreach (string h in new[] { "policy", "compression", "updates", $"time to target ({c.Clock})", "updates to target", workloads ? $"per step ({c.Clock})" : "final test loss",
                     "mean / max staleness", "mean wait", "MB worker->shard", "ratio vs fp32" })
            table.AddColumn(h);
        // K-FAC's factor contributions, apart from the gradients
        bool factors = c.Rows.Any(r => r.FactorBytesWorkerToShard > 0);
        if (factors) table.AddColumn("factor MB");
        // each variant's target accuracy: the time and steps to reach it
        bool accuracy = c.Rows.Any(r => r.TargetAccuracy is not null);
        if (accuracy)
        {
            table.AddColumn($"time to accuracy ({c.Clock})");
            table.AddColumn("steps to accuracy");
        }
        foreach (var r in c.Rows)
            table.AddRow([Markup.Escape(r.Variant), .. swept.Select(k => Markup.Escape(r.Parameters.FirstOrDefault(p => p.Key == k).Value ?? "")), Markup.Escape(r.Policy), Markup.Escape(r.Compression), r.Updates.ToString(System.Globalization.CultureInfo.InvariantCulture),
                r.SecondsToTargetLoss is { } s ? Core.Simulation.Quantity.FormatSeconds(s) : r.TargetLoss is null ? "-" : "not reached",
                r.UpdatesToTargetLoss?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "-",
                workloads ? (r.Steps > 0 ? Core.Simulation.Quantity.FormatSeconds(r.ElapsedSeconds / r.Steps) : "-")
                    : r.StopReason == "diverged" ? FormattableString.Invariant($"{r.FinalTestLoss} (diverged)") : FormattableString.Invariant($"{r.FinalTestLoss:0.0000}"),
                FormattableString.Invariant($"{r.MeanStaleness:0.00} / {r.MaxStaleness}"),
                Core.Simulation.Quantity.FormatSeconds(r.MeanWaitSeconds), FormattableString.Invariant($"{r.BytesWorkerToShard / 1e6:0.00}"),
                FormattableString.Invariant($"{r.UplinkRatio:0.0}x"), .. (factors ? [FormattableString.Invariant($"{r.FactorBytesWorkerToShard / 1e6:0.00}")] : Array.Empty<string>()),
                .. (accuracy ? [Accuracy(r, r.SecondsToTargetAccuracy is { } sa ? Core.Simulation.Quantity.FormatSeconds(sa) : null),
                                Accuracy(r, r.StepsToTargetAccuracy?.ToString(System.Globalization.CultureInfo.InvariantCulture))] : Array.Empty<string>())]);
        console.Write(table);
        console.WriteLine($"results: {result.Folder} (comparison.md, comparison.csv, summary.json, a folder per variant)");
        return result.Folder.EndsWith("-interrupted", StringComparison.Ordinal) ? Interrupted : Ok;
    }

    /// <summary>A comparison cell about the target accuracy: the value, "not reached", or "-" without a target.</summary>
    private static string Accuracy(ComparisonRow r, string? reached) => reached ?? (r.TargetAccuracy is null ? "-" : "not reached");

    private static async Task<RunResult> RunOne(ExperimentSpec spec, Func<IRunObserver, CancellationToken, Task<RunResult>> runner, IAnsiConsole console,
        TextWriter stdout, TextWriter stderr, CancellationToken token)
    {
        // warnings wait for the progress display to end, then go to stderr
        var warnings = new List<string>();
        // The banner waits for the run to start: an error in the data or the output folder is then the only line printed.
        string layout = spec.Parallelism is { Active: true } p
            ? $"{spec.Topology.Workers} replica(s) of a {p.Stages}-stage pipeline ({p.MicroBatches} micro-batches, {(p.Schedule == Core.Pipeline.PipelineScheduleKind.OneFOneB ? "1f1b" : "gpipe")})"
            : $"{spec.Topology.Workers} workers, {spec.Topology.DescribeAggregation()}";
        void Banner() => console.MarkupLine($"[bold]{Markup.Escape(spec.Name)}[/]: {layout}, {Markup.Escape(spec.Sync.Describe())}, " +
                                            $"{Markup.Escape(spec.Optimizer.Kind.ToString().ToLowerInvariant())}, {spec.Precision.Mode.ToString().ToLowerInvariant()}");
        RunResult result;
        if (console.Profile.Capabilities.Interactive)
        {
            // fits 80 columns: a short description, a 20-wide bar, the percentage and the elapsed time
            result = await console.Progress()
                .Columns(new TaskDescriptionColumn(), new ProgressBarColumn { Width = 20 }, new PercentageColumn(), new ElapsedTimeColumn())
                .StartAsync(async ctx =>
                {
                    var task = ctx.AddTask("starting", maxValue: 1);
                    var observer = new ProgressObserver(p =>
                    {
                        task.Description = Markup.Escape(ShortLine(p));
                        task.Value = p.Step;
                    }, max => task.MaxValue = max, warnings.Add);
                    Banner();
                    return await runner(observer, token);
                });
        }
        else
        {
            var observer = new ProgressObserver(p => stdout.WriteLine(Line(p)), steps =>
            {
                Banner();
                stdout.WriteLine($"training for up to {steps} steps");
            }, warnings.Add);
            result = await runner(observer, token);
        }
        foreach (string warning in warnings) stderr.WriteLine(warning);
        return result;
    }

    /// <summary>The live progress bar's description: at most about 35 characters.</summary>
    private static string ShortLine(EvaluationPoint p) => double.IsNaN(p.TestAccuracy)
        ? FormattableString.Invariant($"step {p.Step}  {Core.Simulation.Quantity.FormatSeconds(p.ElapsedSeconds)}")
        : FormattableString.Invariant($"step {p.Step}  loss {p.TestLoss:0.000}  acc {p.TestAccuracy:0.000}");

    private static string Line(EvaluationPoint p) => double.IsNaN(p.TestAccuracy)
        // a workload (sizes only): no loss, the time and throughput are the result
        ? FormattableString.Invariant($"step {p.Step,6}  {p.SamplesProcessed,12:N0} samples  {Core.Simulation.Quantity.FormatSeconds(p.ElapsedSeconds),9}")
        : FormattableString.Invariant($"step {p.Step,6}  epoch {p.Epoch,6:0.00}  test loss {p.TestLoss,8:0.0000}  test acc {p.TestAccuracy,6:0.0000}  {Core.Simulation.Quantity.FormatSeconds(p.ElapsedSeconds),9}");

    private sealed class ProgressObserver(Action<EvaluationPoint> onPoint, Action<double> onStart, Action<string> onWarning) : IRunObserver
    {
        public void OnStart(long plannedSteps) => onStart(plannedSteps);
        public void OnEvaluation(EvaluationPoint point) => onPoint(point);
        public void OnWarning(string warning) => onWarning(warning);
    }

    /// <summary>Prints the summary table; the exit code: 0, or 130 for a run the user interrupted.</summary>
    private static int PrintSummary(IAnsiConsole console, RunResult result, TextWriter stderr)
    {
        if (result.Summary.StopReason == "interrupted")
            stderr.WriteLine($"interrupted at step {result.Summary.Steps}: what was done is kept in {result.Folder}");
        if (result.Summary.StopReason == "diverged")
            stderr.WriteLine(FormattableString.Invariant(
                $"warning: the run diverged: test loss {result.Summary.FinalTestLoss} at step {result.Summary.Steps}; it stopped there and its results are kept in {result.Folder} (try a smaller optimizer.learning-rate)"));
        var s = result.Summary;
        var table = new Table().Title("[bold]run summary[/]").AddColumn("").AddColumn("");
        void Row(string k, string v) => table.AddRow(Markup.Escape(k), Markup.Escape(v));
        Row("model", s.Model);
        Row("data", $"{s.Dataset}: {s.TrainRows} train / {s.TestRows} test rows");
        Row("topology", s.Pipeline is { } p
            ? FormattableString.Invariant($"{(s.Workers > 1 ? $"{s.Workers} replicas of a " : "a ")}pipeline of {p.Stages} stages (layers {string.Join(" | ", p.StageLayers)}), batch {s.BatchSizePerWorker} in {p.MicroBatches} micro-batches, {p.Schedule}; bubble {p.BubbleFraction:0.###} (uniform stages: {p.UniformBubbleFraction:0.###})")
            : $"{s.Workers} workers x batch {s.BatchSizePerWorker}, {s.Shards} shards, {s.Policy}");
        Row("engine", $"{s.Engine}, {s.Precision}");
        Row("stopped by", s.StopReason);
        Row("steps / epochs", FormattableString.Invariant($"{s.Steps} / {s.Epochs:0.00}"));
        Row("clock", s.Clock);
        Row("network", s.Network.Description);
        Row("elapsed", s.Clock.StartsWith("virtual", StringComparison.Ordinal)
            ? FormattableString.Invariant($"{s.ElapsedSeconds:0.####} virtual s ({s.SamplesPerSecond:0} samples/virtual s), simulated in {s.WallSeconds:0.0} s")
            : FormattableString.Invariant($"{s.ElapsedSeconds:0.0} s ({s.SamplesPerSecond:0} samples/s)"));
        if (double.IsNaN(s.FinalTestAccuracy))
            Row("final test loss / accuracy", "none: a workload has sizes, not values (model.type = workload)");
        else
        {
            Row("final test loss", FormattableString.Invariant($"{s.FinalTestLoss:0.0000}"));
            Row("final test accuracy", FormattableString.Invariant($"{s.FinalTestAccuracy:0.0000} (best {s.BestTestAccuracy:0.0000})"));
        }
        Row("compression", s.Compression);
        Row("bytes worker->shard", FormattableString.Invariant($"{s.BytesWorkerToShard / 1e6:0.00} MB ({s.UplinkCompressionRatio:0.0}x smaller than dense fp32)"));
        Row("bytes shard->worker", FormattableString.Invariant($"{s.BytesShardToWorker / 1e6:0.00} MB ({s.DownlinkCompressionRatio:0.0}x)"));
        Row("skipped gradients (non-finite)", s.SkippedGradients.ToString(System.Globalization.CultureInfo.InvariantCulture));
        Row("updates / staleness", FormattableString.Invariant($"{s.Updates} updates, staleness mean {s.MeanStaleness:0.00}, max {s.MaxStaleness}"));
        if (s.Network.Retransmissions + s.Network.Lost + s.Network.LostToStoppedActors > 0)
            Row("network faults", FormattableString.Invariant(
                $"{s.Network.Retransmissions} retransmissions, {s.Network.DuplicatesDiscarded} duplicates discarded, {s.Network.Lost} lost, {s.Network.LostToStoppedActors} to killed workers"));
        // the busiest few workers, so a 1024-worker run does not print 1024 entries
        var shown = s.WorkerTimes.Count <= 8 ? s.WorkerTimes : s.WorkerTimes.OrderByDescending(w => w.ComputeSeconds).Take(8).ToList();
        Row(s.WorkerTimes.Count <= 8 ? "compute / comm / wait" : "compute / comm / wait (8 busiest)", string.Join("  ", shown.Select(w => FormattableString.Invariant(
            $"w{w.Worker}{(w.Slowdown > 1 ? $"(x{w.Slowdown:0.#})" : "")}{(w.Kills > 0 ? $"(killed {w.Kills}x)" : "")}: {Core.Simulation.Quantity.FormatSeconds(w.ComputeSeconds)}/{Core.Simulation.Quantity.FormatSeconds(w.CommunicationSeconds)}/{Core.Simulation.Quantity.FormatSeconds(w.WaitSeconds)}"))));
        if (s.LostWorkers is { Count: > 0 } lost)
            Row("lost workers", $"{string.Join(", ", lost)} (their node left the cluster; the run went on without them)");
        Row("results", result.Folder);
        console.Write(table);
        return result.Summary.StopReason == "interrupted" ? Interrupted : Ok;
    }

    private static int Validate(string file, string[] overrides, IAnsiConsole console, TextWriter stderr)
    {
        var spec = ExperimentSpec.Load(file, overrides);
        Warn(stderr, spec);
        var data = ExperimentData.Build(spec);
        var engine = new GradientEngineFactory(spec.Compute.Engine, spec.EngineThreads);
        if (data.Model.SizesOnly)
        {
            console.WriteLine(FormattableString.Invariant(
                $"{file}: ok. {data.Model.Describe()}; {spec.Topology.Workers} workers x batch {spec.Training.BatchSize}, {spec.Topology.DescribeAggregation()}; {data.Steps(spec)} steps; overlap {spec.Training.Overlap.ToString().ToLowerInvariant()}; no values held (messages carry sizes)"));
            return Ok;
        }
        var p = spec.Parallelism;
        string topology = p.Active
            ? $"{(spec.Topology.Workers > 1 ? $"{spec.Topology.Workers} replicas of " : "")}a pipeline of {p.Stages} stage(s), {p.MicroBatches} micro-batch(es), {(p.Schedule == Core.Pipeline.PipelineScheduleKind.OneFOneB ? "1f1b" : "gpipe")}"
            : $"{spec.Topology.Workers} workers, {spec.Topology.DescribeAggregation()}";
        console.WriteLine(FormattableString.Invariant(
            $"{file}: ok. {data.Model.Describe()}; {data.Train.Count} train / {data.Test.Count} test rows; {topology}; {data.Steps(spec)} steps; engine {engine.Name}; about {ExperimentData.EstimateBytes(spec, data.Model.ParameterCount, ((long)data.Train.Count + data.Test.Count) * data.Train.FeatureCount) / 1e6:0.#} MB in one process"));
        if (spec.Optimizer.Kind == Core.Optimization.OptimizerKind.Kfac) console.WriteLine(DescribeKfac(spec, data.Model));
        if (spec.Parallelism.Active)
            foreach (var m in ExperimentData.StageMemory(spec, data.Model))
                console.WriteLine(FormattableString.Invariant(
                    $"stage {m.Stage}: layers {m.Layers}, {m.Parameters:N0} parameters, {m.ParameterBytes / 1e6:0.###} MB of weights, gradient and optimizer state, {m.ActivationBytes / 1e6:0.###} MB of activations ({m.PeakMicroBatches} micro-batch(es) at its peak)"));
        return Ok;
    }

    /// <summary>`validate` on a K-FAC run: which layers each shard owns, the factor bytes a worker sends, what the shards hold.</summary>
    internal static string DescribeKfac(ExperimentSpec spec, Core.Models.ModelSpec model)
    {
        var k = spec.Optimizer.Kfac;
        var shards = Core.Models.ParameterSharding.ByLayer(model, spec.Topology.Shards)
            .Select(r => Core.Optimization.KfacFactors.InRange(model, r.Start, r.Length)).ToList();
        long packed = shards.Sum(layers => (long)layers.Sum(l => l.PackedLength));
        // running A and G and their inverses, in double
        long held = shards.Sum(layers => layers.Sum(l => 2L * 8 * ((long)l.ADim * l.ADim + (long)l.GDim * l.GDim)));
        return FormattableString.Invariant(
            $"K-FAC: {string.Join(", ", shards.Select((layers, s) => $"shard {s} layers {string.Join('+', layers.Select(l => l.Index))}"))}; ") +
            FormattableString.Invariant(
            $"each worker sends {4 * packed / 1e6:0.###} MB of factors every {k.FactorEvery} step(s) beside {4L * model.ParameterCount / 1e6:0.###} MB of gradient; the shards hold {held / 1e6:0.#} MB of factors and inverses, inverted every {k.InverseEvery} step(s)");
    }

    private static int Devices(IAnsiConsole console)
    {
        var table = new Table().AddColumn("accelerator").AddColumn("type").AddColumn("memory").AddColumn("multiprocessors");
        foreach (var d in IlgpuDevices.List())
        {
            // ILGPU's CPU accelerator reports long.MaxValue-class memory: the machine's is what it can use
            long bytes = d.Type == ILGPU.Runtime.AcceleratorType.CPU ? GC.GetGCMemoryInfo().TotalAvailableMemoryBytes : d.MemoryBytes;
            table.AddRow(Markup.Escape(d.Name), d.Type.ToString(), FormattableString.Invariant($"{bytes / (1024.0 * 1024 * 1024):0.0} GiB"), d.Multiprocessors.ToString(System.Globalization.CultureInfo.InvariantCulture));
        }
        console.Write(table);
        console.WriteLine($"compute.engine = auto picks: {new GradientEngineFactory("auto").Name}");
        return Ok;
    }
}
