using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;

namespace ActorTrain.Benchmarks;

/// <summary>GFLOP/s of an engine step: the model's FLOPs per sample x batch over the mean time.</summary>
public sealed class GFlopsColumn : IColumn
{
    public string Id => nameof(GFlopsColumn);
    public string ColumnName => "GFLOP/s";
    public bool AlwaysShow => true;
    public ColumnCategory Category => ColumnCategory.Custom;
    public int PriorityInCategory => 0;
    public bool IsNumeric => true;
    public UnitType UnitType => UnitType.Dimensionless;
    public string Legend => "forward+backward FLOPs (2 per multiply-add) per second";
    public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;
    public bool IsAvailable(Summary summary) => true;
    public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, SummaryStyle.Default);

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style)
    {
        var report = summary[benchmarkCase];
        if (report?.ResultStatistics is not { } stats) return "-";
        var model = benchmarkCase.Parameters["Model"] as string ?? "softmax";
        double flops = BenchmarkModels.Build(model).FlopsPerSample * (double)EngineStepBenchmarks.Batch;
        return (flops / stats.Mean).ToString("F2"); // FLOPs per ns = GFLOP/s
    }
}

[AttributeUsage(AttributeTargets.Class)]
public sealed class GFlopsColumnAttribute : Attribute, IConfigSource
{
    public IConfig Config { get; } = ManualConfig.CreateEmpty().AddColumn(new GFlopsColumn());
}
