using ActorTrain.Compute.Ilgpu;
using Xunit.Abstractions;
using Xunit.Sdk;

namespace ActorTrain.Compute.Tests;

/// <summary>Marks an engine test class that needs a CUDA device; its tests are skipped without one.</summary>
[AttributeUsage(AttributeTargets.Class)]
public sealed class RequiresCudaAttribute : Attribute;

/// <summary>
/// A fact declared once in an abstract engine test class and run by every subclass; for a subclass
/// marked <see cref="RequiresCudaAttribute"/> on a machine without CUDA, it is reported skipped
/// (a plain Fact's Skip cannot depend on the class that inherits it).
/// </summary>
[XunitTestCaseDiscoverer("ActorTrain.Compute.Tests.EngineFactDiscoverer", "ActorTrain.Compute.Tests")]
[AttributeUsage(AttributeTargets.Method)]
public sealed class EngineFactAttribute : FactAttribute;

public sealed class EngineFactDiscoverer(IMessageSink diagnostics) : IXunitTestCaseDiscoverer
{
    private static readonly Lazy<bool> Cuda = new(IlgpuDevices.HasCuda);

    public IEnumerable<IXunitTestCase> Discover(ITestFrameworkDiscoveryOptions options, ITestMethod method, IAttributeInfo attribute)
    {
        bool needsCuda = method.TestClass.Class.GetCustomAttributes(typeof(RequiresCudaAttribute)).Any();
        if (needsCuda && !Cuda.Value)
        {
            return [new XunitSkippedDataRowTestCase(diagnostics, options.MethodDisplayOrDefault(), options.MethodDisplayOptionsOrDefault(),
                method, "no CUDA device here: this class runs where ILGPU sees one")];
        }
        return [new XunitTestCase(diagnostics, options.MethodDisplayOrDefault(), options.MethodDisplayOptionsOrDefault(), method)];
    }
}
