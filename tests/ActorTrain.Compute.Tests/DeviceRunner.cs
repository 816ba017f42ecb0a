using System.Diagnostics;
using System.Reflection;

namespace ActorTrain.Compute.Tests;

/// <summary>
/// Entry point of the test assembly, for GPU machines that have the .NET runtime but no SDK (so no
/// test host): <c>dotnet ActorTrain.Compute.Tests.dll [class-name-filter]</c> runs every
/// <see cref="EngineFactAttribute"/> test of the engine classes whose name contains the filter
/// (default "Cuda") and exits non-zero when one fails. Under <c>dotnet test</c> this is never called.
/// </summary>
public static class DeviceRunner
{
    public static int Main(string[] args)
    {
        string filter = args.Length > 0 ? args[0] : "Cuda";
        int passed = 0, failed = 0;
        var classes = typeof(DeviceRunner).Assembly.GetTypes()
            .Where(t => !t.IsAbstract && typeof(GradientEngineContract).IsAssignableFrom(t) && t.Name.Contains(filter, StringComparison.Ordinal));
        foreach (var type in classes)
        {
            var methods = type.GetMethods(BindingFlags.Public | BindingFlags.Instance)
                .Where(m => m.GetCustomAttribute<EngineFactAttribute>() is not null);
            foreach (var method in methods)
            {
                var clock = Stopwatch.StartNew();
                try
                {
                    method.Invoke(Activator.CreateInstance(type), null);
                    passed++;
                    Console.WriteLine($"PASS {type.Name}.{method.Name} ({clock.ElapsedMilliseconds} ms)");
                }
                catch (TargetInvocationException e)
                {
                    failed++;
                    Console.WriteLine($"FAIL {type.Name}.{method.Name}: {e.InnerException?.Message}");
                }
            }
        }
        Console.WriteLine($"{passed} passed, {failed} failed");
        return failed == 0 && passed > 0 ? 0 : 1;
    }
}
