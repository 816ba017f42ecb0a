using ActorTrain.Cluster.Transport;
using Akka.Actor;
using Akka.Event;

namespace ActorTrain.Cluster.Remoting;

/// <summary>
/// Ask, with the request sent along a route (through the gateways, so it may be larger than an
/// Akka.Remote frame): a short-lived actor sends it as itself and completes with the first answer
/// from the target's node. Its name is one of Akka's predictable temporary names, so anything
/// else that reaches it (a stranger's HostFailed would fail the run's placement) is dropped.
/// </summary>
public static class GatewayAsk
{
    public static async Task<object> Ask(IActorRefFactory factory, IRoute route, IActorRef target, object request, TimeSpan timeout)
    {
        var answer = new TaskCompletionSource<object>(TaskCreationOptions.RunContinuationsAsynchronously);
        var asker = factory.ActorOf(Props.Create(() => new Asker(route, target, request, answer)));
        try
        {
            return await answer.Task.WaitAsync(timeout);
        }
        catch (TimeoutException)
        {
            throw new AskTimeoutException($"no answer from {target.Path} within {timeout}");
        }
        finally
        {
            asker.Tell(PoisonPill.Instance);
        }
    }

    private sealed class Asker : ReceiveActor
    {
        private readonly IRoute _route;
        private readonly IActorRef _target;
        private readonly object _request;

        public Asker(IRoute route, IActorRef target, object request, TaskCompletionSource<object> answer)
        {
            (_route, _target, _request) = (route, target, request);
            ReceiveAny(reply =>
            {
                if (Sender.Path.Address != _target.Path.Address)
                {
                    Context.GetLogger().Warning("ask: dropped a {0} from {1}, which is not the asked node {2}", reply.GetType().Name, Sender.Path,
                        _target.Path.Address);
                    return;
                }
                answer.TrySetResult(reply);
                Context.Stop(Self);
            });
        }

        protected override void PreStart() => _route.Tell(_target, _request, Self);
    }
}
