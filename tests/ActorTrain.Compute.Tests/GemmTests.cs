using ActorTrain.Compute.Simd;

namespace ActorTrain.Compute.Tests;

/// <summary>
/// The engine's one matrix product, against the plain loop it vectorises: each element of C gains
/// its k products summed in order with one FMA each, so every tile shape (the AVX-512 8 x 32 tiles
/// where the machine has AVX-512, the 256-bit 4 x 16 and 4 x 8 tiles, the masked and single-row
/// edges) gives the loop's bits exactly. Shapes cover whole tiles, every kind of edge, and the
/// engine's three uses (A row-major, A transposed through strides).
/// </summary>
public sealed class GemmTests
{
    [Theory]
    [InlineData(8, 32, 5, false, true)]      // one AVX-512 tile
    [InlineData(17, 70, 33, false, true)]    // 512-bit tiles with column and row edges (6 columns masked, 1 row alone)
    [InlineData(16, 64, 9, true, true)]      // A^T through strides (the weight gradient)
    [InlineData(23, 45, 12, true, false)]    // C = A B (the engine's gradients: no clearing pass)
    [InlineData(17, 70, 33, false, false)]
    [InlineData(7, 40, 6, false, true)]      // fewer rows than an AVX-512 tile: 256-bit tiles only
    [InlineData(9, 10, 4, false, false)]     // narrower than 32 columns (softmax's 10 classes)
    [InlineData(32, 256, 784, false, true)]  // the MLP's first layer for a 32-row band
    public unsafe void Every_tile_shape_gives_the_in_order_fma_loops_bits(int rows, int n, int k, bool transposed, bool accumulate)
    {
        var rng = new Core.Rng(7);
        float[] a = Enumerable.Range(0, rows * k).Select(_ => (float)rng.NextGaussian()).ToArray();
        float[] b = Enumerable.Range(0, k * n).Select(_ => (float)rng.NextGaussian()).ToArray();
        // row 0 of A and column 0 of B tiny with opposite signs: their products underflow to -0, which a cleared C turns into +0
        for (int p = 0; p < k; p++)
        {
            a[transposed ? p * rows : p] = 1e-30f;
            b[p * n] = -1e-30f;
        }
        float[] c = Enumerable.Range(0, rows * n).Select(_ => (float)rng.NextGaussian()).ToArray();
        // element (i, p) of A: row-major a[i k + p], or A^T stored as k x rows: a[p rows + i]
        int ars = transposed ? 1 : k, acs = transposed ? rows : 1;
        var expected = (float[])c.Clone();
        if (!accumulate) Array.Clear(expected);
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < n; j++)
            {
                float s = 0;
                for (int p = 0; p < k; p++) s = MathF.FusedMultiplyAdd(a[i * ars + p * acs], b[p * n + j], s);
                expected[i * n + j] += s;
            }
        fixed (float* pa = a, pb = b, pc = c) Gemm.MultiplyAdd(rows, n, k, pa, ars, acs, pb, n, pc, n, accumulate);
        // bit for bit: float equality would take -0 for +0
        Assert.Equal(expected.Select(BitConverter.SingleToInt32Bits), c.Select(BitConverter.SingleToInt32Bits));
    }
}

/// <summary>The backward pass's activation derivatives, vectorised, against the scalar loops they replaced: the same bits, NaN and -0 included.</summary>
public sealed class ActivationBackwardTests
{
    private static (float[] Act, float[] Delta) Inputs(int n)
    {
        var rng = new Core.Rng(11);
        var act = Enumerable.Range(0, n).Select(_ => (float)rng.NextGaussian()).ToArray();
        var delta = Enumerable.Range(0, n).Select(_ => (float)rng.NextGaussian()).ToArray();
        act[1] = float.NaN;
        act[2] = -0f;
        act[3] = 0f;
        act[4] = float.Epsilon;
        delta[5] = float.NaN;
        return (act, delta);
    }

    private static int[] Bits(float[] values) => values.Select(BitConverter.SingleToInt32Bits).ToArray();

    [Theory]
    [InlineData(37)] // vectors and a scalar tail
    [InlineData(8)]
    [InlineData(6)]  // tail only
    public void Relu_and_tanh_backward_give_the_scalar_loops_bits(int n)
    {
        var (act, delta) = Inputs(n);
        var relu = (float[])delta.Clone();
        Simd.SimdGradientEngine.ReluBackward(act, relu);
        var expected = (float[])delta.Clone();
        for (int i = 0; i < n; i++)
            if (act[i] <= 0) expected[i] = 0;
        Assert.Equal(Bits(expected), Bits(relu));

        var tanh = (float[])delta.Clone();
        Simd.SimdGradientEngine.TanhBackward(act, tanh);
        expected = (float[])delta.Clone();
        for (int i = 0; i < n; i++) expected[i] *= 1 - act[i] * act[i];
        Assert.Equal(Bits(expected), Bits(tanh));
    }
}
