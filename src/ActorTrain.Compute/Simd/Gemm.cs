using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace ActorTrain.Compute.Simd;

/// <summary>
/// C[rows x n] += A[rows x k] * B[k x n] for a band of rows, with A addressed through strides (so
/// A^T is free) and B row-major. Register-blocked: a 4 x 16 tile of C lives in eight Vector256
/// accumulators while k streams through, one FMA per broadcast A element and B vector; with
/// AVX-512 an 8 x 32 tile lives in sixteen Vector512 accumulators (the same order of operations per
/// element, so the same bits). This is the
/// only matrix product the engine needs: forward Z = A W, weight gradient A^T dZ, and input
/// gradient dZ W^T (with W^T materialised once per step).
/// </summary>
internal static unsafe class Gemm
{
    private const int Rows = 4;
    private const int Cols = 16;

    /// <param name="a">Element (i, p) of A is a[i * aRowStride + p * aColStride].</param>
    /// <param name="accumulate">true: C += A B; false: C = A B (what C held is neither read nor kept: the same bits as clearing C first, without the pass)</param>
    public static void MultiplyAdd(int rows, int n, int k, float* a, int aRowStride, int aColStride,
        float* b, int ldb, float* c, int ldc, bool accumulate = true)
    {
        if (Vector512.IsHardwareAccelerated && n >= Cols512 && rows >= Rows512)
        {
            // AVX-512: 8 x 32 tiles (sixteen 512-bit accumulators) over the rows and columns they
            // cover; the edges go to the 256-bit tiles. Each element still sums its k products in
            // order with one FMA each, so the result is the same bit for bit.
            int covered = n - n % Cols512, i = 0;
            for (; i + Rows512 <= rows; i += Rows512)
                for (int j = 0; j < covered; j += Cols512)
                    Tile8x32(k, a + i * aRowStride, aRowStride, aColStride, b + j, ldb, c + i * ldc + j, ldc, accumulate);
            if (covered < n) MultiplyAdd256(i, n - covered, k, a, aRowStride, aColStride, b + covered, ldb, c + covered, ldc, accumulate);
            if (i < rows) MultiplyAdd256(rows - i, n, k, a + i * aRowStride, aRowStride, aColStride, b, ldb, c + i * ldc, ldc, accumulate);
            return;
        }
        MultiplyAdd256(rows, n, k, a, aRowStride, aColStride, b, ldb, c, ldc, accumulate);
    }

    private const int Rows512 = 8;
    private const int Cols512 = 32;

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Tile8x32(int k, float* a, int ars, int acs, float* b, int ldb, float* c, int ldc, bool acc)
    {
        Vector512<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default, c30 = default, c31 = default;
        Vector512<float> c40 = default, c41 = default, c50 = default, c51 = default, c60 = default, c61 = default, c70 = default, c71 = default;
        for (int p = 0; p < k; p++)
        {
            var b0 = Vector512.Load(b);
            var b1 = Vector512.Load(b + 16);
            b += ldb;
            float* ap = a + p * acs;
            var x = Vector512.Create(ap[0]);
            c00 = Vector512.FusedMultiplyAdd(x, b0, c00);
            c01 = Vector512.FusedMultiplyAdd(x, b1, c01);
            x = Vector512.Create(ap[ars]);
            c10 = Vector512.FusedMultiplyAdd(x, b0, c10);
            c11 = Vector512.FusedMultiplyAdd(x, b1, c11);
            x = Vector512.Create(ap[2 * ars]);
            c20 = Vector512.FusedMultiplyAdd(x, b0, c20);
            c21 = Vector512.FusedMultiplyAdd(x, b1, c21);
            x = Vector512.Create(ap[3 * ars]);
            c30 = Vector512.FusedMultiplyAdd(x, b0, c30);
            c31 = Vector512.FusedMultiplyAdd(x, b1, c31);
            x = Vector512.Create(ap[4 * ars]);
            c40 = Vector512.FusedMultiplyAdd(x, b0, c40);
            c41 = Vector512.FusedMultiplyAdd(x, b1, c41);
            x = Vector512.Create(ap[5 * ars]);
            c50 = Vector512.FusedMultiplyAdd(x, b0, c50);
            c51 = Vector512.FusedMultiplyAdd(x, b1, c51);
            x = Vector512.Create(ap[6 * ars]);
            c60 = Vector512.FusedMultiplyAdd(x, b0, c60);
            c61 = Vector512.FusedMultiplyAdd(x, b1, c61);
            x = Vector512.Create(ap[7 * ars]);
            c70 = Vector512.FusedMultiplyAdd(x, b0, c70);
            c71 = Vector512.FusedMultiplyAdd(x, b1, c71);
        }
        AddStore(c, c00, c01, acc);
        AddStore(c += ldc, c10, c11, acc);
        AddStore(c += ldc, c20, c21, acc);
        AddStore(c += ldc, c30, c31, acc);
        AddStore(c += ldc, c40, c41, acc);
        AddStore(c += ldc, c50, c51, acc);
        AddStore(c += ldc, c60, c61, acc);
        AddStore(c += ldc, c70, c71, acc);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void AddStore(float* c, Vector512<float> v0, Vector512<float> v1, bool acc)
    {
        // not accumulating: + 0 as a cleared C would add it (a product that underflowed to -0 becomes +0, as there)
        Vector512.Store((acc ? Vector512.Load(c) : Vector512<float>.Zero) + v0, c);
        Vector512.Store((acc ? Vector512.Load(c + 16) : Vector512<float>.Zero) + v1, c + 16);
    }

    private static void MultiplyAdd256(int rows, int n, int k, float* a, int aRowStride, int aColStride,
        float* b, int ldb, float* c, int ldc, bool acc)
    {
        if (!Vector256.IsHardwareAccelerated)
        {
            Scalar(rows, 0, n, k, a, aRowStride, aColStride, b, ldb, c, ldc, acc);
            return;
        }
        int i = 0;
        for (; i + Rows <= rows; i += Rows)
        {
            int j = 0;
            for (; j + Cols <= n; j += Cols)
                Tile4x16(k, a + i * aRowStride, aRowStride, aColStride, b + j, ldb, c + i * ldc + j, ldc, acc);
            for (; j + 8 <= n; j += 8)
                Tile4x8(k, a + i * aRowStride, aRowStride, aColStride, b + j, ldb, c + i * ldc + j, ldc, AllLanes, acc);
            if (j < n)
            {
                if (Avx.IsSupported) Tile4x8(k, a + i * aRowStride, aRowStride, aColStride, b + j, ldb, c + i * ldc + j, ldc, TailMask(n - j), acc);
                else Scalar(Rows, j, n, k, a + i * aRowStride, aRowStride, aColStride, b, ldb, c + i * ldc, ldc, acc);
            }
        }
        for (; i < rows; i++)
        {
            int j = 0;
            for (; j + 8 <= n; j += 8)
                Row1x8(k, a + i * aRowStride, aColStride, b + j, ldb, c + i * ldc + j, AllLanes, acc);
            if (j < n)
            {
                if (Avx.IsSupported) Row1x8(k, a + i * aRowStride, aColStride, b + j, ldb, c + i * ldc + j, TailMask(n - j), acc);
                else Scalar(1, j, n, k, a + i * aRowStride, aRowStride, aColStride, b, ldb, c + i * ldc, ldc, acc);
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Tile4x16(int k, float* a, int ars, int acs, float* b, int ldb, float* c, int ldc, bool acc)
    {
        Vector256<float> c00 = default, c01 = default, c10 = default, c11 = default;
        Vector256<float> c20 = default, c21 = default, c30 = default, c31 = default;
        float* a0 = a, a1 = a + ars, a2 = a + 2 * ars, a3 = a + 3 * ars;
        for (int p = 0; p < k; p++)
        {
            var b0 = Vector256.Load(b);
            var b1 = Vector256.Load(b + 8);
            b += ldb;
            int off = p * acs;
            var x = Vector256.Create(a0[off]);
            c00 = Vector256.FusedMultiplyAdd(x, b0, c00);
            c01 = Vector256.FusedMultiplyAdd(x, b1, c01);
            x = Vector256.Create(a1[off]);
            c10 = Vector256.FusedMultiplyAdd(x, b0, c10);
            c11 = Vector256.FusedMultiplyAdd(x, b1, c11);
            x = Vector256.Create(a2[off]);
            c20 = Vector256.FusedMultiplyAdd(x, b0, c20);
            c21 = Vector256.FusedMultiplyAdd(x, b1, c21);
            x = Vector256.Create(a3[off]);
            c30 = Vector256.FusedMultiplyAdd(x, b0, c30);
            c31 = Vector256.FusedMultiplyAdd(x, b1, c31);
        }
        AddStore(c, c00, acc); AddStore(c + 8, c01, acc);
        c += ldc;
        AddStore(c, c10, acc); AddStore(c + 8, c11, acc);
        c += ldc;
        AddStore(c, c20, acc); AddStore(c + 8, c21, acc);
        c += ldc;
        AddStore(c, c30, acc); AddStore(c + 8, c31, acc);
    }

    private static readonly Vector256<float> AllLanes = Vector256<float>.AllBitsSet;

    /// <summary>The first <paramref name="lanes"/> lanes set: narrow outputs (10 classes) stay vectorised.</summary>
    private static Vector256<float> TailMask(int lanes) =>
        Vector256.LessThan(Vector256.Create(0, 1, 2, 3, 4, 5, 6, 7), Vector256.Create(lanes)).AsSingle();

    // With a partial mask only the masked lanes of B and C are read or written (AVX masked moves).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Load(float* p, Vector256<float> mask) =>
        mask == AllLanes || !Avx.IsSupported ? Vector256.Load(p) : Avx.MaskLoad(p, mask);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void AddStore(float* c, Vector256<float> v, Vector256<float> mask, bool acc)
    {
        if (mask == AllLanes || !Avx.IsSupported) AddStore(c, v, acc);
        else Avx.MaskStore(c, mask, (acc ? Avx.MaskLoad(c, mask) : Vector256<float>.Zero) + v);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Tile4x8(int k, float* a, int ars, int acs, float* b, int ldb, float* c, int ldc, Vector256<float> mask, bool acc)
    {
        Vector256<float> c0 = default, c1 = default, c2 = default, c3 = default;
        for (int p = 0; p < k; p++)
        {
            var bv = Load(b, mask);
            b += ldb;
            int off = p * acs;
            c0 = Vector256.FusedMultiplyAdd(Vector256.Create(a[off]), bv, c0);
            c1 = Vector256.FusedMultiplyAdd(Vector256.Create(a[ars + off]), bv, c1);
            c2 = Vector256.FusedMultiplyAdd(Vector256.Create(a[2 * ars + off]), bv, c2);
            c3 = Vector256.FusedMultiplyAdd(Vector256.Create(a[3 * ars + off]), bv, c3);
        }
        AddStore(c, c0, mask, acc);
        AddStore(c + ldc, c1, mask, acc);
        AddStore(c + 2 * ldc, c2, mask, acc);
        AddStore(c + 3 * ldc, c3, mask, acc);
    }

    private static void Row1x8(int k, float* a, int acs, float* b, int ldb, float* c, Vector256<float> mask, bool acc)
    {
        Vector256<float> sum = default;
        for (int p = 0; p < k; p++)
        {
            sum = Vector256.FusedMultiplyAdd(Vector256.Create(a[p * acs]), Load(b, mask), sum);
            b += ldb;
        }
        AddStore(c, sum, mask, acc);
    }

    private static void Scalar(int rows, int j0, int n, int k, float* a, int ars, int acs, float* b, int ldb, float* c, int ldc, bool acc)
    {
        for (int i = 0; i < rows; i++)
            for (int j = j0; j < n; j++)
            {
                float s = 0;
                for (int p = 0; p < k; p++) s = MathF.FusedMultiplyAdd(a[i * ars + p * acs], b[p * ldb + j], s);
                c[i * ldc + j] = (acc ? c[i * ldc + j] : 0f) + s;
            }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void AddStore(float* c, Vector256<float> v, bool acc) => Vector256.Store((acc ? Vector256.Load(c) : Vector256<float>.Zero) + v, c);
}
