"""Pooling an idea over settings: references for the random-effects meta-analysis, the stratified
permutation test against brute force, calibration on simulated metrics, and a real two-setting
confirmation end to end."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest

from dagstudy.confirmation.loader import ConfirmInputError, load_spec
from dagstudy.confirmation.plan import local_runner, plan
from dagstudy.confirmation.pooling import pool
from dagstudy.confirmation.report import write_report
from dagstudy.confirmation.run import confirm
from dagstudy.confirmation.spec import ConfirmSpec, SettingsSpec
from dagstudy.confirmation.verdict import decide, test_idea
from dagstudy.stats.pooled import (
    pooled_statistic,
    random_effects,
    setting_effect,
    stratified_permutation_p,
)

# --------------------------------------------------------------------------- references

EFFECTS = [0.1, 0.3, -0.05, 0.25, 0.6]
VARIANCES = [0.01, 0.02, 0.015, 0.03, 0.05]
# statsmodels 0.15.0: combine_effects(EFFECTS, VARIANCES, method_re="dl") -> mean_effect_re,
# sd_eff_w_re, tau2, i2, q and the random-effects row of summary_frame() (ci_low, ci_upp).
STATSMODELS_DL = dict(estimate=0.19137387726499044, se=0.0930557198342735,
                      tau2=0.021903061224489796, i2=0.5247524752475248, q=8.416666666666666,
                      ci_low=0.008988017834364814, ci_high=0.3737597366956161)


def test_random_effects_matches_statsmodels_dersimonian_laird():
    got = random_effects(EFFECTS, VARIANCES)._asdict()
    for key, want in STATSMODELS_DL.items():
        assert got[key] == pytest.approx(want, abs=1e-8), key


def test_random_effects_matches_a_hand_computation_when_tau2_truncates_at_zero():
    y, v = np.array([0.02, 0.021, 0.019]), np.array([0.001, 0.002, 0.0015])
    w = 1 / v
    fixed = (w @ y) / w.sum()  # Q = 0.00115 < df = 2: tau^2 = 0, the fixed-effect answer
    got = random_effects(y, v)
    assert got.tau2 == 0.0 and got.i2 == 0.0
    assert got.q == pytest.approx(float(w @ (y - fixed) ** 2), abs=1e-12)
    assert got.estimate == pytest.approx(fixed, abs=1e-12)
    assert got.se == pytest.approx(math.sqrt(1 / w.sum()), abs=1e-12)
    assert got.ci_high - got.estimate == pytest.approx(1.959963984540054 * got.se, abs=1e-12)


def brute_force_p(strata, scale):
    """Two-sided p by enumerating every sign pattern, the statistic computed one pattern at a
    time by the scalar (statsmodels-checked) ``random_effects`` on ``setting_effect``s."""
    def statistic(ds):
        effects = [setting_effect(np.asarray(d), scale) for d in ds]
        return random_effects([e for e, _ in effects], [v for _, v in effects]).estimate

    observed = statistic(strata)
    flat = [x for d in strata for x in d]
    sizes = np.cumsum([0] + [len(d) for d in strata])
    hits = 0
    patterns = list(itertools.product((-1, 1), repeat=len(flat)))
    for signs in patterns:
        flipped = [s * x for s, x in zip(signs, flat)]
        ds = [flipped[a:b] for a, b in zip(sizes, sizes[1:])]
        hits += abs(statistic(ds)) >= abs(observed) - 1e-9 * abs(observed)
    return hits / len(patterns)


@pytest.mark.parametrize("scale", ["diff", "d_z"])
def test_stratified_permutation_is_exact_and_matches_brute_force(scale):
    rng = np.random.default_rng(3)
    strata = [rng.normal(0.4, 1, 4), rng.normal(0.2, 3, 3), rng.normal(0.1, 0.5, 5)]
    exact = stratified_permutation_p(strata, scale)
    assert exact == pytest.approx(brute_force_p(strata, scale), abs=1e-12)
    effects = [setting_effect(d, scale) for d in strata]
    assert pooled_statistic(strata, scale) == pytest.approx(
        random_effects(*zip(*effects)).estimate, abs=1e-12)
    assert exact * 2**12 == pytest.approx(round(exact * 2**12))  # a multiple of 1/2^12
    mc = stratified_permutation_p([np.tile(s, 2) for s in strata], scale, permutations=20_000)
    assert 0 < mc <= 1


def test_weights_favour_the_precise_setting():
    precise, noisy = np.full(10, 0.1) + np.linspace(-0.01, 0.01, 10), np.linspace(-3, 3, 10)
    assert pooled_statistic([precise, noisy]) == pytest.approx(0.1, abs=0.01)
    assert setting_effect(precise)[1] < setting_effect(noisy)[1]


# --------------------------------------------------------------------------- calibration

SPEC = ConfirmSpec(name="sim", n_resamples=2000,
                   ideas={"DAG-DENSE": {"treatment": {}, "margin": 0.01}})
ISPEC = SPEC.ideas["DAG-DENSE"]
SCALES = (0.01, 0.03, 0.02)  # per-setting noise sd of the paired difference (accuracy units)


def simulate(rng, effects, n=10):
    """Per setting ``(control, treatment)``: shared seed noise plus a noisy planted effect."""
    out = []
    for effect, sd in zip(effects, SCALES):
        control = 0.9 + rng.normal(0, 0.02, n)
        out.append((control, control + effect + rng.normal(0, sd, n)))
    return out


def pooled_outcome(settings):
    per_setting = {}
    for k, (control, treatment) in enumerate(settings):
        r = test_idea(control, treatment, margin=0.01, n_resamples=500, ci_method="percentile")
        per_setting[f"s{k}"] = (r, treatment - control)
    raw, rows, pooled = pool(ISPEC, per_setting, SPEC, name="DAG-DENSE")
    single = [decide([r])[0].verdict == "confirmed" for r, _ in per_setting.values()]
    return decide([raw])[0].verdict, pooled, single


def rates(effects, sims=200):
    rng = np.random.default_rng(11)
    outcomes = [pooled_outcome(simulate(rng, effects)) for _ in range(sims)]
    pooled = np.mean([v == "confirmed" for v, _, _ in outcomes])
    single = np.mean([s for _, _, s in outcomes], axis=0)
    return pooled, single, outcomes


def test_no_effect_anywhere_is_rarely_confirmed():
    pooled, single, _ = rates((0.0, 0.0, 0.0))
    assert pooled <= 0.07
    assert np.all(single <= 0.07)


def test_a_planted_effect_everywhere_is_found_more_often_pooled_than_in_any_setting():
    effects = tuple(0.6 * sd for sd in SCALES)  # d_z ~ 0.6 in every setting
    pooled, single, outcomes = rates(effects)
    assert pooled > single.max() + 0.1, (pooled, single)
    assert pooled >= 0.6
    assert all(p["estimate"] > 0 for _, p, _ in outcomes[:20])


def test_opposite_effects_are_flagged_heterogeneous_not_consistent():
    rng = np.random.default_rng(5)
    for _ in range(20):
        verdict, pooled, _ = pooled_outcome(simulate(rng, (0.03, -0.09, 0.0)))
        assert pooled["heterogeneous"] and pooled["i2"] > 0.5
        assert not pooled["consistent"] and pooled["agreement"] != "consistent"
        assert pooled["opposite"]


# --------------------------------------------------------------------------- specs


def test_settings_grid_expands_with_data_dirs():
    spec = SettingsSpec(grid={"dataset": ["digits", "mnist"], "depth": [4, 8]},
                        data_dirs={"mnist": "../shared/data/mnist-t10k"})
    expanded = dict(spec.expand())
    assert list(expanded) == ["dataset=digits,depth=4", "dataset=digits,depth=8",
                              "dataset=mnist,depth=4", "dataset=mnist,depth=8"]
    assert expanded["dataset=mnist,depth=8"]["data_dir"] == "../shared/data/mnist-t10k"
    assert "data_dir" not in expanded["dataset=digits,depth=4"]
    assert SettingsSpec.model_validate([{"depth": 2}, {"depth": 3}]).expand()[1][0] == "depth=3"
    with pytest.raises(ValueError, match="not both"):
        SettingsSpec(each=[{"depth": 2}], grid={"depth": [3]})


def test_bad_data_in_a_setting_is_refused_before_training(tmp_path):
    np.savez(tmp_path / "one.npz", x=np.ones((20, 2)), y=np.zeros(20))
    path = tmp_path / "c.yaml"
    path.write_text(json.dumps({"name": "c", "ideas": {"DAG-DENSE": {
        "control": {"topology": "layered"}, "treatment": {},
        "settings": [{"dataset": "digits"}, {"dataset": str(tmp_path / "one.npz")}]}}}))
    with pytest.raises(ConfirmInputError) as exc:
        load_spec(path)
    message = str(exc.value)
    assert f"ideas.DAG-DENSE[dataset={tmp_path / 'one.npz'}].dataset" in message
    assert "at least 2 are needed" in message and "\n" not in message


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_two_setting_confirmation_on_the_real_trainer(tmp_path):
    spec = ConfirmSpec(
        name="two", seeds=3, n_resamples=500,
        base={"depth": 2, "width": 16, "epochs": 4, "batch_size": 32, "lr": 0.01},
        ideas={"DAG-DENSE": {"control": {"topology": "layered"}, "treatment": {"topology": "dag"},
                             "settings": [{"dataset": "digits"},
                                          {"dataset": "sklearn:wine"}]}})
    assert len(plan(spec)[0].arms) == 4
    outcome = confirm(spec, local_runner("cpu"))
    files = {p.name for p in write_report(spec, outcome, tmp_path)}
    assert {"forest-DAG-DENSE.png", "forest.png", "report.md"} <= files
    (row,) = json.loads((tmp_path / "verdicts.json").read_text())
    assert [s["setting"] for s in row["settings"]] == ["dataset=digits", "dataset=sklearn:wine"]
    assert all(s["seeds"] == 3 for s in row["settings"])
    assert row["seeds"] == 6 and row["test"] == "stratified-permutation"
    pooled = row["pooled"]
    assert pooled["ci_low"] <= pooled["estimate"] <= pooled["ci_high"]
    assert pooled["p"] == row["p"] and 0 < pooled["p"] <= 1
    text = (tmp_path / "report.md").read_text()
    assert "| dataset=sklearn:wine |" in text and "**pooled**" in text
    assert "settings" in row["reason"]


@pytest.mark.slow
def test_settings_study_file_plans_every_idea_in_three_settings():
    spec = load_spec(Path(__file__).resolve().parents[1] / "studies" / "settings.yaml")
    experiments = plan(spec)
    assert {"DAG-DENSE", "DAG-DEPTH", "DAG-FANIN"} <= {e.idea for e in experiments}
    assert len(experiments) >= 6
    for e in experiments:
        assert list(e.settings) == ["dataset=digits", "dataset=mnist,epochs=10,batch_size=128",
                                    "dataset=sklearn:wine,batch_size=16"]
