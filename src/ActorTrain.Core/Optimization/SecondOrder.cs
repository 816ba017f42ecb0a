using ActorTrain.Core.Data;
using ActorTrain.Core.Models;

namespace ActorTrain.Core.Optimization;

/// <summary>A smooth function of a parameter vector, evaluated in double precision.</summary>
public interface IObjective
{
    int Dimension { get; }

    /// <summary>Value at <paramref name="x"/>; its gradient is written to <paramref name="gradient"/>.</summary>
    double Evaluate(ReadOnlySpan<double> x, Span<double> gradient);
}

public interface ITwiceDifferentiable : IObjective
{
    /// <summary>The Dimension x Dimension Hessian, row-major.</summary>
    void Hessian(ReadOnlySpan<double> x, Span<double> hessian);
}

/// <summary>
/// A model's full-batch training loss plus (l2 / 2) ||theta||^2, in the model's parameter layout.
/// Gradients come from the reference model in double; the explicit Hessian is available for linear
/// and softmax regression, whose parameters index as (k~, o) -> k~ * outputs + o with k~ = inputs
/// standing for the bias, so both have the form (1/n) sum_i x~_i x~_i^T (x) A_i.
/// </summary>
public sealed class ModelObjective : ITwiceDifferentiable
{
    private readonly ModelSpec _spec;
    private readonly double[] _x;
    private readonly double[] _targets;
    private readonly int[] _labels;
    private readonly int _count;
    private readonly double _l2;

    public ModelObjective(ModelSpec spec, Dataset data, double l2 = 0)
    {
        if (data.FeatureCount != spec.Inputs) throw new ArgumentException($"data has {data.FeatureCount} features, model {spec.Inputs} inputs");
        _spec = spec;
        _count = data.Count;
        _x = Array.ConvertAll(data.Features, v => (double)v);
        _targets = data.Targets is null ? [] : Array.ConvertAll(data.Targets, v => (double)v);
        _labels = data.Labels ?? [];
        _l2 = l2;
    }

    public int Dimension => _spec.ParameterCount;

    public double Evaluate(ReadOnlySpan<double> x, Span<double> gradient)
    {
        double loss = ReferenceModel.LossAndGradient(_spec, x, _x, _count, _labels, _targets, gradient);
        if (_l2 == 0) return loss;
        double sq = 0;
        for (int i = 0; i < x.Length; i++)
        {
            sq += x[i] * x[i];
            gradient[i] += _l2 * x[i];
        }
        return loss + 0.5 * _l2 * sq;
    }

    public void Hessian(ReadOnlySpan<double> x, Span<double> hessian)
    {
        if (_spec.Kind == ModelKind.Mlp) throw new NotSupportedException("the explicit Hessian is provided for linear and softmax regression only; use L-BFGS for an MLP");
        int d = Dimension, outs = _spec.Outputs, fin = _spec.Inputs;
        hessian.Clear();
        var xt = new double[fin + 1];
        var a = new double[outs * outs];
        var p = new double[outs];
        var probs = _spec.Loss == LossKind.CrossEntropy ? ReferenceModel.Outputs(_spec, x, _x, _count) : null;
        for (int i = 0; i < _count; i++)
        {
            _x.AsSpan(i * fin, fin).CopyTo(xt);
            xt[fin] = 1;
            Array.Clear(a);
            if (probs is null)
            {
                for (int o = 0; o < outs; o++) a[o * outs + o] = 1;
            }
            else
            {
                var z = probs.AsSpan(i * outs, outs);
                double max = z[0];
                for (int c = 1; c < outs; c++) max = Math.Max(max, z[c]);
                double sum = 0;
                for (int c = 0; c < outs; c++) sum += Math.Exp(z[c] - max);
                for (int c = 0; c < outs; c++) p[c] = Math.Exp(z[c] - max) / sum;
                for (int c = 0; c < outs; c++)
                    for (int e = 0; e < outs; e++)
                        a[c * outs + e] = (c == e ? p[c] : 0) - p[c] * p[e];
            }
            for (int k = 0; k <= fin; k++)
                for (int k2 = 0; k2 <= fin; k2++)
                {
                    double xx = xt[k] * xt[k2] / _count;
                    if (xx == 0) continue;
                    for (int o = 0; o < outs; o++)
                        for (int o2 = 0; o2 < outs; o2++)
                            hessian[(k * outs + o) * d + k2 * outs + o2] += xx * a[o * outs + o2];
                }
        }
        for (int i = 0; i < d; i++) hessian[i * d + i] += _l2;
    }
}

public sealed record SecondOrderResult(double[] Solution, double Loss, double GradientNorm, int Iterations, bool Converged);

/// <summary>
/// Damped Newton: solve (H + delta I) p = -g by Cholesky, raising delta from 0 only when H is not
/// positive definite (softmax regression's Hessian is singular along the all-classes shift, where
/// the gradient is zero anyway), then backtrack until the Armijo condition holds.
/// </summary>
public static class Newton
{
    public static SecondOrderResult Minimize(ITwiceDifferentiable f, ReadOnlySpan<double> start,
        double gradientTolerance = 1e-8, int maxIterations = 100)
    {
        int d = f.Dimension;
        var x = start.ToArray();
        var g = new double[d];
        var h = new double[d * d];
        var p = new double[d];
        var trial = new double[d];
        var gTrial = new double[d];
        double fx = f.Evaluate(x, g);
        for (int it = 0; it < maxIterations; it++)
        {
            double gn = Norm(g);
            if (gn < gradientTolerance) return new SecondOrderResult(x, fx, gn, it, true);
            f.Hessian(x, h);
            SolveDamped(h, g, p, d);
            double slope = Dot(g, p);
            double step = 1;
            double ft;
            while (true)
            {
                for (int i = 0; i < d; i++) trial[i] = x[i] + step * p[i];
                ft = f.Evaluate(trial, gTrial);
                if (SufficientDecrease(ft, fx, step, slope) || step < 1e-12) break;
                step *= 0.5;
            }
            (x, trial) = (trial, x);
            (g, gTrial) = (gTrial, g);
            fx = ft;
        }
        return new SecondOrderResult(x, fx, Norm(g), maxIterations, Norm(g) < gradientTolerance);
    }

    /// <summary>p = -(H + delta I)^-1 g with the smallest delta in {0, 1e-12 tr/d, x10...} that factorises.</summary>
    private static void SolveDamped(double[] h, double[] g, double[] p, int d)
    {
        var l = new double[d * d];
        double trace = 0;
        for (int i = 0; i < d; i++) trace += h[i * d + i];
        double delta = 0;
        while (!DenseLinearAlgebra.Cholesky(h, l, d, delta))
            delta = delta == 0 ? Math.Max(1e-12 * trace / d, 1e-300) : delta * 10;
        for (int i = 0; i < d; i++) p[i] = -g[i];
        DenseLinearAlgebra.CholeskySolve(l, p, d);
    }

    /// <summary>
    /// Armijo's condition, relaxed by the rounding error of f itself: near the optimum the decrease
    /// (about |g|^2) falls below the resolution of f in double, and a strict test would then reject
    /// every step while the gradient can still be driven down.
    /// </summary>
    internal static bool SufficientDecrease(double fNew, double f, double step, double slope) =>
        fNew <= f + 1e-4 * step * slope + 4e-16 * Math.Abs(f);

    internal static double Dot(ReadOnlySpan<double> a, ReadOnlySpan<double> b)
    {
        double s = 0;
        for (int i = 0; i < a.Length; i++) s += a[i] * b[i];
        return s;
    }

    internal static double Norm(ReadOnlySpan<double> a) => Math.Sqrt(Dot(a, a));
}

/// <summary>
/// L-BFGS with history m (two-loop recursion, initial Hessian scaled by s'y / y'y) and a
/// backtracking line search that accepts the first step meeting the Armijo condition. A pair whose
/// curvature s'y is not positive is not stored, which keeps the implicit Hessian positive definite.
/// </summary>
public static class Lbfgs
{
    public static SecondOrderResult Minimize(IObjective f, ReadOnlySpan<double> start, int history = 10,
        double gradientTolerance = 1e-8, int maxIterations = 1000)
    {
        if (history <= 0) throw new ActorTrainException($"L-BFGS history must be positive, got {history}");
        int d = f.Dimension;
        var x = start.ToArray();
        var g = new double[d];
        var dir = new double[d];
        var xNew = new double[d];
        var gNew = new double[d];
        var s = new double[history][];
        var y = new double[history][];
        var rho = new double[history];
        var alpha = new double[history];
        for (int i = 0; i < history; i++) { s[i] = new double[d]; y[i] = new double[d]; }
        int stored = 0, newest = -1;
        double fx = f.Evaluate(x, g);
        for (int it = 0; it < maxIterations; it++)
        {
            double gn = Newton.Norm(g);
            if (gn < gradientTolerance) return new SecondOrderResult(x, fx, gn, it, true);

            for (int i = 0; i < d; i++) dir[i] = -g[i];
            for (int j = 0; j < stored; j++)
            {
                int k = (newest - j + history) % history;
                alpha[k] = rho[k] * Newton.Dot(s[k], dir);
                for (int i = 0; i < d; i++) dir[i] -= alpha[k] * y[k][i];
            }
            double gamma = stored > 0 ? Newton.Dot(s[newest], y[newest]) / Newton.Dot(y[newest], y[newest]) : 1 / Math.Max(gn, 1);
            for (int i = 0; i < d; i++) dir[i] *= gamma;
            for (int j = stored - 1; j >= 0; j--)
            {
                int k = (newest - j + history) % history;
                double beta = rho[k] * Newton.Dot(y[k], dir);
                for (int i = 0; i < d; i++) dir[i] += (alpha[k] - beta) * s[k][i];
            }

            double slope = Newton.Dot(g, dir);
            if (slope >= 0)
            {
                // Not a descent direction (numerical breakdown): restart from steepest descent.
                stored = 0;
                for (int i = 0; i < d; i++) dir[i] = -g[i] / Math.Max(gn, 1);
                slope = Newton.Dot(g, dir);
            }
            double step = 1, fNew;
            while (true)
            {
                for (int i = 0; i < d; i++) xNew[i] = x[i] + step * dir[i];
                fNew = f.Evaluate(xNew, gNew);
                if (Newton.SufficientDecrease(fNew, fx, step, slope) || step < 1e-14) break;
                step *= 0.5;
            }

            int slot = (newest + 1) % history;
            for (int i = 0; i < d; i++)
            {
                s[slot][i] = xNew[i] - x[i];
                y[slot][i] = gNew[i] - g[i];
            }
            double sy = Newton.Dot(s[slot], y[slot]);
            if (sy > 1e-300)
            {
                rho[slot] = 1 / sy;
                newest = slot;
                stored = Math.Min(stored + 1, history);
            }
            (x, xNew) = (xNew, x);
            (g, gNew) = (gNew, g);
            fx = fNew;
        }
        return new SecondOrderResult(x, fx, Newton.Norm(g), maxIterations, Newton.Norm(g) < gradientTolerance);
    }
}

internal static class DenseLinearAlgebra
{
    /// <summary>Lower factor L of A + delta I = L L^T; false when that matrix is not positive definite.</summary>
    public static bool Cholesky(double[] a, double[] l, int n, double delta)
    {
        Array.Clear(l);
        for (int j = 0; j < n; j++)
        {
            double diag = a[j * n + j] + delta;
            for (int k = 0; k < j; k++) diag -= l[j * n + k] * l[j * n + k];
            if (!(diag > 0)) return false;
            double ljj = Math.Sqrt(diag);
            l[j * n + j] = ljj;
            for (int i = j + 1; i < n; i++)
            {
                double v = a[i * n + j];
                for (int k = 0; k < j; k++) v -= l[i * n + k] * l[j * n + k];
                l[i * n + j] = v / ljj;
            }
        }
        return true;
    }

    /// <summary>Solves L L^T x = b in place.</summary>
    public static void CholeskySolve(double[] l, double[] b, int n)
    {
        for (int i = 0; i < n; i++)
        {
            double v = b[i];
            for (int k = 0; k < i; k++) v -= l[i * n + k] * b[k];
            b[i] = v / l[i * n + i];
        }
        for (int i = n - 1; i >= 0; i--)
        {
            double v = b[i];
            for (int k = i + 1; k < n; k++) v -= l[k * n + i] * b[k];
            b[i] = v / l[i * n + i];
        }
    }
}
