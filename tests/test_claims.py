"""Experiments that test the claims as stated: power by design, metrics on the claims' scale,
user-defined ideas, `none` as the revival reference, `lr` where it does nothing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dagstudy.config import TrainConfig
from dagstudy.confirmation.analyse import analyse_setting
from dagstudy.confirmation.plan import local_runner
from dagstudy.confirmation.power_check import unreachable
from dagstudy.confirmation.spec import ConfirmSpec, IdeaSpec
from dagstudy.confirmation.verdict import decide

TINY = dict(dataset="digits", depth=1, width=8, epochs=1, optimizer="sgd", lr=0.05)


# --- power by design ---------------------------------------------------------------------------

def test_a_design_that_cannot_reach_holm_significance_is_refused_before_training(
        tmp_path, capsys):
    from dagstudy.cli import main

    path = tmp_path / "weak.yaml"
    path.write_text(json.dumps({
        "name": "weak", "seeds": 4, "base": TINY,
        "ideas": {"OPT-JITTER": {"treatment": {"jitter_spread": 0.1}},
                  "DAG-DENSE": {"control": {"topology": "layered"},
                                "treatment": {"topology": "dag"}}}}))
    run_dir = tmp_path / "runs"
    assert main(["confirm", str(path), "--local", "--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if "cannot reach significance" in x)
    for needle in ("ideas.OPT-JITTER", "4 pairs", "p >= 0.125", "alpha/m = 0.025",
                   "need at least 7 pairs", "--force", "1 more idea"):
        assert needle in line, line
    assert not (run_dir / "confirm").exists()  # nothing trained, no report


def test_sequential_designs_are_checked_at_their_best_look():
    ideas = {f"IDEA-{i}": {"treatment": {"width": 16}} for i in range(14)}
    fixed = ConfirmSpec(name="x", base=TINY, seeds=9, ideas=ideas)
    assert len(unreachable(fixed)) == 14
    assert unreachable(fixed.model_copy(update={"seeds": 10})) == []
    sequential = ConfirmSpec(name="x", base=TINY, seeds=4, ideas=ideas,
                             sequential={"enabled": True, "looks": 2, "add_seeds": 4})
    problem = unreachable(sequential)[0]
    assert "last of 2 looks, 8 seeds" in problem and "m = 14 ideas" in problem
    assert unreachable(sequential.model_copy(update={"seeds": 10})) == []


def test_too_few_monte_carlo_draws_are_named_as_the_remedy_not_fewer_pairs():
    ideas = {f"IDEA-{i}": {"treatment": {"width": 16}} for i in range(14)}  # alpha/m = 0.00357
    few_draws = ConfirmSpec(name="x", base=TINY, seeds=45, ideas=ideas, permutations=100)
    problem = unreachable(few_draws)[0]
    assert "45 pairs give p >= 0.0099" in problem, problem
    assert "need permutations >= 280 (now 100)" in problem, problem
    assert unreachable(few_draws.model_copy(update={"seeds": 40})) == []  # exact: 2 / 2**40
    assert unreachable(few_draws.model_copy(update={"permutations": 280})) == []


# --- lr where the variant ignores it ----------------------------------------------------------

@pytest.mark.parametrize("optimizer", ["fullbatch-ista", "fista", "lipschitz-minibatch"])
def test_lr_on_a_lipschitz_variant_is_a_validation_error_naming_the_field(optimizer):
    with pytest.raises(ValueError, match=rf"lr\s*\n?.*{optimizer} ignores lr"):
        TrainConfig(optimizer=optimizer, lr=1.0)
    config = TrainConfig(optimizer=optimizer)
    assert TrainConfig(**config.model_dump()) == config  # stored configs still load
    TrainConfig(optimizer="sgd", lr=1.0)


def test_a_study_never_samples_lr_for_a_lipschitz_variant():
    from dagstudy.study.space import SearchSpace, suggest

    class First:
        def suggest_categorical(self, name, choices):
            return choices[0]

        def suggest_float(self, name, low, high, *, step=None, log=False):
            return high

        def suggest_int(self, name, low, high, *, step=1, log=False):
            return high

    space = SearchSpace(lr={"low": 0.01, "high": 1.0}, optimizer={"fista": {}, "sgd": {}})
    overrides = suggest(First(), space, {})
    assert overrides["optimizer"] == "fista" and "lr" not in overrides
    TrainConfig(**overrides)


# --- metrics on the claims' scale ---------------------------------------------------------------

def _result(seeds, **metrics):
    out = {"seeds": list(seeds), "epochs": 60}
    for name, values in metrics.items():
        if name == "stop_epoch":
            out[name] = list(values)
        else:
            out[name] = {"per_seed": list(values), "mean": float(np.mean(values))}
    return out


def _analyse(ispec: IdeaSpec, control: dict, treatment: dict):
    spec = ConfirmSpec(name="x", seeds=len(control["seeds"]), n_resamples=500,
                       ideas={"OPT-FISTA": ispec})
    arms = {"control": TrainConfig(), "treatment": TrainConfig()}
    results = {"control": control, "treatment": treatment}
    return analyse_setting("OPT-FISTA", ispec, arms, results, spec)


def test_losses_are_compared_as_ratios_with_accuracy_beside():
    rng = np.random.default_rng(0)
    seeds = range(12)
    loss = 10 ** rng.uniform(-7, -2, 12)          # losses over five orders of magnitude
    acc = rng.uniform(0.95, 0.97, 12)
    ispec = IdeaSpec(treatment={}, metric="log10_train_loss", higher_is_better=False,
                     margin=float(np.log10(1.25)))
    control = _result(seeds, train_loss=loss, test_accuracy=acc)
    # 2.3x the control's loss: an absolute margin would call it equivalent, a ratio does not
    worse = _analyse(ispec, control, _result(seeds, train_loss=loss * 2.3 * rng.uniform(
        0.9, 1.1, 12), test_accuracy=acc))
    assert worse.raw.diff == pytest.approx(np.log10(2.3), abs=0.05)
    assert decide([worse.raw])[0].verdict == "ruled out" and not worse.raw.better
    same = _analyse(ispec, control, _result(seeds, train_loss=loss * rng.uniform(
        0.97, 1.03, 12), test_accuracy=acc))
    assert decide([same.raw])[0].reason.startswith("|effect| < margin")
    row = next(r for r in same.secondary if r.get("metric") == "test_accuracy")
    assert row["diff"] == pytest.approx(0.0) and row["vs"] == "control"


def test_opt_stop_needs_both_accuracy_and_epochs_saved():
    rng = np.random.default_rng(1)
    seeds = range(12)
    acc = rng.uniform(0.96, 0.97, 12)
    ispec = IdeaSpec(treatment={}, noninferiority=True, margin=0.01,
                     co_primary={"metric": "epochs", "higher_is_better": False})
    control = _result(seeds, test_accuracy=acc, stop_epoch=[60] * 12)
    saves = _analyse(ispec, control, _result(seeds, test_accuracy=acc - 0.001,
                                             stop_epoch=rng.integers(20, 30, 12)))
    assert decide([saves.raw])[0].verdict == "confirmed"
    assert any(r["metric"] == "epochs (co-primary)" and r["diff"] < -25 for r in saves.secondary)
    never_fires = _analyse(ispec, control, _result(seeds, test_accuracy=acc,
                                                   stop_epoch=[60] * 12))
    assert decide([never_fires.raw])[0].verdict != "confirmed"  # accuracy alone passed before


# --- user-defined ideas and the revival reference ---------------------------------------------

@pytest.mark.slow
def test_a_user_defined_idea_runs_end_to_end_and_is_marked(tmp_path):
    from dagstudy.confirmation.run import run_confirmation

    spec = ConfirmSpec(name="mine", base=TINY, seeds=2, n_resamples=200,
                       ideas={"MY-IDEA": {"control": {"width": 4}, "treatment": {"width": 8}},
                              "OPT-JITTER": {"treatment": {}}})
    outcome = run_confirmation(spec, None, local_runner("cpu"), tmp_path, None,
                               meta={"date": "today"}, stdout=open(tmp_path / "t.txt", "w"))
    rows = {r["idea"]: r for r in json.loads((tmp_path / "verdicts.json").read_text())}
    assert rows["MY-IDEA"]["source"] == "user-defined"
    assert rows["OPT-JITTER"]["source"] == "built-in"
    assert "| MY-IDEA (user-defined) |" in (tmp_path / "report.md").read_text()
    assert outcome.results["MY-IDEA"]["treatment"]["config"]["width"] == 8
    with pytest.raises(ValueError, match="not idea IDs"):
        ConfirmSpec(name="x", ideas={"MY IDEA!": {"treatment": {}}})


@pytest.mark.slow
def test_none_is_a_reference_row_of_a_revival_idea_on_the_real_trainer():
    from dagstudy.confirmation.run import confirm

    dead = dict(dataset="digits", topology="layered", depth=3, width=8, bias_init=0.0,
                lr=0.03, epochs=2, optimizer="adam")
    spec = ConfirmSpec(name="rev", base=dead, seeds=2, n_resamples=200, ideas={
        "REV-FLIP": {"control": {"revival": "reinit"}, "treatment": {"revival": "flip"},
                     "extra_controls": {"none": {"revival": "none"}}}})
    outcome = confirm(spec, local_runner("cpu"))
    row = next(r for r in outcome.analyses[0].secondary if r["arm"] == "none")
    assert row["vs"] == "treatment" and 0.0 <= row["mean"] <= 1.0
    curves = outcome.results["REV-FLIP"]["none"]["curves"]
    assert {"activation_rank_by_block", "revived_nodes", "redied_by_pass"} <= set(curves)


def test_passes_to_a_target_loss_counts_the_first_pass_that_reaches_it():
    from dagstudy.confirmation.analyse import seed_values

    result = {"seeds": [0, 1, 2], "epochs": 3,
              "curves": {"train_loss": [[0.5, 0.02, 0.3], [0.05, 0.01, 0.2], [0.001, 0.005, 0.1]]}}
    assert seed_values(result, "passes_to:train_loss:0.01").tolist() == [3.0, 2.0, 4.0]


def test_validation_early_stopping_is_replayed_on_the_control_run():
    from dagstudy.confirmation.val_stopping import val_stopping

    # seed 0 peaks at pass 2 and stops after 2 passes without a new best; seed 1 never stops
    result = {"curves": {"val_accuracy": [[0.5, 0.5], [0.9, 0.6], [0.8, 0.7], [0.85, 0.8],
                                          [0.95, 0.9]],
                         "test_accuracy": [[0.4, 0.4], [0.88, 0.5], [0.7, 0.6], [0.8, 0.7],
                                           [0.9, 0.85]]}}
    accuracy, passes = val_stopping(result, patience=2)
    assert accuracy.tolist() == [0.88, 0.85] and passes.tolist() == [4.0, 5.0]


def test_fixed_lipschitz_step_keeps_l_and_the_depth_divisor():
    from dagstudy.trainer import load_data, train

    base = dict(dataset="digits", topology="dag", depth=3, width=8, epochs=3,
                optimizer="fullbatch-ista")
    results = {}
    for scaled in (False, True):
        params = {"backtrack": False, "lipschitz_init": 2.0, "depth_scale": scaled}
        config = TrainConfig(**base, optimizer_params=params)
        data = load_data(config, [0], "cpu")
        results[scaled] = train(config, [0], data, "cpu")
    for r in results.values():
        assert [row[0] for row in r.curves["lipschitz"]] == [2.0, 2.0, 2.0]
        assert [row[0] for row in r.curves["backtracks"]] == [1.0, 1.0, 1.0]
    assert results[True].final["train_loss"] != results[False].final["train_loss"]


def test_mlflow_tags_a_user_defined_idea():
    from dagstudy.tracking.confirmation import log_verdicts

    class Client:
        def log_table(self, run_id, data, artifact_file):
            self.table = data

    class FakeTracker:
        parent_run_id = "parent"
        client = Client()

        def log_batch(self, run_id, metrics, tags):
            self.tags = tags

    tracker = FakeTracker()
    rows = [{"idea": "MY-IDEA", "source": "user-defined", "verdict": "inconclusive",
             "metric": "test_accuracy", "seeds": 2},
            {"idea": "DAG-DENSE", "source": "built-in", "verdict": "confirmed",
             "metric": "test_accuracy", "seeds": 2}]
    log_verdicts(tracker, rows)
    assert tracker.tags["MY-IDEA.source"] == "user-defined"
    assert tracker.tags["DAG-DENSE.source"] == "built-in"
