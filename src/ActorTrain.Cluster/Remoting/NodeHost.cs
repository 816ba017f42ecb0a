using ActorTrain.Cluster.Transport;
using ActorTrain.Core.Simulation;
using Akka.Actor;
using Akka.Cluster;
using Akka.Event;

namespace ActorTrain.Cluster.Remoting;

/// <summary>
/// The part of a run one ps or worker node holds: its link (the node's own wall clock, or the proxy
/// of the virtual clock), the actors to build on it, each with its name and network endpoint, and
/// what ends its telemetry: flushes it and gives back the recorded traces and metrics (OTLP JSON lines).
/// </summary>
public sealed record HostedPart(ILink Link, IReadOnlyList<(string Name, Props Props, Endpoint Endpoint)> Actors,
    Func<(string Traces, string Metrics)>? FinishTelemetry = null);

/// <summary>
/// Lives at /user/node on every ps and worker node and builds that node's share of a run when the
/// coordinator asks (<see cref="HostRun"/>): the experiment travels as its resolved HOCON, so the
/// node derives the data partitions, seeds and settings exactly as a single process would. It
/// answers with the actors' references, attaches the whole roster to its link once every node is
/// built, and at the end (<see cref="EndRun"/>, or the coordinator's node leaving) stops the
/// actors and leaves the cluster through CoordinatedShutdown.
/// </summary>
public sealed class NodeHost : ReceiveActor
{
    private readonly Func<HostRun, IRoute, HostedPart> _build;
    private readonly IActorRef _gateway;
    private readonly ILoggingAdapter _log = Context.GetLogger();
    private readonly List<IActorRef> _actors = [];
    private ILink? _link;
    private HostedPart? _part;
    private readonly IRoute _route;

    public NodeHost(Func<HostRun, IRoute, HostedPart> build, IActorRef gateway)
    {
        _build = build;
        _gateway = gateway;
        // answers go back through the gateways too: after a gateway-routed request, in order with it
        _route = new GatewayRoute(gateway, Akka.Cluster.Cluster.Get(Context.System).SelfAddress);
        Receive<HostRun>(r => { if (FromCoordinator(r)) OnHostRun(r); });
        Receive<Roster>(r => { if (FromCoordinator(r)) OnRoster(r); });
        Receive<CollectTelemetry>(c => { if (FromCoordinator(c)) OnCollectTelemetry(); });
        Receive<EndRun>(e => { if (FromCoordinator(e)) Leave("the run is over"); });
        Receive<ClusterEvent.MemberRemoved>(removed =>
        {
            // the cluster's coordinator, not any member with its role (a process that joined as one and left)
            if (removed.Member.HasRole("coordinator") && Membership.WasCoordinator(Context.System, removed.Member))
                Leave($"the coordinator {removed.Member.Address} left");
        });
        Receive<ClusterEvent.IMemberEvent>(_ => { });
    }

    /// <summary>Requests are the coordinator's alone: a stranger's EndRun would take the node out of the run.</summary>
    private bool FromCoordinator(object request)
    {
        if (Membership.IsCoordinator(Context.System, Sender.Path.Address)) return true;
        Context.GetLogger().Warning("node: dropped a {0} from {1}, which is not this cluster's coordinator", request.GetType().Name, Sender.Path);
        return false;
    }

    public static Props Props(Func<HostRun, IRoute, HostedPart> build, IActorRef gateway) =>
        Akka.Actor.Props.Create(() => new NodeHost(build, gateway));

    /// <summary>
    /// A shard or worker that fails is stopped, never restarted: Akka's default would rebuild it
    /// from its props, so a shard would serve its initial weights as if nothing had happened. Stopped,
    /// it is lost to the coordinator's death watch like an actor of a lost node (the run ends with its
    /// checkpoint, or goes on without a worker), and this node's log names the cause.
    /// </summary>
    protected override SupervisorStrategy SupervisorStrategy()
    {
        var log = _log;
        return new OneForOneStrategy(0, TimeSpan.Zero, cause =>
        {
            log.Error(cause, "an actor of this node's part of the run failed and is stopped: {0}", cause.Message);
            return Directive.Stop;
        });
    }

    protected override void PreStart() =>
        Akka.Cluster.Cluster.Get(Context.System).Subscribe(Self, ClusterEvent.SubscriptionInitialStateMode.InitialStateAsEvents, typeof(ClusterEvent.MemberRemoved));

    protected override void PostStop()
    {
        Akka.Cluster.Cluster.Get(Context.System).Unsubscribe(Self);
        StopRun();
    }

    private void OnHostRun(HostRun request)
    {
        try
        {
            if (_link is not null) throw new InvalidOperationException("this node already hosts a run");
            var part = _build(request, _route);
            _part = part;
            _link = part.Link;
            _gateway.Tell(new Gateway.UseEventLink(part.Link));
            _gateway.Tell(new Gateway.HearOnly([Sender.Path.Address, request.Coordinator.Path.Address, .. request.Shards.Select(a => a.Path.Address),
                .. request.Clock is { } clock ? [clock.Path.Address] : Array.Empty<Address>()]));
            var refs = new IActorRef[part.Actors.Count];
            for (int i = 0; i < refs.Length; i++)
            {
                var (name, props, endpoint) = part.Actors[i];
                refs[i] = Context.ActorOf(props, name);
                part.Link.Attach(refs[i], endpoint);
                _actors.Add(refs[i]);
            }
            _log.Info("hosting {0} {1} of the run", request.Role, string.Join(",", request.Ids));
            _route.Tell(Sender, new Hosted(request.Role, refs), Self);
        }
        catch (Exception e)
        {
            _log.Error(e, "cannot host {0} {1}", request.Role, string.Join(",", request.Ids));
            StopRun();
            _route.Tell(Sender, new HostFailed($"{Akka.Cluster.Cluster.Get(Context.System).SelfAddress}: {e.Message}"), Self);
        }
    }

    private void OnRoster(Roster roster)
    {
        if (_link is { } link)
        {
            _gateway.Tell(new Gateway.HearOnly([Sender.Path.Address, roster.Coordinator.Path.Address, .. roster.Shards.Select(a => a.Path.Address),
                .. roster.Workers.Select(a => a.Path.Address)]));
            link.Attach(roster.Coordinator, Endpoint.Coordinator);
            for (int k = 0; k < roster.Shards.Length; k++) link.Attach(roster.Shards[k], Endpoint.Shard(k));
            for (int w = 0; w < roster.Workers.Length; w++) link.Attach(roster.Workers[w], Endpoint.Worker(w));
        }
        _route.Tell(Sender, new Hosted("roster", []), Self);
    }

    /// <summary>The run is over: stop the actors, flush telemetry, send what was recorded (through the gateway: it can be megabytes).</summary>
    private void OnCollectTelemetry()
    {
        foreach (var actor in _actors) Context.Stop(actor);
        _actors.Clear();
        var (traces, metrics) = _part?.FinishTelemetry?.Invoke() ?? ("", "");
        var reply = new NodeTelemetry(Akka.Cluster.Cluster.Get(Context.System).SelfAddress.ToString(), traces, metrics);
        _route.Tell(Sender, reply, Self);
    }

    private void StopRun()
    {
        foreach (var actor in _actors) Context.Stop(actor);
        _actors.Clear();
        _gateway.Tell(new Gateway.UseEventLink(null));
        _link?.Stop();
        (_link as IDisposable)?.Dispose();
        _link = null;
        _part?.FinishTelemetry?.Invoke();
        _part = null;
    }

    private void Leave(string why)
    {
        _log.Info("leaving the cluster: {0}", why);
        StopRun();
        CoordinatedShutdown.Get(Context.System).Run(CoordinatedShutdown.ClusterLeavingReason.Instance);
    }
}

/// <summary>
/// Places a run's shards on the ps nodes and its workers on the worker nodes, round robin in
/// address order (shard k on ps node k mod P, worker w on worker node w mod W), then sends every
/// host the roster. Shards are built first: workers are given their references.
/// </summary>
public sealed class ClusterPlacement(ActorSystem system, IRoute route, string config, IReadOnlyList<IActorRef> psHosts, IReadOnlyList<IActorRef> workerHosts,
    int shards, int workers, IActorRef? clock, DateTimeOffset epoch, TimeSpan timeout, Actors.RunCheckpoint? resume) : Actors.ITopologyPlacement
{
    public async Task<Actors.PlacedTopology> Place(IActorRef coordinator)
    {
        var shardRefs = await Build("ps", psHosts, shards, coordinator, []);
        var workerRefs = await Build("worker", workerHosts, workers, coordinator, shardRefs);
        var roster = new Roster(coordinator, shardRefs, workerRefs);
        await Task.WhenAll(psHosts.Concat(workerHosts).Select(h => Ask(h, roster, "roster")));
        return new Actors.PlacedTopology(shardRefs, workerRefs);
    }

    private async Task<IActorRef[]> Build(string role, IReadOnlyList<IActorRef> hosts, int count, IActorRef coordinator, IActorRef[] shardRefs)
    {
        var refs = new IActorRef[count];
        var requests = hosts.Select(async (host, h) =>
        {
            int[] ids = Enumerable.Range(0, count).Where(i => i % hosts.Count == h).ToArray();
            if (ids.Length == 0) return;
            var hosted = await Ask(host, new HostRun(config, role, ids, coordinator, shardRefs, clock, epoch.UtcTicks, resume), role);
            for (int i = 0; i < ids.Length; i++) refs[ids[i]] = hosted.Actors[i];
        });
        await Task.WhenAll(requests);
        return refs;
    }

    private async Task<Hosted> Ask(IActorRef host, object request, string what)
    {
        object reply;
        try
        {
            reply = await GatewayAsk.Ask(system, route, host, request, timeout);
        }
        catch (AskTimeoutException)
        {
            throw new Core.RunFailedException($"{host.Path.Address} did not answer the {what} request within {timeout.TotalSeconds:0} s (actortrain.cluster.host-timeout)");
        }
        return reply switch
        {
            Hosted hosted => hosted,
            HostFailed failed => throw new Core.RunFailedException($"a {what} node could not host its part: {failed.Reason}"),
            _ => throw new Core.RunFailedException($"{host.Path.Address} answered the {what} request with {reply.GetType().Name}"),
        };
    }
}
