using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text.Json;
using ActorTrain.Cli;
using ActorTrain.Cluster.Actors;
using ActorTrain.Core;
using ActorTrain.Experiments;
using Akka.Actor;
using Akka.Cluster;

namespace ActorTrain.Cli.Tests;

/// <summary>
/// Multi-node runs with real processes on loopback: this test process is the coordinator (and
/// seed), the ps and worker nodes are `actortrain node` child processes.
/// </summary>
[Collection(ClusterCollection.Name)]
public sealed class ClusterRunTests() : TempFolderTest("actortrain-cluster-")
{
    private static string Cli => typeof(ActorTrainCommand).Assembly.Location;

    /// <summary>Failure detection fast enough for a test: a silent node is removed about 3-4 s after it died.</summary>
    private string FastClusterConfig()
    {
        string path = Path.Combine(Root, "cluster-fast.conf");
        File.WriteAllText(path, """
            akka.cluster.failure-detector.acceptable-heartbeat-pause = 2s
            akka.cluster.failure-detector.heartbeat-interval = 250ms
            akka.cluster.split-brain-resolver.stable-after = 1s
            """);
        return path;
    }

    /// <summary>
    /// Runs <paramref name="run"/> (this process as coordinator) on a local cluster whose logs go to
    /// logs-output and results under output; on failure the children are killed, not waited for.
    /// </summary>
    private async Task<(RunResult Result, LocalCluster Cluster)> OnCluster(ExperimentSpec spec, int nodes, string output, string? clusterConfig,
        Func<LocalCluster, string, Task<RunResult>> run)
    {
        var cluster = LocalCluster.Plan(nodes, spec, Cli, clusterConfig, Path.Combine(Root, "logs-" + output));
        Exception? unexpected = null;
        try
        {
            return (await run(cluster, Path.Combine(Root, output)).WaitAsync(TimeSpan.FromMinutes(3)), cluster);
        }
        catch (Exception e) when (e is TimeoutException || e is RunFailedException && e.Message.Contains("stalled"))
        {
            // no test expects a stall or a hang: keep what the nodes said, which goes with the temporary folder
            cluster.KillAll();
            unexpected = e;
        }
        catch
        {
            cluster.KillAll();
            throw;
        }
        finally
        {
            await cluster.DisposeAsync();
        }
        throw new RunFailedException(unexpected.Message + NodeLogTails(), unexpected);
    }

    /// <summary>The last lines of every node log under the test's folder, for a failure message.</summary>
    private string NodeLogTails() => string.Concat(Directory.GetFiles(Root, "node-*.log", SearchOption.AllDirectories).Order()
        .Select(log => $"\n--- {Path.GetFileName(log)} (last 30 lines)\n{string.Join('\n', File.ReadLines(log).TakeLast(30))}"));

    /// <param name="observer">Given the cluster (to kill one of its nodes, say), the observer of the run.</param>
    private Task<(RunResult Result, LocalCluster Cluster)> RunOnCluster(ExperimentSpec spec, int nodes, string output, string? clusterConfig = null,
        Func<LocalCluster, IRunObserver>? observer = null) =>
        OnCluster(spec, nodes, output, clusterConfig,
            (cluster, folder) => ClusterRunner.RunAsync(spec, cluster.CoordinatorOptions, folder, observer?.Invoke(cluster), default, cluster.Launch));

    [Fact]
    public async Task Three_processes_under_the_virtual_clock_write_the_metrics_of_one_process_byte_for_byte()
    {
        var spec = ExperimentSpec.Load(null, ["training.max-steps=300", "output.plots=off", "telemetry.exporter=none"]);
        var single = await ExperimentRunner.RunAsync(spec, Path.Combine(Root, "single"));
        var (cluster, _) = await RunOnCluster(spec, 3, "cluster");

        Assert.Equal(StopReason.MaxSteps, cluster.Outcome.StopReason);
        Assert.Equal(300, cluster.Outcome.FinalStep);
        AssertSameMetrics(single, cluster);
        Assert.Equal(single.Outcome.FinalWeights, cluster.Outcome.FinalWeights);
        // both nodes served their part and left the cluster; the coordinator's EndRun was heard (not dropped as a stranger's)
        foreach (string role in new[] { "ps", "worker" })
        {
            string log = File.ReadAllText(Directory.GetFiles(Path.Combine(Root, "logs-cluster"), $"*-{role}.log").Single());
            Assert.Contains($"{role} node left the cluster", log);
            Assert.DoesNotContain("not this cluster's coordinator", log);
            Assert.DoesNotContain("not a member of this cluster", log);
            Assert.DoesNotContain("dropped a", log); // the coordinator's own messages (StopTraining comes straight, not through the gateways) are vouched for
        }
    }

    [Fact]
    public async Task All_reduce_across_three_worker_processes_writes_the_metrics_of_one_process_byte_for_byte()
    {
        var spec = ExperimentSpec.Load(null, ["training.max-steps=100", "output.plots=off", "telemetry.exporter=none", "topology.shards=1",
            "topology.aggregation=ring-allreduce", "placement.workers-per-host=2"]);
        var single = await ExperimentRunner.RunAsync(spec, Path.Combine(Root, "single"));
        var (cluster, planned) = await RunOnCluster(spec, 4, "cluster");
        Assert.Equal((0, 3), (planned.PsNodes, planned.WorkerNodes));
        Assert.Equal(100, cluster.Outcome.FinalStep);
        AssertSameMetrics(single, cluster);
        Assert.Equal(single.Outcome.FinalWeights, cluster.Outcome.FinalWeights);
        Assert.Equal(single.Outcome.ReplicaChecks, cluster.Outcome.ReplicaChecks);
        Assert.True(cluster.Outcome.ReplicaChecks > 0);
    }

    /// <summary>
    /// Two replicas of a two-stage pipeline with the stages on two processes and the drivers on a
    /// third: activations, their gradients and the replicas' gradients and weights cross processes;
    /// the run equals the one-process run byte for byte.
    /// </summary>
    [Fact]
    public async Task Pipeline_stages_on_two_processes_write_the_metrics_and_pipeline_report_of_one_process_byte_for_byte()
    {
        var spec = ExperimentSpec.Load(null, ["training.max-steps=60", "output.plots=off", "topology.workers=2",
            "parallelism.pipeline-stages=2", "parallelism.micro-batches=4", "parallelism.schedule=1f1b", "simulation.compute-time=2ms", "training.checkpoint-every=20"]);
        var single = await ExperimentRunner.RunAsync(spec, Path.Combine(Root, "single"));
        var (cluster, planned) = await RunOnCluster(spec, 4, "cluster");
        Assert.Equal((2, 1), (planned.PsNodes, planned.WorkerNodes));
        Assert.Equal(60, cluster.Outcome.FinalStep);
        AssertSameMetrics(single, cluster);
        Assert.Equal(single.Outcome.FinalWeights, cluster.Outcome.FinalWeights);
        string Pipeline(RunResult r) => JsonDocument.Parse(File.ReadAllText(Path.Combine(r.Folder, "summary.json"))).RootElement.GetProperty("pipeline").GetRawText();
        Assert.Equal(Pipeline(single), Pipeline(cluster));
        // (a fixed compute time: the bubble is modelled; measured compute would differ run to run)
        // each stage node computed its stage of both replicas (stage-grid index k = r x 2 + s on ps node k mod 2)
        var trace = Experiments.Telemetry.TraceFile.Read(cluster.Folder);
        var forward = trace.Spans.Where(s => s.Name == "stage.forward").ToList();
        Assert.Equal(2 * 2 * 4 * 60, forward.Count);
        var nodeOf = forward.GroupBy(s => s.Int("actortrain.stage")).ToDictionary(g => g.Key!.Value, g => g.Select(s => s.Node).Distinct().Single());
        Assert.NotEqual(nodeOf[0], nodeOf[1]);
        Assert.All(nodeOf.Values, n => Assert.Equal("actortrain-ps", trace.Nodes[n]));
        // the stages' checkpoints crossed the wire too: resumed in one process, the run ends where it ended
        Assert.Equal([20L, 40L], Checkpoints.Steps(cluster.Folder));
        var resumed = await ExperimentRunner.ResumeAsync(cluster.Folder, 20, Path.Combine(Root, "resumed"));
        Assert.Equal(cluster.Outcome.FinalWeights, resumed.Outcome.FinalWeights);
    }

    /// <summary>
    /// A dynamic FP16 scale across processes: the stages' finiteness reports and the drivers' verdicts cross
    /// nodes; from an overflowing 2^24 the run skips steps and backs off exactly as in one process.
    /// </summary>
    [Fact]
    public async Task A_dynamic_fp16_pipeline_on_four_processes_skips_and_scales_as_one_process()
    {
        var spec = ExperimentSpec.Load(null, ["training.max-steps=60", "output.plots=off", "telemetry.exporter=none", "topology.workers=2",
            "parallelism.pipeline-stages=2", "parallelism.micro-batches=4", "precision.mode=fp16", "precision.initial-scale=16777216", "precision.growth-interval=5"]);
        var single = await ExperimentRunner.RunAsync(spec, Path.Combine(Root, "single"));
        var (cluster, _) = await RunOnCluster(spec, 4, "cluster");
        AssertSameMetrics(single, cluster);
        Assert.Equal(single.Outcome.FinalWeights, cluster.Outcome.FinalWeights);
        Assert.True(cluster.Summary.SkippedGradients > 0);
    }

    /// <summary>K-FAC across processes: the workers' factor contributions travel with their pushes to the shards on the ps node.</summary>
    [Fact]
    public async Task Kfac_on_three_processes_writes_the_metrics_of_one_process_byte_for_byte()
    {
        var spec = ExperimentSpec.Load(null, ["training.max-steps=40", "training.eval-every=10", "output.plots=off", "telemetry.exporter=none",
            "optimizer.type=kfac", "optimizer.learning-rate=0.02", "optimizer.kfac.damping=0.01", "optimizer.kfac.inverse-every=5",
            "optimizer.kfac.factor-every=2", "topology.shards=2"]);
        var single = await ExperimentRunner.RunAsync(spec, Path.Combine(Root, "single"));
        var (cluster, _) = await RunOnCluster(spec, 3, "cluster");
        Assert.Equal(40, cluster.Outcome.FinalStep);
        AssertSameMetrics(single, cluster);
        Assert.Equal(single.Outcome.FinalWeights, cluster.Outcome.FinalWeights);
        Assert.True(cluster.Summary.FactorBytesWorkerToShard > 0);
        Assert.Equal(single.Summary.FactorBytesWorkerToShard, cluster.Summary.FactorBytesWorkerToShard);
    }

    [Fact]
    public async Task Resuming_a_checkpoint_on_three_processes_equals_resuming_it_in_one_process_and_the_uninterrupted_run()
    {
        var spec = ExperimentSpec.Load(null, ["training.max-steps=300", "training.checkpoint-every=100", "output.plots=off", "telemetry.exporter=none"]);
        var whole = await ExperimentRunner.RunAsync(spec, Path.Combine(Root, "whole"));
        var local = await ExperimentRunner.ResumeAsync(whole.Folder, 100, Path.Combine(Root, "local"));

        var (resumed, _) = await OnCluster(spec, 3, "resumed", null,
            (cluster, folder) => ClusterRunner.ResumeAsync(whole.Folder, 100, cluster.CoordinatorOptions, folder, null, default, cluster.Launch));
        Assert.Equal(whole.Outcome.FinalWeights, resumed.Outcome.FinalWeights);
        Assert.Equal(File.ReadAllBytes(Path.Combine(local.Folder, "metrics.csv")), File.ReadAllBytes(Path.Combine(resumed.Folder, "metrics.csv")));
    }

    [Fact]
    public async Task A_wall_clock_run_across_three_processes_completes_with_every_node_in_its_trace_and_keeps_the_node_logs()
    {
        var spec = ExperimentSpec.Load(null, ["training.max-steps=200", "simulation.clock=wall", "output.plots=off"]);
        var (result, cluster) = await RunOnCluster(spec, 3, "wall");
        Assert.Equal(200, result.Outcome.FinalStep);
        Assert.Equal("wall", result.Summary.Clock.Split(',')[0]);
        Assert.True(result.Outcome.Evaluations[^1].TestLoss < result.Outcome.Evaluations[0].TestLoss);
        cluster.MoveLogs(result.Folder);
        Assert.Equal(2, Directory.GetFiles(Path.Combine(result.Folder, "nodes"), "*.log").Length);

        // the ps and worker nodes' spans were added to the coordinator's: one trace, every step of every worker
        var trace = Experiments.Telemetry.TraceFile.Read(result.Folder);
        Assert.Single(trace.Spans.Select(s => s.TraceId).Distinct());
        Assert.InRange(trace.Spans.Count(s => s.Name == "worker.step"), 4 * 200, 4 * 201);
        Assert.Equal(2 * 200, trace.Spans.Count(s => s.Name == "shard.apply"));
        Assert.Single(trace.Spans, s => s.Name == "run");
        // each span knows its node; the Chrome export has a process per role of each node
        Assert.Equal(["actortrain", "actortrain-ps", "actortrain-worker"], trace.Nodes);
        Assert.All(trace.Spans.Where(s => s.Name == "worker.step"), s => Assert.Equal(2, s.Node));
        Assert.All(trace.Spans.Where(s => s.Name == "shard.apply"), s => Assert.Equal(1, s.Node));
        using var chrome = new MemoryStream();
        trace.WriteChrome(chrome);
        using var doc = System.Text.Json.JsonDocument.Parse(chrome.ToArray());
        var processes = doc.RootElement.GetProperty("traceEvents").EnumerateArray()
            .Where(e => e.GetProperty("ph").GetString() == "M" && e.GetProperty("name").GetString() == "process_name")
            .ToDictionary(e => e.GetProperty("pid").GetInt32(), e => e.GetProperty("args").GetProperty("name").GetString());
        Assert.Equal("coordinator @ node 0 (actortrain)", processes[1]);
        Assert.Equal("shards @ node 1 (actortrain-ps)", processes[12]);
        Assert.Equal("workers @ node 2 (actortrain-worker)", processes[24]);
    }

    private sealed class KillAtStep(long step, Action kill) : IRunObserver
    {
        private bool _killed;

        public void OnEvaluation(EvaluationPoint point)
        {
            if (_killed || point.Step < step) return;
            _killed = true;
            kill();
        }
    }

    [Theory]
    [InlineData("ssp")]
    [InlineData("bsp")] // the barrier re-forms over the survivors once the lost node is removed
    public async Task Killing_a_worker_process_mid_run_still_completes_the_run(string policy)
    {
        var spec = ExperimentSpec.Load(null, ["training.max-steps=400", "training.eval-every=20", $"sync.policy={policy}", "sync.staleness=2",
            "simulation.clock=wall", "output.plots=off", "telemetry.exporter=none"]);
        var (result, _) = await RunOnCluster(spec, 4, "kill-" + policy, FastClusterConfig(),
            cluster => new KillAtStep(60, () => cluster.Nodes.Last(n => n.Role == "worker").Process.Kill()));

        // 2 worker nodes in address order: workers 0 and 2 on the first, 1 and 3 on the second; one node was killed
        Assert.Equal(StopReason.MaxSteps, result.Outcome.StopReason);
        Assert.Equal(400, result.Outcome.FinalStep);
        var lost = result.Outcome.Faults!.Where(f => f.NodeLost).Select(f => f.Worker).Order().ToArray();
        Assert.True(lost.SequenceEqual([0, 2]) || lost.SequenceEqual([1, 3]), $"lost workers: {string.Join(", ", lost)}");
        using var summary = JsonDocument.Parse(File.ReadAllText(Path.Combine(result.Folder, "summary.json")));
        Assert.Equal(lost, summary.RootElement.GetProperty("lost_workers").EnumerateArray().Select(e => e.GetInt32()).ToArray());
        // the survivors did the rest of the work: each pushed more steps than any lost worker
        var steps = result.Outcome.Workers.ToDictionary(w => w.Worker, w => w.Steps);
        long lostMost = lost.Max(w => steps[w]);
        Assert.All(steps.Keys.Except(lost), w => Assert.True(steps[w] > lostMost, string.Join(", ", steps)));
        Assert.Contains("lost", File.ReadAllText(Path.Combine(result.Folder, "report.md")));
    }

    [Fact]
    public async Task Losing_the_ps_process_stops_the_run_with_a_clear_error_and_resume_finishes_it_from_the_last_checkpoint()
    {
        // 5 ms a step (1.5 s a run): one run of the suite saw a kill test end without the failure it expects. The evaluation
        // that triggers the kill runs off the training's path, and with measured compute the 300 steps can end before it comes
        var spec = ExperimentSpec.Load(null, ["training.max-steps=300", "training.eval-every=20", "training.checkpoint-every=40",
            "simulation.clock=wall", "simulation.compute-time=5ms", "output.plots=off", "telemetry.exporter=none"]);
        var failure = await Assert.ThrowsAsync<RunFailedWithCheckpointException>(() => RunOnCluster(spec, 3, "ps", FastClusterConfig(),
            cluster => new KillAtStep(100, () => cluster.Nodes.Single(n => n.Role == "ps").Process.Kill())));
        Assert.Contains("shard 0", failure.Message);
        Assert.Contains("was lost", failure.Message);
        Assert.Contains("--resume", failure.Message);
        await AssertResumeFinishes(failure, "ps");
    }

    /// <summary>A pipeline has no spare: losing a stage's process ends the run naming the stage, and the last checkpoint resumes it.</summary>
    [Fact]
    public async Task Losing_a_stage_process_stops_a_pipeline_run_naming_the_stage_and_resume_finishes_it()
    {
        var spec = ExperimentSpec.Load(null, ["training.max-steps=300", "training.eval-every=20", "training.checkpoint-every=40", "topology.workers=1",
            "parallelism.pipeline-stages=2", "simulation.clock=wall", "simulation.compute-time=5ms", "output.plots=off", "telemetry.exporter=none"]);
        var failure = await Assert.ThrowsAsync<RunFailedWithCheckpointException>(() => RunOnCluster(spec, 4, "stage", FastClusterConfig(),
            cluster => new KillAtStep(100, () => cluster.Nodes.First(n => n.Role == "ps").Process.Kill())));
        Assert.Matches("pipeline stage [01] of replica 0 on .* was lost", failure.Message);
        await AssertResumeFinishes(failure, "stage");
    }

    /// <summary>The two runs wrote the same metrics.csv, byte for byte.</summary>
    private static void AssertSameMetrics(RunResult single, RunResult cluster) =>
        Assert.Equal(File.ReadAllBytes(Path.Combine(single.Folder, "metrics.csv")), File.ReadAllBytes(Path.Combine(cluster.Folder, "metrics.csv")));

    /// <summary>
    /// A run of 300 steps (checkpoint every 40) lost a process at step 100: its last checkpoint is one
    /// of those, and --resume goes on from it (its first evaluation) to step 300.
    /// </summary>
    private async Task AssertResumeFinishes(RunFailedWithCheckpointException failure, string output)
    {
        long last = Checkpoints.Steps(failure.Folder)[^1];
        Assert.InRange(last, 40, 280);
        var resumed = await ExperimentRunner.ResumeAsync(failure.Folder, outputRoot: Path.Combine(Root, output));
        Assert.Equal(300, resumed.Outcome.FinalStep);
        Assert.Equal(last, resumed.Outcome.Evaluations[0].Step);
    }

    private (string Path, string Thumbprint) Certificate(string name)
    {
        using var rsa = RSA.Create(2048);
        var request = new CertificateRequest($"CN={name}", rsa, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1"), new Oid("1.3.6.1.5.5.7.3.2")], false));
        using var certificate = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(30));
        string path = System.IO.Path.Combine(Root, name + ".pfx");
        File.WriteAllBytes(path, certificate.Export(X509ContentType.Pfx, "secret"));
        return (path, certificate.Thumbprint);
    }

    private string TlsConfig(string name, string certificate, params string[] trusted)
    {
        string path = Path.Combine(Root, name + ".conf");
        File.WriteAllText(path, $$"""
            actortrain.cluster.tls {
              enabled = on
              certificate = "{{certificate}}"
              password = secret
              trusted-thumbprints = [{{string.Join(", ", trusted.Select(t => $"\"{t}\""))}}]
            }
            akka.loglevel = OFF
            akka.stdout-loglevel = OFF
            """);
        return path;
    }

    [Fact]
    public async Task A_node_with_the_wrong_certificate_cannot_join_a_TLS_cluster()
    {
        var cluster = Certificate("cluster");
        var stranger = Certificate("stranger");
        int port = LocalCluster.FreePort();
        string[] seeds = [$"127.0.0.1:{port}"];
        using var seed = ClusterRunner.CreateSystem(ClusterRunner.LoadConfig(new ClusterNodeOptions("coordinator", TlsConfig("seed", cluster.Path, cluster.Thumbprint), port, seeds)), "coordinator");
        using var member = ClusterRunner.CreateSystem(ClusterRunner.LoadConfig(new ClusterNodeOptions("worker", TlsConfig("member", cluster.Path, cluster.Thumbprint), 0, seeds)), "worker");
        using var intruder = ClusterRunner.CreateSystem(ClusterRunner.LoadConfig(new ClusterNodeOptions("worker", TlsConfig("intruder", stranger.Path, cluster.Thumbprint, stranger.Thumbprint), 0, seeds)), "worker");
        try
        {
            var seedCluster = Akka.Cluster.Cluster.Get(seed);
            var memberAddress = Akka.Cluster.Cluster.Get(member).SelfAddress;
            var intruderAddress = Akka.Cluster.Cluster.Get(intruder).SelfAddress;
            Assert.Equal("akka.ssl.tcp", memberAddress.Protocol);

            // the node with the cluster's certificate is Up within seconds (the positive control) ...
            var deadline = DateTime.UtcNow.AddSeconds(30);
            while (!seedCluster.State.Members.Any(m => m.Address == memberAddress && m.Status == MemberStatus.Up))
            {
                Assert.True(DateTime.UtcNow < deadline, "the node with the trusted certificate did not join within 30 s");
                await Task.Delay(100);
            }
            // ... while the one with another certificate never becomes a member: its TLS handshakes are
            // refused. A bounded wait is the only way to observe "never"; it spans several join retries.
            var watch = DateTime.UtcNow.AddSeconds(6);
            while (DateTime.UtcNow < watch)
            {
                Assert.DoesNotContain(seedCluster.State.Members, m => m.Address == intruderAddress);
                Assert.DoesNotContain(Akka.Cluster.Cluster.Get(intruder).State.Members, m => m.Address == seedCluster.SelfAddress);
                await Task.Delay(200);
            }
        }
        finally
        {
            await Task.WhenAll(seed.Terminate(), member.Terminate(), intruder.Terminate());
        }
    }

    /// <summary>
    /// Without TLS any process that reaches the seed can join the cluster. One joins with the
    /// coordinator's role before the run, and at step 100 tells every node the run is over and
    /// asks for its telemetry, sends the virtual clock a forged outbox, and sends forged
    /// virtual-clock events through every node's gateway. A node hears only the cluster's first
    /// coordinator (the oldest member with that role); the clock and the gateways only the nodes
    /// the run is placed on. Then it leaves, which a node takes for the run's end only from the
    /// cluster's coordinator: the run ends as one process's, byte for byte.
    /// </summary>
    [Fact]
    public async Task A_process_that_joins_as_a_second_coordinator_is_not_heard_as_the_coordinator()
    {
        // 2,000 steps: the nodes hear of the intruder's leaving (at step 100) while the run still goes on
        var spec = ExperimentSpec.Load(null, ["training.max-steps=2000", "output.plots=off", "telemetry.exporter=none"]);
        var single = await ExperimentRunner.RunAsync(spec, Path.Combine(Root, "single"));
        ActorSystem? intruder = null;
        int sent = 0;
        try
        {
            var (attacked, _) = await OnCluster(spec, 3, "joined", null, (c, folder) =>
            {
                intruder = ClusterRunner.CreateSystem(ClusterRunner.LoadConfig(new ClusterNodeOptions("coordinator", null, 0, [$"127.0.0.1:{c.SeedPort}"])), "coordinator");
                var self = intruder.ActorOf(Props.Empty, "coordinator");
                var gateway = new Cluster.Remoting.GatewayRoute(intruder.ActorOf(Cluster.Remoting.Gateway.Props(16_000, 4 << 20), "gateway"),
                    Akka.Cluster.Cluster.Get(intruder).SelfAddress);
                var observer = new KillAtStep(100, () =>
                {
                    var cluster = Akka.Cluster.Cluster.Get(intruder);
                    // the run does not wait for the intruder: hold it here (the coordinator's thread) until the intruder is Up and knows the others
                    for (var deadline = DateTime.UtcNow.AddSeconds(30); cluster.State.Members.Count(m => m.Status == MemberStatus.Up) < 4;)
                    {
                        Assert.True(DateTime.UtcNow < deadline, "the intruder did not join within 30 s");
                        Thread.Sleep(50);
                    }
                    var provider = ((ExtendedActorSystem)intruder).Provider;
                    foreach (var member in cluster.State.Members.Where(m => m.Address != cluster.SelfAddress))
                    {
                        var node = provider.ResolveActorRef(new RootActorPath(member.Address) / "user" / "node");
                        node.Tell(Cluster.Remoting.CollectTelemetry.Instance, self);
                        node.Tell(Cluster.Remoting.EndRun.Instance, self);
                        var clock = provider.ResolveActorRef(new RootActorPath(member.Address) / "user" / "clock");
                        clock.Tell(new Cluster.Remoting.EventDone(clock, 1, 1e9, []), self);
                        // a virtual-clock event through the node's gateway: run by the shard or worker there, it would end as a real outbox
                        foreach (string actor in new[] { "shard-0", "shard-1", "worker-0", "worker-1" })
                            gateway.Tell(provider.ResolveActorRef(new RootActorPath(member.Address) / "user" / "node" / actor),
                                new Cluster.Remoting.RemoteEvent(Cluster.Protocol.FinalSnapshotRequest.Instance, 1, 1e9), self);
                        sent++;
                    }
                    // and leaves: a node that took any coordinator's leaving for the run's end would leave too
                    var left = new TaskCompletionSource();
                    cluster.RegisterOnMemberRemoved(() => left.TrySetResult());
                    cluster.Leave(cluster.SelfAddress);
                    Assert.True(left.Task.Wait(TimeSpan.FromSeconds(30)), "the intruder did not leave within 30 s");
                });
                return ClusterRunner.RunAsync(spec, c.CoordinatorOptions, folder, observer, default, c.Launch);
            });
            Assert.Equal(3, sent); // the coordinator, the ps node and the worker node
            Assert.Equal(StopReason.MaxSteps, attacked.Outcome.StopReason);
            AssertSameMetrics(single, attacked);
        }
        finally
        {
            if (intruder is not null) await intruder.Terminate();
        }
    }

    /// <summary>
    /// A process that is not a member of the cluster, knowing only the coordinator's address, sends
    /// forged final snapshots and step reports to the coordinator, a forged event to the virtual
    /// clock, and malformed and forged frames to the gateway, in the middle of the run. All of it is
    /// dropped: the run ends with the single process's weights and metrics, byte for byte.
    /// </summary>
    [Fact]
    public async Task A_strangers_forged_messages_and_malformed_frames_change_nothing_in_a_live_cluster_run()
    {
        var spec = ExperimentSpec.Load(null, ["training.max-steps=300", "output.plots=off", "telemetry.exporter=none"]);
        var single = await ExperimentRunner.RunAsync(spec, Path.Combine(Root, "single"));
        var stranger = ActorSystem.Create("actortrain", Cluster.Remoting.WireSerializer.Bindings.WithFallback(Akka.Configuration.ConfigurationFactory.ParseString("""
            akka.actor.provider = remote
            akka.remote.dot-netty.tcp { hostname = 127.0.0.1, port = 0 }
            akka.loglevel = OFF
            """)));
        try
        {
            var self = stranger.ActorOf(Props.Empty, "worker-0");
            int sent = 0;
            var (cluster, _) = await RunOnCluster(spec, 3, "attacked", observer: c => new KillAtStep(100, () =>
            {
                IActorRef At(string path) => ((ExtendedActorSystem)stranger).Provider.ResolveActorRef($"akka.tcp://actortrain@127.0.0.1:{c.SeedPort}/user/{path}");
                var counters = new Cluster.Protocol.ShardCounters(1, 1, 0, 0, 1, 1, 1, 1, 1, 1, new long[Cluster.Protocol.ShardCounters.HistogramBuckets], 0, 0, 0);
                var coordinator = At("coordinator");
                for (int k = 0; k < 2; k++)
                    coordinator.Tell(new Cluster.Protocol.ShardSnapshot(k, 300, Enumerable.Repeat(1e6f, 5000).ToArray(), counters, true), self);
                coordinator.Tell(new Cluster.Protocol.WorkerStepReport(0, 5, 99f, 32, 1, 1, 1, 1, 0, false, 1, 0, 0), self);
                At("clock").Tell(new Cluster.Remoting.EventDone(coordinator, 1, 1e9, []), self);
                // a message type the wire format does not know goes by Akka's default serializer (JSON, which names any type)
                coordinator.Tell(Coordinator.Interrupt.Instance, self);
                // Akka's own messages that stop an actor before it sees them
                coordinator.Tell(PoisonPill.Instance, self);
                coordinator.Tell(Kill.Instance, self);
                coordinator.Tell(new Status.Failure(new InvalidOperationException("forged")), self);
                coordinator.Tell(new Status.Failure(new InvalidOperationException("forged")), ActorRefs.NoSender);
                ((IInternalActorRef)coordinator).SendSystemMessage(new Akka.Dispatch.SysMsg.Terminate());
                var gateway = At("gateway");
                var rng = new Random(5);
                for (int i = 0; i < 200; i++)
                {
                    var data = new byte[rng.Next(0, 2000)];
                    rng.NextBytes(data);
                    gateway.Tell(new Cluster.Remoting.Frame(rng.Next(), rng.Next(0, 3), rng.Next(1, 4), data), self);
                }
                new Cluster.Remoting.GatewayRoute(stranger.ActorOf(Cluster.Remoting.Gateway.Props(16_000, 4 << 20), "gateway"),
                        ((ExtendedActorSystem)stranger).Provider.DefaultAddress)
                    .Tell(coordinator, new Cluster.Protocol.ShardSnapshot(0, 300, new float[5000], counters, true), self);
                sent++;
            }));

            Assert.Equal(1, sent);
            Assert.Equal(StopReason.MaxSteps, cluster.Outcome.StopReason);
            Assert.Equal(single.Outcome.FinalWeights, cluster.Outcome.FinalWeights);
            AssertSameMetrics(single, cluster);
        }
        finally
        {
            await stranger.Terminate();
        }
    }
}

[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class ClusterCollection
{
    public const string Name = "cluster";
}
