"""Paired statistics for control/treatment experiments, and the verdict rule built on them.

Every experiment pairs the two arms by seed: seed ``s`` yields ``control[s]`` and
``treatment[s]`` (same initial weights, data order and split), and every function here works on
the paired differences

    d_s = treatment_s - control_s,    s = 1..n,

in the metric's own units (so ``d > 0`` means "treatment scored higher", which is good for an
accuracy and bad for a loss). All functions are pure: inputs are numpy arrays (or sequences),
randomness comes only from an explicit integer ``seed``.

Contents

* descriptive: :func:`paired_diffs`, :func:`paired_summary`, :func:`bootstrap_ci`,
  :func:`cohens_dz`, :func:`cohens_dz_ci`
* tests of "no difference": :func:`permutation_p` (default), :func:`wilcoxon_p`,
  :func:`paired_t_p`, dispatched by :func:`paired_p`
* equivalence: :func:`tost`
* multiplicity: :func:`holm`; sequential looks: :func:`obrien_fleming_alphas`,
  :func:`bonferroni_looks`
* planning: :func:`power_paired_t`, :func:`seeds_needed`, :func:`power_tost`,
  :func:`seeds_for_margin`
* verdicts: :func:`test_idea` (raw per-idea results) then :func:`decide` (Holm across all ideas
  of one run), or :func:`verdict` for a single idea.

Choice of the default primary test (``test="permutation"``). The verdict reports the mean paired
difference, a bootstrap CI of that mean, d_z = mean/sd, a TOST on the mean and a seed count
from the power of a paired t-test: all of them are about the *mean* difference. The paired
sign-flip permutation test targets the same quantity, is exact for n <= 16 without assuming
normality (only symmetry of d under the null), and has the power of the paired t-test: with
normal noise, d_z = 0.8 and 15 seeds, 20 000 simulations gave 0.821 for the permutation test,
0.822 for the t-test (exact value 0.821) and 0.802 for the Wilcoxon signed-rank test (all
two-sided at 0.05, direction-aware): Wilcoxon sits right on the target of confirming d_z = 0.8
at 15 seeds 80% of the time, where the permutation test clears it. Wilcoxon also tests the
pseudo-median, not the mean, so it can call a treatment "better" whose mean difference and CI
are negative; it stays available (``test="wilcoxon"``) as the robust choice when single
diverged seeds are expected.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Literal, NamedTuple

import numpy as np
from scipy import integrate, optimize, special
from scipy import stats as sps

Alternative = Literal["two-sided", "greater", "less"]
TestName = Literal["permutation", "wilcoxon", "t"]
VerdictName = Literal["confirmed", "ruled out", "inconclusive"]

ALTERNATIVES = ("two-sided", "greater", "less")
TESTS = ("permutation", "wilcoxon", "t")
EXACT_MAX_N = 16
"""Largest n for which sign-flip tests enumerate all 2**n sign patterns (65 536 at n = 16)."""
MAX_SEEDS = 10_000
"""Default cap on seed-count estimates; a returned value equal to the cap means "at least"."""


# --------------------------------------------------------------------------- validation


def _check_alpha(alpha: float, name: str = "alpha") -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"{name} must be in (0, 1), got {alpha!r}")


def _check_alternative(alternative: str) -> None:
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {ALTERNATIVES}, got {alternative!r}")


def _as_sample(x: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=float)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    if a.size < 2:
        raise ValueError(f"{name} needs at least 2 paired values, got {a.size}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return a


def _check_diffs(d: Sequence[float] | np.ndarray) -> np.ndarray:
    return _as_sample(d, "d")


def _is_constant(d: np.ndarray) -> bool:
    """All d equal (sd = 0 exactly; the float mean and sd may not be exact then)."""
    return bool(np.all(d == d[0]))


def paired_diffs(
    control: Sequence[float] | np.ndarray, treatment: Sequence[float] | np.ndarray
) -> np.ndarray:
    """Return ``d = treatment - control`` after validating the pairing.

    Raises ValueError unless both inputs are 1-D, of equal length n >= 2 and finite.
    """
    c = _as_sample(control, "control")
    t = _as_sample(treatment, "treatment")
    if c.shape != t.shape:
        raise ValueError(
            f"control and treatment must be paired by seed (equal length), got {c.size} and "
            f"{t.size}"
        )
    return t - c


# --------------------------------------------------------------------------- descriptive


def paired_summary(
    control: Sequence[float] | np.ndarray, treatment: Sequence[float] | np.ndarray
) -> dict[str, float | int]:
    """Summarise the paired differences d = treatment - control.

    Returns ``{"n", "mean", "median", "sd", "control_mean", "treatment_mean"}`` where mean,
    median and sd (ddof=1) are those of d. Raises ValueError as :func:`paired_diffs`.
    """
    d = paired_diffs(control, treatment)
    return {
        "n": int(d.size),
        "mean": float(d.mean()),
        "median": float(np.median(d)),
        "sd": float(d.std(ddof=1)),
        "control_mean": float(np.mean(control)),
        "treatment_mean": float(np.mean(treatment)),
    }


def bootstrap_ci(
    d: Sequence[float] | np.ndarray,
    level: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 0,
    method: Literal["bca", "percentile"] = "bca",
) -> tuple[float, float]:
    """Bootstrap confidence interval of the mean paired difference.

    Resamples the n pairs with replacement ``n_resamples`` times (``scipy.stats.bootstrap`` with
    ``np.random.default_rng(seed)``) and returns the two-sided ``level`` interval, by the
    bias-corrected and accelerated method (default) or plain percentiles. When all d are equal
    the bootstrap distribution is a point and the interval is ``(mean, mean)``. With few pairs
    both methods cover somewhat less than ``level`` (about 0.92 for 95% at n = 15, normal d).
    """
    d = _check_diffs(d)
    _check_alpha(level, "level")
    if method not in ("bca", "percentile"):
        raise ValueError(f"method must be 'bca' or 'percentile', got {method!r}")
    if _is_constant(d):
        return float(d[0]), float(d[0])
    res = sps.bootstrap(
        (d,),
        np.mean,
        confidence_level=level,
        n_resamples=n_resamples,
        method="BCa" if method == "bca" else "percentile",
        rng=np.random.default_rng(seed),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def cohens_dz(d: Sequence[float] | np.ndarray) -> float:
    """Standardised paired effect d_z = mean(d) / sd(d) (ddof=1).

    If sd = 0 (all d equal): 0.0 when mean = 0, else +-inf with the sign of the mean.
    """
    d = _check_diffs(d)
    if _is_constant(d):
        return 0.0 if d[0] == 0.0 else math.copysign(math.inf, d[0])
    return float(d.mean() / d.std(ddof=1))


def cohens_dz_ci(d: Sequence[float] | np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Exact confidence interval for d_z by inverting the noncentral t distribution.

    With t = d_z * sqrt(n) ~ t'(df = n - 1, ncp = delta_z * sqrt(n)), the bounds are
    ncp_lo / sqrt(n) and ncp_hi / sqrt(n) where ``nct.cdf(t, df, ncp_lo) = (1 + level) / 2`` and
    ``nct.cdf(t, df, ncp_hi) = (1 - level) / 2`` (assumes normal d). Degenerate d (sd = 0)
    returns ``(d_z, d_z)``.
    """
    d = _check_diffs(d)
    _check_alpha(level, "level")
    dz = cohens_dz(d)
    if _is_constant(d):
        return dz, dz
    n, df = d.size, d.size - 1
    t_obs = dz * math.sqrt(n)

    def ncp_for(target: float) -> float:
        def f(ncp: float) -> float:
            return float(sps.nct.cdf(t_obs, df, ncp)) - target

        width = 10.0 + abs(t_obs)
        while f(t_obs - width) < 0.0 or f(t_obs + width) > 0.0:
            width *= 2.0
        return optimize.brentq(f, t_obs - width, t_obs + width, xtol=1e-10)

    root_n = math.sqrt(n)
    return ncp_for((1 + level) / 2) / root_n, ncp_for((1 - level) / 2) / root_n


# --------------------------------------------------------------------------- tests of no effect


@lru_cache(maxsize=EXACT_MAX_N)
def _all_signs(n: int) -> np.ndarray:
    """All 2**n sign vectors as an (n, 2**n) array of +-1.0 (read-only, cached)."""
    bits = (np.arange(2**n)[None, :] >> np.arange(n)[:, None]) & 1
    signs = 2.0 * bits - 1.0
    signs.setflags(write=False)
    return signs


def _tail_fraction(null: np.ndarray, obs: float, alternative: str, tol: float) -> np.ndarray:
    """Indicator, per null draw, of a statistic at least as extreme as ``obs``."""
    if alternative == "greater":
        return null >= obs - tol
    if alternative == "less":
        return null <= obs + tol
    return np.abs(null) >= abs(obs) - tol


def permutation_p(
    d: Sequence[float] | np.ndarray,
    alternative: Alternative = "two-sided",
    n_resamples: int = 10_000,
    seed: int = 0,
) -> float:
    """Paired sign-flip permutation test of H0: d is symmetric about 0.

    Statistic S = sum_i d_i. Under H0 each sign pattern e in {-1, +1}^n is equally likely, the
    flipped sums S_e = sum_i e_i d_i form the null distribution. The p-value is the fraction of
    S_e at least as extreme as the observed S: S_e >= S ("greater"), S_e <= S ("less") or
    |S_e| >= |S| ("two-sided"), compared with a relative tolerance of 1e-9 for float ties.

    n <= 16: exact, all 2**n patterns. n > 16: ``n_resamples`` random patterns from
    ``np.random.default_rng(seed)`` and p = (1 + #extreme) / (1 + n_resamples), which keeps the
    test valid (never p = 0). All-zero d gives p = 1.
    """
    d = _check_diffs(d)
    _check_alternative(alternative)
    scale = float(np.abs(d).sum())
    if scale == 0.0:
        return 1.0
    obs, tol = float(d.sum()), 1e-9 * scale
    if d.size <= EXACT_MAX_N:
        null = d @ _all_signs(d.size)
        return float(np.mean(_tail_fraction(null, obs, alternative, tol)))
    rng = np.random.default_rng(seed)
    signs = rng.choice(np.array([-1.0, 1.0]), size=(n_resamples, d.size))
    extreme = int(np.sum(_tail_fraction(signs @ d, obs, alternative, tol)))
    return (1 + extreme) / (1 + n_resamples)


def wilcoxon_p(d: Sequence[float] | np.ndarray, alternative: Alternative = "two-sided") -> float:
    """Wilcoxon signed-rank test of H0: d is symmetric about 0 (``scipy.stats.wilcoxon``).

    Statistic T+ = sum of the ranks of |d_i| over d_i > 0, with ``zero_method="zsplit"``: a
    zero difference (a tie between the arms, common for accuracies on a finite test set and
    certain in an A/A run with deterministic seeds) is ranked and half its rank goes to T+, half
    to T-. It thus counts as evidence of "no difference" instead of being dropped ("wilcox"),
    which would shrink n and let a few non-zero pairs decide; all-zero d gives p = 1 instead of
    an undefined test.

    p-values: no zeros and no tied |d| -> exact null distribution (``method="exact"``); zeros or
    ties with n <= 16 -> exact enumeration of all 2**n sign flips of the mid-ranks. Since
    T+ = (W + sum_i r_i) / 2 with W = sum_i sign(d_i) r_i, that is :func:`permutation_p` on the
    signed mid-ranks sign(d_i) r_i (what scipy's ``PermutationMethod`` computes, faster).
    Otherwise the tie-corrected normal approximation with continuity correction.
    """
    d = _check_diffs(d)
    _check_alternative(alternative)
    if np.all(d == 0.0):
        return 1.0
    ranks = sps.rankdata(np.abs(d))
    if np.unique(ranks).size == d.size and np.all(d != 0.0):
        method = "exact"
    elif d.size <= EXACT_MAX_N:
        return permutation_p(np.sign(d) * ranks, alternative)
    else:
        method = "asymptotic"
    res = sps.wilcoxon(d, zero_method="zsplit", alternative=alternative, method=method)
    return float(res.pvalue)


def paired_t_p(d: Sequence[float] | np.ndarray, alternative: Alternative = "two-sided") -> float:
    """Paired t-test of H0: mean(d) = 0, t = mean / (sd / sqrt(n)) with n - 1 df.

    Same as ``scipy.stats.ttest_1samp(d, 0)``; when sd = 0, p = 1 if mean = 0 and otherwise
    0 or 1 according to whether the sign of the mean matches ``alternative``.
    """
    d = _check_diffs(d)
    _check_alternative(alternative)
    if _is_constant(d):
        if d[0] == 0.0:
            return 1.0
        agrees = alternative == "two-sided" or (alternative == "greater") == (d[0] > 0)
        return 0.0 if agrees else 1.0
    return float(sps.ttest_1samp(d, 0.0, alternative=alternative).pvalue)


def paired_p(
    d: Sequence[float] | np.ndarray,
    test: TestName = "permutation",
    alternative: Alternative = "two-sided",
    *,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> float:
    """p-value of the chosen paired test: "permutation" (default), "wilcoxon" or "t"."""
    if test == "permutation":
        return permutation_p(d, alternative, n_resamples=n_resamples, seed=seed)
    if test == "wilcoxon":
        return wilcoxon_p(d, alternative)
    if test == "t":
        return paired_t_p(d, alternative)
    raise ValueError(f"test must be one of {TESTS}, got {test!r}")


def _effect_sign(d: np.ndarray, test: str) -> int:
    """Direction the test sees (+1: treatment higher, -1: lower, 0: none).

    The mean for "permutation" and "t"; T+ - T- = sum_i sign(d_i) rank(|d_i|) for "wilcoxon"
    (zeros cancel under zsplit). A significant two-sided p is driven by this side.
    """
    if test == "wilcoxon":
        return int(np.sign(np.sum(np.sign(d) * sps.rankdata(np.abs(d)))))
    return int(np.sign(d.mean()))


# --------------------------------------------------------------------------- equivalence


class TostResult(NamedTuple):
    """Paired TOST outcome: p = max(p_lower, p_upper); equivalent iff p < alpha."""

    p: float
    equivalent: bool


def tost(d: Sequence[float] | np.ndarray, margin: float, alpha: float = 0.05) -> TostResult:
    """Paired two one-sided t-tests (TOST) for equivalence within +-margin.

    H0: |mu_d| >= margin vs H1: |mu_d| < margin, with se = sd / sqrt(n), df = n - 1:

        p_lower = P(T >= (mean + margin) / se)   (H0: mu_d <= -margin)
        p_upper = P(T <= (mean - margin) / se)   (H0: mu_d >= +margin)
        p = max(p_lower, p_upper); equivalence is shown iff p < alpha.

    This is a level-alpha test (intersection-union), equal to checking that the (1 - 2 alpha)
    t-interval of the mean lies inside (-margin, margin). ``margin`` is in the metric's units,
    > 0. With sd = 0, p = 0 if |mean| < margin, else 1.
    """
    d = _check_diffs(d)
    _check_alpha(alpha)
    if not margin > 0.0:
        raise ValueError(f"margin must be > 0, got {margin!r}")
    mean, sd, n = float(d.mean()), float(d.std(ddof=1)), d.size
    if _is_constant(d):
        p = 0.0 if abs(d[0]) < margin else 1.0
    else:
        se = sd / math.sqrt(n)
        p_lower = float(sps.t.sf((mean + margin) / se, n - 1))
        p_upper = float(sps.t.cdf((mean - margin) / se, n - 1))
        p = max(p_lower, p_upper)
    return TostResult(p=p, equivalent=p < alpha)


# --------------------------------------------------------------------------- multiplicity


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
    _check_alpha(alpha)
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
    _check_alpha(alpha)
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


# --------------------------------------------------------------------------- planning


def power_paired_t(n: int, d_z: float, alpha: float = 0.05) -> float:
    """Exact power of the two-sided paired t-test with n pairs at true effect d_z.

    With df = n - 1, c = t_{1 - alpha/2, df} and ncp = d_z sqrt(n):
    power = P(T' > c) + P(T' < -c), T' ~ noncentral t(df, ncp).
    """
    df, ncp = n - 1, d_z * math.sqrt(n)
    c = special.stdtrit(df, 1 - alpha / 2)
    return float(1.0 - special.nctdtr(df, ncp, c) + special.nctdtr(df, ncp, -c))


def _smallest_n(power_at: Callable[[int], float], target: float, start: float, max_n: int) -> int:
    """Smallest n in [2, max_n] with power_at(n) >= target, searching from ``start``.

    Power is increasing in n; the start is a normal-theory estimate that is at most a few
    pairs off, so only a handful of evaluations are needed. Returns max_n if unreached.
    """
    n = int(min(max(2, math.floor(start)), max_n))
    while n < max_n and power_at(n) < target:
        n += 1
    while n > 2 and power_at(n - 1) >= target:
        n -= 1
    return n


def seeds_needed(
    d_z: float, alpha: float = 0.05, power: float = 0.8, *, max_n: int = MAX_SEEDS
) -> int:
    """Pairs needed for a two-sided paired t-test at level alpha to reach ``power``.

    Smallest n with :func:`power_paired_t` (n, |d_z|, alpha) >= power, searching from the
    normal approximation n ~ (z_{1-alpha/2} + z_{power})^2 / d_z^2 (= 7.85 / d_z^2 at 0.05 and
    0.8, the "7.9 (sd_d / delta)^2" rule; the t-test needs about two pairs more). d_z = 0 (no
    effect to detect) or any n above ``max_n`` returns ``max_n``, which then means "at least".
    """
    _check_alpha(alpha)
    _check_alpha(power, "power")
    effect = abs(d_z)
    if math.isinf(effect):
        return 2
    if effect == 0.0:
        return max_n
    approx = (sps.norm.isf(alpha / 2) + sps.norm.ppf(power)) ** 2 / effect**2
    if approx >= max_n:
        return max_n
    return _smallest_n(lambda n: power_paired_t(n, effect, alpha), power, approx, max_n)


_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(96)


def power_tost(n: int, sd: float, margin: float, alpha: float = 0.05, diff: float = 0.0) -> float:
    """Exact power of the paired TOST (:func:`tost`) with n pairs, true mean ``diff``.

    Equivalence is shown iff |mean| < margin - c s / sqrt(n) with c = t_{1-alpha, n-1}. Given
    the sample sd s, mean ~ N(diff, sd^2 / n), and s = sd * sqrt(X / (n - 1)) with
    X ~ chi2(n - 1), independent of the mean, so

        power = E_s[ Phi((margin - c s/sqrt(n) - diff) sqrt(n)/sd)
                     - Phi((-margin + c s/sqrt(n) - diff) sqrt(n)/sd) ]^+,

    integrated numerically (96-point Gauss-Legendre over the central 1 - 2e-12 of s), with the
    density of s / sd = sqrt(X / df):  2 df^{df/2} x^{df-1} exp(-df x^2 / 2) / (2^{df/2} G(df/2)).
    """
    df = n - 1
    c = special.stdtrit(df, 1 - alpha)
    root_n = math.sqrt(n)
    s_max = margin * root_n / (c * sd)  # in units of sd; beyond it equivalence is impossible
    lo, hi = np.sqrt(special.chdtri(df, [1 - 1e-12, 1e-12]) / df)
    hi = min(hi, s_max)
    if hi <= lo:
        return 0.0
    s = 0.5 * (hi - lo) * _GL_NODES + 0.5 * (hi + lo)
    log_pdf = (
        math.log(2.0)
        + 0.5 * df * math.log(df / 2.0)
        - special.gammaln(df / 2.0)
        + (df - 1) * np.log(s)
        - 0.5 * df * s**2
    )
    weight = 0.5 * (hi - lo) * _GL_WEIGHTS * np.exp(log_pdf)
    half_width = margin / sd - c * s / root_n
    shift = diff / sd
    inside = special.ndtr((half_width - shift) * root_n) - special.ndtr(
        (-half_width - shift) * root_n
    )
    return float(np.sum(weight * inside))


def seeds_for_margin(
    sd: float,
    margin: float,
    alpha: float = 0.05,
    power: float = 0.8,
    *,
    diff: float = 0.0,
    max_n: int = MAX_SEEDS,
) -> int:
    """Pairs needed for the paired TOST at level alpha to show equivalence with ``power``.

    ``sd`` is the sd of the paired differences and ``diff`` their true mean (0: the treatment
    truly does nothing). Smallest n with :func:`power_tost` >= power, searching from the normal
    approximation n ~ (z_{1-alpha} + z_{1-beta/2})^2 (sd / margin)^2 for diff = 0 (= 8.6 (sd /
    margin)^2 at 0.05 and 0.8) or (z_{1-alpha} + z_{1-beta})^2 sd^2 / (margin - |diff|)^2.
    |diff| >= margin or n above ``max_n`` returns ``max_n`` ("at least").
    """
    _check_alpha(alpha)
    _check_alpha(power, "power")
    if not margin > 0.0 or not sd >= 0.0:
        raise ValueError(f"need margin > 0 and sd >= 0, got margin={margin!r}, sd={sd!r}")
    gap = margin - abs(diff)
    if gap <= 0.0:
        return max_n
    if sd == 0.0:
        return 2
    beta_quantile = sps.norm.isf((1 - power) / 2) if diff == 0.0 else sps.norm.ppf(power)
    approx = (sps.norm.isf(alpha) + beta_quantile) ** 2 * (sd / gap) ** 2
    if approx >= max_n:
        return max_n
    return _smallest_n(lambda n: power_tost(n, sd, margin, alpha, diff), power, approx, max_n)


# --------------------------------------------------------------------------- verdicts


def _jsonable(value: object) -> object:
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


@dataclass(frozen=True)
class IdeaResult:
    """Raw paired results of one idea, before any multiple-comparison correction.

    ``diff = treatment_mean - control_mean`` (metric units, not oriented); ``effect_sign`` is
    the direction the primary test sees (+1 treatment higher, -1 lower, 0 none); ``p`` is the
    two-sided primary-test p-value and ``p_tost`` the TOST p-value against ``margin``.
    """

    name: str
    test: str
    higher_is_better: bool
    margin: float
    seeds: int
    control_mean: float
    treatment_mean: float
    diff: float
    sd_diff: float
    ci_low: float
    ci_high: float
    d_z: float
    p: float
    p_tost: float
    effect_sign: int

    @property
    def better(self) -> bool:
        """Whether the primary test's direction favours the treatment."""
        oriented = self.effect_sign if self.higher_is_better else -self.effect_sign
        return oriented > 0


@dataclass(frozen=True)
class Verdict:
    """Verdict on one idea.

    ``diff = treatment_mean - control_mean`` in the metric's own units (positive = treatment
    scored higher, which is worse for a loss); ``ci_low, ci_high`` a bootstrap CI of that mean
    difference; ``d_z = diff / sd(d)``; ``p`` the two-sided primary-test p (``test``),
    ``p_adjusted`` its Holm-adjusted value, ``p_tost``/``p_tost_adjusted`` the same for TOST
    against ``margin``; ``seeds`` the pairs used; ``seeds_needed`` the estimated total number of
    pairs likely to decide the idea (only when inconclusive; equal to the cap means "at
    least"); ``reason`` says which rule fired.
    """

    name: str
    verdict: VerdictName
    reason: str
    test: str
    higher_is_better: bool
    margin: float
    alpha: float
    seeds: int
    control_mean: float
    treatment_mean: float
    diff: float
    ci_low: float
    ci_high: float
    d_z: float
    p: float
    p_adjusted: float
    p_tost: float
    p_tost_adjusted: float
    seeds_needed: int | None

    def to_dict(self) -> dict[str, object]:
        """Plain JSON-ready dict; NaN and infinite floats become None."""
        return {key: _jsonable(value) for key, value in asdict(self).items()}


def test_idea(
    control: Sequence[float] | np.ndarray,
    treatment: Sequence[float] | np.ndarray,
    *,
    margin: float,
    higher_is_better: bool = True,
    test: TestName = "permutation",
    name: str = "",
    level: float = 0.95,
    ci_method: Literal["bca", "percentile"] = "bca",
    n_resamples: int = 10_000,
    seed: int = 0,
) -> IdeaResult:
    """Compute the raw (uncorrected) paired results of one idea.

    ``margin`` (> 0, metric units) is the smallest difference that matters in practice; the
    TOST uses it. ``n_resamples`` and ``seed`` drive the bootstrap CI (at ``level``) and, for
    n > 16, the Monte-Carlo permutation test. Raises ValueError on unpaired or non-finite input.
    """
    d = paired_diffs(control, treatment)
    if not margin > 0.0:
        raise ValueError(f"margin must be > 0, got {margin!r}")
    p = paired_p(d, test, "two-sided", n_resamples=n_resamples, seed=seed)
    ci_low, ci_high = bootstrap_ci(d, level, n_resamples, seed, ci_method)
    return IdeaResult(
        name=name,
        test=test,
        higher_is_better=higher_is_better,
        margin=float(margin),
        seeds=int(d.size),
        control_mean=float(np.mean(control)),
        treatment_mean=float(np.mean(treatment)),
        diff=float(d.mean()),
        sd_diff=float(d.std(ddof=1)),
        ci_low=ci_low,
        ci_high=ci_high,
        d_z=cohens_dz(d),
        p=p,
        p_tost=tost(d, margin).p,
        effect_sign=_effect_sign(d, test),
    )


test_idea.__test__ = False  # a library function, not a pytest test, when imported into tests


def _seeds_to_decide(r: IdeaResult, alpha: float, power: float, max_n: int) -> int:
    """Total pairs likely to decide an inconclusive idea: the cheaper of detecting the observed
    d_z (two-sided t power) and ruling it out by TOST at the observed mean and sd; at least one
    more pair than already run, at most ``max_n``."""
    detect = seeds_needed(r.d_z, alpha, power, max_n=max_n)
    rule_out = seeds_for_margin(r.sd_diff, r.margin, alpha, power, diff=r.diff, max_n=max_n)
    return min(max(min(detect, rule_out), r.seeds + 1), max_n)


def _decide_one(
    r: IdeaResult,
    p_adjusted: float,
    p_tost_adjusted: float,
    alpha: float,
    plan_alpha: float,
    power: float,
    max_seeds: int,
) -> Verdict:
    needed = None
    if p_adjusted < alpha and r.better:
        outcome, reason = "confirmed", f"treatment better, adjusted p < {alpha:g}"
        if p_tost_adjusted < alpha:
            reason += f", but smaller than the margin {r.margin:g} by TOST"
    elif p_adjusted < alpha:
        outcome, reason = "ruled out", f"treatment worse, adjusted p < {alpha:g}"
    elif p_tost_adjusted < alpha:
        outcome, reason = "ruled out", f"|effect| < margin {r.margin:g} by TOST at {alpha:g}"
    else:
        outcome = "inconclusive"
        needed = _seeds_to_decide(r, plan_alpha, power, max_seeds)
        at_least = "at least " if needed == max_seeds else ""
        reason = f"neither test decisive; {at_least}{needed} pairs likely decide it"
    return Verdict(
        name=r.name,
        verdict=outcome,
        reason=reason,
        test=r.test,
        higher_is_better=r.higher_is_better,
        margin=r.margin,
        alpha=alpha,
        seeds=r.seeds,
        control_mean=r.control_mean,
        treatment_mean=r.treatment_mean,
        diff=r.diff,
        ci_low=r.ci_low,
        ci_high=r.ci_high,
        d_z=r.d_z,
        p=r.p,
        p_adjusted=float(p_adjusted),
        p_tost=r.p_tost,
        p_tost_adjusted=float(p_tost_adjusted),
        seeds_needed=needed,
    )


def decide(
    results: Sequence[IdeaResult],
    alpha: float = 0.05,
    *,
    power: float = 0.8,
    max_seeds: int = MAX_SEEDS,
) -> list[Verdict]:
    """Verdicts for all ideas of one run, with Holm correction across them.

    Holm is applied separately to the primary p-values and to the TOST p-values of the m ideas
    (so both "confirmed" and the equivalence "ruled out" claims keep family-wise error <= alpha).
    Then, per idea, in this order:

    1. confirmed:   p_adjusted < alpha and the test's direction favours the treatment
                    (higher metric if ``higher_is_better``, else lower);
    2. ruled out:   p_adjusted < alpha in the harmful direction;
    3. ruled out:   p_tost_adjusted < alpha (|mean difference| < margin shown);
    4. inconclusive, with ``seeds_needed`` = the cheaper of the pairs that give 80% (``power``)
       to detect the observed d_z and to show equivalence at the observed mean and sd, planned
       at the Bonferroni level alpha / m (conservative under Holm), capped at ``max_seeds``.

    The two-sided p with a direction check makes each directional claim a one-sided test at
    alpha / 2. Verdicts come back in the order of ``results``.
    """
    _check_alpha(alpha)
    if not results:
        return []
    p_adj = holm([r.p for r in results])
    p_tost_adj = holm([r.p_tost for r in results])
    plan_alpha = alpha / len(results)
    return [
        _decide_one(r, pa, pt, alpha, plan_alpha, power, max_seeds)
        for r, pa, pt in zip(results, p_adj, p_tost_adj, strict=True)
    ]


def verdict(
    control: Sequence[float] | np.ndarray,
    treatment: Sequence[float] | np.ndarray,
    *,
    margin: float,
    higher_is_better: bool = True,
    alpha: float = 0.05,
    test: TestName = "permutation",
    p_adjusted: float | None = None,
    p_tost_adjusted: float | None = None,
    name: str = "",
    level: float = 0.95,
    ci_method: Literal["bca", "percentile"] = "bca",
    n_resamples: int = 10_000,
    seed: int = 0,
    power: float = 0.8,
    max_seeds: int = MAX_SEEDS,
) -> Verdict:
    """Verdict for a single idea: :func:`test_idea` then the rule of :func:`decide`.

    Without ``p_adjusted``/``p_tost_adjusted`` the idea is its own family (adjusted = raw); pass
    adjusted values computed elsewhere (e.g. by :func:`holm` over a run) to use them instead.
    """
    _check_alpha(alpha)
    r = test_idea(
        control,
        treatment,
        margin=margin,
        higher_is_better=higher_is_better,
        test=test,
        name=name,
        level=level,
        ci_method=ci_method,
        n_resamples=n_resamples,
        seed=seed,
    )
    pa = r.p if p_adjusted is None else p_adjusted
    pt = r.p_tost if p_tost_adjusted is None else p_tost_adjusted
    return _decide_one(r, pa, pt, alpha, alpha, power, max_seeds)
