using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;

namespace ActorTrain.Benchmarks;

/// <summary>A numeric column derived from a case's mean time (ns) and its parameters.</summary>
public sealed class RateColumn(string name, string legend, Func<BenchmarkCase, double, double> rate) : IColumn
{
    public string Id => nameof(RateColumn) + "." + name;
    public string ColumnName => name;
    public bool AlwaysShow => true;
    public ColumnCategory Category => ColumnCategory.Custom;
    public int PriorityInCategory => 0;
    public bool IsNumeric => true;
    public UnitType UnitType => UnitType.Dimensionless;
    public string Legend => legend;
    public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;
    public bool IsAvailable(Summary summary) => true;
    public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, SummaryStyle.Default);

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style) =>
        summary[benchmarkCase]?.ResultStatistics is { } stats ? rate(benchmarkCase, stats.Mean).ToString("F2") : "-";
}

/// <summary>GFLOP/s of an engine step: the model's FLOPs per sample x batch over the mean time.</summary>
[AttributeUsage(AttributeTargets.Class)]
public sealed class GFlopsColumnAttribute : Attribute, IConfigSource
{
    public IConfig Config { get; } = ManualConfig.CreateEmpty().AddColumn(new RateColumn("GFLOP/s",
        "forward+backward FLOPs (2 per multiply-add) per second",
        (c, ns) => BenchmarkModels.Build(c.Parameters["Model"] as string ?? "softmax").FlopsPerSample * (double)EngineStepBenchmarks.Batch / ns));
}

/// <summary>GB/s of dense FP32 input: 4 bytes x 1M elements over the mean time.</summary>
[AttributeUsage(AttributeTargets.Class)]
public sealed class DenseThroughputColumnAttribute : Attribute, IConfigSource
{
    public IConfig Config { get; } = ManualConfig.CreateEmpty().AddColumn(new RateColumn("GB/s (dense fp32)",
        "4 x 1,048,576 bytes of FP32 gradient per operation, over the mean time",
        (_, ns) => 4.0 * CodecBenchmarks.Length / ns));
}
