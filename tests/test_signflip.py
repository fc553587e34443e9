"""Sign-flip null distributions: meet-in-the-middle counts against brute force, and the
sequential Monte-Carlo p (Besag-Clifford) for its stopping rule, its floor and its validity."""

from __future__ import annotations

import numpy as np
import pytest

from dagstudy import stats
from dagstudy.confirmation.power_check import look_alphas, look_seeds
from dagstudy.confirmation.spec import ConfirmSpec
from dagstudy.stats.signflip import (
    CHUNK,
    EXCEEDANCES,
    all_signs,
    exact_sum_p,
    monte_carlo_p,
    tail,
)


def brute_force_p(d: np.ndarray, alternative: str, tol: float) -> float:
    """Every one of the 2**n flipped sums, in blocks of 2**16 (n <= 22 here)."""
    head = d[:16] @ all_signs(min(d.size, 16))
    rest = d[16:] @ all_signs(d.size - 16) if d.size > 16 else np.zeros(1)
    extreme = sum(int(tail(head + r, d.sum(), alternative, tol).sum()) for r in rest)
    return extreme / 2.0**d.size


@pytest.mark.parametrize("n", [1, 2, 3, 7, 12, 16, 17, 20])
def test_meet_in_the_middle_counts_every_pattern(n):
    rng = np.random.default_rng(n)
    real = rng.normal(0.3, 1.0, n)
    ties = rng.integers(-2, 3, n).astype(float)  # ties and zeros
    halves = np.concatenate([np.zeros(n // 2), np.full(n - n // 2, 0.5)])
    # real values need the slack (rounding moves sums that tie the observed one); sums of
    # small integers and halves are exact, so there the count must be right without it
    for d, slacks in ((real, [1e-9]), (ties, [0.0, 1e-9]), (halves, [0.0, 1e-9])):
        for slack in slacks:
            tol = slack * float(np.abs(d).sum())
            for alternative in stats.ALTERNATIVES:
                assert exact_sum_p(d, alternative, tol) == brute_force_p(d, alternative, tol)


def test_permutation_p_is_exact_up_to_forty_pairs():
    # all 40 pairs positive: only the observed pattern and its mirror are as extreme
    assert stats.permutation_p(np.arange(1.0, 41.0)) == 2 / 2**40
    assert stats.permutation_p(np.arange(1.0, 41.0), "greater") == 1 / 2**40
    # one pair of 30 negative: the patterns with |S| >= S - 2 are those flipping nothing or
    # only d_1 = -1, and their mirrors
    d = np.arange(1.0, 31.0)
    d[0] = -1.0
    assert stats.permutation_p(d) == 4 / 2**30
    with pytest.raises(ValueError, match="at most 40"):
        exact_sum_p(np.ones(41), "two-sided", 0.0)


def test_monte_carlo_stops_after_the_exceedances_and_counts_draws():
    calls = []

    def half_extreme(signs):  # P(extreme) = 1/2 exactly
        calls.append(signs.shape[1])
        return signs[0] > 0

    p = monte_carlo_p(half_extreme, 3, 10**6, seed=0)
    assert p == pytest.approx(0.5, rel=0.1)
    assert calls == [CHUNK]  # the 1000th extreme pattern comes near draw 2000: one batch
    assert monte_carlo_p(lambda s: np.ones(s.shape[1], bool), 3, 10**6, 0) == 1.0
    never = monte_carlo_p(lambda s: np.zeros(s.shape[1], bool), 3, 2 * CHUNK + 5, 0)
    assert never == 1 / (2 * CHUNK + 6)  # the floor, after every allowed draw


def test_monte_carlo_p_is_h_over_the_draw_of_the_hth_exceedance():
    # one pattern in 8 is extreme: the 1000th comes at draw L and p = 1000 / L
    def extreme(signs):
        return np.all(signs > 0, axis=0)

    patterns = 2.0 * np.random.default_rng(5).integers(0, 2, (3, CHUNK), dtype=np.int8) - 1.0
    draw = int(np.argmax(np.cumsum(extreme(patterns)) >= EXCEEDANCES)) + 1
    assert monte_carlo_p(extreme, 3, 10**6, seed=5) == EXCEEDANCES / draw
    assert EXCEEDANCES / draw == pytest.approx(1 / 8, rel=0.1)


def test_monte_carlo_p_is_valid_under_the_null():
    """A/A: symmetric differences, 50 pairs (Monte Carlo); P(p <= alpha) must not exceed alpha
    beyond binomial noise at 400 runs (sd 0.011 at 0.05)."""
    rng = np.random.default_rng(11)
    ps = np.array([stats.permutation_p(rng.standard_t(3, 50), seed=i) for i in range(400)])
    assert np.mean(ps <= 0.05) <= 0.05 + 3 * 0.011
    assert np.mean(ps <= 0.5) == pytest.approx(0.5, abs=0.08)  # and not too conservative


def test_a_pooled_first_look_can_now_decide():
    """settings.yaml's first look: 3 settings x 10 seeds = 30 pairs, Holm share of its
    O'Brien-Fleming alpha over 6 ideas about 3e-5. The old 10 000-draw floor (1e-4) made that
    look blind; a strong planted effect now passes it and the floor is far below it."""
    spec = ConfirmSpec(name="s", seeds=10, sequential={"enabled": True, "looks": 3,
                                                       "add_seeds": 10},
                       ideas={"X": {"control": {}, "treatment": {}, "margin": 0.01}})
    threshold = look_alphas(spec)[0] / 6
    assert look_seeds(spec)[0] == 10 and 1e-5 < threshold < 1e-4
    assert stats.smallest_p(30, "stratified-permutation", spec.permutations) < threshold / 10
    rng = np.random.default_rng(2)
    strata = [rng.normal(1.5, 1.0, 10) for _ in range(3)]
    assert stats.stratified_permutation_p(strata, permutations=spec.permutations) < threshold
    assert stats.stratified_permutation_p(strata, permutations=9_999) > threshold  # old floor
