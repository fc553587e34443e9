"""Planning: power of the paired tests and the number of seeds (pairs) a design needs."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy import special
from scipy import stats as sps

from dagstudy.stats.paired import MAX_SEEDS, check_alpha
from dagstudy.stats.pooled import STRATIFIED_TEST
from dagstudy.stats.signflip import (
    ENUMERATE_MAX_N,
    EXACT_MAX_N,
    PERMUTATIONS,
    monte_carlo_floor,
)


def smallest_p(n: int, test: str = "permutation", permutations: int = PERMUTATIONS) -> float:
    """Smallest two-sided p-value the paired ``test`` can give with ``n`` pairs (the floor a
    design must beat).

    ``test`` is one of ``"permutation"``, ``"wilcoxon"``, ``"t"`` or ``"stratified-permutation"``
    (``STRATIFIED_TEST``: the pooled test over settings, ``n`` = pairs over all settings).
    Sign-flip tests weigh 2**n equally likely sign patterns, and the observed one and its mirror
    are always as extreme, so their exact p is >= 2 / 2**n. Where the p is Monte Carlo
    (``permutation`` above ``EXACT_MAX_N`` pairs, the pooled test above ``ENUMERATE_MAX_N``) it
    is >= 1 / (1 + permutations) too; the floor is the larger of the two. (A Monte-Carlo
    estimate can fall a little below 2 / 2**n by chance; a design is not credited with that.)
    Wilcoxon with tied |d| above ``EXACT_MAX_N`` pairs uses the normal approximation, whose
    smallest p is larger than 2 / 2**n but far below any alpha / m of a design (about 2e-8 at
    41 pairs). The t-test has no floor (0.0).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if test not in _EXACT_MAX_N:
        raise ValueError(f"test must be one of {sorted(_EXACT_MAX_N)}, got {test!r}")
    if test == "t":
        return 0.0
    exact = math.ldexp(1.0, 1 - n)  # 2 / 2**n, 0.0 (not an overflow) beyond float range
    if n > _EXACT_MAX_N[test]:
        return max(exact, monte_carlo_floor(permutations))
    return exact


_EXACT_MAX_N = {"permutation": EXACT_MAX_N, STRATIFIED_TEST: ENUMERATE_MAX_N,
                "wilcoxon": math.inf, "t": math.inf}
"""Most pairs for which each test's p is exact (no Monte-Carlo floor)."""


def min_pairs(threshold: float, test: str = "permutation", max_n: int = MAX_SEEDS,
              permutations: int = PERMUTATIONS) -> int:
    """Fewest pairs whose smallest attainable p (:func:`smallest_p`) is below ``threshold``
    (strictly: verdicts need p < alpha); 2 for the t-test; ``max_n`` if never.

    Not monotone in n for a threshold below the Monte-Carlo floor 1 / (1 + permutations): the
    exact range may reach it (say 12 pairs) and more pairs then not (41 pairs and up are Monte
    Carlo); :func:`min_permutations` gives the draws that lift that limit.
    """
    check_alpha(threshold, "threshold")
    n = 2
    while n < max_n and smallest_p(n, test, permutations) >= threshold:
        if n > _EXACT_MAX_N[test] and monte_carlo_floor(permutations) >= threshold:
            return max_n  # Monte Carlo from here on, and its floor is above the threshold
        n += 1
    return n


def min_permutations(threshold: float) -> int:
    """Fewest Monte-Carlo draws N whose floor (``signflip.monte_carlo_floor``: 1 / (1 + N)) is
    below ``threshold``."""
    check_alpha(threshold, "threshold")
    return math.floor(1.0 / threshold)


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
    d_z: float, alpha: float = 0.05, power: float = 0.8, *, max_n: int = MAX_SEEDS,
    test: str = "t", permutations: int = PERMUTATIONS
) -> int:
    """Pairs needed for a two-sided paired t-test at level alpha to reach ``power``.

    Smallest n with :func:`power_paired_t` (n, |d_z|, alpha) >= power, searching from the
    normal approximation n ~ (z_{1-alpha/2} + z_{power})^2 / d_z^2 (= 7.85 / d_z^2 at 0.05 and
    0.8, the "7.9 (sd_d / delta)^2" rule; the t-test needs about two pairs more). d_z = 0 (no
    effect to detect) or any n above ``max_n`` returns ``max_n``, which then means "at least".

    ``test`` is the test that will decide: for the sign-flip tests the answer is never below
    :func:`min_pairs` (alpha), the fewest pairs whose smallest attainable p is below alpha (7 at
    alpha = 0.025, 10 at 0.05 / 14), however large the effect; ``permutations`` is its
    Monte-Carlo draws.
    """
    check_alpha(alpha)
    check_alpha(power, "power")
    floor = min_pairs(alpha, test, max_n, permutations)
    effect = abs(d_z)
    if math.isinf(effect):
        return floor
    if effect == 0.0:
        return max_n
    approx = (sps.norm.isf(alpha / 2) + sps.norm.ppf(power)) ** 2 / effect**2
    if approx >= max_n:
        return max_n
    n = _smallest_n(lambda n: power_paired_t(n, effect, alpha), power, approx, max_n)
    return max(n, floor)


def seeds_noninferior(
    diff: float, sd: float, margin: float, alpha: float = 0.05, power: float = 0.8, *,
    max_n: int = MAX_SEEDS, test: str = "t", permutations: int = PERMUTATIONS
) -> int:
    """Pairs needed to decide a non-inferiority idea: the direction-checked two-sided test of
    ``diff + margin`` (``diff`` the true mean paired difference, oriented so that positive
    favours the treatment; ``sd`` of the differences; ``margin`` > 0) significant with
    ``power`` at level ``alpha``, confirming non-inferiority when ``diff > -margin`` and ruling
    it out when ``diff < -margin``. It is :func:`seeds_needed` at the shifted effect
    ``|diff + margin| / sd``; no TOST enters. ``diff == -margin`` returns ``max_n``.
    """
    if not margin > 0.0 or not sd >= 0.0:
        raise ValueError(f"need margin > 0 and sd >= 0, got margin={margin!r}, sd={sd!r}")
    shifted = abs(diff + margin)
    if shifted == 0.0:
        return max_n
    d_z = math.inf if sd == 0.0 else shifted / sd
    return seeds_needed(d_z, alpha, power, max_n=max_n, test=test, permutations=permutations)


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
    check_alpha(alpha)
    check_alpha(power, "power")
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
