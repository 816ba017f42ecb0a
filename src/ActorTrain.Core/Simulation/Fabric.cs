namespace ActorTrain.Core.Simulation;

public enum FabricTopology
{
    /// <summary>Every (sender, receiver) pair is a link of its own (network.*): nothing is shared.</summary>
    None,
    /// <summary>One non-blocking switch; every host one full-duplex NIC.</summary>
    Switch,
    /// <summary>Hosts under leaves; a leaf's uplink to the spine carries hosts-per-leaf x NIC / oversubscription.</summary>
    LeafSpine,
}

/// <summary>fabric { ... }: the shared network hardware (see hocon/actortrain.conf).</summary>
public sealed record FabricSettings(
    FabricTopology Topology,
    double NicBytesPerSecond,
    double NicLatency,
    int HostsPerLeaf,
    double Oversubscription,
    double SpineLatency,
    double BusBytesPerSecond,
    double BusLatency)
{
    public static readonly FabricSettings None = new(FabricTopology.None, 1.25e9, 0, 1, 1, 0, 1e11, 0);

    public bool Shares => Topology != FabricTopology.None;
}

/// <summary>
/// placement { ... }: which host each worker and shard lives on. Worker w sits on host
/// w / workers-per-host; shards are <c>dedicated</c> (their own hosts after the workers',
/// shards-per-host to a host, as ps-lite's and BytePS's server machines) or <c>colocated</c>
/// (shard k on worker host k mod H).
/// </summary>
public sealed record Placement(int WorkersPerHost, bool DedicatedShards, int ShardsPerHost)
{
    public static readonly Placement OneWorkerPerHost = new(1, true, 1);

    public int WorkerHosts(int workers) => (workers + WorkersPerHost - 1) / WorkersPerHost;

    public int Hosts(int workers, int shards) => WorkerHosts(workers) + (DedicatedShards ? (shards + ShardsPerHost - 1) / ShardsPerHost : 0);

    public int HostOf(Endpoint e, int workers) => e.Kind switch
    {
        EndpointKind.Worker => e.Id / WorkersPerHost,
        EndpointKind.Shard => DedicatedShards ? WorkerHosts(workers) + e.Id / ShardsPerHost : e.Id % WorkerHosts(workers),
        _ => 0,
    };
}

/// <summary>
/// How a message crossed the fabric: its flow started at <paramref name="Started"/> and its last byte
/// left at <paramref name="LastByte"/>; alone on its path it would have taken <paramref name="Uncontended"/>
/// (size over the path's narrowest capacity), so the rest of that span was spent sharing bandwidth.
/// </summary>
public sealed record TransferTiming(double Started, double LastByte, double Uncontended)
{
    public double Queueing => Math.Max(0, LastByte - Started - Uncontended);
}

/// <summary>The resources a transfer crosses, in order, and the hop latency of that path.</summary>
public readonly record struct FabricPath(int[] Resources, double Latency);

/// <summary>
/// What one resource (a NIC direction, a leaf uplink or downlink, a host bus) carried over a run;
/// <paramref name="Timeline"/>: bytes carried in consecutive intervals of <paramref name="BucketSeconds"/> from time 0.
/// </summary>
public sealed record ResourceUsage(string Name, double Capacity, double Bytes, double BusySeconds, double BucketSeconds, double[] Timeline);

/// <summary>
/// Flow-level contention over the fabric (DESIGN.md 3a): a message is a flow over the resources
/// of its path, and the flows that share a resource share its capacity max-min fairly. Rates are
/// found by progressive filling (the resource with the smallest fair share fixes the rate of every
/// flow still open through it, which then leaves the others' shares) and recomputed whenever a
/// flow starts or ends, for the flows connected to it through shared resources only, as SimGrid's
/// and ASTRA-sim's congestion-aware models do. Pure and single-threaded: the caller (either
/// clock's link) calls in nondecreasing time and wakes it at <see cref="NextEnd"/>: one event for
/// the fabric, not one per flow whose end moved (an N-way incast moves N ends at every start).
/// </summary>
public sealed class Fabric
{
    private readonly FabricSettings _settings;
    private readonly Placement _placement;
    private readonly int _workers;
    private readonly string[] _names;
    private readonly double[] _capacity;
    private readonly double[] _carried, _busy, _busySince;
    private readonly List<Flow>[] _through;
    // bytes per resource per time bucket; the buckets double in width whenever the run outgrows them
    private const int Buckets = 128;
    private readonly double[][] _timeline;
    private double _bucketSeconds = 1e-4;
    private readonly HashSet<Flow> _active = [];
    // scratch of Recompute, reused: which resources and flows the current component holds
    private readonly int[] _resourceStamp;
    private readonly double[] _left;
    private readonly int[] _open;
    private readonly List<int> _openResources = [];
    private readonly List<Flow> _componentFlows = [];
    private readonly Stack<int> _pending = new();
    private int _stampNow;
    private int _nextFlow;
    private long _recomputations;

    /// <summary>A transfer in progress: bytes left at <see cref="Since"/>, sent at <see cref="Rate"/> bytes/s from then.</summary>
    public sealed class Flow(int id, int[] resources)
    {
        public readonly int Id = id;
        public readonly int[] Resources = resources;
        public double Remaining;
        public double Rate;
        public double Since;
        /// <summary>When it started, and what it would take alone on its path.</summary>
        public double Started, Uncontended;
        internal int Stamp;
        internal bool Fixed;

        /// <summary>When the last byte leaves at the current rate.</summary>
        public double End => Rate > 0 ? Since + Remaining / Rate : double.PositiveInfinity;
    }

    public Fabric(FabricSettings settings, Placement placement, int workers, int shards)
    {
        if (!settings.Shares) throw new ArgumentException("a fabric needs topology switch or leaf-spine", nameof(settings));
        _settings = settings;
        _placement = placement;
        _workers = workers;
        int hosts = placement.Hosts(workers, shards);
        int leaves = settings.Topology == FabricTopology.LeafSpine ? (hosts + settings.HostsPerLeaf - 1) / settings.HostsPerLeaf : 0;
        var names = new List<string>();
        var capacity = new List<double>();
        void Add(string name, double c)
        {
            names.Add(name);
            capacity.Add(c);
        }
        for (int h = 0; h < hosts; h++)
        {
            Add($"host-{h}.nic-out", settings.NicBytesPerSecond);
            Add($"host-{h}.nic-in", settings.NicBytesPerSecond);
            Add($"host-{h}.bus", settings.BusBytesPerSecond);
        }
        double uplink = settings.HostsPerLeaf * settings.NicBytesPerSecond / settings.Oversubscription;
        for (int l = 0; l < leaves; l++)
        {
            Add($"leaf-{l}.up", uplink);
            Add($"leaf-{l}.down", uplink);
        }
        _names = names.ToArray();
        _capacity = capacity.ToArray();
        _carried = new double[_names.Length];
        _busy = new double[_names.Length];
        _busySince = new double[_names.Length];
        _through = Enumerable.Range(0, _names.Length).Select(_ => new List<Flow>()).ToArray();
        _resourceStamp = new int[_names.Length];
        _timeline = Enumerable.Range(0, _names.Length).Select(_ => new double[Buckets]).ToArray();
        _left = new double[_names.Length];
        _open = new int[_names.Length];
        Hosts = hosts;
        Leaves = leaves;
    }

    public int Hosts { get; }
    public int Leaves { get; }

    /// <summary>Rate recomputations so far (one per instant at which flows started or ended): for the speed benchmark.</summary>
    public long Recomputations => _recomputations;

    private int NicOut(int host) => 3 * host;
    private int NicIn(int host) => 3 * host + 1;
    private int Bus(int host) => 3 * host + 2;
    private int LeafUp(int leaf) => 3 * Hosts + 2 * leaf;
    private int LeafDown(int leaf) => 3 * Hosts + 2 * leaf + 1;

    public int HostOf(Endpoint e) => _placement.HostOf(e, _workers);

    /// <summary>The path from one endpoint to another: the host bus inside a host; NICs (and leaf links across leaves) between hosts.</summary>
    public FabricPath Route(Endpoint from, Endpoint to)
    {
        int a = HostOf(from), b = HostOf(to);
        if (a == b) return new FabricPath([Bus(a)], _settings.BusLatency);
        if (_settings.Topology == FabricTopology.Switch) return new FabricPath([NicOut(a), NicIn(b)], _settings.NicLatency);
        int la = a / _settings.HostsPerLeaf, lb = b / _settings.HostsPerLeaf;
        if (la == lb) return new FabricPath([NicOut(a), NicIn(b)], _settings.NicLatency);
        return new FabricPath([NicOut(a), LeafUp(la), LeafDown(lb), NicIn(b)], _settings.NicLatency + _settings.SpineLatency);
    }

    /// <summary>Starts a flow of <paramref name="bytes"/> at <paramref name="now"/>; the flows sharing a resource with it slow down from now.</summary>
    public Flow Start(double now, FabricPath path, double bytes) => StartAll(now, [(path, bytes)])[0];

    /// <summary>
    /// Starts flows that begin at the same instant with one rate recomputation (N workers pushing
    /// at once would otherwise re-rate the whole incast N times).
    /// </summary>
    public IReadOnlyList<Flow> StartAll(double now, IReadOnlyList<(FabricPath Path, double Bytes)> transfers)
    {
        var flows = new Flow[transfers.Count];
        for (int i = 0; i < flows.Length; i++)
        {
            var (path, bytes) = transfers[i];
            var flow = flows[i] = new Flow(_nextFlow++, path.Resources)
            {
                Remaining = Math.Max(0, bytes), Since = now, Started = now, Uncontended = Math.Max(0, bytes) / path.Resources.Min(r => _capacity[r]),
            };
            _active.Add(flow);
            foreach (int r in flow.Resources)
            {
                if (_through[r].Count == 0) _busySince[r] = now;
                _through[r].Add(flow);
            }
        }
        Recompute(now, flows.SelectMany(f => f.Resources));
        return flows;
    }

    /// <summary>When the next flow ends at the current rates (infinity when none is active): the one time the caller needs to wake the fabric.</summary>
    public double NextEnd
    {
        get
        {
            double next = double.PositiveInfinity;
            foreach (var f in _active) next = Math.Min(next, f.End);
            return next;
        }
    }

    /// <summary>
    /// Ends every flow whose last byte has left by <paramref name="now"/> (within a picosecond: flows
    /// that end together must not wait for a rounding error), in the order they started; each end
    /// gives its bandwidth to the flows it shared a resource with.
    /// </summary>
    public IReadOnlyList<Flow> FinishDue(double now)
    {
        var done = new List<Flow>();
        while (true)
        {
            // every flow due now leaves at once, then one recomputation for all they shared
            var due = _active.Where(f => f.End <= now + 1e-12).OrderBy(f => f.Id).ToList();
            if (due.Count == 0) return done;
            foreach (var flow in due)
            {
                Progress(flow, now);
                flow.Remaining = 0;
                _active.Remove(flow);
                foreach (int r in flow.Resources)
                {
                    _through[r].Remove(flow);
                    if (_through[r].Count == 0) _busy[r] += now - _busySince[r];
                }
            }
            Recompute(now, due.SelectMany(f => f.Resources));
            done.AddRange(due);
        }
    }

    /// <summary>Bytes and busy time of every resource that carried anything, up to <paramref name="now"/>.</summary>
    public IReadOnlyList<ResourceUsage> Usage(double now) => Enumerable.Range(0, _names.Length)
        .Where(r => _carried[r] > 0 || _through[r].Count > 0)
        .Select(r => new ResourceUsage(_names[r], _capacity[r], _carried[r] + _through[r].Sum(f => f.Rate * (now - f.Since)),
            _busy[r] + (_through[r].Count > 0 ? now - _busySince[r] : 0), _bucketSeconds, (double[])_timeline[r].Clone()))
        .ToList();

    private void Progress(Flow flow, double now)
    {
        double sent = Math.Min(flow.Remaining, flow.Rate * (now - flow.Since));
        if (sent > 0)
        {
            // the bytes went at a constant rate over [since, since + sent / rate): spread them over the buckets they cross
            double from = flow.Since, to = flow.Since + sent / flow.Rate;
            while (to > Buckets * _bucketSeconds) Coarsen();
            for (int b = (int)(from / _bucketSeconds); b < Buckets && b * _bucketSeconds < to; b++)
            {
                double overlap = Math.Min(to, (b + 1) * _bucketSeconds) - Math.Max(from, b * _bucketSeconds);
                if (overlap <= 0) continue;
                foreach (int r in flow.Resources) _timeline[r][b] += overlap * flow.Rate;
            }
        }
        flow.Remaining -= sent;
        foreach (int r in flow.Resources) _carried[r] += sent;
        flow.Since = now;
    }

    /// <summary>Doubles the width of the timeline's buckets, merging neighbours.</summary>
    private void Coarsen()
    {
        foreach (var line in _timeline)
        {
            for (int b = 0; b < Buckets / 2; b++) line[b] = line[2 * b] + line[2 * b + 1];
            Array.Clear(line, Buckets / 2, Buckets / 2);
        }
        _bucketSeconds *= 2;
    }

    /// <summary>Max-min fair rates for the flows connected to the <paramref name="seeds"/> resources through shared resources (progressive filling).</summary>
    private void Recompute(double now, IEnumerable<int> seeds)
    {
        _recomputations++;
        int stamp = ++_stampNow;
        // the component: flows reachable from the seed resources through resources they share
        _componentFlows.Clear();
        _openResources.Clear();
        foreach (int r in seeds) _pending.Push(r);
        while (_pending.Count > 0)
        {
            int r = _pending.Pop();
            if (_resourceStamp[r] == stamp) continue;
            _resourceStamp[r] = stamp;
            _left[r] = _capacity[r];
            _open[r] = _through[r].Count;
            if (_open[r] > 0) _openResources.Add(r);
            foreach (var f in _through[r])
            {
                if (f.Stamp == stamp) continue;
                f.Stamp = stamp;
                _componentFlows.Add(f);
                foreach (int next in f.Resources)
                    if (_resourceStamp[next] != stamp) _pending.Push(next);
            }
        }
        foreach (var f in _componentFlows)
        {
            Progress(f, now);
            f.Fixed = false;
        }
        int fixedCount = 0;
        while (fixedCount < _componentFlows.Count)
        {
            // the tightest resource fixes every open flow through it at its fair share
            int tightest = -1;
            double share = double.PositiveInfinity;
            for (int i = 0; i < _openResources.Count; i++)
            {
                int r = _openResources[i];
                if (_open[r] == 0)
                {
                    _openResources[i--] = _openResources[^1];
                    _openResources.RemoveAt(_openResources.Count - 1);
                    continue;
                }
                double sh = Math.Max(0, _left[r]) / _open[r];
                if (sh < share || (sh == share && r < tightest))
                {
                    share = sh;
                    tightest = r;
                }
            }
            foreach (var f in _through[tightest])
            {
                if (f.Fixed) continue;
                f.Fixed = true;
                fixedCount++;
                f.Rate = share;
                foreach (int r in f.Resources)
                {
                    _left[r] -= share;
                    _open[r]--;
                }
            }
        }
    }
}
