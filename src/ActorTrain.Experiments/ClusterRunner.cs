using System.Diagnostics;
using System.Security.Cryptography.X509Certificates;
using ActorTrain.Cluster.Actors;
using ActorTrain.Cluster.Remoting;
using ActorTrain.Cluster.Transport;
using ActorTrain.Compute;
using ActorTrain.Core;
using Akka.Actor;
using Akka.Actor.Setup;
using Akka.Cluster;
using Akka.Configuration;
using Akka.Remote.Transport.DotNetty;

namespace ActorTrain.Experiments;

/// <summary>How one node starts: its role, the cluster file over the embedded hocon/cluster.conf, its port and seeds.</summary>
/// <param name="Insecure">Listen on a non-loopback address without TLS (refused otherwise: anyone who reaches the port could send to the run).</param>
public sealed record ClusterNodeOptions(string Role, string? ConfigFile = null, int? Port = null, IReadOnlyList<string>? Seeds = null,
    int? PsNodes = null, int? WorkerNodes = null, bool Insecure = false)
{
    public static readonly string[] Roles = ["coordinator", "ps", "worker"];
}

/// <summary>
/// Multi-node runs on Akka.Cluster (DESIGN.md section 4; docs/architecture.md "Cluster"). The
/// coordinator node runs the experiment as <see cref="ExperimentRunner"/> does, except that its
/// shards and workers are built by the ps and worker nodes' <see cref="NodeHost"/>s; ps and worker
/// nodes just serve until the run is over and then leave the cluster.
/// </summary>
public static class ClusterRunner
{
    public const string SystemName = "actortrain";

    /// <summary>Where the coordinator listens unless told otherwise: the seed of hocon/cluster.conf.</summary>
    public const int DefaultCoordinatorPort = 4053;

    /// <summary>Runs the experiment as the coordinator of a cluster: waits for the members, places the run, writes the results, leaves.</summary>
    /// <param name="listening">Called once this node listens (a local cluster starts its children then, so they find the seed at once).</param>
    public static Task<RunResult> RunAsync(ExperimentSpec spec, ClusterNodeOptions options, string? outputRoot = null, IRunObserver? observer = null,
        CancellationToken cancellation = default, Action? listening = null) =>
        Run(spec, options, listening, cancellation, host =>
        {
            string root = outputRoot ?? spec.Output.Directory;
            return ExperimentRunner.RunInto(spec, ExperimentData.Build(spec, oneProcess: false), root, $"{spec.Name}-{ExperimentRunner.Stamp()}",
                observer, cancellation, host);
        });

    /// <summary>Goes on with a run folder from one of its checkpoints on a cluster (as <see cref="ExperimentRunner.ResumeAsync"/> does in one process).</summary>
    public static Task<RunResult> ResumeAsync(string runFolder, long? step, ClusterNodeOptions options, string? outputRoot = null,
        IRunObserver? observer = null, CancellationToken cancellation = default, Action? listening = null)
    {
        var resumption = Resumption.Read(runFolder, step);
        return Run(resumption.Spec, options, listening, cancellation, host => ExperimentRunner.Resume(resumption, outputRoot, observer, cancellation, host));
    }

    /// <summary>What a cluster run (run --nodes, a cluster file) cannot take, refused before any node starts.</summary>
    public static void RefuseWhatNeedsOneProcess(ExperimentSpec spec)
    {
        if (spec.Faults.Count > 0)
            throw new ActorTrainException("faults: injected faults are for single-process runs; in a cluster run, stop a node's process instead");
        if (spec.Network.Fabric.Shares && !spec.Simulation.Virtual)
            throw new ActorTrainException("fabric.topology: a sharing fabric on the wall clock needs one process (each node's link would see only its own flows); " +
                "use simulation.clock = virtual for cluster runs on a fabric");
        if (spec.Variants.Count > 0)
            throw new ActorTrainException("compare/sweep: a cluster run takes one experiment; run the variants one at a time");
        if (spec.Model.IsWorkload)
            throw new ActorTrainException($"model.type = workload: a workload has sizes, not values, so there is nothing for other processes to compute; run it in one process (without --nodes or a cluster file)");
    }

    private static async Task<RunResult> Run(ExperimentSpec spec, ClusterNodeOptions options, Action? listening, CancellationToken cancellation,
        Func<ITopologyHost, Task<RunResult>> run)
    {
        RefuseWhatNeedsOneProcess(spec);
        var config = LoadConfig(options with { Role = "coordinator" });
        using var system = CreateSystem(config, options.Role);
        var host = new CoordinatorHost(system, config);
        try
        {
            listening?.Invoke();
            await host.WaitForMembers(cancellation);
            return await run(host);
        }
        finally
        {
            await host.EndRun();
            await CoordinatedShutdown.Get(system).Run(CoordinatedShutdown.ClusterLeavingReason.Instance);
        }
    }

    /// <summary>The node's gateway: it hears current members of the cluster only.</summary>
    private static IActorRef CreateGateway(ActorSystem system, Config config)
    {
        return system.ActorOf(Gateway.Props(config.GetInt("actortrain.cluster.chunk-size"), MaxMessageSize(config), a => Membership.Admits(system, a)), "gateway");
    }

    /// <summary>Serves as a ps or worker node until the run is over (or the coordinator leaves); returns once this node has left.</summary>
    public static async Task ServeAsync(ClusterNodeOptions options, CancellationToken cancellation = default)
    {
        if (options.Role is not ("ps" or "worker"))
            throw new ActorTrainException($"--role: '{options.Role}' is not a serving role; use ps or worker (the coordinator runs an experiment)");
        var config = LoadConfig(options);
        var system = CreateSystem(config, options.Role);
        var gateway = CreateGateway(system, config);
        system.ActorOf(NodeHost.Props(BuildPart, gateway), "node");
        using var registration = cancellation.Register(() => CoordinatedShutdown.Get(system).Run(CoordinatedShutdown.ClrExitReason.Instance));
        var up = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Akka.Cluster.Cluster.Get(system).RegisterOnMemberUp(() => up.TrySetResult());
        var timeout = config.GetTimeSpan("actortrain.cluster.join-timeout");
        if (await Task.WhenAny(up.Task, system.WhenTerminated, Task.Delay(timeout, cancellation).ContinueWith(_ => { }, TaskScheduler.Default)) != up.Task
            && !system.WhenTerminated.IsCompleted && !cancellation.IsCancellationRequested)
        {
            await system.Terminate();
            var seeds = config.GetStringList("akka.cluster.seed-nodes");
            throw new RunFailedException($"this {options.Role} node did not join the cluster at {string.Join(", ", seeds)} within {timeout.TotalSeconds:0} s " +
                "(actortrain.cluster.join-timeout): is the coordinator running there?" +
                (config.GetBoolean("actortrain.cluster.tls.enabled")
                    ? " TLS is on: a refused TLS handshake (a certificate the others do not trust, or TLS off on their side) looks like this"
                    : " If the cluster uses TLS, this node needs actortrain.cluster.tls too"));
        }
        await system.WhenTerminated;
    }

    /// <summary>A ps or worker node's share of a run, derived from the run's resolved config exactly as one process would.</summary>
    private static HostedPart BuildPart(HostRun request, IRoute route)
    {
        var spec = ExperimentSpec.Parse(request.Config, "the coordinator's experiment", []);
        var data = ExperimentData.Build(spec, oneProcess: false);
        var settings = ExperimentRunner.CoordinatorSettings(spec, data, request.Resume);
        var epoch = new DateTimeOffset(request.EpochTicks, TimeSpan.Zero);
        ILink link = spec.Simulation.Virtual
            ? new RemoteClockLink(request.Clock ?? throw new ActorTrainException("a virtual-clock run came without the scheduler's address"), epoch, route)
            : ExperimentRunner.CreateLink(spec, route, epoch);
        var engines = new GradientEngineFactory(spec.Compute.Engine, spec.EngineThreads);
        // a pipeline's stages stand where shards stand (stage-grid index k = r x P + s) and its replicas' drivers where workers stand
        int stages = spec.Parallelism.Stages;
        var actors = (request.Role, spec.Parallelism.Active) switch
        {
            ("ps", false) => request.Ids.Select(k => ($"shard-{k}", Coordinator.ShardProps(settings, k, link, request.Coordinator), Core.Simulation.Endpoint.Shard(k))),
            ("ps", true) => request.Ids.Select(k => (PipelineStage.ActorName(k / stages, k % stages, spec.Topology.Workers), Coordinator.StageProps(settings, k % stages, link, request.Coordinator, k / stages),
                Core.Simulation.Endpoint.Shard(k))),
            (_, false) => request.Ids.Select(w => ($"worker-{w}", Coordinator.WorkerProps(settings, w, engines, link, request.Coordinator, request.Shards),
                Core.Simulation.Endpoint.Worker(w))),
            (_, true) => request.Ids.Select(r => (PipelineDriver.ActorName(r, spec.Topology.Workers), Coordinator.DriverProps(settings, r, link, request.Coordinator), Core.Simulation.Endpoint.Worker(r))),
        };
        return new HostedPart(link, actors.ToList(), NodeTelemetry(spec, request.Role));
    }

    /// <summary>
    /// A node's spans and metrics: exported from the node itself (otlp, console), or, with the file
    /// exporter, recorded in a temporary folder and handed back at the end for the coordinator to
    /// add to the run folder, so `trace summarize` sees every node.
    /// </summary>
    private static Func<(string Traces, string Metrics)>? NodeTelemetry(ExperimentSpec spec, string role)
    {
        string folder = Directory.CreateTempSubdirectory("actortrain-node-").FullName;
        var session = Telemetry.TelemetrySession.StartForNode(spec.Telemetry, folder, "actortrain-" + role,
            new Dictionary<string, object> { ["actortrain.experiment"] = spec.Name, ["actortrain.role"] = role });
        bool finished = false;
        return () =>
        {
            lock (folder)
            {
                if (finished) return ("", "");
                finished = true;
                session?.Dispose();
                if (session?.Delivery?.Warning is { } warning) Console.Error.WriteLine($"{role}: {warning}");
                string Read(string name) => File.Exists(Path.Combine(folder, name)) ? File.ReadAllText(Path.Combine(folder, name)) : "";
                var recorded = (Telemetry.TraceStore.Find(folder) is { } traces ? Telemetry.TraceStore.ReadAllText(traces) : "", Read(Telemetry.TelemetrySession.MetricsFile));
                Directory.Delete(folder, recursive: true);
                return recorded;
            }
        };
    }

    /// <summary>The embedded hocon/cluster.conf, under the user's file, under the command line's role, port and seeds.</summary>
    public static Config LoadConfig(ClusterNodeOptions options)
    {
        if (!ClusterNodeOptions.Roles.Contains(options.Role))
            throw new ActorTrainException($"--role: unknown role '{options.Role}'; use one of {string.Join(", ", ClusterNodeOptions.Roles)}");
        var config = ConfigurationFactory.ParseString(Embedded("cluster.conf"));
        if (options.ConfigFile is { } file)
        {
            if (!File.Exists(file)) throw new ActorTrainException($"--config: cluster file '{file}' not found");
            try
            {
                config = ConfigurationFactory.ParseString(File.ReadAllText(file)).WithFallback(config);
            }
            catch (Exception e) when (e is not ActorTrainException)
            {
                throw new ActorTrainException($"--config: cannot read '{file}' as HOCON: {e.Message}");
            }
        }
        bool tls = config.GetBoolean("actortrain.cluster.tls.enabled");
        var overrides = new List<string> { $"akka.cluster.roles = [{options.Role}]", $"akka.remote.dot-netty.tcp.enable-ssl = {(tls ? "on" : "off")}" };
        int listen = options.Port ?? config.GetInt("akka.remote.dot-netty.tcp.port");
        // the coordinator is the seed the others are told of
        if (options.Port is null && options.Role == "coordinator" && listen == 0) listen = DefaultCoordinatorPort;
        overrides.Add($"akka.remote.dot-netty.tcp.port = {listen}");
        string scheme = tls ? "akka.ssl.tcp" : "akka.tcp";
        string host = config.GetString("akka.remote.dot-netty.tcp.hostname", "127.0.0.1");
        CheckExposure(host, tls, options.Insecure);
        if (options.Seeds is { Count: > 0 } seeds)
            overrides.Add("akka.cluster.seed-nodes = [" + string.Join(", ", seeds.Select(s => $"\"{scheme}://{SystemName}@{CheckSeed(s)}\"")) + "]");
        else if (options.Role == "coordinator" && listen != 0)
            // no seeds given: the coordinator founds the cluster at its own address, whatever port it was given
            overrides.Add($"akka.cluster.seed-nodes = [\"{scheme}://{SystemName}@{host}:{listen}\"]");
        if (options.PsNodes is { } ps) overrides.Add($"actortrain.cluster.ps-nodes = {ps}");
        if (options.WorkerNodes is { } workers) overrides.Add($"actortrain.cluster.worker-nodes = {workers}");
        config = ConfigurationFactory.ParseString(string.Join("\n", overrides)).WithFallback(config)
            .WithFallback(ConfigurationFactory.ParseString(ExperimentRunner.ActorSystemConfig));
        Validate(config);
        return config;
    }

    /// <summary>Without TLS any process that reaches a node's port can send it messages: only loopback, unless the user says --insecure.</summary>
    private static void CheckExposure(string host, bool tls, bool insecure)
    {
        bool loopback = host is "localhost" || (System.Net.IPAddress.TryParse(host, out var ip) && System.Net.IPAddress.IsLoopback(ip));
        if (loopback || tls) return;
        if (!insecure)
            throw new ActorTrainException($"akka.remote.dot-netty.tcp.hostname = {host}: a node that listens beyond loopback without TLS takes messages from anyone who can reach it; " +
                "enable actortrain.cluster.tls (see hocon/cluster.conf) or, on a network you trust, pass --insecure");
        Console.Error.WriteLine($"warning: listening on {host} without TLS (--insecure): any process that reaches this port can send messages to the run");
    }

    private static string CheckSeed(string seed)
    {
        int colon = seed.LastIndexOf(':');
        if (colon <= 0 || !int.TryParse(seed[(colon + 1)..], out int port) || port is <= 0 or > 65535)
            throw new ActorTrainException($"--seed: '{seed}' is not host:port (e.g. 127.0.0.1:4053)");
        return seed;
    }

    private static void Validate(Config config)
    {
        int chunk = config.GetInt("actortrain.cluster.chunk-size");
        long frame = config.GetByteSize("akka.remote.dot-netty.tcp.maximum-frame-size") ?? 128000;
        if (chunk < 1024 || chunk > frame - 1024)
            throw new ActorTrainException($"actortrain.cluster.chunk-size = {chunk}: must be at least 1024 and at least 1 KiB below akka.remote.dot-netty.tcp.maximum-frame-size ({frame})");
        if (config.GetInt("actortrain.cluster.ps-nodes") < 0)
            throw new ActorTrainException($"actortrain.cluster.ps-nodes = {config.GetInt("actortrain.cluster.ps-nodes")}: must be 0 (all-reduce runs) or more");
        if (config.GetInt("actortrain.cluster.worker-nodes") < 1)
            throw new ActorTrainException($"actortrain.cluster.worker-nodes = {config.GetInt("actortrain.cluster.worker-nodes")}: a run needs at least one such node");
        if (config.GetBoolean("actortrain.cluster.tls.enabled") && string.IsNullOrWhiteSpace(config.GetString("actortrain.cluster.tls.certificate")))
            throw new ActorTrainException("actortrain.cluster.tls.certificate: TLS is enabled but no certificate (.pfx) is given");
    }

    private static int MaxMessageSize(Config config) =>
        (int)Math.Min(int.MaxValue, config.GetByteSize("actortrain.cluster.max-message-size") ?? WireSerializer.DefaultMaxMessageSize);

    /// <summary>An actor system on the cluster settings, with the wire serializer bound and TLS set up when enabled.</summary>
    public static ActorSystem CreateSystem(Config config, string role)
    {
        var setup = BootstrapSetup.Create().WithConfig(WireSerializer.Bindings.WithFallback(NodeSerializers.Config).WithFallback(config));
        if (config.GetBoolean("actortrain.cluster.tls.enabled")) return ActorSystem.Create(SystemName, ActorSystemSetup.Create(setup, Tls(config)));
        return ActorSystem.Create(SystemName, setup);
    }

    /// <summary>The node's certificate and whom it trusts: pinned thumbprints, or the machine's trust store when none are listed.</summary>
    private static DotNettySslSetup Tls(Config config)
    {
        string path = config.GetString("actortrain.cluster.tls.certificate");
        if (!File.Exists(path)) throw new ActorTrainException($"actortrain.cluster.tls.certificate: '{path}' not found");
        X509Certificate2 certificate;
        try
        {
            certificate = X509CertificateLoader.LoadPkcs12FromFile(path, config.GetString("actortrain.cluster.tls.password", ""),
                X509KeyStorageFlags.Exportable);
        }
        catch (System.Security.Cryptography.CryptographicException e)
        {
            throw new ActorTrainException($"actortrain.cluster.tls.certificate: cannot open '{path}' ({e.Message}); is actortrain.cluster.tls.password right?");
        }
        var thumbprints = config.GetStringList("actortrain.cluster.tls.trusted-thumbprints")?.ToArray() ?? [];
        bool mutual = config.GetBoolean("actortrain.cluster.tls.require-mutual-authentication", true);
        var validation = thumbprints.Length > 0 ? CertificateValidation.PinnedCertificate(thumbprints) : null;
        return new DotNettySslSetup(certificate, suppressValidation: false, requireMutualAuthentication: mutual, validateCertificateHostname: false,
            customValidator: validation);
    }

    internal static string Embedded(string name)
    {
        using var stream = typeof(ClusterRunner).Assembly.GetManifestResourceStream(name)
            ?? throw new InvalidOperationException($"embedded resource {name} is missing");
        return new StreamReader(stream).ReadToEnd();
    }

    /// <summary>
    /// The coordinator's side of a cluster run: waits until the ps and worker members are Up and
    /// every one of them has seen the others (<see cref="Membership.NotYetSeenBy"/>), places the run
    /// on them, and gives its topology host to <see cref="ExperimentRunner.RunInto"/>.
    /// </summary>
    private sealed class CoordinatorHost(ActorSystem system, Config config) : ITopologyHost
    {
        private readonly IActorRef _gateway = CreateGateway(system, config);
        private GatewayRoute Route => new(_gateway, Akka.Cluster.Cluster.Get(system).SelfAddress);
        private readonly List<IActorRef> _hosts = [];
        private IActorRef[] _ps = [], _workers = [];

        public async Task WaitForMembers(CancellationToken cancellation)
        {
            int psNodes = config.GetInt("actortrain.cluster.ps-nodes"), workerNodes = config.GetInt("actortrain.cluster.worker-nodes");
            var timeout = config.GetTimeSpan("actortrain.cluster.join-timeout");
            var cluster = Akka.Cluster.Cluster.Get(system);
            var deadline = Stopwatch.StartNew();
            while (true)
            {
                cancellation.ThrowIfCancellationRequested();
                var state = cluster.State;
                var up = state.Members.Where(m => m.Status == MemberStatus.Up).OrderBy(m => m.Address.ToString()).ToList();
                var ps = up.Where(m => m.HasRole("ps")).ToList();
                var workers = up.Where(m => m.HasRole("worker")).ToList();
                bool selfUp = up.Any(m => m.Address == cluster.SelfAddress);
                // every node of the run must know every other before the run starts, or the first frames between two of them can be
                // dropped as a stranger's (a member that hosts nothing, such as a process that joined uninvited, is not waited for)
                var unseen = Membership.NotYetSeenBy(ps.Concat(workers).Select(m => m.Address), state.SeenBy);
                if (selfUp && ps.Count >= psNodes && workers.Count >= workerNodes && unseen.Count == 0)
                {
                    _ps = ps.Select(m => Resolve(m.Address)).ToArray();
                    _workers = workers.Select(m => Resolve(m.Address)).ToArray();
                    _hosts.AddRange(_ps.Concat(_workers));
                    // a member that joined but hosts nothing (any process can join without TLS) is not heard
                    _gateway.Tell(new Gateway.HearOnly(HostNodes));
                    return;
                }
                if (deadline.Elapsed > timeout)
                    throw new RunFailedException($"the cluster did not form within {timeout.TotalSeconds:0} s (actortrain.cluster.join-timeout): " +
                        $"{ps.Count} of {psNodes} ps and {workers.Count} of {workerNodes} worker nodes are Up, this node is {(selfUp ? "Up" : "not Up")}" +
                        (unseen.Count > 0 ? $", and {string.Join(", ", unseen)} had not yet seen the others join" : "") + "; " +
                        $"are the nodes started with --seed {cluster.SelfAddress.Host}:{cluster.SelfAddress.Port}?" +
                        (config.GetBoolean("actortrain.cluster.tls.enabled") ? " TLS is on: a node whose certificate is not trusted here (actortrain.cluster.tls.trusted-thumbprints) is refused at the handshake, see its log" : ""));
                await Task.Delay(100, cancellation);
            }
        }

        /// <summary>The nodes the run is placed on.</summary>
        private HashSet<Address> HostNodes => [.. _hosts.Select(h => h.Path.Address)];

        private IActorRef Resolve(Address address) => ((ExtendedActorSystem)system).Provider.ResolveActorRef(new RootActorPath(address) / "user" / "node");

        public async Task<RunOutcome> Run(ExperimentSpec spec, Coordinator.Settings settings, GradientEngineFactory engines, IRunObserver observer,
            string folder, CancellationToken cancellation)
        {
            var route = Route;
            var link = ExperimentRunner.CreateLink(spec, route);
            var hosts = HostNodes;
            var clock = link is VirtualLink virtualLink
                ? system.ActorOf(ClockEndpoint.Props(virtualLink, a => hosts.Contains(a) && Membership.Admits(system, a)), "clock")
                : null;
            _gateway.Tell(new Gateway.UseEventLink(link));
            if (spec.Topology.AllReduce != (_ps.Length == 0))
                throw new ActorTrainException(spec.Topology.AllReduce
                    ? $"topology.aggregation = {spec.Topology.Aggregation} has no shards, but {_ps.Length} ps node(s) joined: set actortrain.cluster.ps-nodes = 0"
                    : "topology.aggregation = ps needs a ps node, and actortrain.cluster.ps-nodes = 0");
            var placement = new ClusterPlacement(system, route, spec.ResolvedConfig, _ps, _workers, spec.LinkShards, spec.Topology.Workers, clock, link.Epoch,
                config.GetTimeSpan("actortrain.cluster.host-timeout"), settings.Resume);
            try
            {
                return await ExperimentRunner.RunCoordinator(system, settings with { Placement = placement }, engines, link, observer, cancellation);
            }
            finally
            {
                if (clock is not null) system.Stop(clock);
            }
        }

        /// <summary>With the file exporter, every node's spans and metrics join the coordinator's in the run folder.</summary>
        public async Task Finish(string folder, ExperimentSpec spec)
        {
            // a lost node has nothing to give; the run's results stand without its spans
            var up = Akka.Cluster.Cluster.Get(system).State.Members.Where(m => m.Status == MemberStatus.Up).Select(m => m.Address).ToHashSet();
            var replies = await Task.WhenAll(_hosts.Where(h => up.Contains(h.Path.Address)).Select(async host =>
            {
                try
                {
                    return await GatewayAsk.Ask(system, Route, host, CollectTelemetry.Instance, TimeSpan.FromSeconds(30)) as NodeTelemetry;
                }
                catch (AskTimeoutException)
                {
                    return null;
                }
            }));
            if (!spec.Telemetry.Has(Telemetry.TelemetryExporter.File)) return;
            foreach (var reply in replies.OfType<NodeTelemetry>())
            {
                if (spec.Telemetry.Traces) Telemetry.TraceStore.Append(Telemetry.TraceStore.PathIn(folder, spec.Telemetry.CompressTraces), reply.Traces);
                if (spec.Telemetry.Metrics) File.AppendAllText(Path.Combine(folder, Telemetry.TelemetrySession.MetricsFile), reply.Metrics);
            }
        }

        public async Task EndRun()
        {
            // from an actor of this node, through the gateways: a node hears EndRun from the coordinator alone, and a message
            // with no sender comes from deadLetters (every node dropped it, and left only when it saw this node go)
            var route = Route;
            foreach (var host in _hosts) route.Tell(host, Cluster.Remoting.EndRun.Instance, _gateway);
            // Give the hosts a moment to hear it before this node leaves; they also leave when they see the coordinator go.
            await Task.Delay(200);
        }
    }
}
