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
    [InlineData(8, 32, 5, false)]      // one AVX-512 tile
    [InlineData(17, 70, 33, false)]    // 512-bit tiles with column and row edges (6 columns masked, 1 row alone)
    [InlineData(16, 64, 9, true)]      // A^T through strides (the weight gradient)
    [InlineData(23, 45, 12, true)]
    [InlineData(7, 40, 6, false)]      // fewer rows than an AVX-512 tile: 256-bit tiles only
    [InlineData(9, 10, 4, false)]      // narrower than 32 columns (softmax's 10 classes)
    [InlineData(32, 256, 784, false)]  // the MLP's first layer for a 32-row band
    public unsafe void Every_tile_shape_gives_the_in_order_fma_loops_bits(int rows, int n, int k, bool transposed)
    {
        var rng = new Core.Rng(7);
        float[] a = Enumerable.Range(0, rows * k).Select(_ => (float)rng.NextGaussian()).ToArray();
        float[] b = Enumerable.Range(0, k * n).Select(_ => (float)rng.NextGaussian()).ToArray();
        float[] c = Enumerable.Range(0, rows * n).Select(_ => (float)rng.NextGaussian()).ToArray();
        // element (i, p) of A: row-major a[i k + p], or A^T stored as k x rows: a[p rows + i]
        int ars = transposed ? 1 : k, acs = transposed ? rows : 1;
        var expected = (float[])c.Clone();
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < n; j++)
            {
                float s = 0;
                for (int p = 0; p < k; p++) s = MathF.FusedMultiplyAdd(a[i * ars + p * acs], b[p * n + j], s);
                expected[i * n + j] += s;
            }
        fixed (float* pa = a, pb = b, pc = c) Gemm.MultiplyAdd(rows, n, k, pa, ars, acs, pb, n, pc, n);
        Assert.Equal(expected, c);
    }
}
