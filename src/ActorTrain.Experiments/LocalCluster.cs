using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using ActorTrain.Core;

namespace ActorTrain.Experiments;

/// <summary>A node process of a <see cref="LocalCluster"/>: its role, index and the process itself.</summary>
public sealed record NodeProcess(int Index, string Role, Process Process, string LogFile);

/// <summary>
/// `run --nodes N` on one machine: this process is the coordinator and seed, and N - 1 child
/// processes (`actortrain node --role ps|worker --seed 127.0.0.1:port`) join it on loopback. Of the
/// children, one in three (at least one, at most one per shard) are ps nodes and the rest worker
/// nodes; in a pipeline run all but one are ps nodes holding the stages (at most one per stage) and
/// the last holds the replicas' drivers. Each child's output goes to node-i-role.log in the log folder. Disposing waits a little
/// for the children to leave the cluster on their own, then kills what is left.
/// </summary>
public sealed class LocalCluster : IAsyncDisposable
{
    private readonly List<NodeProcess> _nodes = [];
    private readonly List<Task> _pumps = [];

    private readonly string _cli;
    private readonly string? _clusterConfig;

    private LocalCluster(int seedPort, int psNodes, int workerNodes, string logFolder, string cli, string? clusterConfig)
    {
        _cli = cli;
        _clusterConfig = clusterConfig;
        SeedPort = seedPort;
        PsNodes = psNodes;
        WorkerNodes = workerNodes;
        LogFolder = logFolder;
    }

    public int SeedPort { get; }
    public int PsNodes { get; }
    public int WorkerNodes { get; }
    public string LogFolder { get; }
    public IReadOnlyList<NodeProcess> Nodes => _nodes;

    /// <summary>The coordinator's options: this process, the seed, waiting for the children.</summary>
    public ClusterNodeOptions CoordinatorOptions => new("coordinator", _clusterConfig, SeedPort, [$"127.0.0.1:{SeedPort}"], PsNodes, WorkerNodes);

    /// <param name="cli">How to start the command: the ActorTrain.Cli assembly (run with the dotnet host) or its apphost.</param>
    /// <summary>Plans the nodes (roles, seed port); <see cref="Launch"/> starts them once the coordinator listens.</summary>
    public static LocalCluster Plan(int nodes, ExperimentSpec spec, string cli, string? clusterConfig, string logFolder)
    {
        ClusterRunner.RefuseWhatNeedsOneProcess(spec);
        // all-reduce has no parameter servers: every node but the coordinator is a worker node
        bool allReduce = spec.Topology.AllReduce;
        if (nodes < (allReduce ? 2 : 3))
            throw new ActorTrainException(allReduce
                ? $"--nodes {nodes}: an all-reduce cluster run needs at least 2 nodes (coordinator, worker)"
                : $"--nodes {nodes}: a cluster run needs at least 3 nodes (coordinator, ps, worker)");
        int children = nodes - 1;
        // a pipeline's stages do the computing (on the ps nodes) and its drivers only feed them: one
        // worker node for the drivers, every other node a stage node, at most one per stage
        bool pipeline = spec.Parallelism.Active;
        int ps = allReduce ? 0 : pipeline ? Math.Min(children - 1, spec.LinkShards) : Math.Clamp(children / 3, 1, spec.Topology.Shards);
        int workers = children - ps;
        if (workers > spec.Topology.Workers)
            throw new ActorTrainException(pipeline
                ? $"--nodes {nodes}: {ps} stage nodes for {spec.LinkShards} pipeline stages (parallelism.pipeline-stages x topology.workers) and {workers} worker nodes for {spec.Topology.Workers} driver(s); use at most {spec.LinkShards + spec.Topology.Workers + 1} nodes"
                : $"--nodes {nodes}: {workers} worker nodes for {spec.Topology.Workers} workers (topology.workers); use fewer nodes or more workers");
        return new LocalCluster(FreePort(), ps, workers, logFolder, cli, clusterConfig);
    }

    /// <summary>Starts the child processes (call when the coordinator listens on the seed port).</summary>
    public void Launch()
    {
        Directory.CreateDirectory(LogFolder);
        try
        {
            for (int i = 1; i <= PsNodes + WorkerNodes; i++) Launch(i, i <= PsNodes ? "ps" : "worker");
        }
        catch
        {
            KillAll();
            throw;
        }
    }

    private void Launch(int index, string role)
    {
        string cli = _cli;
        string? clusterConfig = _clusterConfig;
        bool assembly = cli.EndsWith(".dll", StringComparison.OrdinalIgnoreCase);
        var start = new ProcessStartInfo(assembly ? DotnetHost() : cli)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        if (assembly) start.ArgumentList.Add(cli);
        foreach (string arg in new[] { "node", "--role", role, "--seed", $"127.0.0.1:{SeedPort}" }) start.ArgumentList.Add(arg);
        if (clusterConfig is not null)
        {
            start.ArgumentList.Add("--config");
            start.ArgumentList.Add(Path.GetFullPath(clusterConfig));
        }
        var process = Process.Start(start) ?? throw new ActorTrainException($"cannot start node {index} ({start.FileName})");
        string log = Path.Combine(LogFolder, $"node-{index}-{role}.log");
        var writer = new StreamWriter(log) { AutoFlush = true };
        _pumps.Add(Task.WhenAll(Pump(process.StandardOutput, writer), Pump(process.StandardError, writer)).ContinueWith(_ => writer.Dispose()));
        _nodes.Add(new NodeProcess(index, role, process, log));
    }

    private static async Task Pump(StreamReader from, StreamWriter to)
    {
        while (await from.ReadLineAsync() is { } line)
            lock (to) to.WriteLine(line);
    }

    /// <summary>The dotnet host this process runs on (tests run under it too), or the one on PATH.</summary>
    public static string DotnetHost() =>
        Path.GetFileNameWithoutExtension(Environment.ProcessPath) == "dotnet" ? Environment.ProcessPath! : "dotnet";

    /// <summary>A port nothing listens on now (the OS's choice for port 0).</summary>
    public static int FreePort()
    {
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        return port;
    }

    /// <summary>Ends every child now (the run failed: nobody will tell them the run is over).</summary>
    public void KillAll()
    {
        foreach (var node in _nodes)
        {
            try
            {
                if (!node.Process.HasExited) node.Process.Kill(entireProcessTree: true);
            }
            catch (InvalidOperationException)
            {
                // exited meanwhile
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        using var grace = new CancellationTokenSource(TimeSpan.FromSeconds(15));
        try
        {
            await Task.WhenAll(_nodes.Select(n => n.Process.WaitForExitAsync(grace.Token)));
        }
        catch (OperationCanceledException)
        {
            KillAll();
        }
        await Task.WhenAll(_pumps);
        foreach (var node in _nodes) node.Process.Dispose();
        _nodes.Clear();
    }

    /// <summary>Moves the node logs into <paramref name="runFolder"/>/nodes (after disposal: the children have exited).</summary>
    public void MoveLogs(string runFolder)
    {
        string target = Path.Combine(runFolder, "nodes");
        Directory.CreateDirectory(target);
        if (!Directory.Exists(LogFolder)) return;
        foreach (string log in Directory.GetFiles(LogFolder, "*.log")) File.Move(log, Path.Combine(target, Path.GetFileName(log)), overwrite: true);
        Directory.Delete(LogFolder, recursive: true);
    }
}
