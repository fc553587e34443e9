"""Null distributions of sign-flip tests: exact counts and sequential Monte-Carlo p-values.

Under H0 of a paired sign-flip test each difference d_i is symmetric about 0, so all 2**n sign
patterns e in {-1, +1}^n are equally likely and the p-value of a statistic T is the share of
patterns whose T(e * d) is at least as extreme as the observed T(d). Three ways to get it, each
the cheapest that is exact enough for its case:

- **Enumeration** (:func:`all_signs`, n <= ``ENUMERATE_MAX_N``): every pattern, for any
  statistic (the pooled test's random-effects mean).
- **Meet in the middle** (:func:`exact_sum_p`, n <= ``EXACT_MAX_N``): for the plain sum
  S = sum_i e_i d_i only. S splits into the sums A over the first half of the pairs and B over
  the second, so the 2**n patterns are the pairs (A, B) of two lists of 2**(n/2) sums each;
  sorting B counts the pairs with A + B beyond a bound by binary search, in about
  n 2**(n/2) log operations instead of n 2**n (0.2-0.6 s and 16-32 MB at n = 40). Exact.
- **Sequential Monte Carlo** (:func:`monte_carlo_p`, above those sizes): random patterns drawn
  until ``EXCEEDANCES`` of them are extreme or ``permutations`` have been drawn (Besag and
  Clifford 1991, "Sequential Monte Carlo p-values", Biometrika 78: 301-304). Stopped at the
  h-th extreme draw L, p = h / L; never stopped, p = (1 + #extreme) / (1 + permutations). Both
  are valid p-values (P(p <= u) <= u under H0). The draws go where a decision needs them: a
  large p stops after about h / p draws, while a p near a small threshold gets up to
  ``permutations`` draws, so the floor 1 / (1 + permutations) (1e-6 by default) is far below
  any Holm share of a sequential first look (a fixed 10 000 draws floored p at 1e-4, above
  those shares). With h = 1000 the relative standard error of p is about 3% wherever the
  draws stop early (1 / sqrt(h)).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np

ENUMERATE_MAX_N = 16
"""Largest n for which a sign-flip test whose statistic is not a plain sum enumerates all 2**n
patterns (65 536 at n = 16); above it that test is Monte Carlo."""
EXACT_MAX_N = 40
"""Largest n for which the sum statistic's p is exact (meet in the middle, 2 x 2**20 sums at
n = 40); above it Monte Carlo."""
PERMUTATIONS = 1_000_000
"""Default cap on the random sign patterns of a Monte-Carlo p; its floor is 1 / (1 + cap)."""
EXCEEDANCES = 1_000
"""Extreme draws after which a Monte-Carlo p stops early (h of Besag and Clifford)."""
CHUNK = 20_000
"""Sign patterns drawn per batch (the last batch is shorter: up to ``permutations``); the
patterns drawn depend only on the seed, n and ``permutations``."""


@lru_cache(maxsize=ENUMERATE_MAX_N)
def all_signs(n: int) -> np.ndarray:
    """All 2**n sign vectors as an (n, 2**n) array of +-1.0 (read-only, cached)."""
    bits = (np.arange(2**n)[None, :] >> np.arange(n)[:, None]) & 1
    signs = 2.0 * bits - 1.0
    signs.setflags(write=False)
    return signs


def tail(null: np.ndarray, obs: float, alternative: str, tol: float) -> np.ndarray:
    """Indicator, per null value, of a statistic at least as extreme as ``obs``: ``>= obs``
    ("greater"), ``<= obs`` ("less") or ``|null| >= |obs|`` ("two-sided"), each with slack
    ``tol`` for float ties."""
    if alternative == "greater":
        return null >= obs - tol
    if alternative == "less":
        return null <= obs + tol
    return np.abs(null) >= abs(obs) - tol


def _flipped_sums(d: np.ndarray) -> np.ndarray:
    """The 2**len(d) sums sum_i e_i d_i, one per sign pattern (order unspecified)."""
    sums = np.zeros(1)
    for x in d:
        sums = np.concatenate((sums + x, sums - x))
    return sums


def exact_sum_p(d: np.ndarray, alternative: str, tol: float) -> float:
    """Exact sign-flip p of the sum statistic S = sum_i d_i (extreme as in :func:`tail`, with
    slack ``tol``), counting all 2**n patterns by meet in the middle. Requires
    ``len(d) <= EXACT_MAX_N``."""
    if d.size > EXACT_MAX_N:
        raise ValueError(f"exact_sum_p needs at most {EXACT_MAX_N} values, got {d.size}")
    half = d.size // 2
    first, second = _flipped_sums(d[:half]), np.sort(_flipped_sums(d[half:]))

    def at_least(bound: float) -> int:  # patterns with A + B >= bound
        return int(second.size * first.size
                   - np.searchsorted(second, bound - first, side="left").sum())

    def at_most(bound: float) -> int:  # patterns with A + B <= bound
        return int(np.searchsorted(second, bound - first, side="right").sum())

    obs = float(d.sum())
    if alternative == "greater":
        extreme = at_least(obs - tol)
    elif alternative == "less":
        extreme = at_most(obs + tol)
    elif abs(obs) <= tol:
        return 1.0
    else:  # the two tails are disjoint once |obs| > tol
        extreme = at_least(abs(obs) - tol) + at_most(tol - abs(obs))
    return extreme / float(2**d.size)


def monte_carlo_floor(permutations: int) -> float:
    """Smallest p :func:`monte_carlo_p` can return with at most ``permutations`` draws,
    1 / (1 + permutations): stopped early at draw L <= permutations, p = h / L is larger."""
    return 1.0 / (1 + permutations)


def monte_carlo_p(extreme: Callable[[np.ndarray], np.ndarray], n: int, permutations: int,
                  seed: int) -> float:
    """Sequential Monte-Carlo sign-flip p (Besag and Clifford; module docstring).

    ``extreme(signs)`` takes an (n, P) array of +-1.0 sign patterns and returns the [P] bool
    indicator of those whose statistic is at least as extreme as the observed one. Patterns are
    drawn from ``np.random.default_rng(seed)`` in batches of ``CHUNK``. Returns
    ``EXCEEDANCES / L`` if the ``EXCEEDANCES``-th extreme pattern is draw L <= ``permutations``,
    else ``(1 + #extreme) / (1 + permutations)``.
    """
    if permutations < 1:
        raise ValueError(f"permutations must be >= 1, got {permutations}")
    rng = np.random.default_rng(seed)
    drawn = hits = 0
    while drawn < permutations:
        size = min(CHUNK, permutations - drawn)
        signs = 2.0 * rng.integers(0, 2, size=(n, size), dtype=np.int8) - 1.0
        running = hits + np.cumsum(extreme(signs))
        if running[-1] >= EXCEEDANCES:
            return EXCEEDANCES / (drawn + 1 + int(np.argmax(running >= EXCEEDANCES)))
        hits, drawn = int(running[-1]), drawn + size
    return (1 + hits) / (1 + permutations)
