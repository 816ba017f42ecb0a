using System.Collections.Concurrent;
using System.Diagnostics;
using ActorTrain.Core.Simulation;
using Akka.Actor;

namespace ActorTrain.Cluster.Transport;

/// <summary>
/// Real time: a message is told at once on an ideal network, or handed to a delay line that tells
/// it when its planned transfer (latency, size / bandwidth, retransmissions) is over. The delay
/// line has its own thread and sub-millisecond timing (Akka's scheduler ticks every 10 ms).
/// </summary>
public sealed class WallClockLink : ILink, IDisposable
{
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private readonly DateTimeOffset _epoch;
    private readonly double _offset;
    private readonly NetworkModel? _network;
    private readonly double _controlLatency;
    private readonly Attachments _endpoints = new();
    private readonly ConcurrentDictionary<IActorRef, bool> _stopped = new();
    private readonly DuplicateFilter _duplicates = new();
    private readonly LinkCounters _counters = new();
    private readonly DelayLine _line;
    private readonly IRoute _route;
    private long _nextId;
    // a sharing fabric (fabric.topology not none): driven in model time on the delay line's thread
    private readonly Fabric? _fabric;
    private readonly Dictionary<Fabric.Flow, (double? Latency, IActorRef To, object Message, IActorRef Sender, long Id)> _flows = [];
    private double _fabricTime;
    private long _wake;

    /// <param name="network">null: an ideal network, every message told at once.</param>
    /// <param name="epoch">The instant time 0 stands for (now when null): the nodes of a cluster run share the coordinator's, so
    /// a time sent from one node (a push's departure) means the same on another (to the accuracy of the machines' clocks).</param>
    public WallClockLink(NetworkSettings? network = null, ulong seed = 0, double controlLatency = 0, IRoute? route = null, DateTimeOffset? epoch = null)
    {
        var now = DateTimeOffset.UtcNow;
        _epoch = epoch ?? now;
        _offset = (now - _epoch).TotalSeconds;
        _route = route ?? DirectRoute.Instance;
        _network = network is null ? null : new NetworkModel(network, seed);
        _controlLatency = controlLatency;
        _line = new DelayLine(this);
    }

    /// <param name="workers">With a sharing fabric in <paramref name="network"/>: the topology it places on hosts.</param>
    public WallClockLink(NetworkSettings network, ulong seed, double controlLatency, IRoute? route, DateTimeOffset? epoch, int workers, int shards)
        : this(network, seed, controlLatency, route, epoch)
    {
        if (network.Fabric.Shares) _fabric = new Fabric(network.Fabric, network.Placement, workers, shards);
    }

    public double Now => _offset + _clock.Elapsed.TotalSeconds;

    public DateTimeOffset Epoch => _epoch;

    public LinkStatistics Statistics
    {
        get
        {
            if (_fabric is null) return _counters.Snapshot();
            lock (_fabric) return _counters.Snapshot() with { Fabric = _fabric.Usage(_fabricTime), FabricRecomputations = _fabric.Recomputations };
        }
    }

    public void Attach(IActorRef actor, Endpoint endpoint) => _endpoints.Attach(actor, endpoint);

    public bool Vouches(IActorRef sender, Endpoint claimed) => _endpoints.Vouches(sender, claimed);

    public void Kill(IActorRef actor)
    {
        _stopped[actor] = true;
        actor.Tell(PoisonPill.Instance);
    }

    public void Stop() => _line.Dispose();

    public void Dispose() => _line.Dispose();

    public void Send(IActorRef to, object message, long bytes, TrafficClass traffic, IActorRef sender)
    {
        if (traffic == TrafficClass.Control || _network is null)
        {
            double delay = traffic == TrafficClass.Control ? _controlLatency : 0;
            if (delay <= 0) _route.Tell(to, message, sender);
            else _line.Add(Now + delay, to, message, sender, -1);
            return;
        }
        if (!_endpoints.TryGetValue(sender, out var from) || !_endpoints.TryGetValue(to, out var target))
            throw new InvalidOperationException($"link: {sender.Path} or {to.Path} was never attached to an endpoint");
        if (_fabric is { } fabric)
        {
            SendOverFabric(fabric, to, message, bytes, sender, from, target);
            return;
        }
        TransferPlan plan;
        long id;
        lock (_network)
        {
            plan = _network.Plan(from, target, bytes, Now);
            id = _nextId++;
            lock (_duplicates) _duplicates.Expect(id, plan.Copies);
        }
        _counters.Planned(plan, bytes, from, target);
        for (int i = 0; i < plan.Copies; i++) _line.Add(plan.Arrival(i), to, message, sender, id);
    }

    public void ScheduleOnce(IActorRef to, object message, double delay, IActorRef sender) => _line.Add(Now + delay, to, message, sender, -1);

    /// <summary>
    /// The fabric under the wall clock: attempts drawn as under the virtual clock, each a flow that
    /// starts at its time on the delay line's thread; the fabric runs in model time there (each
    /// start and end at its planned instant, whatever the thread's wake-up jitter) and is woken at
    /// its next flow end, whose copies then wait their latency on the delay line.
    /// </summary>
    private void SendOverFabric(Fabric fabric, IActorRef to, object message, long bytes, IActorRef sender, Endpoint from, Endpoint target)
    {
        AttemptPlan plan;
        long id;
        lock (_network!)
        {
            plan = _network.PlanAttempts(from, target, Now);
            id = _nextId++;
            lock (_duplicates) _duplicates.Expect(id, plan.Copies);
        }
        _counters.Planned(plan, bytes, from, target);
        var path = fabric.Route(from, target);
        foreach (var (start, latency) in plan.Attempts)
        {
            double? arrival = latency is { } l ? l + path.Latency : null;
            _line.At(start, () =>
            {
                lock (fabric)
                {
                    _fabricTime = Math.Max(_fabricTime, start);
                    _flows[fabric.Start(_fabricTime, path, bytes)] = (arrival, to, message, sender, id);
                    WakeAtNextEnd(fabric);
                }
            });
        }
    }

    /// <summary>Schedules the fabric's next flow end on the delay line (an earlier wake-up that is still queued goes stale). Under the fabric's lock.</summary>
    private void WakeAtNextEnd(Fabric fabric)
    {
        double next = fabric.NextEnd;
        if (!double.IsFinite(next)) return;
        long wake = ++_wake;
        _line.At(next, () =>
        {
            lock (fabric)
            {
                if (wake != _wake) return;
                _fabricTime = Math.Max(_fabricTime, next);
                foreach (var flow in fabric.FinishDue(_fabricTime))
                {
                    _flows.Remove(flow, out var done);
                    if (done.Latency is { } latency) _line.Add(_fabricTime + latency, done.To, done.Message, done.Sender, done.Id);
                }
                WakeAtNextEnd(fabric);
            }
        });
    }

    public void Occupy(double modelled, double measured) => PreciseSleep(modelled - measured);

    /// <summary>
    /// Sleeps with sub-millisecond accuracy without a busy core: Thread.Sleep counts whole
    /// milliseconds, so the rest goes to nanosleep (Linux: accurate to the timer slack, ~50 us).
    /// Yielding in a loop instead was measured costing a whole core in system time.
    /// </summary>
    public static void PreciseSleep(double seconds)
    {
        if (seconds <= 0) return;
        long due = Stopwatch.GetTimestamp() + (long)(seconds * Stopwatch.Frequency);
        int ms = (int)(seconds * 1000) - 1;
        if (ms > 0) Thread.Sleep(ms);
        double rest = (double)(due - Stopwatch.GetTimestamp()) / Stopwatch.Frequency;
        if (rest > 0) NanoSleep(rest);
    }

    private static void NanoSleep(double seconds)
    {
        if (!OperatingSystem.IsLinux())
        {
            Thread.Sleep(TimeSpan.FromSeconds(seconds));
            return;
        }
        if (!_slackSet)
        {
            // Linux delays timed sleeps by up to the thread's timer slack (50 us by default) to batch
            // wake-ups; a modelled link needs its microseconds.
            _ = prctl(PrSetTimerSlack, 1, 0, 0, 0);
            _slackSet = true;
        }
        var request = new TimeSpec { Seconds = (long)seconds, Nanoseconds = (long)((seconds - Math.Floor(seconds)) * 1e9) };
        _ = nanosleep(ref request, IntPtr.Zero);
    }

    [ThreadStatic] private static bool _slackSet;
    private const int PrSetTimerSlack = 29;

    [System.Runtime.InteropServices.DllImport("libc", SetLastError = true)]
    private static extern int prctl(int option, ulong arg2, ulong arg3, ulong arg4, ulong arg5);

    private struct TimeSpec
    {
        public long Seconds;
        public long Nanoseconds;
    }

    [System.Runtime.InteropServices.DllImport("libc", SetLastError = true)]
    private static extern int nanosleep(ref TimeSpec request, IntPtr remaining);

    private void Deliver(IActorRef to, object message, IActorRef sender, long id)
    {
        if (_stopped.ContainsKey(to))
        {
            _counters.LostToStopped();
            return;
        }
        if (id >= 0)
        {
            bool first;
            lock (_duplicates) first = _duplicates.Accept(id);
            if (!first)
            {
                _counters.Duplicate();
                return;
            }
        }
        _counters.Events(1);
        _route.Tell(to, message, sender);
    }

    private sealed class DelayLine : IDisposable
    {
        private readonly WallClockLink _link;
        private readonly PriorityQueue<(IActorRef? To, object? Message, IActorRef? Sender, long Id, Action? Run), (double Due, long Seq)> _queue = new();
        private readonly Thread _thread;
        private long _seq;
        private bool _stopped;

        public DelayLine(WallClockLink link)
        {
            _link = link;
            _thread = new Thread(Loop) { IsBackground = true, Name = "actortrain-delay-line" };
        }

        public void Add(double due, IActorRef to, object message, IActorRef sender, long id) => Enqueue(due, (to, message, sender, id, null));

        /// <summary>Runs <paramref name="action"/> on this thread at <paramref name="due"/>, in due order with the deliveries.</summary>
        public void At(double due, Action action) => Enqueue(due, (null, null, null, -1, action));

        private void Enqueue(double due, (IActorRef? To, object? Message, IActorRef? Sender, long Id, Action? Run) item)
        {
            lock (_queue)
            {
                if (_stopped) return;
                if (!_thread.IsAlive && _thread.ThreadState.HasFlag(System.Threading.ThreadState.Unstarted)) _thread.Start();
                _queue.Enqueue(item, (due, _seq++));
                Monitor.Pulse(_queue);
            }
        }

        private void Loop()
        {
            while (true)
            {
                (IActorRef? To, object? Message, IActorRef? Sender, long Id, Action? Run) item;
                lock (_queue)
                {
                    while (true)
                    {
                        if (_stopped) return;
                        if (_queue.TryPeek(out _, out var key))
                        {
                            double wait = key.Due - _link.Now;
                            if (wait <= 0) break;
                            // Monitor.Wait counts whole milliseconds (and wakes for earlier items);
                            // the last stretch is slept outside the lock with sub-millisecond accuracy.
                            if (wait > 0.002) Monitor.Wait(_queue, TimeSpan.FromSeconds(wait - 0.001));
                            else
                            {
                                Monitor.Exit(_queue);
                                try { PreciseSleep(wait); }
                                finally { Monitor.Enter(_queue); }
                            }
                        }
                        else
                        {
                            Monitor.Wait(_queue);
                        }
                    }
                    item = _queue.Dequeue();
                }
                if (item.Run is { } run) run();
                else _link.Deliver(item.To!, item.Message!, item.Sender!, item.Id);
            }
        }

        public void Dispose()
        {
            lock (_queue)
            {
                _stopped = true;
                Monitor.PulseAll(_queue);
            }
        }
    }
}
