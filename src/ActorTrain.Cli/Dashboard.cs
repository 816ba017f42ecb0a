using System.CommandLine;
using System.Diagnostics;
using ActorTrain.Core;

namespace ActorTrain.Cli;

/// <summary>
/// `actortrain dashboard`: the Aspire dashboard from the NuGet package Aspire.Dashboard.Sdk.linux-x64
/// (downloaded by a source build's restore, see ActorTrain.Cli.csproj; an installed tool downloads it
/// on first use), on loopback, anonymous, with OTLP/HTTP and
/// OTLP/gRPC receivers. Prints the UI's URL and the endpoint to give a run; stops with Ctrl+C.
/// </summary>
internal static class Dashboard
{
    public const string PackageVersion = "13.6.5";

    /// <summary>The NuGet package folder: NUGET_PACKAGES, or ~/.nuget/packages.</summary>
    public static string PackagesFolder() => Environment.GetEnvironmentVariable("NUGET_PACKAGES") is { Length: > 0 } custom
        ? custom
        : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");

    /// <summary>The dashboard package for this machine (Aspire.Dashboard.Sdk.&lt;rid&gt;) and its executable's name.</summary>
    public static (string Package, string Executable) ForThisMachine()
    {
        string os = OperatingSystem.IsWindows() ? "win" : OperatingSystem.IsMacOS() ? "osx" : "linux";
        string arch = System.Runtime.InteropServices.RuntimeInformation.OSArchitecture == System.Runtime.InteropServices.Architecture.Arm64 ? "arm64" : "x64";
        return ($"Aspire.Dashboard.Sdk.{os}-{arch}", OperatingSystem.IsWindows() ? "Aspire.Dashboard.exe" : "Aspire.Dashboard");
    }

    /// <summary>Where the dashboard executable sits in a package folder.</summary>
    public static string PathIn(string packages, string package, string executable) =>
        Path.Combine(packages, package.ToLowerInvariant(), PackageVersion, "tools", executable);

    /// <summary>
    /// The dashboard executable: in the NuGet package folder, where a source build's restore put it;
    /// otherwise (an installed tool) fetched there once by restoring a throwaway project that
    /// downloads the package, through the user's own NuGet sources and proxy settings.
    /// </summary>
    public static string Locate(TextWriter progress)
    {
        var (package, executable) = ForThisMachine();
        string path = PathIn(PackagesFolder(), package, executable);
        if (File.Exists(path)) return path;
        progress.WriteLine($"The Aspire dashboard ({package} {PackageVersion}, about 125 MB) is not in {PackagesFolder()}: downloading it once with `dotnet restore` ...");
        string project = Directory.CreateTempSubdirectory("actortrain-dashboard-").FullName;
        try
        {
            File.WriteAllText(Path.Combine(project, "fetch.csproj"), RestoreProject(package));
            var info = new ProcessStartInfo("dotnet", ["restore", Path.Combine(project, "fetch.csproj"), "-v", "q", "--nologo"])
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
            };
            info.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
            using var restore = Process.Start(info) ?? throw new ActorTrainException("could not start `dotnet restore`");
            var output = restore.StandardOutput.ReadToEndAsync();
            string errors = restore.StandardError.ReadToEnd();
            restore.WaitForExit();
            if (restore.ExitCode != 0 || !File.Exists(path))
                throw new ActorTrainException($"could not download {package} {PackageVersion} (dotnet restore exited {restore.ExitCode}): " +
                    $"{(errors + output.Result).Trim().Split('\n').LastOrDefault(l => l.Trim().Length > 0)?.Trim()}; check your NuGet sources, or pass --path to an Aspire.Dashboard executable");
            progress.WriteLine($"downloaded to {Path.GetDirectoryName(path)}");
            return path;
        }
        finally
        {
            Directory.Delete(project, recursive: true);
        }
    }

    /// <summary>A project that only downloads the dashboard package (PackageDownload: nothing is referenced or built).</summary>
    public static string RestoreProject(string package) => $"""
        <Project Sdk="Microsoft.NET.Sdk">
          <PropertyGroup>
            <TargetFramework>net{Environment.Version.Major}.0</TargetFramework>
            <ManagePackageVersionsCentrally>false</ManagePackageVersionsCentrally>
          </PropertyGroup>
          <ItemGroup>
            <PackageDownload Include="{package}" Version="[{PackageVersion}]" />
          </ItemGroup>
        </Project>
        """;

    public static Process Start(string executable, int uiPort, int httpPort, int grpcPort)
    {
        if (!File.Exists(executable)) throw new ActorTrainException($"--path {executable}: no such file (the Aspire.Dashboard executable)");
        var info = new ProcessStartInfo(executable)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        info.Environment["ASPNETCORE_URLS"] = $"http://127.0.0.1:{uiPort}";
        info.Environment["ASPIRE_DASHBOARD_OTLP_HTTP_ENDPOINT_URL"] = $"http://127.0.0.1:{httpPort}";
        info.Environment["ASPIRE_DASHBOARD_OTLP_ENDPOINT_URL"] = $"http://127.0.0.1:{grpcPort}";
        info.Environment["ASPIRE_DASHBOARD_UNSECURED_ALLOW_ANONYMOUS"] = "true";
        info.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        return Process.Start(info) ?? throw new ActorTrainException($"{executable}: could not start");
    }

    /// <summary>Waits until the UI answers over HTTP (the dashboard takes a few seconds to start).</summary>
    public static async Task WaitUntilUp(Process process, int uiPort, CancellationToken token)
    {
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(2) };
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (DateTime.UtcNow < deadline)
        {
            if (process.HasExited) throw new ActorTrainException($"the dashboard exited with code {process.ExitCode} (is port {uiPort} already in use?)");
            try
            {
                using var response = await http.GetAsync($"http://127.0.0.1:{uiPort}/api/telemetry/traces", token);
                if (response.IsSuccessStatusCode) return;
            }
            catch (HttpRequestException)
            {
                // not listening yet
            }
            catch (TaskCanceledException) when (!token.IsCancellationRequested)
            {
                // a slow first answer
            }
            await Task.Delay(250, token);
        }
        throw new ActorTrainException("the dashboard did not answer within 60 s");
    }

    public static Command Command(TextWriter stdout, TextWriter stderr, Func<TextWriter, Func<Task<int>>, Task<int>> guard)
    {
        var ui = new Option<int>("--port") { Description = "Port of the dashboard UI.", DefaultValueFactory = _ => 18888 };
        var http = new Option<int>("--otlp-port") { Description = "Port of its OTLP/HTTP receiver (give runs --otlp-endpoint http://localhost:<this>).", DefaultValueFactory = _ => 4318 };
        var grpc = new Option<int>("--grpc-port") { Description = "Port of its OTLP/gRPC receiver.", DefaultValueFactory = _ => 4317 };
        var path = new Option<string?>("--path") { Description = "The Aspire.Dashboard executable, if not in the NuGet package folder." };
        var command = new System.CommandLine.Command("dashboard", "Start the Aspire dashboard on loopback to watch runs' traces and metrics live (Ctrl+C stops it).")
        {
            ui, http, grpc, path,
        };
        command.SetAction((parse, token) => guard(stderr, async () =>
        {
            int uiPort = parse.GetValue(ui), httpPort = parse.GetValue(http), grpcPort = parse.GetValue(grpc);
            using var process = Start(parse.GetValue(path) ?? Locate(stderr), uiPort, httpPort, grpcPort);
            try
            {
                await WaitUntilUp(process, uiPort, token);
                stdout.WriteLine($"Aspire dashboard: http://localhost:{uiPort}");
                stdout.WriteLine($"OTLP endpoint:    http://localhost:{httpPort} (http), http://localhost:{grpcPort} (grpc)");
                stdout.WriteLine($"In another terminal: actortrain run <experiment.conf> --otlp-endpoint http://localhost:{httpPort}");
                stdout.WriteLine("Ctrl+C stops the dashboard.");
                await process.WaitForExitAsync(token);
                return process.ExitCode == 0 ? 0 : 1;
            }
            catch (OperationCanceledException)
            {
                return 0;
            }
            finally
            {
                if (!process.HasExited) process.Kill(entireProcessTree: true);
            }
        }));
        return command;
    }
}
