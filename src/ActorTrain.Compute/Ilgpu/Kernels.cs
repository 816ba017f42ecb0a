using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace ActorTrain.Compute.Ilgpu;

/// <summary>
/// The dense-layer kernels, one thread per output element, generic over the storage type
/// (<see cref="IStorage{T}"/>): loads widen to float, sums accumulate in float, results are stored
/// narrowed. Layout matches ModelSpec: W_l row-major fan_in x fan_out at wOffset, b_l at bOffset.
/// The three products (dense forward, weight gradient, input delta) come twice: tiled through
/// shared memory for GPUs, and per element, each thread a whole row and column, for ILGPU's CPU
/// emulator, where every group barrier is a synchronisation of real threads (the tiled softmax
/// step took 2.5 s there, against 11 ms per element).
/// </summary>
internal static class Kernels
{
    public const int Identity = 0, Relu = 1, Tanh = 2;
    public const int MeanSquaredError = 0, CrossEntropy = 1;

    /// <summary>output[i, o] = act(b[o] + sum_k input[i, k] W[k, o]); index = (row, output). Per element: on the CPU emulator, where a group barrier costs a thread synchronisation.</summary>
    public static void Dense<T, TS>(Index2D index, ArrayView<T> input, ArrayView<T> weights, ArrayView<T> output,
        int fanIn, int fanOut, int wOffset, int bOffset, int activation)
        where T : unmanaged where TS : struct, IStorage<T>
    {
        TS s = default;
        int i = index.X, o = index.Y;
        float sum = s.Load(weights[bOffset + o]);
        for (int k = 0; k < fanIn; k++)
            sum += s.Load(input[i * fanIn + k]) * s.Load(weights[wOffset + k * fanOut + o]);
        output[i * fanOut + o] = s.Store(Activate(sum, activation));
    }

    /// <summary>The layer's activation of a pre-activation sum (identity, ReLU or tanh).</summary>
    private static float Activate(float sum, int activation) =>
        activation == Relu ? XMath.Max(sum, 0f) : activation == Tanh ? XMath.Tanh(sum) : sum;

    /// <summary>A delta back through the activation, given the activation's output a (ReLU: a &gt; 0; tanh: 1 - a^2).</summary>
    private static float ThroughDerivative(float sum, float a, int activation) =>
        activation == Relu ? (a > 0f ? sum : 0f) : sum * (1f - a * a);

    /// <summary>grad[W_l][k, o] = sum_i input[i, k] delta[i, o]; index = (k, o); per element.</summary>
    public static void WeightGradient<T, TS>(Index2D index, ArrayView<T> input, ArrayView<T> delta, ArrayView<float> gradient,
        int rows, int fanIn, int fanOut, int wOffset)
        where T : unmanaged where TS : struct, IStorage<T>
    {
        TS s = default;
        int k = index.X, o = index.Y;
        float sum = 0;
        for (int i = 0; i < rows; i++) sum += s.Load(input[i * fanIn + k]) * s.Load(delta[i * fanOut + o]);
        gradient[wOffset + k * fanOut + o] = sum;
    }

    /// <summary>
    /// previous[i, k] = (sum_o delta[i, o] W[k, o]) * act'(a[i, k]), where a is the layer's input
    /// (the previous layer's activation output); index = (i, k); per element.
    /// </summary>
    public static void InputDelta<T, TS>(Index2D index, ArrayView<T> delta, ArrayView<T> weights, ArrayView<T> activations,
        ArrayView<T> previous, int fanIn, int fanOut, int wOffset, int activation)
        where T : unmanaged where TS : struct, IStorage<T>
    {
        TS s = default;
        int i = index.X, k = index.Y;
        float sum = 0;
        for (int o = 0; o < fanOut; o++) sum += s.Load(delta[i * fanOut + o]) * s.Load(weights[wOffset + k * fanOut + o]);
        float a = s.Load(activations[i * fanIn + k]);
        previous[i * fanIn + k] = s.Store(ThroughDerivative(sum, a, activation));
    }

    /// <summary>The largest tile side: its shared memory is what every group allocates.</summary>
    public const int MaxTile = 16;

    // a tile row in shared memory is one float longer than the tile, so that a column read or a
    // transposed write falls in different banks
    private const int TileFloats = MaxTile * (MaxTile + 1);

    /// <summary>
    /// The group's tile x tile block of C = A B (A m x depth, B depth x n; the side a constant of TT),
    /// accumulated in float over depth in order, a tile at a time through shared memory: each thread
    /// loads one element of each tile, so the group reads a tile from memory once instead of every
    /// thread a row and a column.
    /// A(r, k) = a[aOffset + r aRow + k aCol], B(k, c) = b[bOffset + k bRow + c bCol]: the strides say
    /// which operand is read transposed. The thread index that runs along memory (stride 1) is the
    /// group's X, so a warp's loads are contiguous. Threads outside C load zeros and take part in the
    /// barriers; their sum is not stored. Returns this thread's element.
    /// </summary>
    private static float TiledProduct<T, TS, TT>(ArrayView<float> tileA, ArrayView<float> tileB,
        ArrayView<T> a, int aOffset, int aRow, int aCol, ArrayView<T> b, int bOffset, int bRow, int bCol, int m, int n, int depth)
        where T : unmanaged where TS : struct, IStorage<T> where TT : struct, ITile
    {
        TS s = default;
        int tile = default(TT).Side, pitch = tile + 1;
        int tx = Group.IdxX, ty = Group.IdxY;
        int row0 = Grid.IdxY * tile, col0 = Grid.IdxX * tile;
        // which tile element this thread loads: (row, k) of A and (k, col) of B
        int ar = aCol == 1 ? ty : tx, ak = aCol == 1 ? tx : ty;
        int bk = bCol == 1 ? ty : tx, bc = bCol == 1 ? tx : ty;
        float sum = 0;
        for (int k0 = 0; k0 < depth; k0 += tile)
        {
            int r = row0 + ar, k = k0 + ak;
            tileA[ar * pitch + ak] = r < m && k < depth ? s.Load(a[aOffset + r * aRow + k * aCol]) : 0f;
            k = k0 + bk;
            int c = col0 + bc;
            tileB[bk * pitch + bc] = k < depth && c < n ? s.Load(b[bOffset + k * bRow + c * bCol]) : 0f;
            Group.Barrier();
            for (int kk = 0; kk < tile; kk++) sum += tileA[ty * pitch + kk] * tileB[kk * pitch + tx];
            Group.Barrier();
        }
        return sum;
    }

    /// <summary>The grid of tile x tile groups that covers an m x n result.</summary>
    public static KernelConfig TileGrid(int tile, int m, int n) =>
        new(new Index2D((n + tile - 1) / tile, (m + tile - 1) / tile), new Index2D(tile, tile));

    /// <summary>output[i, o] = act(sum_k input[i, k] W[k, o] + b[o]), tiled (<see cref="TileGrid"/>(tile, rows, fanOut)).</summary>
    public static void DenseTiled<T, TS, TT>(ArrayView<T> input, ArrayView<T> weights, ArrayView<T> output,
        int rows, int fanIn, int fanOut, int wOffset, int bOffset, int activation)
        where T : unmanaged where TS : struct, IStorage<T> where TT : struct, ITile
    {
        TS s = default;
        int tile = default(TT).Side;
        var tileA = SharedMemory.Allocate<float>(TileFloats);
        var tileB = SharedMemory.Allocate<float>(TileFloats);
        float sum = TiledProduct<T, TS, TT>(tileA, tileB, input, 0, fanIn, 1, weights, wOffset, fanOut, 1, rows, fanOut, fanIn);
        int i = Grid.IdxY * tile + Group.IdxY, o = Grid.IdxX * tile + Group.IdxX;
        if (i >= rows || o >= fanOut) return;
        sum += s.Load(weights[bOffset + o]);
        output[i * fanOut + o] = s.Store(Activate(sum, activation));
    }

    /// <summary>grad[W_l][k, o] = sum_i input[i, k] delta[i, o] (input read transposed), tiled (<see cref="TileGrid"/>(tile, fanIn, fanOut)).</summary>
    public static void WeightGradientTiled<T, TS, TT>(ArrayView<T> input, ArrayView<T> delta, ArrayView<float> gradient,
        int rows, int fanIn, int fanOut, int wOffset)
        where T : unmanaged where TS : struct, IStorage<T> where TT : struct, ITile
    {
        int tile = default(TT).Side;
        var tileA = SharedMemory.Allocate<float>(TileFloats);
        var tileB = SharedMemory.Allocate<float>(TileFloats);
        float sum = TiledProduct<T, TS, TT>(tileA, tileB, input, 0, 1, fanIn, delta, 0, fanOut, 1, fanIn, fanOut, rows);
        int k = Grid.IdxY * tile + Group.IdxY, o = Grid.IdxX * tile + Group.IdxX;
        if (k < fanIn && o < fanOut) gradient[wOffset + k * fanOut + o] = sum;
    }

    /// <summary>
    /// previous[i, k] = (sum_o delta[i, o] W[k, o]) * act'(a[i, k]), where a is the layer's input
    /// (the previous layer's activation output); W read transposed, tiled (<see cref="TileGrid"/>(tile, rows, fanIn)).
    /// </summary>
    public static void InputDeltaTiled<T, TS, TT>(ArrayView<T> delta, ArrayView<T> weights, ArrayView<T> activations,
        ArrayView<T> previous, int rows, int fanIn, int fanOut, int wOffset, int activation)
        where T : unmanaged where TS : struct, IStorage<T> where TT : struct, ITile
    {
        TS s = default;
        int tile = default(TT).Side;
        var tileA = SharedMemory.Allocate<float>(TileFloats);
        var tileB = SharedMemory.Allocate<float>(TileFloats);
        float sum = TiledProduct<T, TS, TT>(tileA, tileB, delta, 0, fanOut, 1, weights, wOffset, 1, fanOut, rows, fanIn, fanOut);
        int i = Grid.IdxY * tile + Group.IdxY, k = Grid.IdxX * tile + Group.IdxX;
        if (i >= rows || k >= fanIn) return;
        float a = s.Load(activations[i * fanIn + k]);
        previous[i * fanIn + k] = s.Store(ThroughDerivative(sum, a, activation));
    }

    /// <summary>
    /// Per row: loss into rowLoss, and delta = scaleOverN * dLoss/dz stored narrowed. For MSE the loss
    /// is the row's sum of squared residuals (the host halves and averages); for cross-entropy it is
    /// log-sum-exp minus the true logit.
    /// </summary>
    public static void OutputDelta<T, TS>(Index1D row, ArrayView<T> logits, ArrayView<int> labels, ArrayView<float> targets,
        ArrayView<T> delta, ArrayView<float> rowLoss, int outputs, int lossKind, float scaleOverN)
        where T : unmanaged where TS : struct, IStorage<T>
    {
        TS s = default;
        int i = row;
        int start = i * outputs;
        if (lossKind == MeanSquaredError)
        {
            float sq = 0;
            for (int c = 0; c < outputs; c++)
            {
                float r = s.Load(logits[start + c]) - targets[start + c];
                sq += r * r;
                delta[start + c] = s.Store(r * scaleOverN);
            }
            rowLoss[i] = sq;
            return;
        }
        float max = s.Load(logits[start]);
        for (int c = 1; c < outputs; c++) max = XMath.Max(max, s.Load(logits[start + c]));
        float sum = 0;
        for (int c = 0; c < outputs; c++) sum += XMath.Exp(s.Load(logits[start + c]) - max);
        int label = labels[i];
        rowLoss[i] = max + XMath.Log(sum) - s.Load(logits[start + label]);
        for (int c = 0; c < outputs; c++)
        {
            float p = XMath.Exp(s.Load(logits[start + c]) - max) / sum;
            delta[start + c] = s.Store((p - (c == label ? 1f : 0f)) * scaleOverN);
        }
    }

    /// <summary>grad[b_l][o] = sum_i delta[i, o].</summary>
    public static void BiasGradient<T, TS>(Index1D o, ArrayView<T> delta, ArrayView<float> gradient, int rows, int fanOut, int bOffset)
        where T : unmanaged where TS : struct, IStorage<T>
    {
        TS s = default;
        float sum = 0;
        for (int i = 0; i < rows; i++) sum += s.Load(delta[i * fanOut + o]);
        gradient[bOffset + o] = sum;
    }
}

/// <summary>
/// A tile side as a struct trait, so that each kernel compiles with it as a constant: 16 (256
/// threads a group) where the accelerator allows, 4 on ILGPU's CPU emulator (16 threads a group).
/// </summary>
internal interface ITile
{
    int Side { get; }
}

internal readonly struct Tile16 : ITile
{
    public int Side => 16;
}

internal readonly struct Tile4 : ITile
{
    public int Side => 4;
}
