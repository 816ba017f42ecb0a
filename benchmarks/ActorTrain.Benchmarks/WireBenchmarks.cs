using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using ActorTrain.Cluster.Protocol;
using ActorTrain.Cluster.Remoting;
using Akka.Actor;
using Akka.Configuration;

namespace ActorTrain.Benchmarks;

/// <summary>
/// `wire [--mb 256] [--repeat 3]`: gradient bytes per second between two processes on loopback,
/// three ways: a raw TCP socket, Akka.Remote carrying plain byte[] messages (100 KB, under the
/// 128000-byte frame), and the project's path (PushGradient in the wire format through the
/// gateways, 1 MB payloads cut into 120 KB chunks; and 100 KB pushes told directly). This process
/// sends; a child process (`wire --receiver`) receives and acknowledges every 16 MB, with at most
/// two such windows in flight (Akka.Remote has no flow control of its own).
/// </summary>
public static class WireBenchmarks
{
    private const int Window = 16 << 20;

    private static Config NodeConfig => WireSerializer.Bindings.WithFallback(ConfigurationFactory.ParseString("""
        akka.actor.provider = remote
        akka.remote.dot-netty.tcp {
          hostname = 127.0.0.1
          port = 0
          maximum-frame-size = 128000b
          send-buffer-size = 16MiB
          receive-buffer-size = 16MiB
        }
        akka.loglevel = ERROR
        """));

    public static int Run(string[] args)
    {
        if (args.Contains("--receiver")) return Receive();
        string Get(string key, string fallback)
        {
            int i = Array.IndexOf(args, "--" + key);
            return i >= 0 && i + 1 < args.Length ? args[i + 1] : fallback;
        }
        long total = long.Parse(Get("mb", "256"), CultureInfo.InvariantCulture) << 20;
        int repeat = int.Parse(Get("repeat", "3"), CultureInfo.InvariantCulture);

        var start = new ProcessStartInfo(Experiments.LocalCluster.DotnetHost()) { RedirectStandardOutput = true, RedirectStandardInput = true, UseShellExecute = false };
        start.ArgumentList.Add(typeof(WireBenchmarks).Assembly.Location);
        start.ArgumentList.Add("wire");
        start.ArgumentList.Add("--receiver");
        using var receiver = Process.Start(start)!;
        var ready = receiver.StandardOutput.ReadLine()!.Split(' '); // READY <akka address> <tcp port>
        var system = ActorSystem.Create("bench", NodeConfig);
        try
        {
            var address = Address.Parse(ready[1]);
            int tcpPort = int.Parse(ready[2], CultureInfo.InvariantCulture);
            var provider = ((ExtendedActorSystem)system).Provider;
            var sink = provider.ResolveActorRef(new RootActorPath(address) / "user" / "sink");
            var gateway = system.ActorOf(Gateway.Props(120_000, 256 << 20), "gateway");
            var route = new GatewayRoute(gateway, provider.DefaultAddress);

            var results = new List<(string Name, double[] MBps)>
            {
                ("raw TCP socket (1 MB writes)", Measure(repeat, () => Tcp(tcpPort, total))),
                ("Akka.Remote, byte[] of 100 KB (default serializer)", Measure(repeat, () => Akka(system, total, 100_000,
                    (ack, bytes) => sink.Tell(new byte[bytes], ack)))),
                ("wire format, PushGradient of 100 KB told directly", Measure(repeat, () => Akka(system, total, 100_000,
                    (ack, bytes) => sink.Tell(new PushGradient(0, 0, 0, 1f, false, 32, new byte[bytes]), ack)))),
                ("wire format through the gateways, PushGradient of 1 MB in 120 KB chunks", Measure(repeat, () => Akka(system, total, 1 << 20,
                    (ack, bytes) => route.Tell(sink, new PushGradient(0, 0, 0, 1f, false, 32, new byte[bytes]), ack)))),
            };
            Console.WriteLine($"| path | MB/s (median of {repeat}) | min | max |");
            Console.WriteLine("|---|---:|---:|---:|");
            foreach (var (name, mbps) in results)
            {
                var sorted = mbps.Order().ToArray();
                Console.WriteLine(FormattableString.Invariant($"| {name} | {sorted[sorted.Length / 2]:0} | {sorted[0]:0} | {sorted[^1]:0} |"));
            }
            Console.WriteLine(FormattableString.Invariant($"({total >> 20} MB per measurement, one warm-up each, {Environment.ProcessorCount} cores)"));
        }
        finally
        {
            receiver.StandardInput.WriteLine("quit");
            receiver.WaitForExit(10_000);
            system.Terminate().Wait();
        }
        return 0;
    }

    private static double[] Measure(int repeat, Func<double> once)
    {
        once(); // warm-up: connections, JIT
        return Enumerable.Range(0, repeat).Select(_ => once()).ToArray();
    }

    private static double Tcp(int port, long total)
    {
        using var client = new TcpClient();
        client.NoDelay = true;
        client.SendBufferSize = 16 << 20;
        client.Connect(IPAddress.Loopback, port);
        var stream = client.GetStream();
        var buffer = new byte[1 << 20];
        var watch = Stopwatch.StartNew();
        stream.Write(BitConverter.GetBytes(total));
        for (long sent = 0; sent < total; sent += buffer.Length) stream.Write(buffer, 0, (int)Math.Min(buffer.Length, total - sent));
        if (stream.ReadByte() < 0) throw new IOException("the receiver closed the connection");
        return total / 1e6 / watch.Elapsed.TotalSeconds;
    }

    private static double Akka(ActorSystem system, long total, int messageBytes, Action<IActorRef, int> send)
    {
        var acks = new SemaphoreSlim(0);
        var ack = system.ActorOf(Props.Create(() => new AckCounter(acks)));
        try
        {
            var watch = Stopwatch.StartNew();
            long sent = 0;
            int windows = 0;
            while (sent < total)
            {
                send(ack, messageBytes);
                sent += messageBytes;
                if (sent / Window > windows)
                {
                    windows++;
                    if (windows > 2) acks.Wait(); // at most two windows in flight
                }
            }
            // the sink acknowledges whole windows only: wait for the last ones
            long expected = sent / Window;
            for (long waited = Math.Max(0, windows - 2); waited < expected; waited++) acks.Wait();
            return sent / 1e6 / watch.Elapsed.TotalSeconds;
        }
        finally
        {
            system.Stop(ack);
        }
    }

    private sealed class AckCounter : ReceiveActor
    {
        public AckCounter(SemaphoreSlim acks) => ReceiveAny(_ => acks.Release());
    }

    /// <summary>Counts payload bytes and answers "ack" for every full window.</summary>
    private sealed class Sink : ReceiveActor
    {
        private long _bytes;

        public Sink()
        {
            Receive<byte[]>(b => Count(b.Length));
            Receive<PushGradient>(p =>
            {
                Count(p.Payload.Length);
                p.Release();
            });
        }

        private void Count(int bytes)
        {
            long before = _bytes / Window;
            _bytes += bytes;
            for (long w = before; w < _bytes / Window; w++) Sender.Tell("ack");
        }
    }

    private static int Receive()
    {
        var system = ActorSystem.Create("bench", NodeConfig);
        system.ActorOf(Props.Create(() => new Sink()), "sink");
        system.ActorOf(Gateway.Props(120_000, 256 << 20), "gateway");
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        _ = Task.Run(async () =>
        {
            var buffer = new byte[1 << 20];
            while (true)
            {
                using var client = await listener.AcceptTcpClientAsync();
                client.ReceiveBufferSize = 16 << 20;
                var stream = client.GetStream();
                var header = new byte[8];
                await stream.ReadExactlyAsync(header);
                long expected = BitConverter.ToInt64(header), received = 0;
                while (received < expected)
                {
                    int n = await stream.ReadAsync(buffer);
                    if (n == 0) break;
                    received += n;
                }
                stream.WriteByte(1);
            }
        });
        Console.WriteLine($"READY {((ExtendedActorSystem)system).Provider.DefaultAddress} {((IPEndPoint)listener.LocalEndpoint).Port}");
        Console.In.ReadLine();
        system.Terminate().Wait();
        return 0;
    }
}
