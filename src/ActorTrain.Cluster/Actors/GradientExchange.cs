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
    /// the wire for it (for the step span). Without a <paramref name="backward"/> timeline the
    /// whole gradient is ready now (training.overlap = off). With one, the backward pass starts now
    /// and each part may leave only once its layers' gradients are ready
    /// (<see cref="StepTimeline.ReadyAfter"/>): the exchange waits for them on the worker's clock;
    /// it says <see cref="IExchangeHost.Ready"/> no earlier than the end of the backward pass.
    /// <paramref name="factors"/>: K-FAC's factor contribution for each part (shard), or null.
    /// </summary>
    long Send(float[] gradient, float lossScale, bool nonFinite, int samples, long clock, ActivityContext trace, StepTimeline? backward = null,
        IReadOnlyList<float[]>? factors = null);

    /// <summary>When the values of <paramref name="range"/> for the coming step arrived (the forward pass of a layer waits for its parameters).</summary>
    double ParametersIn(Core.Models.ParameterRange range);

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
