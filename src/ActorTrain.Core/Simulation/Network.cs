namespace ActorTrain.Core.Simulation;

public enum EndpointKind
{
    Coordinator,
    Shard,
    Worker,
}

/// <summary>One end of a link: the coordinator, shard k or worker w.</summary>
public readonly record struct Endpoint(EndpointKind Kind, int Id)
{
    public static readonly Endpoint Coordinator = new(EndpointKind.Coordinator, 0);
    public static Endpoint Worker(int id) => new(EndpointKind.Worker, id);
    public static Endpoint Shard(int id) => new(EndpointKind.Shard, id);

    public override string ToString() => Kind switch
    {
        EndpointKind.Coordinator => "coordinator",
        EndpointKind.Shard => $"shard-{Id}",
        _ => $"worker-{Id}",
    };

    /// <summary>Parses worker-3 / shard-0 / coordinator; errors name <paramref name="key"/>.</summary>
    public static Endpoint Parse(string text, string key)
    {
        string t = text.Trim().ToLowerInvariant();
        if (t == "coordinator") return Coordinator;
        int dash = t.LastIndexOf('-');
        if (dash > 0 && int.TryParse(t[(dash + 1)..], out int id) && id >= 0)
        {
            if (t[..dash] == "worker") return Worker(id);
            if (t[..dash] == "shard") return Shard(id);
        }
        throw new ActorTrainException($"{key} = \"{text}\" is not an endpoint: write worker-<id>, shard-<id> or coordinator");
    }
}

/// <summary>
/// One directed link: latency drawn per message, plus a uniform extra delay in [0, jitter), plus
/// size / bandwidth of transmission; each attempt is lost with probability drop.
/// </summary>
public sealed record LinkSpec(Distribution Latency, double BytesPerSecond, double Jitter, double Drop)
{
    public static readonly LinkSpec Ideal = new(Distribution.Zero, double.PositiveInfinity, 0, 0);

    public double TransmitSeconds(long bytes) => double.IsPositiveInfinity(BytesPerSecond) ? 0 : bytes / BytesPerSecond;
}

/// <summary>Some of a link's properties replaced, the others inherited.</summary>
public sealed record LinkOverride(Distribution? Latency = null, double? BytesPerSecond = null, double? Jitter = null, double? Drop = null)
{
    public static readonly LinkOverride None = new();

    public LinkSpec Over(LinkSpec spec) => new(Latency ?? spec.Latency, BytesPerSecond ?? spec.BytesPerSecond, Jitter ?? spec.Jitter, Drop ?? spec.Drop);
}

public sealed record LinkRule(Endpoint From, Endpoint To, LinkOverride Override);

/// <summary>
/// The network of a run. A link's properties are resolved from the default, then the cross-rack
/// override when its ends sit in different racks (worker w and shard k sit in rack w mod racks and
/// k mod racks), then the direction's (uplink: worker to shard; downlink: shard to worker), then
/// any rule for exactly that pair. Lost attempts are sent again after <see cref="RetransmitTimeout"/>.
/// </summary>
public sealed record NetworkSettings(
    LinkSpec Default,
    LinkOverride Uplink,
    LinkOverride Downlink,
    int Racks,
    LinkOverride CrossRack,
    IReadOnlyList<LinkRule> Rules,
    double RetransmitTimeout,
    int MaxAttempts = 64)
{
    public static readonly NetworkSettings Ideal = new(LinkSpec.Ideal, LinkOverride.None, LinkOverride.None, 1, LinkOverride.None, [], 0.01);

    /// <summary>The shared hardware under the links (fabric.*); with topology none every link is its own.</summary>
    public FabricSettings Fabric { get; init; } = FabricSettings.None;

    /// <summary>Which host each worker and shard lives on (placement.*); used by a sharing fabric.</summary>
    public Placement Placement { get; init; } = Placement.OneWorkerPerHost;

    public static int Rack(Endpoint e, int racks) => e.Kind == EndpointKind.Coordinator ? 0 : e.Id % racks;

    public LinkSpec Resolve(Endpoint from, Endpoint to)
    {
        var spec = Default;
        if (Rack(from, Racks) != Rack(to, Racks)) spec = CrossRack.Over(spec);
        if (from.Kind == EndpointKind.Worker && to.Kind == EndpointKind.Shard) spec = Uplink.Over(spec);
        else if (from.Kind == EndpointKind.Shard && to.Kind == EndpointKind.Worker) spec = Downlink.Over(spec);
        foreach (var rule in Rules)
            if (rule.From == from && rule.To == to) spec = rule.Override.Over(spec);
        return spec;
    }

    /// <summary>The chance that a message on the lossiest link is lost: every one of its MaxAttempts attempts dropped.</summary>
    public double WorstLossProbability
    {
        get
        {
            double drop = new[] { Default.Drop, Uplink.Drop ?? 0, Downlink.Drop ?? 0, CrossRack.Drop ?? 0 }
                .Concat(Rules.Select(r => r.Override.Drop ?? 0)).Max();
            return drop == 0 ? 0 : Math.Pow(drop, MaxAttempts);
        }
    }

    /// <summary>
    /// The least latency any training message between these workers and shards can have; with no
    /// shards (all-reduce) between two workers.
    /// </summary>
    public double MinLatency(int workers, int shards)
    {
        double min = double.PositiveInfinity;
        if (shards == 0)
        {
            // a worker in each rack, a second one in each, and every worker a rule names stand for all pairs
            var ends = Enumerable.Range(0, Math.Min(workers, 2 * Racks))
                .Concat(Rules.SelectMany(r => new[] { r.From, r.To }).Where(e => e.Kind == EndpointKind.Worker && e.Id < workers).Select(e => e.Id))
                .Distinct().ToList();
            foreach (int i in ends)
                foreach (int j in ends)
                    if (i != j) min = Math.Min(min, Resolve(Endpoint.Worker(i), Endpoint.Worker(j)).Latency.LowerBound);
        }
        // Without rules or racks every uplink (and every downlink) resolves alike: check one pair.
        int w = Rules.Count == 0 && Racks == 1 ? Math.Min(1, workers) : workers;
        int k = Rules.Count == 0 && Racks == 1 ? Math.Min(1, shards) : shards;
        for (int i = 0; i < w; i++)
            for (int j = 0; j < k; j++)
            {
                min = Math.Min(min, Resolve(Endpoint.Worker(i), Endpoint.Shard(j)).Latency.LowerBound);
                min = Math.Min(min, Resolve(Endpoint.Shard(j), Endpoint.Worker(i)).Latency.LowerBound);
            }
        if (double.IsPositiveInfinity(min)) min = 0;
        // on a fabric every message also crosses a bus or a NIC hop
        return Fabric.Shares ? min + Math.Min(Fabric.BusLatency, Fabric.NicLatency) : min;
    }

    public void Validate(int workers, int shards)
    {
        foreach (var rule in Rules)
            foreach (var end in new[] { rule.From, rule.To })
            {
                int limit = end.Kind == EndpointKind.Worker ? workers : end.Kind == EndpointKind.Shard ? shards : 1;
                if (end.Id >= limit)
                    throw new ActorTrainException($"network.links names {end}, but the topology has {workers} workers and {shards} shards");
            }
    }
}

/// <summary>
/// When a message sent at <see cref="Departure"/> arrives: <see cref="Copies"/> deliveries, the
/// first at <see cref="FirstArrival"/>, the later ones (<see cref="LaterArrivals"/>) duplicates (a
/// retransmission whose earlier copy did arrive, but whose acknowledgement was lost) that the
/// receiving side discards. No copy when every attempt was lost. A plan of one copy allocates nothing.
/// </summary>
public readonly record struct TransferPlan(double Departure, int Copies, double FirstArrival, double[]? LaterArrivals, int Attempts)
{
    public bool Lost => Copies == 0;
    public int Retransmissions => Attempts - 1;

    /// <summary>Copy <paramref name="i"/>'s arrival, 0 &lt;= i &lt; <see cref="Copies"/>.</summary>
    public double Arrival(int i) => i == 0 ? FirstArrival : LaterArrivals![i - 1];

    /// <summary>Every copy's arrival, first to last (a new array each time).</summary>
    public double[] Arrivals => [.. Enumerable.Range(0, Copies).Select(Arrival)];
}

/// <summary>
/// A message's attempts on a sharing fabric (which times their transmission itself): when each
/// starts, and the latency of the copy it delivers after its last byte (null: dropped).
/// </summary>
public sealed record AttemptPlan(double Departure, IReadOnlyList<(double Start, double? Latency)> Attempts)
{
    /// <summary>Copies that arrive: the first, and duplicates of attempts whose acknowledgement was lost.</summary>
    public int Copies => Attempts.Count(a => a.Latency is not null);
}

/// <summary>
/// The stateful side of <see cref="NetworkSettings"/>: the random draws and each directed link's
/// transmitter, which sends one message at a time (a message waits until the link has finished
/// the previous one, then takes size / bandwidth). Not thread-safe; call it in a deterministic order.
/// </summary>
public sealed class NetworkModel(NetworkSettings settings, ulong seed)
{
    private readonly Rng _rng = new(seed);
    private readonly Dictionary<(Endpoint, Endpoint), (LinkSpec Spec, double BusyUntil)> _links = new();
    private readonly List<double> _arrivals = new(2);

    public NetworkSettings Settings => settings;

    public TransferPlan Plan(Endpoint from, Endpoint to, long bytes, double departure)
    {
        ref var link = ref System.Runtime.InteropServices.CollectionsMarshal.GetValueRefOrAddDefault(_links, (from, to), out bool known);
        if (!known) link = (settings.Resolve(from, to), 0);
        var spec = link.Spec;
        _arrivals.Clear();
        double attemptAt = departure;
        int attempts = 0;
        while (attempts < settings.MaxAttempts)
        {
            attempts++;
            double start = Math.Max(attemptAt, link.BusyUntil);
            double sent = start + spec.TransmitSeconds(bytes);
            link.BusyUntil = sent;
            bool dataLost = spec.Drop > 0 && _rng.NextDouble() < spec.Drop;
            if (!dataLost)
            {
                double latency = spec.Latency.Sample(_rng) + (spec.Jitter > 0 ? spec.Jitter * _rng.NextDouble() : 0);
                _arrivals.Add(sent + latency);
                bool ackLost = spec.Drop > 0 && _rng.NextDouble() < spec.Drop;
                if (!ackLost) break;
            }
            attemptAt = start + settings.RetransmitTimeout;
        }
        return _arrivals.Count == 0 ? new TransferPlan(departure, 0, double.NaN, null, attempts)
            : new TransferPlan(departure, _arrivals.Count, _arrivals[0], _arrivals.Count > 1 ? System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_arrivals)[1..].ToArray() : null, attempts);
    }

    /// <summary>
    /// The attempts of a message on a sharing fabric, which times their transmission itself: attempt
    /// i starts at departure + i x retransmit-timeout; each is lost with the link's drop probability
    /// or arrives its latency draw (+ jitter) after its last byte; an attempt whose acknowledgement
    /// is lost is followed by another (a duplicate the receiver discards). Null latency: lost.
    /// </summary>
    public AttemptPlan PlanAttempts(Endpoint from, Endpoint to, double departure)
    {
        var spec = settings.Resolve(from, to);
        var attempts = new List<(double, double?)>(1);
        for (int i = 0; i < settings.MaxAttempts; i++)
        {
            double start = departure + i * settings.RetransmitTimeout;
            if (spec.Drop > 0 && _rng.NextDouble() < spec.Drop)
            {
                attempts.Add((start, null));
                continue;
            }
            attempts.Add((start, spec.Latency.Sample(_rng) + (spec.Jitter > 0 ? spec.Jitter * _rng.NextDouble() : 0)));
            if (!(spec.Drop > 0 && _rng.NextDouble() < spec.Drop)) break;
        }
        return new AttemptPlan(departure, attempts);
    }
}
