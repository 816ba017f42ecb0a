using System.CommandLine;
using System.Diagnostics;
using ActorTrain.Core;

namespace ActorTrain.Cli;

/// <summary>
/// `actortrain dashboard`: the Aspire dashboard from the NuGet package Aspire.Dashboard.Sdk.linux-x64
/// (downloaded by the build, see ActorTrain.Cli.csproj), on loopback, anonymous, with OTLP/HTTP and
/// OTLP/gRPC receivers. Prints the UI's URL and the endpoint to give a run; stops with Ctrl+C.
/// </summary>
internal static class Dashboard
{
    public const string PackageVersion = "13.6.5";

    /// <summary>The dashboard executable in the NuGet package folder (NUGET_PACKAGES, or ~/.nuget/packages).</summary>
    public static string Locate()
    {
        string packages = Environment.GetEnvironmentVariable("NUGET_PACKAGES") is { Length: > 0 } custom
            ? custom
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        string path = Path.Combine(packages, "aspire.dashboard.sdk.linux-x64", PackageVersion, "tools", "Aspire.Dashboard");
        if (!File.Exists(path))
            throw new ActorTrainException($"the Aspire dashboard is not at {path}: run `dotnet restore src/ActorTrain.Cli` (it downloads Aspire.Dashboard.Sdk.linux-x64 {PackageVersion}), or pass --path");
        return path;
    }

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
            using var process = Start(parse.GetValue(path) ?? Locate(), uiPort, httpPort, grpcPort);
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
