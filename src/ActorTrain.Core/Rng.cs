namespace ActorTrain.Core;

/// <summary>
/// xoshiro256** seeded through SplitMix64. Owned by the project rather than System.Random so that a
/// seed means the same stream on every runtime version, and so streams can be derived per worker,
/// per epoch or per shard without correlation (<see cref="Derive"/>).
/// </summary>
public sealed class Rng
{
    private ulong _s0, _s1, _s2, _s3;
    private double? _spareGaussian;

    public Rng(ulong seed)
    {
        ulong x = seed;
        _s0 = SplitMix(ref x);
        _s1 = SplitMix(ref x);
        _s2 = SplitMix(ref x);
        _s3 = SplitMix(ref x);
    }

    /// <summary>A seed for an independent stream identified by (seed, a, b).</summary>
    public static ulong Derive(ulong seed, ulong a, ulong b = 0)
    {
        ulong x = seed ^ (a * 0x9E3779B97F4A7C15UL);
        ulong h = SplitMix(ref x);
        x = h ^ (b * 0xC2B2AE3D27D4EB4FUL);
        return SplitMix(ref x);
    }

    private static ulong SplitMix(ref ulong x)
    {
        ulong z = x += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    public ulong NextUInt64()
    {
        ulong result = ulong.RotateLeft(_s1 * 5, 7) * 9;
        ulong t = _s1 << 17;
        _s2 ^= _s0;
        _s3 ^= _s1;
        _s1 ^= _s2;
        _s0 ^= _s3;
        _s2 ^= t;
        _s3 = ulong.RotateLeft(_s3, 45);
        return result;
    }

    /// <summary>Uniform in [0, 1) with 53 random bits.</summary>
    public double NextDouble() => (NextUInt64() >> 11) * (1.0 / (1UL << 53));

    /// <summary>
    /// A stream of uniform floats in [0, 1) with 24 random bits each, two per 64-bit draw: for codecs
    /// that need one random number per gradient element. Comparing u &lt; p then errs from p by less
    /// than 2^-24, far inside the statistical bounds the codecs are tested to.
    /// </summary>
    public struct FloatStream(Rng rng)
    {
        private ulong _bits;
        private bool _half;

        public float Next()
        {
            const float scale = 1f / (1 << 24);
            if (_half)
            {
                _half = false;
                return (uint)(_bits & 0xFFFFFF) * scale;
            }
            _bits = rng.NextUInt64();
            _half = true;
            return (uint)(_bits >> 40) * scale;
        }
    }

    /// <summary>Uniform integer in [0, bound) without modulo bias (Lemire's method).</summary>
    public int NextInt(int bound)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(bound);
        ulong m = (ulong)(uint)NextUInt64() * (uint)bound;
        uint low = (uint)m;
        if (low < (uint)bound)
        {
            uint threshold = (uint)-bound % (uint)bound;
            while (low < threshold)
            {
                m = (ulong)(uint)NextUInt64() * (uint)bound;
                low = (uint)m;
            }
        }
        return (int)(m >> 32);
    }

    /// <summary>Standard normal (Marsaglia polar method; the second value of each pair is kept).</summary>
    public double NextGaussian()
    {
        if (_spareGaussian is { } spare)
        {
            _spareGaussian = null;
            return spare;
        }
        double u, v, s;
        do
        {
            u = 2 * NextDouble() - 1;
            v = 2 * NextDouble() - 1;
            s = u * u + v * v;
        } while (s >= 1 || s == 0);
        double f = Math.Sqrt(-2 * Math.Log(s) / s);
        _spareGaussian = v * f;
        return u * f;
    }

    /// <summary>Fisher-Yates shuffle in place.</summary>
    public void Shuffle<T>(Span<T> items)
    {
        for (int i = items.Length - 1; i > 0; i--)
        {
            int j = NextInt(i + 1);
            (items[i], items[j]) = (items[j], items[i]);
        }
    }
}
