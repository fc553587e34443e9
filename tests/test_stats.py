"""Tests for dagstudy.stats: reference values, hand examples and calibration by simulation.

Simulated metric (no training): seed s has a shared level b_s ~ N(0, 1) seen by both arms plus
independent arm noise e ~ N(0, 1/2), so the paired differences have sd 1 and a planted shift
``delta`` is exactly d_z. All randomness comes from seeded numpy Generators.
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import scipy.stats as sps

from dagstudy import stats
from dagstudy.confirmation.verdict import decide, test_idea, verdict

# The bootstrap CI does not enter the decision rule; few resamples keep the simulations fast.
FAST = {"n_resamples": 500}


def paired_metric(
    rng: np.random.Generator, n: int, delta: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """control, treatment for n seeds; d = treatment - control ~ N(delta, 1)."""
    base = rng.normal(0.0, 1.0, n)
    noise = rng.normal(0.0, math.sqrt(0.5), (2, n))
    return base + noise[0], base + delta + noise[1]


# --------------------------------------------------------------------------- input validation


@pytest.mark.parametrize(
    ("control", "treatment", "message"),
    [
        ([1.0, 2.0, 3.0], [1.0, 2.0], "equal length"),
        ([1.0, np.nan, 3.0], [1.0, 2.0, 3.0], "NaN"),
        ([1.0, 2.0, 3.0], [1.0, np.inf, 3.0], "infinite"),
        ([1.0], [2.0], "at least 2"),
        ([[1.0, 2.0]], [[1.0, 2.0]], "1-D"),
    ],
)
def test_paired_diffs_rejects_bad_input(control, treatment, message):
    with pytest.raises(ValueError, match=message):
        stats.paired_summary(control, treatment)


def test_paired_summary_values():
    s = stats.paired_summary([1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 5.0, 8.0])
    d = np.array([1.0, 0.0, 2.0, 4.0])
    assert s["n"] == 4
    assert s["mean"] == pytest.approx(1.75)
    assert s["median"] == pytest.approx(1.5)
    assert s["sd"] == pytest.approx(np.std(d, ddof=1))
    assert s["control_mean"] == pytest.approx(2.5)
    assert s["treatment_mean"] == pytest.approx(4.25)


# --------------------------------------------------------------------------- tests of no effect


def test_permutation_exact_hand_example():
    # d = [1, -2, 3, 4], S = 6. The 16 flipped sums are 2*sum(P) - 10 over subsets P of
    # {1, 2, 3, 4}: -10 -8 -6 -4 -4 -2 -2 0 0 2 2 4 4 6 8 10.
    d = [1.0, -2.0, 3.0, 4.0]
    assert stats.permutation_p(d, "greater") == 3 / 16  # 6, 8, 10
    assert stats.permutation_p(d, "less") == 14 / 16  # all but 8, 10
    assert stats.permutation_p(d, "two-sided") == 6 / 16  # |S| >= 6


def test_permutation_matches_scipy_exact_permutation_test():
    d = np.random.default_rng(3).normal(0.4, 1.0, 12)
    for alternative in stats.ALTERNATIVES:
        ref = sps.permutation_test(
            (d,),
            np.sum,
            permutation_type="samples",
            alternative=alternative,
            n_resamples=2**12,
        ).pvalue
        assert stats.permutation_p(d, alternative) == pytest.approx(ref, rel=1e-12)


def test_permutation_monte_carlo_is_seeded_and_close_to_t():
    d = np.random.default_rng(4).normal(0.4, 1.0, 50)  # above 40 pairs: Monte Carlo
    p1 = stats.permutation_p(d, seed=1)
    assert p1 == stats.permutation_p(d, seed=1)
    assert p1 != stats.permutation_p(d, seed=2)
    assert p1 == pytest.approx(sps.ttest_1samp(d, 0.0).pvalue, rel=0.1)
    # the +1 correction: never 0, even when nothing in the resamples is as extreme
    assert stats.permutation_p(np.arange(1.0, 51.0), permutations=999) == pytest.approx(1 / 1000)


def test_zero_differences_give_p_one():
    zeros = np.zeros(12)
    for test in stats.TESTS:
        assert stats.paired_p(zeros, test) == 1.0


@pytest.mark.parametrize("alternative", stats.ALTERNATIVES)
def test_wilcoxon_matches_scipy(alternative):
    d = np.random.default_rng(5).normal(0.3, 1.0, 14)  # no ties: exact distribution
    ref = sps.wilcoxon(d, alternative=alternative, method="exact").pvalue
    assert stats.wilcoxon_p(d, alternative) == pytest.approx(ref, rel=1e-12)
    # zeros and ties, n <= 13: scipy itself enumerates the sign flips
    t = np.array([0.0, 0.0, 1.0, -1.0, 2.0, 3.0, 3.0, 4.0, 0.5, 2.0, -0.5, 5.0])
    ref = sps.wilcoxon(t, zero_method="zsplit", alternative=alternative).pvalue
    assert stats.wilcoxon_p(t, alternative) == pytest.approx(ref, rel=1e-12)


def test_wilcoxon_hand_example():
    # ranks 1..4, T+ = 1 + 3 + 4 = 8; T+ takes the subset sums of {1, 2, 3, 4}, 3 of 16 >= 8
    assert stats.wilcoxon_p([1.0, -2.0, 3.0, 4.0], "greater") == pytest.approx(3 / 16)
    assert stats.wilcoxon_p([1.0, -2.0, 3.0, 4.0]) == pytest.approx(6 / 16)


@pytest.mark.parametrize("alternative", stats.ALTERNATIVES)
def test_paired_t_matches_scipy(alternative):
    rng = np.random.default_rng(6)
    control, treatment = paired_metric(rng, 11, 0.5)
    d = treatment - control
    ref_rel = sps.ttest_rel(treatment, control, alternative=alternative).pvalue
    ref_1s = sps.ttest_1samp(d, 0.0, alternative=alternative).pvalue
    assert stats.paired_t_p(d, alternative) == pytest.approx(ref_rel, rel=1e-10)
    assert stats.paired_p(d, "t", alternative) == pytest.approx(ref_1s, rel=1e-10)


def test_paired_p_rejects_unknown_test_and_alternative():
    with pytest.raises(ValueError, match="test must be"):
        stats.paired_p([1.0, 2.0], "sign")
    with pytest.raises(ValueError, match="alternative"):
        stats.permutation_p([1.0, 2.0], "bigger")


# --------------------------------------------------------------------------- CI and effect size


def test_bootstrap_degenerate_is_point_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert stats.bootstrap_ci([0.3] * 8) == (0.3, 0.3)
        assert stats.bootstrap_ci([0.3] * 8, method="percentile") == (0.3, 0.3)


def test_bootstrap_is_seeded_and_brackets_the_mean():
    d = np.random.default_rng(7).normal(1.0, 1.0, 15)
    lo, hi = stats.bootstrap_ci(d, seed=3)
    assert (lo, hi) == stats.bootstrap_ci(d, seed=3)
    assert lo < d.mean() < hi
    plo, phi = stats.bootstrap_ci(d, level=0.8, seed=3, method="percentile")
    assert lo < plo < phi < hi


@pytest.mark.parametrize("method", ["bca", "percentile"])
def test_bootstrap_coverage_near_nominal(method):
    rng = np.random.default_rng(8)
    reps, covered = 300, 0
    for i in range(reps):
        d = rng.normal(0.5, 1.0, 15)
        lo, hi = stats.bootstrap_ci(d, n_resamples=2000, seed=i, method=method)
        covered += lo <= 0.5 <= hi
    assert covered / reps >= 0.90


def test_cohens_dz_and_noncentral_t_ci():
    d = np.array([0.2, 0.5, -0.1, 0.9, 0.4, 0.3, 0.8, 0.0])
    dz = stats.cohens_dz(d)
    assert dz == pytest.approx(d.mean() / d.std(ddof=1))
    lo, hi = stats.cohens_dz_ci(d, level=0.9)
    t_obs, df = dz * math.sqrt(d.size), d.size - 1
    assert sps.nct.cdf(t_obs, df, lo * math.sqrt(d.size)) == pytest.approx(0.95)
    assert sps.nct.cdf(t_obs, df, hi * math.sqrt(d.size)) == pytest.approx(0.05)
    assert stats.cohens_dz([1.0, 1.0]) == math.inf
    assert stats.cohens_dz_ci([0.0, 0.0, 0.0]) == (0.0, 0.0)


def test_cohens_dz_ci_coverage():
    rng = np.random.default_rng(9)
    reps, covered = 200, 0
    for _ in range(reps):
        lo, hi = stats.cohens_dz_ci(rng.normal(0.6, 1.0, 10))
        covered += lo <= 0.6 <= hi
    assert 0.91 <= covered / reps <= 0.99


# --------------------------------------------------------------------------- TOST


def test_tost_equals_ci_inclusion():
    rng = np.random.default_rng(10)
    for _ in range(50):
        d = rng.normal(rng.uniform(-0.5, 0.5), 0.5, 12)
        margin, alpha = 0.4, 0.05
        half = sps.t.isf(alpha, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size)
        inside = -margin < d.mean() - half and d.mean() + half < margin
        res = stats.tost(d, margin, alpha)
        assert res.equivalent == inside
        assert res.p == pytest.approx(
            max(
                sps.ttest_1samp(d, -margin, alternative="greater").pvalue,
                sps.ttest_1samp(d, margin, alternative="less").pvalue,
            )
        )


def test_tost_degenerate_and_validation():
    assert stats.tost([0.1, 0.1, 0.1], 0.5) == (0.0, True)
    assert stats.tost([0.6, 0.6, 0.6], 0.5) == (1.0, False)
    with pytest.raises(ValueError, match="margin"):
        stats.tost([0.1, 0.2], 0.0)


def test_tost_level_at_the_margin():
    # true mean exactly at the margin: equivalence must be claimed at most alpha of the time
    rng = np.random.default_rng(11)
    hits = sum(stats.tost(rng.normal(0.5, 1.0, 12), 0.5).equivalent for _ in range(2000))
    assert hits / 2000 <= 0.065


# --------------------------------------------------------------------------- multiplicity


def test_holm_hand_example():
    adjusted = stats.holm([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02])


def test_holm_properties():
    p = np.random.default_rng(12).uniform(0, 0.5, 20)
    adj = stats.holm(p)
    order = np.argsort(p)
    assert np.all(np.diff(adj[order]) >= 0)  # monotone in the raw p
    assert np.all(adj >= p) and np.all(adj <= 1.0)
    assert stats.holm([0.6, 0.7]).tolist() == [1.0, 1.0]
    assert stats.holm([]).size == 0
    with pytest.raises(ValueError):
        stats.holm([0.1, np.nan])


# --------------------------------------------------------------------------- sequential looks


def test_obrien_fleming_matches_published_boundaries():
    # Lan-DeMets O'Brien-Fleming-type, two-sided 0.05, equal spacing (gsDesign / ldbounds)
    for n_looks, z in [
        (2, [2.9626, 1.9686]),
        (3, [3.7103, 2.5114, 1.9930]),
        (5, [4.8769, 3.3569, 2.6803, 2.2898, 2.0310]),
    ]:
        alphas = stats.obrien_fleming_alphas(0.05, n_looks)
        np.testing.assert_allclose(sps.norm.isf(alphas / 2), z, atol=2e-3)
    assert stats.obrien_fleming_alphas(0.05, 1).tolist() == pytest.approx([0.05])
    np.testing.assert_allclose(stats.bonferroni_looks(0.05, 4), [0.0125] * 4)
    with pytest.raises(ValueError, match="information"):
        stats.obrien_fleming_alphas(0.05, 2, information=[10, 5])


def test_obrien_fleming_spends_alpha_for_brownian_motion():
    info = np.array([10.0, 15.0, 20.0])
    alphas = stats.obrien_fleming_alphas(0.05, 3, information=info)
    rng = np.random.default_rng(13)
    w = np.cumsum(rng.normal(0, np.sqrt(np.diff(info, prepend=0.0)), (200_000, 3)), axis=1)
    z = w / np.sqrt(info)
    rejected = np.any(np.abs(z) >= sps.norm.isf(alphas / 2), axis=1)
    assert rejected.mean() == pytest.approx(0.05, abs=0.003)


def test_sequential_aa_false_positive_rate():
    """Three looks at 10, 15 and 20 seeds, decide() at the spent alpha, stopping at the first
    verdict that is not inconclusive; A/A data."""
    looks = [10, 15, 20]
    alphas = stats.obrien_fleming_alphas(0.05, 3, information=looks)
    rng = np.random.default_rng(14)
    reps, confirmed, significant, naive = 600, 0, 0, 0
    for i in range(reps):
        control, treatment = paired_metric(rng, looks[-1])
        stopped = False
        for n, alpha in zip(looks, alphas, strict=True):
            r = test_idea(control[:n], treatment[:n], margin=0.2, seed=i, **FAST)
            v = decide([r], alpha)[0]
            significant += (not stopped) and r.p < alpha
            confirmed += (not stopped) and v.verdict == "confirmed"
            stopped = stopped or v.verdict != "inconclusive"
        naive += any(
            stats.paired_p(treatment[:n] - control[:n], seed=i) < 0.05
            for n in looks
        )
    assert confirmed / reps <= 0.07
    assert significant / reps <= 0.07
    # the simulation can see the problem the spending rule solves
    assert naive / reps > significant / reps


# --------------------------------------------------------------------------- planning


@pytest.mark.parametrize("d_z", [0.2, 0.3, 0.4, 0.5])
def test_seeds_needed_matches_rule_of_thumb(d_z):
    n = stats.seeds_needed(d_z)
    assert n == pytest.approx(7.9 / d_z**2, rel=0.15)
    assert stats.power_paired_t(n, d_z) >= 0.8 > stats.power_paired_t(n - 1, d_z)


def test_seeds_needed_edges():
    assert stats.seeds_needed(0.0) == stats.MAX_SEEDS
    assert stats.seeds_needed(0.01, max_n=500) == 500
    assert stats.seeds_needed(-0.5) == stats.seeds_needed(0.5)
    assert stats.seeds_needed(0.8) == 15  # power 0.821 at 15, 0.790 at 14


def test_seeds_needed_power_by_simulation():
    n = stats.seeds_needed(0.5)
    d = np.random.default_rng(15).normal(0.5, 1.0, (4000, n))
    rate = np.mean(sps.ttest_1samp(d, 0.0, axis=1).pvalue < 0.05)
    assert rate == pytest.approx(stats.power_paired_t(n, 0.5), abs=0.025)


@pytest.mark.parametrize("ratio", [1.5, 2.0, 3.0, 4.0])
def test_seeds_for_margin_matches_rule_of_thumb(ratio):
    n = stats.seeds_for_margin(ratio, 1.0)
    assert n == pytest.approx(8.6 * ratio**2, rel=0.15)
    assert stats.power_tost(n, ratio, 1.0) >= 0.8 > stats.power_tost(n - 1, ratio, 1.0)


@pytest.mark.parametrize("diff", [0.0, 0.2])
def test_power_tost_by_simulation(diff):
    sd, margin = 1.0, 0.6
    n = stats.seeds_for_margin(sd, margin, diff=diff)
    rng = np.random.default_rng(16)
    hits = sum(stats.tost(rng.normal(diff, sd, n), margin).equivalent for _ in range(2000))
    assert hits / 2000 == pytest.approx(stats.power_tost(n, sd, margin, diff=diff), abs=0.03)


def test_seeds_for_margin_edges():
    assert stats.seeds_for_margin(1.0, 0.5, diff=0.5) == stats.MAX_SEEDS
    assert stats.seeds_for_margin(0.0, 0.5) == 2
    assert stats.seeds_for_margin(1.0, 0.01) == stats.MAX_SEEDS


# --------------------------------------------------------------------------- verdict calibration


def test_aa_false_positive_rate():
    rng = np.random.default_rng(20)
    reps, confirmed, significant = 600, 0, 0
    for i in range(reps):
        control, treatment = paired_metric(rng, int(rng.integers(10, 16)))
        v = verdict(control, treatment, margin=0.3, seed=i, **FAST)
        confirmed += v.verdict == "confirmed"
        significant += v.p < 0.05
    assert confirmed / reps <= 0.07
    assert significant / reps <= 0.07


def test_aa_family_wise_error_with_holm():
    rng = np.random.default_rng(21)
    reps, any_confirmed = 300, 0
    for i in range(reps):
        results = [
            test_idea(*paired_metric(rng, 12), margin=0.3, name=f"idea{k}", seed=i, **FAST)
            for k in range(5)
        ]
        any_confirmed += any(v.verdict == "confirmed" for v in decide(results))
    assert any_confirmed / reps <= 0.07


def test_planted_effect_is_confirmed():
    # d_z = 0.8, 15 seeds: exact power of the two-sided paired t is 0.821; the permutation test
    # is as powerful (0.821 over 20 000 simulations), Wilcoxon is not (0.802).
    rng = np.random.default_rng(22)
    reps = 2000
    hits = sum(
        verdict(*paired_metric(rng, 15, 0.8), margin=0.3, seed=i, **FAST).verdict == "confirmed"
        for i in range(reps)
    )
    assert hits / reps >= 0.80


def test_planted_effect_on_a_loss_metric():
    rng = np.random.default_rng(23)
    for i in range(50):
        control, treatment = paired_metric(rng, 12, -2.0)  # treatment loss much lower
        v = verdict(control, treatment, margin=0.3, higher_is_better=False, seed=i, **FAST)
        assert v.verdict == "confirmed"
        assert v.diff < 0 and v.ci_high < 0


def test_null_effect_with_tight_variance_is_ruled_out():
    rng = np.random.default_rng(24)
    reps, ruled_out, by_tost, confirmed = 400, 0, 0, 0
    for i in range(reps):
        control, treatment = paired_metric(rng, 12)  # sd_d = 0.1 after scaling
        v = verdict(0.1 * control, 0.1 * treatment, margin=0.2, seed=i, **FAST)
        ruled_out += v.verdict == "ruled out"
        by_tost += v.verdict == "ruled out" and "TOST" in v.reason
        confirmed += v.verdict == "confirmed"  # an A/A false positive, about alpha / 2
    assert stats.power_tost(12, 0.1, 0.2) > 0.99
    # significance (about 5%, either way) takes precedence over TOST in the rule
    assert ruled_out / reps >= 0.95
    assert by_tost / reps >= 0.9
    assert confirmed / reps <= 0.05


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_harmful_effect_is_ruled_out_never_confirmed(higher_is_better):
    rng = np.random.default_rng(25)
    harm = -1.5 if higher_is_better else 1.5
    reps, ruled_out = 300, 0
    for i in range(reps):
        control, treatment = paired_metric(rng, 12, harm)
        v = verdict(
            control, treatment, margin=0.3, higher_is_better=higher_is_better, seed=i, **FAST
        )
        assert v.verdict != "confirmed"
        ruled_out += v.verdict == "ruled out" and "worse" in v.reason
    assert ruled_out / reps >= 0.9


# --------------------------------------------------------------------------- verdict mechanics


def test_decide_applies_holm_across_ideas_in_order():
    rng = np.random.default_rng(26)
    results = [
        test_idea(*paired_metric(rng, 12, delta), margin=0.3, name=name, seed=k)
        for k, (name, delta) in enumerate([("null", 0.0), ("strong", 3.0), ("weak", 0.4)])
    ]
    verdicts = decide(results)
    assert [v.name for v in verdicts] == ["null", "strong", "weak"]
    np.testing.assert_allclose([v.p_adjusted for v in verdicts], stats.holm([r.p for r in results]))
    np.testing.assert_allclose(
        [v.p_tost_adjusted for v in verdicts], stats.holm([r.p_tost for r in results])
    )
    assert verdicts[1].verdict == "confirmed"
    assert decide([]) == []


def test_p_adjusted_override_changes_the_verdict():
    rng = np.random.default_rng(27)
    control, treatment = paired_metric(rng, 15, 2.0)
    assert verdict(control, treatment, margin=0.3).verdict == "confirmed"
    v = verdict(control, treatment, margin=0.3, p_adjusted=0.2, p_tost_adjusted=0.3)
    assert v.verdict == "inconclusive" and v.p_adjusted == 0.2
    assert v.seeds_needed is not None and v.seeds_needed > v.seeds


def test_inconclusive_reports_seeds_needed_and_cap():
    rng = np.random.default_rng(28)
    control, treatment = paired_metric(rng, 10, 0.5)
    v = verdict(control, treatment, margin=0.05, test="t")
    assert v.verdict == "inconclusive"
    expected = min(stats.seeds_needed(v.d_z), stats.seeds_for_margin(1.0, 0.05))
    assert v.seeds_needed is not None and 10 < v.seeds_needed <= stats.MAX_SEEDS
    assert v.seeds_needed <= expected * 2  # driven by the observed d_z, not the tiny margin
    # d_z = 1e-5 and sd / margin = 1000: neither route is reachable within the cap
    wiggle = 1e-3 * np.array([1.0, -1.0] * 5) + 1e-8
    tiny = verdict(control, control + wiggle, margin=1e-6, max_seeds=300)
    assert tiny.seeds_needed == 300 and "at least 300" in tiny.reason


def test_verdict_fields_and_json():
    v = verdict([1.0, 2.0, 3.0], [2.0, 3.0, 4.0], margin=0.1, name="X")
    assert v.diff == pytest.approx(1.0)
    assert (v.control_mean, v.treatment_mean) == (2.0, 3.0)
    assert v.ci_low == v.ci_high == pytest.approx(1.0)
    assert v.d_z == math.inf and v.p == 0.25  # 3 pairs cannot reach significance
    out = v.to_dict()
    assert out["d_z"] is None and out["name"] == "X" and out["verdict"] == "inconclusive"
    json.dumps(out, allow_nan=False)


@pytest.mark.parametrize("test", stats.TESTS)
def test_all_primary_tests_work_in_verdicts(test):
    rng = np.random.default_rng(29)
    v = verdict(*paired_metric(rng, 20, 1.5), margin=0.3, test=test, **FAST)
    assert v.verdict == "confirmed" and v.test == test
