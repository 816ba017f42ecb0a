using System.Globalization;

namespace ActorTrain.Core.Simulation;

/// <summary>
/// Strict parsing of the physical quantities of a network and device description. A number without
/// its unit is rejected (is "10" ten seconds or ten milliseconds?), and every error names the key.
/// </summary>
public static class Quantity
{
    private static readonly (string Unit, double Seconds)[] TimeUnits =
        [("ns", 1e-9), ("us", 1e-6), ("µs", 1e-6), ("ms", 1e-3), ("s", 1)];

    // Network rates in bits per second (decimal prefixes, as link speeds are quoted) and in bytes per second.
    private static readonly (string Unit, double BytesPerSecond)[] RateUnits =
    [
        ("bps", 1 / 8.0), ("kbps", 1e3 / 8), ("mbps", 1e6 / 8), ("gbps", 1e9 / 8), ("tbps", 1e12 / 8),
        ("bit/s", 1 / 8.0), ("kbit/s", 1e3 / 8), ("mbit/s", 1e6 / 8), ("gbit/s", 1e9 / 8), ("tbit/s", 1e12 / 8),
        ("b/s", 1), ("kb/s", 1e3), ("mb/s", 1e6), ("gb/s", 1e9), ("tb/s", 1e12),
    ];

    /// <summary>A duration such as 0.5ms, 20us, 1s, 100ns, in seconds; negative values are rejected.</summary>
    public static double Seconds(string text, string key)
    {
        var (amount, unit) = Split(text, key, "a duration, e.g. 0.5ms, 20us, 2s");
        foreach (var (name, scale) in TimeUnits)
            if (unit == name) return amount * scale;
        throw new ActorTrainException($"{key} = \"{text}\": unknown time unit '{unit}' (use ns, us, ms or s)");
    }

    /// <summary>
    /// A bandwidth such as 10Gbps, 100Mbit/s or 1.25GB/s, in bytes per second; "unlimited" gives
    /// infinity. Lower-case b is a bit in the bps forms and a byte in the /s forms, as in GB/s.
    /// </summary>
    public static double BytesPerSecond(string text, string key)
    {
        if (text.Trim().Equals("unlimited", StringComparison.OrdinalIgnoreCase)) return double.PositiveInfinity;
        var (amount, unit) = Split(text, key, "a bandwidth, e.g. 10Gbps, 100Mbit/s, 1.25GB/s or unlimited");
        if (amount <= 0) throw new ActorTrainException($"{key} = \"{text}\" must be above zero (or unlimited)");
        foreach (var (name, scale) in RateUnits)
            if (unit == name) return amount * scale;
        throw new ActorTrainException($"{key} = \"{text}\": unknown bandwidth unit '{unit}' (use bps, Kbps, Mbps, Gbps, Tbps or B/s, KB/s, MB/s, GB/s)");
    }

    /// <summary>A size such as 25MB, 512KB, 1GiB or 4096B, in bytes (KB, MB, GB are powers of 1000; KiB, MiB, GiB of 1024).</summary>
    public static long Bytes(string text, string key)
    {
        var (amount, unit) = Split(text, key, "a size, e.g. 25MB, 512KB, 1MiB or 4096B");
        double scale = unit switch
        {
            "b" => 1, "kb" => 1e3, "mb" => 1e6, "gb" => 1e9,
            "kib" => 1024, "mib" => 1024 * 1024, "gib" => 1024.0 * 1024 * 1024,
            _ => throw new ActorTrainException($"{key} = \"{text}\": unknown size unit '{unit}' (use B, KB, MB, GB, KiB, MiB or GiB)"),
        };
        double bytes = amount * scale;
        if (bytes < 1 || bytes > long.MaxValue / 2) throw new ActorTrainException($"{key} = \"{text}\" must be at least 1 byte");
        return (long)bytes;
    }

    private static (double Amount, string Unit) Split(string text, string key, string expected)
    {
        string raw = text.Trim();
        int split = 0;
        while (split < raw.Length && (char.IsDigit(raw[split]) || raw[split] is '.' or 'e' or 'E' or '+' or '-'))
        {
            // an 'e' that starts the unit is not an exponent
            if (raw[split] is 'e' or 'E' && (split == 0 || split + 1 >= raw.Length || !(char.IsDigit(raw[split + 1]) || raw[split + 1] is '-' or '+'))) break;
            split++;
        }
        if (split == 0 || !double.TryParse(raw[..split], NumberStyles.Float, CultureInfo.InvariantCulture, out double amount) || !double.IsFinite(amount))
            throw new ActorTrainException($"{key} = \"{text}\" is not {expected}");
        if (amount < 0) throw new ActorTrainException($"{key} = \"{text}\" must not be negative");
        string unit = raw[split..].Trim();
        if (unit.Length == 0) throw new ActorTrainException($"{key} = \"{text}\" has no unit: write {expected}");
        return (amount, unit == "µs" ? unit : unit.ToLowerInvariant());
    }

    /// <summary>Seconds as the shortest readable duration, for messages and summaries.</summary>
    public static string FormatSeconds(double s) => s switch
    {
        0 => "0s",
        < 1e-6 => FormattableString.Invariant($"{s * 1e9:0.###}ns"),
        < 1e-3 => FormattableString.Invariant($"{s * 1e6:0.###}us"),
        < 1 => FormattableString.Invariant($"{s * 1e3:0.###}ms"),
        _ => FormattableString.Invariant($"{s:0.###}s"),
    };
}
