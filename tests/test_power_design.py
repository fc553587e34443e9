"""Power by design: the exact tests' floor, non-inferiority planning, a d_z CI that never raises.

Simulations use fixed seeds and a few hundred runs (about a second in all).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from dagstudy.stats import (
    cohens_dz_ci,
    min_pairs,
    min_permutations,
    paired_p,
    seeds_needed,
    seeds_noninferior,
    smallest_p,
)
from dagstudy.stats.paired import cohens_dz


def test_smallest_p_is_two_over_two_to_the_n_for_sign_flip_tests():
    assert smallest_p(10) == 2 / 1024
    assert smallest_p(10, "wilcoxon") == 2 / 1024
    assert smallest_p(10, "t") == 0.0
    # the real test reaches it: all 10 pairs agree
    assert paired_p(np.arange(1.0, 11.0)) == pytest.approx(2 / 1024)
    assert smallest_p(40) == 2 / 2**40                     # exact up to 40 pairs
    assert smallest_p(50) == pytest.approx(1 / 1_000_001)  # Monte Carlo above: its floor
    # the pooled test enumerates up to 16 pairs in all, then is Monte Carlo
    assert smallest_p(16, "stratified-permutation") == 2 / 2**16
    assert smallest_p(30, "stratified-permutation") == pytest.approx(1 / 1_000_001)
    assert smallest_p(30, "stratified-permutation", permutations=9_999) == pytest.approx(1e-4)


def test_min_pairs_is_the_holm_floor_of_the_exact_test():
    assert min_pairs(0.05 / 14) == 10  # 2/1024 < 0.00357 <= 2/512
    assert min_pairs(0.025) == 7       # the case the issue names: 5 pairs were advised
    assert min_pairs(0.05, "t") == 2
    assert min_pairs(1e-7) == 25  # 2 / 2**25 < 1e-7: exact up to 40 pairs
    # a threshold below the Monte-Carlo floor (1e-6) where the test is Monte Carlo: never
    # reachable, an answer (the cap), not an overflow at 2**1024
    assert min_pairs(1e-13) == 10_000 and min_pairs(1e-13, max_n=50) == 50
    assert min_pairs(1e-7, "stratified-permutation") == 10_000
    assert min_pairs(1e-13, "wilcoxon") == 45  # exact (or normal) at every n
    assert seeds_needed(0.3, 1e-13, test="permutation") == 10_000
    # not monotone: fewer Monte-Carlo draws put the floor of 41+ pairs above a threshold that
    # 12 exact pairs reach
    assert min_pairs(5e-4, permutations=1000) == 12
    assert smallest_p(45, permutations=1000) > 5e-4
    assert min_permutations(5e-4) == 2000 and 1 / (1 + 2000) < 5e-4 <= 1 / (1 + 1999)
    assert min_permutations(3e-4) == 3333 and 1 / 3334 < 3e-4 <= 1 / 3333
    with pytest.raises(ValueError, match="test must be one of"):
        smallest_p(10, "sign")


def test_seeds_needed_plans_with_the_monte_carlo_draws_the_verdict_uses():
    # pooled over 3 settings, Holm share 0.0002 / 6 of a first look: reachable with 1e6 draws
    assert seeds_needed(math.inf, 0.0002 / 6, test="stratified-permutation") == 16
    assert seeds_needed(math.inf, 0.0002 / 6, test="stratified-permutation",
                        permutations=9_999) == 16  # the enumerated range still reaches it
    # above the enumerated range 2 / 2**n still binds while the draws' floor is below it
    assert seeds_needed(math.inf, 1e-5, test="stratified-permutation") == 18
    assert seeds_needed(math.inf, 1e-5, test="stratified-permutation",
                        permutations=9_999) == 10_000  # floor 1e-4: never
    assert seeds_needed(math.inf, 1e-5, test="permutation", permutations=10**6) == 18
    pooled = dict(test="stratified-permutation")
    assert seeds_noninferior(0.0, 0.0, 1.0, 1e-5, **pooled) == 18
    assert seeds_noninferior(0.0, 0.0, 1.0, 1e-5, **pooled, permutations=9_999) == 10_000


def test_seeds_needed_never_goes_below_the_exact_floor():
    assert seeds_needed(5.0, 0.025) < 7                   # the t-test alone would say fewer
    assert seeds_needed(5.0, 0.025, test="permutation") == 7
    assert seeds_needed(math.inf, 0.05 / 14, test="permutation") == 10


def _confirm_rate(n: int, diff: float, sd: float, margin: float, alpha: float, runs: int,
                  rng: np.random.Generator) -> float:
    """Share of simulated non-inferiority tests (the verdict's: permutation test of
    d + margin, two-sided with a direction check) that confirm."""
    hits = 0
    for _ in range(runs):
        shifted = rng.normal(diff, sd, n) + margin
        hits += shifted.mean() > 0 and paired_p(shifted, permutations=999, seed=1) < alpha
    return hits / runs


def test_noninferiority_seeds_match_simulation_within_20_percent():
    diff, sd, margin, alpha = -0.005, 0.01, 0.01, 0.05   # shifted d_z = 0.5
    n = seeds_noninferior(diff, sd, margin, alpha)
    assert 30 <= n <= 40
    rng = np.random.default_rng(13)
    low = _confirm_rate(round(0.8 * n), diff, sd, margin, alpha, 300, rng)
    high = _confirm_rate(round(1.2 * n), diff, sd, margin, alpha, 300, rng)
    assert low < 0.8 < high, (n, low, high)


def test_noninferiority_plans_on_the_shifted_effect_without_tost():
    # DAG-FANIN on digits: diff -0.0081, d_z -1.05, margin 0.01, 14 ideas -> ~237 pairs, not 18
    n = seeds_noninferior(-0.0081, 0.0081 / 1.05, 0.01, 0.05 / 14)
    assert 200 <= n <= 260
    assert seeds_noninferior(-0.01, 0.01, 0.01, max_n=500) == 500  # on the margin: never
    assert seeds_noninferior(-0.03, 0.01, 0.01) < 10   # clearly inferior: ruled out quickly


def test_cohens_dz_ci_never_raises_and_covers():
    rng = np.random.default_rng(0)
    covered = 0
    for _ in range(200):
        d = rng.normal(2.2, 1.0, 10)
        low, high = cohens_dz_ci(d)
        assert low < cohens_dz(d) < high
        covered += low < 2.2 < high
    assert covered / 200 > 0.9
