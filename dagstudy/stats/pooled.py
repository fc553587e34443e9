"""Pooling one idea's paired experiments over several settings (datasets, depths, widths).

Each setting ``k`` gives paired differences ``d_k`` (``n_k`` seeds, metric units, treatment -
control). Two questions, two tools:

- *Is there an effect on average?* :func:`stratified_permutation_p`, a stratified paired
  sign-flip permutation test: under H0 every d_ki is symmetric about 0, so each sign is flipped
  independently (within its setting) and the pooled statistic recomputed from the flipped data.
  The statistic ``T`` is the inverse-variance-weighted mean of the per-setting effects, with
  the random-effects weights ``1 / (v_k + tau^2)``: the DerSimonian-Laird estimate below, so the
  test's direction is always the reported estimate's. The per-setting effect is
  ``mean(d_k)`` (``scale="diff"``, metric units) or ``d_z = mean / sd`` (``scale="d_z"``, for
  settings whose metric scales differ, e.g. losses on two datasets), see :func:`setting_effect`.
  Because ``T`` is recomputed for every sign pattern the test is exact whatever the weights:
  all patterns for ``sum_k n_k <= ENUMERATE_MAX_N`` (16), otherwise sequential Monte Carlo
  (``signflip.monte_carlo_p``, floor ``1 / (1 + permutations)``).
- *How large, and do the settings agree?* :func:`random_effects`, the DerSimonian-Laird
  random-effects estimate of the mean effect, its normal CI, the between-setting variance tau^2,
  Cochran's Q and I^2 = max(0, (Q - df) / Q): the share of the spread not explained by
  within-setting noise (statsmodels' ``combine_effects(method_re="dl")``). Its inputs come from
  :func:`setting_effect`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, NamedTuple

import numpy as np
from scipy import stats as sps

from dagstudy.stats.paired import Alternative, _check_alternative
from dagstudy.stats.signflip import ENUMERATE_MAX_N, PERMUTATIONS, all_signs, monte_carlo_p, tail

Scale = Literal["diff", "d_z"]
SCALES = ("diff", "d_z")
STRATIFIED_TEST = "stratified-permutation"
"""The name of :func:`stratified_permutation_p` where a test is named (a pooled idea's result,
``power.smallest_p``)."""
VARIANCE_FLOOR = 1e-12
"""Smallest within-setting variance used as a weight's denominator (a setting whose pairs all
differ by the same amount would otherwise get an infinite weight)."""


class RandomEffects(NamedTuple):
    """DerSimonian-Laird random-effects summary of K effects (units of the effects)."""

    estimate: float
    se: float
    ci_low: float
    ci_high: float
    tau2: float
    q: float
    df: int
    i2: float
    weights: np.ndarray  # [K] random-effects weights 1 / (v_k + tau2), unnormalised


def random_effects(
    effects: Sequence[float] | np.ndarray,
    variances: Sequence[float] | np.ndarray,
    level: float = 0.95,
) -> RandomEffects:
    """DerSimonian-Laird pooling of ``effects`` with within-setting ``variances`` (> 0).

    ``w = 1/v``; fixed-effect mean ``m = sum w y / sum w``; ``Q = sum w (y - m)^2``,
    ``df = K - 1``; ``tau2 = max(0, (Q - df) / (sum w - sum w^2 / sum w))``;
    ``w* = 1 / (v + tau2)``; estimate ``sum w* y / sum w*`` with ``se = sqrt(1 / sum w*)`` and a
    normal ``level`` CI; ``I2 = max(0, (Q - df) / Q)`` (0 when Q = 0). One setting: tau2 = 0.
    """
    y = np.asarray(effects, dtype=float)
    v = np.asarray(variances, dtype=float)
    if y.ndim != 1 or y.shape != v.shape or y.size == 0:
        raise ValueError(f"effects {y.shape} and variances {v.shape} must be equal-length 1-D")
    if not (np.all(np.isfinite(y)) and np.all(np.isfinite(v)) and np.all(v > 0)):
        raise ValueError("effects must be finite and variances finite and > 0")
    w = 1.0 / v
    fixed = float(np.sum(w * y) / np.sum(w))
    q = float(np.sum(w * (y - fixed) ** 2))
    df = y.size - 1
    c = float(np.sum(w) - np.sum(w**2) / np.sum(w))
    tau2 = max(0.0, (q - df) / c) if df > 0 and c > 0 else 0.0
    w_star = 1.0 / (v + tau2)
    estimate = float(np.sum(w_star * y) / np.sum(w_star))
    se = math.sqrt(1.0 / float(np.sum(w_star)))
    z = float(sps.norm.ppf((1.0 + level) / 2.0))
    i2 = max(0.0, (q - df) / q) if q > 0 else 0.0
    return RandomEffects(estimate, se, estimate - z * se, estimate + z * se, tau2, q, df, i2,
                         w_star)


def setting_effect(d: Sequence[float] | np.ndarray, scale: Scale = "diff") -> tuple[float, float]:
    """``(effect, variance of the effect)`` of one setting's paired differences ``d``.

    ``diff``: ``mean(d)`` and ``sd^2 / n``; ``d_z``: ``mean / sd`` and the large-sample
    ``1/n + d_z^2 / (2n)``. Variances are floored at ``VARIANCE_FLOOR``.
    """
    d = _as_stratum(d)
    n, mean, sd = d.size, float(d.mean()), float(d.std(ddof=1))
    if scale == "diff":
        return mean, max(sd**2 / n, VARIANCE_FLOOR)
    dz = mean / max(sd, _sd_floor(d))
    return dz, max(1.0 / n + dz**2 / (2.0 * n), VARIANCE_FLOOR)


def _as_stratum(d: Sequence[float] | np.ndarray) -> np.ndarray:
    a = np.asarray(d, dtype=float)
    if a.ndim != 1 or a.size < 2 or not np.all(np.isfinite(a)):
        raise ValueError(f"each setting needs >= 2 finite paired differences, got {a.shape}")
    return a


def _sd_floor(d: np.ndarray) -> float:
    """A scale-aware floor for an sd of 0 (all pairs equal), so d_z stays finite and ordered."""
    return max(1e-12 * float(np.sqrt(np.mean(d**2))), 1e-300)


def _check_scale(scale: str) -> None:
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")


def pooled_statistic(diffs: Sequence[Sequence[float] | np.ndarray], scale: Scale = "diff"
                     ) -> float:
    """The observed ``T`` of :func:`stratified_permutation_p`: equal to
    ``random_effects(*zip(*(setting_effect(d, scale) for d in diffs))).estimate``."""
    strata = [_as_stratum(d) for d in diffs]
    return float(_statistic(strata, [np.ones((d.size, 1)) for d in strata], scale)[0])


def _statistic(strata: list[np.ndarray], signs: list[np.ndarray], scale: str) -> np.ndarray:
    """``T`` for every sign pattern: ``signs[k]`` is ``[n_k, P]`` of +-1; returns ``[P]``."""
    effects, variances = [], []
    for d, e in zip(strata, signs):  # setting_effect, vectorised over the P patterns
        n = d.size
        mean = (d @ e) / n
        sd = np.sqrt(np.maximum(float(d @ d) - n * mean**2, 0.0) / (n - 1))
        if scale == "diff":
            effects.append(mean)
            variances.append(np.maximum(sd**2 / n, VARIANCE_FLOOR))
        else:
            dz = mean / np.maximum(sd, _sd_floor(d))
            effects.append(dz)
            variances.append(np.maximum(1.0 / n + dz**2 / (2.0 * n), VARIANCE_FLOOR))
    y, v = np.stack(effects, axis=1), np.stack(variances, axis=1)  # [P, K]
    w = 1.0 / v
    fixed = np.sum(w * y, axis=1, keepdims=True) / np.sum(w, axis=1, keepdims=True)
    q = np.sum(w * (y - fixed) ** 2, axis=1)
    c = np.sum(w, axis=1) - np.sum(w**2, axis=1) / np.sum(w, axis=1)
    df = y.shape[1] - 1
    tau2 = np.where((c > 0) & (df > 0), np.maximum(0.0, (q - df) / np.where(c > 0, c, 1.0)), 0.0)
    w_star = 1.0 / (v + tau2[:, None])
    return np.sum(w_star * y, axis=1) / np.sum(w_star, axis=1)


def stratified_permutation_p(
    diffs: Sequence[Sequence[float] | np.ndarray],
    scale: Scale = "diff",
    alternative: Alternative = "two-sided",
    permutations: int = PERMUTATIONS,
    seed: int = 0,
) -> float:
    """Stratified paired sign-flip permutation p-value of H0: no effect in any setting.

    ``diffs[k]`` are setting k's paired differences. Extreme means ``T_e >= T`` ("greater"),
    ``T_e <= T`` ("less") or ``|T_e| >= |T|`` ("two-sided") with a relative tolerance of 1e-9.
    Exact for ``sum n_k <= ENUMERATE_MAX_N`` (all ``2**sum n_k`` patterns), else sequential
    Monte Carlo with at most ``permutations`` random patterns from
    ``np.random.default_rng(seed)`` (``signflip.monte_carlo_p``). All-zero differences give
    p = 1.
    """
    _check_scale(scale)
    _check_alternative(alternative)
    strata = [_as_stratum(d) for d in diffs]
    if not strata:
        raise ValueError("diffs: at least one setting is needed")
    if all(not np.any(d) for d in strata):
        return 1.0
    observed = pooled_statistic(strata, scale)
    edges = np.cumsum([0] + [d.size for d in strata])

    def extreme(signs: np.ndarray) -> np.ndarray:
        null = _statistic(strata, [signs[a:b] for a, b in zip(edges, edges[1:])], scale)
        return tail(null, observed, alternative, _tol(null, observed))

    total = int(edges[-1])
    if total <= ENUMERATE_MAX_N:
        return float(np.mean(extreme(all_signs(total))))
    return monte_carlo_p(extreme, total, permutations, seed)


def _tol(null: np.ndarray, observed: float) -> float:
    return 1e-9 * max(float(np.max(np.abs(null))), abs(observed))
