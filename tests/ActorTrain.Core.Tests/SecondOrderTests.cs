using ActorTrain.Core.Data;
using ActorTrain.Core.Models;
using ActorTrain.Core.Optimization;

namespace ActorTrain.Core.Tests;

public class SecondOrderTests
{
    /// <summary>
    /// The least-squares solution from the normal equations X~'X~ theta = X~'y (X~ = [X, 1]), solved
    /// here by Gaussian elimination with partial pivoting, independently of the library's Cholesky.
    /// Returned in the model layout: weights then bias.
    /// </summary>
    private static double[] NormalEquations(Dataset d)
    {
        int f = d.FeatureCount, m = f + 1;
        var a = new double[m, m + 1];
        for (int i = 0; i < d.Count; i++)
        {
            var row = new double[m];
            for (int k = 0; k < f; k++) row[k] = d.Features[i * f + k];
            row[f] = 1;
            for (int r = 0; r < m; r++)
            {
                for (int c = 0; c < m; c++) a[r, c] += row[r] * row[c];
                a[r, m] += row[r] * d.Targets![i];
            }
        }
        for (int col = 0; col < m; col++)
        {
            int pivot = Enumerable.Range(col, m - col).MaxBy(r => Math.Abs(a[r, col]));
            for (int c = 0; c <= m; c++) (a[col, c], a[pivot, c]) = (a[pivot, c], a[col, c]);
            for (int r = 0; r < m; r++)
            {
                if (r == col) continue;
                double factor = a[r, col] / a[col, col];
                for (int c = col; c <= m; c++) a[r, c] -= factor * a[col, c];
            }
        }
        return Enumerable.Range(0, m).Select(r => a[r, m] / a[r, r]).ToArray();
    }

    private static (ModelObjective F, double[] Exact) LeastSquares()
    {
        var d = SyntheticData.Linear(300, 6, 1, 0.5, 17, out _);
        return (new ModelObjective(ModelSpec.LinearRegression(6), d), NormalEquations(d));
    }

    [Fact]
    public void Newton_reaches_the_normal_equations_solution()
    {
        var (f, exact) = LeastSquares();
        var r = Newton.Minimize(f, new double[f.Dimension], gradientTolerance: 1e-12);
        Assert.True(r.Converged);
        Assert.True(r.Iterations <= 2, $"a quadratic needs one Newton step, took {r.Iterations}");
        for (int i = 0; i < exact.Length; i++) Assert.Equal(exact[i], r.Solution[i], 1e-6);
    }

    [Fact]
    public void Lbfgs_reaches_the_normal_equations_solution()
    {
        var (f, exact) = LeastSquares();
        var r = Lbfgs.Minimize(f, new double[f.Dimension], history: 5, gradientTolerance: 1e-10);
        Assert.True(r.Converged);
        for (int i = 0; i < exact.Length; i++) Assert.Equal(exact[i], r.Solution[i], 1e-6);
    }

    public static TheoryData<int, double> Classifiers => new() { { 2, 0.0 }, { 2, 1e-3 }, { 4, 0.0 } };

    [Theory]
    [MemberData(nameof(Classifiers))]
    public void Newton_and_lbfgs_find_the_logistic_optimum(int classes, double l2)
    {
        // Overlapping blobs: not separable, so the unregularised optimum is finite.
        var d = SyntheticData.Blobs(400, 3, classes, 0.8, 23);
        var f = new ModelObjective(ModelSpec.SoftmaxRegression(3, classes), d, l2);
        var newton = Newton.Minimize(f, new double[f.Dimension], gradientTolerance: 1e-9);
        var lbfgs = Lbfgs.Minimize(f, new double[f.Dimension], history: 10, gradientTolerance: 1e-9);
        Assert.True(newton.Converged && newton.GradientNorm < 1e-6, $"Newton |g| = {newton.GradientNorm:E2} after {newton.Iterations}");
        Assert.True(lbfgs.Converged && lbfgs.GradientNorm < 1e-6, $"L-BFGS |g| = {lbfgs.GradientNorm:E2} after {lbfgs.Iterations}");
        Assert.Equal(newton.Loss, lbfgs.Loss, 1e-10);
        Assert.True(newton.Iterations < 30, $"Newton took {newton.Iterations} iterations");
    }

    [Fact]
    public void Explicit_hessian_matches_finite_differences_of_the_gradient()
    {
        var d = SyntheticData.Blobs(50, 2, 3, 1.0, 4);
        var f = new ModelObjective(ModelSpec.SoftmaxRegression(2, 3), d, 0.01);
        int n = f.Dimension;
        var rng = new Rng(8);
        var x = Enumerable.Range(0, n).Select(_ => 0.3 * rng.NextGaussian()).ToArray();
        var h = new double[n * n];
        f.Hessian(x, h);
        var gp = new double[n];
        var gm = new double[n];
        const double eps = 1e-6;
        for (int j = 0; j < n; j++)
        {
            var xp = (double[])x.Clone();
            var xm = (double[])x.Clone();
            xp[j] += eps;
            xm[j] -= eps;
            f.Evaluate(xp, gp);
            f.Evaluate(xm, gm);
            for (int i = 0; i < n; i++) Assert.Equal((gp[i] - gm[i]) / (2 * eps), h[i * n + j], 1e-6);
        }
    }
}
