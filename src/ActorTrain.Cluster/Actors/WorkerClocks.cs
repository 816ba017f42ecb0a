namespace ActorTrain.Cluster.Actors;

/// <summary>
/// The clocks a shard has seen from each worker (they only go up) and the least among the workers
/// still in the run, in amortised O(1) per change: the minimum and how many active workers sit at
/// it are kept; a scan happens only when the last of them moves on (once per global clock under
/// BSP), not per push, which made a step O(N^2) in workers (issue 19).
/// </summary>
internal sealed class WorkerClocks
{
    private readonly long[] _clocks;
    private readonly bool[] _active;
    private long _slowest;
    private int _atSlowest;

    public WorkerClocks(int workers)
    {
        _clocks = new long[workers];
        _active = Enumerable.Repeat(true, workers).ToArray();
        Rescan();
    }

    public long this[int worker] => _clocks[worker];

    public bool IsActive(int worker) => _active[worker];

    /// <summary>The least clock among the workers still in the run (0 when none is).</summary>
    public long Slowest => _slowest;

    /// <summary>Raises worker <paramref name="worker"/>'s clock to <paramref name="clock"/> (never lowers it).</summary>
    public void Raise(int worker, long clock)
    {
        long old = _clocks[worker];
        if (clock <= old) return;
        _clocks[worker] = clock;
        if (_active[worker] && old == _slowest && --_atSlowest == 0) Rescan();
    }

    /// <summary>The worker left the run: it no longer holds the others back.</summary>
    public void Deactivate(int worker)
    {
        if (!_active[worker]) return;
        _active[worker] = false;
        if (_clocks[worker] == _slowest && --_atSlowest == 0) Rescan();
    }

    public long[] ToArray() => (long[])_clocks.Clone();

    public void Restore(long[] clocks)
    {
        clocks.CopyTo(_clocks, 0);
        Rescan();
    }

    private void Rescan()
    {
        long slowest = long.MaxValue;
        int at = 0;
        for (int w = 0; w < _clocks.Length; w++)
        {
            if (!_active[w]) continue;
            if (_clocks[w] < slowest) (slowest, at) = (_clocks[w], 1);
            else if (_clocks[w] == slowest) at++;
        }
        (_slowest, _atSlowest) = slowest == long.MaxValue ? (0, 0) : (slowest, at);
    }
}
