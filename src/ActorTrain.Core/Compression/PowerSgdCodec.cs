using System.Buffers.Binary;
using System.Runtime.InteropServices;

namespace ActorTrain.Core.Compression;

/// <summary>A rows x cols matrix (row-major) starting at <paramref name="Offset"/> within a compressed slice.</summary>
public readonly record struct MatrixBlock(int Offset, int Rows, int Cols)
{
    public int Length => Rows * Cols;

    /// <summary>
    /// The parts of a model's weight matrices inside [start, start + length) as matrices of whole
    /// rows (a shard boundary may cut a matrix; the rows it holds entirely still form one), kept when
    /// both sides are longer than r, so a rank-r factorisation saves bytes. Offsets relative to start.
    /// </summary>
    public static MatrixBlock[] InRange(Models.ModelSpec model, int start, int length, int rank)
    {
        var blocks = new List<MatrixBlock>();
        int end = start + length;
        for (int l = 0; l < model.LayerCount; l++)
        {
            var w = model.Weight(l);
            int firstRow = Math.Max(0, (start - w.Offset + w.Columns - 1) / w.Columns);
            int lastRow = Math.Min(w.Rows, (end - w.Offset) / w.Columns); // exclusive
            if (end <= w.Offset) continue;
            int rows = lastRow - firstRow;
            if (rows > rank && w.Columns > rank)
                blocks.Add(new MatrixBlock(w.Offset + firstRow * w.Columns - start, rows, w.Columns));
        }
        return blocks.ToArray();
    }
}

/// <summary>
/// PowerSGD (Vogels et al. 2019) on a parameter-server slice: every 2-D block M (rows x cols) is sent
/// as P (rows x r) and Q (cols x r) from one power iteration, P = M Q_prev orthonormalised, Q = M^T P,
/// decoded as P Q^T; Q is kept as the warm start of the next message. Elements outside the blocks
/// (biases, matrices cut by a shard boundary) go dense. Meant to run with residual error feedback.
/// Body: rank (4), block count (4), (offset, rows, cols) per block, then P and Q of each block, then
/// the remaining elements in index order, all as float32.
/// </summary>
public sealed class PowerSgdCodec : GradientCodec
{
    private readonly MatrixBlock[] _blocks;
    private readonly float[][] _q;
    private readonly float[] _p;

    /// <summary>Decoder only: the body describes its blocks.</summary>
    internal PowerSgdCodec() : this(1, []) { }

    public PowerSgdCodec(int rank, IReadOnlyList<MatrixBlock> blocks, ulong seed = 1)
    {
        if (rank <= 0) throw new ActorTrainException($"compression.rank = {rank} must be positive");
        Rank = rank;
        _blocks = blocks.OrderBy(b => b.Offset).ToArray();
        var rng = new Rng(seed);
        _q = _blocks.Select(b => Enumerable.Range(0, b.Cols * rank).Select(_ => (float)rng.NextGaussian()).ToArray()).ToArray();
        _p = new float[_blocks.Length == 0 ? 0 : _blocks.Max(b => b.Rows) * rank];
    }

    public int Rank { get; }
    public IReadOnlyList<MatrixBlock> Blocks => _blocks;
    public override CodecKind Kind => CodecKind.PowerSgd;

    public override int BodySize(int n) =>
        8 + 12 * _blocks.Length + 4 * _blocks.Sum(b => (b.Rows + b.Cols) * Rank) + 4 * (n - _blocks.Sum(b => b.Length));

    protected override int EncodeBody(ReadOnlySpan<float> g, Span<byte> body, Rng rng)
    {
        foreach (var b in _blocks)
            if (b.Offset < 0 || b.Offset + b.Length > g.Length) throw new ArgumentException($"block {b} outside a gradient of {g.Length}");
        int r = Rank;
        BinaryPrimitives.WriteInt32LittleEndian(body, r);
        BinaryPrimitives.WriteInt32LittleEndian(body[4..], _blocks.Length);
        int pos = 8;
        foreach (var b in _blocks)
        {
            BinaryPrimitives.WriteInt32LittleEndian(body[pos..], b.Offset);
            BinaryPrimitives.WriteInt32LittleEndian(body[(pos + 4)..], b.Rows);
            BinaryPrimitives.WriteInt32LittleEndian(body[(pos + 8)..], b.Cols);
            pos += 12;
        }
        for (int k = 0; k < _blocks.Length; k++)
        {
            var b = _blocks[k];
            var m = g.Slice(b.Offset, b.Length);
            var p = _p.AsSpan(0, b.Rows * r);
            var q = _q[k].AsSpan();
            // P = M Q
            p.Clear();
            for (int i = 0; i < b.Rows; i++)
                for (int j = 0; j < b.Cols; j++)
                {
                    float mij = m[i * b.Cols + j];
                    for (int c = 0; c < r; c++) p[i * r + c] += mij * q[j * r + c];
                }
            Orthonormalise(p, b.Rows, r);
            // Q = M^T P
            q.Clear();
            for (int i = 0; i < b.Rows; i++)
                for (int j = 0; j < b.Cols; j++)
                {
                    float mij = m[i * b.Cols + j];
                    for (int c = 0; c < r; c++) q[j * r + c] += mij * p[i * r + c];
                }
            MemoryMarshal.AsBytes(p).CopyTo(body[pos..]);
            pos += 4 * p.Length;
            MemoryMarshal.AsBytes(q).CopyTo(body[pos..]);
            pos += 4 * q.Length;
        }
        int next = 0;
        foreach (var b in _blocks.Append(new MatrixBlock(g.Length, 0, 0)))
        {
            var dense = g[next..b.Offset];
            MemoryMarshal.AsBytes(dense).CopyTo(body[pos..]);
            pos += 4 * dense.Length;
            next = b.Offset + b.Length;
        }
        return pos;
    }

    /// <summary>
    /// Gram-Schmidt on the r columns of a rows x r row-major matrix, projecting twice ("twice is
    /// enough" for float). A column that loses almost all of its norm to the projections lies in the
    /// span of the previous ones (the block's rank is below r): it becomes 0, not amplified noise.
    /// </summary>
    private static void Orthonormalise(Span<float> p, int rows, int r)
    {
        for (int c = 0; c < r; c++)
        {
            double before = ColumnNorm(p, rows, r, c);
            for (int pass = 0; pass < 2; pass++)
                for (int prev = 0; prev < c; prev++)
                {
                    double dot = 0;
                    for (int i = 0; i < rows; i++) dot += p[i * r + c] * p[i * r + prev];
                    for (int i = 0; i < rows; i++) p[i * r + c] -= (float)dot * p[i * r + prev];
                }
            double norm = ColumnNorm(p, rows, r, c);
            float inv = norm > 1e-3 * before && norm > 1e-30 ? (float)(1 / norm) : 0f;
            for (int i = 0; i < rows; i++) p[i * r + c] *= inv;
        }
    }

    private static double ColumnNorm(ReadOnlySpan<float> p, int rows, int r, int c)
    {
        double sum = 0;
        for (int i = 0; i < rows; i++) sum += (double)p[i * r + c] * p[i * r + c];
        return Math.Sqrt(sum);
    }

    protected override void DecodeBody(ReadOnlySpan<byte> body, Span<float> output)
    {
        if (body.Length < 8) throw new CompressionFormatException("powersgd: body shorter than its rank and block count");
        int r = BinaryPrimitives.ReadInt32LittleEndian(body);
        int count = BinaryPrimitives.ReadInt32LittleEndian(body[4..]);
        if (r <= 0 || count < 0 || (long)count * 12 > body.Length - 8)
            throw new CompressionFormatException($"powersgd: rank {r} and {count} blocks do not fit a body of {body.Length} bytes");
        var blocks = new MatrixBlock[count];
        long expected = 8 + 12L * count;
        long covered = 0;
        int end = 0;
        for (int k = 0; k < count; k++)
        {
            var at = body[(8 + 12 * k)..];
            var b = new MatrixBlock(BinaryPrimitives.ReadInt32LittleEndian(at), BinaryPrimitives.ReadInt32LittleEndian(at[4..]),
                BinaryPrimitives.ReadInt32LittleEndian(at[8..]));
            if (b.Rows <= 0 || b.Cols <= 0 || b.Offset < end || (long)b.Offset + (long)b.Rows * b.Cols > output.Length)
                throw new CompressionFormatException($"powersgd: block {k} ({b.Offset}, {b.Rows}x{b.Cols}) overlaps another or leaves the gradient of {output.Length}");
            blocks[k] = b;
            end = b.Offset + b.Length;
            covered += b.Length;
            expected += 4L * (b.Rows + b.Cols) * r;
        }
        expected += 4 * (output.Length - covered);
        RequireBody(body, expected <= int.MaxValue ? (int)expected : -1, "powersgd");
        int pos = 8 + 12 * count;
        foreach (var b in blocks)
        {
            var p = MemoryMarshal.Cast<byte, float>(body.Slice(pos, 4 * b.Rows * r));
            var q = MemoryMarshal.Cast<byte, float>(body.Slice(pos + 4 * b.Rows * r, 4 * b.Cols * r));
            pos += 4 * (b.Rows + b.Cols) * r;
            var m = output.Slice(b.Offset, b.Length);
            for (int i = 0; i < b.Rows; i++)
                for (int j = 0; j < b.Cols; j++)
                {
                    float s = 0;
                    for (int c = 0; c < r; c++) s += p[i * r + c] * q[j * r + c];
                    m[i * b.Cols + j] = s;
                }
        }
        int next = 0;
        foreach (var b in blocks.Append(new MatrixBlock(output.Length, 0, 0)))
        {
            int n = b.Offset - next;
            MemoryMarshal.Cast<byte, float>(body.Slice(pos, 4 * n)).CopyTo(output[next..b.Offset]);
            pos += 4 * n;
            next = b.Offset + b.Length;
        }
    }
}
