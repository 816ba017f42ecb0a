namespace ActorTrain.Compute.Simd;

/// <summary>
/// A fixed set of threads that run parts of one job and wait for the next. Parallel.For would do
/// the same but allocates on every call; an engine step runs several parallel sections, so this
/// keeps the steady state allocation-free. Part 0 runs on the calling thread.
/// </summary>
internal sealed class WorkerThreads : IDisposable
{
    private readonly Thread[] _threads;
    private readonly SemaphoreSlim[] _start;
    private readonly CountdownEvent _done = new(1);
    private Action<int>? _body;
    private Exception? _failure;
    private volatile bool _stopping;

    public WorkerThreads(int count, string name)
    {
        if (count < 1) throw new ArgumentOutOfRangeException(nameof(count));
        Count = count;
        _threads = new Thread[count - 1];
        _start = new SemaphoreSlim[count - 1];
        for (int i = 0; i < _threads.Length; i++)
        {
            int part = i + 1;
            _start[i] = new SemaphoreSlim(0);
            _threads[i] = new Thread(() => Loop(part)) { IsBackground = true, Name = $"{name}-{part}" };
            _threads[i].Start();
        }
    }

    public int Count { get; }

    /// <summary>Runs body(0..parts-1) concurrently and returns when all have finished.</summary>
    public void Run(Action<int> body, int parts)
    {
        parts = Math.Clamp(parts, 1, Count);
        if (parts == 1)
        {
            body(0);
            return;
        }
        _body = body;
        _failure = null;
        _done.Reset(parts - 1);
        for (int p = 1; p < parts; p++) _start[p - 1].Release();
        try
        {
            body(0);
        }
        finally
        {
            _done.Wait();
            _body = null;
        }
        if (_failure is { } failure) throw new AggregateException(failure);
    }

    private void Loop(int part)
    {
        var start = _start[part - 1];
        while (true)
        {
            start.Wait();
            if (_stopping) return;
            try
            {
                _body!(part);
            }
            catch (Exception e)
            {
                _failure = e;
            }
            finally
            {
                _done.Signal();
            }
        }
    }

    public void Dispose()
    {
        _stopping = true;
        foreach (var s in _start) s.Release();
        foreach (var t in _threads) t.Join();
        foreach (var s in _start) s.Dispose();
        _done.Dispose();
    }
}
