using System.Diagnostics;
using ActorTrain.Cluster.Transport;
using ActorTrain.Core.Simulation;
using Akka.Actor;
using Akka.Event;

namespace ActorTrain.Cluster.Actors;

/// <summary>
/// A worker's side of gradient aggregation, the seam between the worker's step (compute, then
/// exchange, then the next step) and how gradients are combined: a parameter-server client
/// (<see cref="ParameterServerClient"/>) or an all-reduce peer (<see cref="AllReducePeer"/>). The
/// worker owns the weights it computes on; the exchange fills them and says when they are ready.
/// A new aggregation is one new implementation, chosen in <see cref="Worker"/>'s constructor.
/// </summary>
public interface IGradientExchange
{
    /// <summary>The run begins (or the worker rejoins): ask for the first weights.</summary>
    void Begin(Protocol.Begin begin);

    /// <summary>
    /// This step's loss-scaled gradient is computed: send it. Returns the bytes this worker put on
    /// the wire for it (for the step span).
    /// </summary>
    long Send(float[] gradient, float lossScale, bool nonFinite, int samples, long clock, ActivityContext trace);

    /// <summary>Handles a message addressed to the exchange; false when it is not one.</summary>
    bool Receive(object message);
}

/// <summary>What the exchange needs of the worker actor that hosts it.</summary>
public interface IExchangeHost
{
    ILink Link { get; }
    IActorRef Self { get; }
    IActorRef Sender { get; }
    ILoggingAdapter Log { get; }
    bool Authentic(Endpoint claimed, object message);

    /// <summary>The weights for the next step are in place: at <paramref name="clock"/>, after the exchange held them back for <paramref name="heldSeconds"/> of the wait.</summary>
    void Ready(long clock, double heldSeconds, long version);
}
