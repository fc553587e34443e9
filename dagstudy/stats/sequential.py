"""Multiplicity across ideas (Holm) and alpha spending across sequential looks.

Pure functions of p-values and look counts; see ``dagstudy.stats.paired`` for the tests whose
p-values these correct.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import integrate, optimize
from scipy import stats as sps

from dagstudy.stats.paired import check_alpha


def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm-Bonferroni step-down adjusted p-values, in the input order.

    With p_(1) <= ... <= p_(m) sorted ascending, p~_(i) = min(1, max_{j <= i} (m - j + 1) p_(j)).
    Rejecting every hypothesis with p~ < alpha controls the family-wise error rate at alpha.
    """
    p = np.asarray(pvalues, dtype=float)
    if p.ndim != 1:
        raise ValueError(f"pvalues must be 1-D, got shape {p.shape}")
    if not np.all((p >= 0.0) & (p <= 1.0)):
        raise ValueError("pvalues must lie in [0, 1] (no NaN)")
    m = p.size
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate((m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(stepped, 1.0)
    return adjusted


def bonferroni_looks(alpha: float, n_looks: int) -> np.ndarray:
    """Nominal two-sided alpha per look when splitting alpha equally: alpha / n_looks each."""
    check_alpha(alpha)
    if n_looks < 1:
        raise ValueError(f"n_looks must be >= 1, got {n_looks}")
    return np.full(n_looks, alpha / n_looks)


def _information_fractions(n_looks: int, information: Sequence[float] | None) -> np.ndarray:
    if n_looks < 1:
        raise ValueError(f"n_looks must be >= 1, got {n_looks}")
    if information is None:
        return np.arange(1, n_looks + 1) / n_looks
    info = np.asarray(information, dtype=float)
    if info.shape != (n_looks,) or not np.all(info > 0) or not np.all(np.diff(info) > 0):
        raise ValueError("information must hold n_looks positive, strictly increasing values")
    return info / info[-1]


_OBF_GRID = 2001


def _exit_excess(
    b: float, grid: np.ndarray, density: np.ndarray, step: float, target: float
) -> float:
    """P(no stop so far, |W(t_k)| >= b) - target, from the sub-density of W(t_{k-1}) on ``grid``
    (the continuation region) and the independent N(0, step^2) increment to W(t_k)."""
    tails = sps.norm.cdf((-b - grid) / step) + sps.norm.sf((b - grid) / step)
    return float(integrate.trapezoid(density * tails, grid)) - target


def obrien_fleming_alphas(
    alpha: float, n_looks: int, information: Sequence[float] | None = None
) -> np.ndarray:
    """Nominal two-sided per-look alphas of Lan-DeMets O'Brien-Fleming-type alpha spending.

    Looks happen at information fractions t_1 < ... < t_K = 1 (``information``: e.g. the seed
    counts at each look, divided by the last; equally spaced by default). The boundaries are
    symmetric and each side spends alpha / 2 by the one-sided O'Brien-Fleming-type function
    (the gsDesign/ldbounds convention), so the two sides together spend

        alpha(t) = 2 * (2 - 2 Phi(z_{1 - alpha/4} / sqrt(t))),    alpha(1) = alpha,

    and look k spends alpha(t_k) - alpha(t_{k-1}). The critical values c_k solve
    P(|Z_1| < c_1, ..., |Z_{k-1}| < c_{k-1}, |Z_k| >= c_k) = alpha(t_k) - alpha(t_{k-1}) for the
    Brownian-motion statistics Z_k = W(t_k) / sqrt(t_k) (recursive numerical integration on a
    grid, Armitage-McPherson-Rowe); the function returns 2 (1 - Phi(c_k)). Three equal looks at
    alpha = 0.05 give c = (3.710, 2.511, 1.993), i.e. nominal (0.0002, 0.0120, 0.0463).

    Use in confirmation runs (this, not :func:`bonferroni_looks`, which wastes power at the last
    look: 0.0167 instead of 0.046 for three looks): at look k call ``decide(results,
    alpha=alphas[k])`` on the seeds gathered so far and stop an idea once it is not
    inconclusive. The boundaries assume an asymptotically normal statistic with independent
    increments, which holds for the mean-based tests; with few seeds the discrete tests simply
    cannot reach the tiny early alphas, which only makes the rule more conservative.
    """
    check_alpha(alpha)
    t = _information_fractions(n_looks, information)
    spent = 4.0 * sps.norm.sf(sps.norm.isf(alpha / 4) / np.sqrt(t))  # both sides together
    spent[-1] = alpha
    increments = np.diff(spent, prepend=0.0)
    bounds = [sps.norm.isf(increments[0] / 2) * math.sqrt(t[0])]
    grid = np.linspace(-bounds[0], bounds[0], _OBF_GRID)
    density = sps.norm.pdf(grid, scale=math.sqrt(t[0]))
    for k in range(1, t.size):
        step = math.sqrt(t[k] - t[k - 1])
        args = (grid, density, step, increments[k])
        b = optimize.brentq(_exit_excess, 1e-9, 40.0 * math.sqrt(t[k]), args=args, xtol=1e-12)
        bounds.append(b)
        new_grid = np.linspace(-b, b, _OBF_GRID)
        kernel = sps.norm.pdf((new_grid[:, None] - grid[None, :]) / step) / step
        density = integrate.trapezoid(kernel * density[None, :], grid, axis=1)
        grid = new_grid
    critical = np.asarray(bounds) / np.sqrt(t)
    return 2.0 * sps.norm.sf(critical)
