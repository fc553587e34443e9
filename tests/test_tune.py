"""Verdicts at tuned parity (``tune:``) and bases from studies (``from_study``), on digits with
2 Ray CPUs: equal budgets, disjoint seeds, the planted bad-lr case, reuse, MLflow links."""

from __future__ import annotations

import copy
import json

import pytest
import ray
import yaml
from test_confirm import ACCURACY

from dagstudy.config import TrainConfig
from dagstudy.confirmation.loader import ConfirmInputError, load_spec
from dagstudy.confirmation.plan import local_runner, plan
from dagstudy.confirmation.spec import ConfirmSpec
from dagstudy.confirmation.tune import study_name, tune, tuning_studies

BASE = dict(dataset="digits", depth=2, width=16, epochs=3, optimizer="sgd", lr=0.05,
            probe_size=64)
TUNE = dict(trials=4, seeds=2, objective={"metric": "val_loss", "direction": "minimize"},
            space={"lr": {"low": 3e-3, "high": 0.3, "log": True}})
CONFIRMATION = {
    "name": "tuned", "seeds": 6, "n_resamples": 500, "base": BASE, "tune": TUNE,
    "ideas": {
        # planted: sgd at a deliberately bad fixed lr vs the same sgd at a good one
        # (judged on accuracy, not the registry's default log10 training loss)
        "OPT-FULLBATCH": {"control": {"lr": 1e-4}, "treatment": {"lr": 0.05}, **ACCURACY},
        # its control is the same arm as above (tuned once); the treatment is adam
        "OPT-MINIBATCH-L": {"control": {"lr": 1e-4}, "treatment": {"optimizer": "adam"},
                            **ACCURACY},
    },
}


def write(tmp_path, data: dict, name: str = "c.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def with_tune(**changes) -> dict:
    data = copy.deepcopy(CONFIRMATION)
    data["ideas"]["OPT-FULLBATCH"]["tune"] = {**TUNE, **changes}
    return data


@pytest.mark.parametrize("changes, message", [
    ({"trials": 0}, r"ideas\.OPT-FULLBATCH\.tune\.trials: .*greater than or equal to 1"),
    ({"space": {}}, r"ideas\.OPT-FULLBATCH\.tune\.space: empty"),
    ({"space": {"foo": [1, 2]}}, r"tune\.space\.foo: not tunable \(allowed: .*lr"),
    ({"control_space": {"optimizer_params.beta1": {"low": 0.5, "high": 0.9}}},
     r"tune\.control_space\.optimizer_params\.beta1: sgd has no parameter 'beta1' \(has: "
     r"momentum"),
    ({"space": {"lr": {"low": 1.0, "high": 0.1}}}, r"tune\.space\.lr.*low \(1\) must be < high"),
    ({"objective": {"metric": "test_accuracy", "direction": "maximize"}},
     r"tune\.objective\.metric: Input should be 'val_loss' or 'val_accuracy'"),
    ({"first_seed": 3}, r"ideas\.OPT-FULLBATCH\.tune\.first_seed: tuning seeds 3\.\.4 overlap "
                        r"the verdict seeds 0\.\.5"),
])
def test_bad_tune_input_is_a_named_field_error_before_ray(tmp_path, changes, message):
    with pytest.raises(ConfirmInputError, match=message) as info:
        load_spec(write(tmp_path, with_tune(**changes)))
    assert "\n" not in str(info.value)
    assert not ray.is_initialized()


def test_lr_of_a_lipschitz_arm_is_an_error_naming_its_own_parameters(tmp_path):
    data = with_tune()
    # the arm itself leaves lr at its default (a base lr inherited by a Lipschitz arm is an
    # error of its own, TrainConfig's: tests/test_claims.py)
    data["ideas"]["OPT-FULLBATCH"]["treatment"] = {"optimizer": "fullbatch-ista", "lr": 1e-3}
    with pytest.raises(ConfirmInputError, match=r"tune\.space\.lr: fullbatch-ista ignores lr .*"
                                                r"optimizer_params\.<.*l1"):
        load_spec(write(tmp_path, data))


def test_identical_arms_share_one_study_named_from_the_first_idea():
    studies = tuning_studies(ConfirmSpec(**CONFIRMATION))
    # the two OPT-FULLBATCH arms differ only in the tuned lr: one study for them and for
    # OPT-MINIBATCH-L's control; adam gets its own
    assert {name: s.owners for name, s in studies.items()} == {
        "tuned.tune.OPT-FULLBATCH.control": [("OPT-FULLBATCH", "control"),
                                             ("OPT-FULLBATCH", "treatment"),
                                             ("OPT-MINIBATCH-L", "control")],
        "tuned.tune.OPT-MINIBATCH-L.treatment": [("OPT-MINIBATCH-L", "treatment")]}
    assert study_name("c", "DAG-DEPTH", "control@depth=4") == "c.tune.DAG-DEPTH.control_depth_4"


def test_unknown_study_is_one_line_naming_study_and_storage(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    data = {"name": "x", "base": {"from_study": "nope", "epochs": 2},
            "ideas": {"OPT-JITTER": {"treatment": {"jitter_spread": 0.1}}}}
    with pytest.raises(ConfirmInputError, match=r"base\.from_study: no study 'nope' in "
                                                r"sqlite:///.*optuna\.db$"):
        load_spec(write(tmp_path, data), storage=url)
    assert not ray.is_initialized()


# --- on Ray, 2 CPUs: one tuned confirmation through the CLI, run twice --------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The tuned confirmation through ``dagstudy confirm --local``, its tuning run again (it
    reuses the studies), a small study for ``from_study``, and the fixed comparison."""
    from dagstudy.cli import main
    from dagstudy.confirmation.run import confirm
    from dagstudy.study.cluster import connect_ray

    tmp = tmp_path_factory.mktemp("tune")
    run_dir, out = tmp / "runs", tmp / "out"
    path = write(tmp, CONFIRMATION)
    connect_ray(num_cpus=2)
    try:
        assert main(["confirm", str(path), "--local", "--force", "--run-dir", str(run_dir),
                     "--out", str(out)]) == 0
        again = tune(load_spec(path, storage=optuna_url(run_dir)), run_dir=run_dir)
        fixed = ConfirmSpec(**{k: v for k, v in CONFIRMATION.items() if k != "tune"})
        fixed_outcome = confirm(fixed, local_runner("cpu"), ideas=["OPT-FULLBATCH"])
        smoke = smoke_study(tmp, run_dir)
    finally:
        ray.shutdown()
    return dict(first=json.loads((out / "confirmation.json").read_text()), again=again,
                out=out, run_dir=run_dir, fixed=fixed_outcome, smoke=smoke)


def smoke_study(tmp, run_dir) -> dict:
    from dagstudy.study.driver import run_study
    from dagstudy.study.loader import load_spec as load_study_spec

    study = {"name": "small", "dataset": "digits", "seeds": 1, "epochs": 2,
             "budget": {"trials": 3}, "objective": {"metric": "val_accuracy"},
             "search": {"lr": {"low": 1e-3, "high": 0.1, "log": True}, "width": [8, 16]},
             "base": {"probe_size": 64}, "sampler": {"name": "random", "seed": 1}}
    run_study(load_study_spec(write(tmp, study, "small.yaml")), run_dir=run_dir)
    return "small"


def optuna_url(run_dir) -> str:
    return f"sqlite:///{run_dir / 'optuna.db'}"


@pytest.mark.slow
def test_parity_equal_budget_and_disjoint_seeds(runs):
    from dagstudy.study.loop import counted
    from dagstudy.study.query import load_study
    from dagstudy.study.spec import StudySpec

    saved = runs["first"]
    studies = {t["study"] for arms in saved["tuning"].values() for t in arms.values()}
    assert len(studies) == 2
    for name in studies:
        study = load_study(name, optuna_url(runs["run_dir"]))
        assert counted(study) == TUNE["trials"] == len(study.trials)
        tuning_seeds = set(StudySpec(**study.user_attrs["spec"]).seed_list)
        for idea, arms in saved["results"].items():
            for arm, result in arms.items():
                assert tuning_seeds.isdisjoint(result["seeds"]), (name, idea, arm)
    assert [v["protocol"] for v in json.loads((runs["out"] / "verdicts.json").read_text())] \
        == ["tuned (4 trials/arm)"] * 2


@pytest.mark.slow
def test_planted_bad_lr_differs_when_fixed_and_not_when_tuned(runs):
    fixed = runs["fixed"].verdicts[0]
    assert fixed.verdict == "confirmed" and fixed.diff > 0.3
    tuned = {v["name"]: v for v in runs["first"]["verdicts"]}["OPT-FULLBATCH"]
    assert tuned["verdict"] != "confirmed" and tuned["diff"] == 0.0
    arms = runs["first"]["tuning"]["OPT-FULLBATCH"]
    assert arms["control"]["params"]["lr"] > 3e-3  # not the planted 1e-4


@pytest.mark.slow
def test_verdict_trains_the_best_tuning_trial(runs):
    from dagstudy.study.query import best_configs

    saved = runs["first"]
    for idea, arms in saved["tuning"].items():
        for arm, t in arms.items():
            best = best_configs(t["study"], k=1, storage=optuna_url(runs["run_dir"]))
            assert t["best_trial"] == best.number[0]
            assert saved["results"][idea][arm]["config"] == best.config[0] == t["config"]
            assert t["params"]["lr"] == best.params_lr[0] == t["config"]["lr"]


@pytest.mark.slow
def test_rerun_reuses_the_tuning_studies(runs):
    from dagstudy.study.query import load_study

    first, again = runs["first"]["tuning"], runs["again"].arms
    assert {t["status"] for arms in first.values() for t in arms.values()} == {"ran"}
    assert {t.status for arms in again.values() for t in arms.values()} == {"reused"}
    for idea, arms in again.items():
        for arm, t in arms.items():
            assert t.to_dict() == {**first[idea][arm], "status": "reused"}
            assert len(load_study(t.study, optuna_url(runs["run_dir"])).trials) == 4


@pytest.mark.slow
def test_report_and_mlflow_show_the_tuning(runs):
    from mlflow.tracking import MlflowClient

    report = (runs["out"] / "report.md").read_text()
    assert "tuned (4 trials/arm)" in report and "tuning seeds 10000..10001" in report
    assert "verdict seeds 0..5" in report and "sensitivity" in report
    assert (runs["out"] / "tune-OPT-FULLBATCH.png").stat().st_size > 1000
    client = MlflowClient(f"sqlite:///{runs['run_dir'] / 'mlflow.db'}")
    assert client.get_experiment_by_name("tuned.tune.OPT-MINIBATCH-L.treatment") is None
    confirm = client.get_experiment_by_name("confirm-tuned")
    runs_ = client.search_runs([confirm.experiment_id], max_results=1000)
    by_id = {r.info.run_id: r for r in runs_}
    (parent,) = [r for r in runs_ if r.data.tags.get("dagstudy.role") == "confirmation"]
    studies = [r for r in runs_ if r.data.tags.get("dagstudy.role") == "study"]
    assert len(studies) == 2  # one per tuning study, each a child of the confirmation's run
    for study in studies:
        assert study.data.tags["mlflow.parentRunId"] == parent.info.run_id
    study = next(r for r in studies
                 if r.data.tags["dagstudy.study"] == "tuned.tune.OPT-MINIBATCH-L.treatment")
    assert study.data.tags["dagstudy.tuned_for"] == "OPT-MINIBATCH-L/treatment"
    trials = [r for r in runs_ if r.data.tags.get("dagstudy.role") == "trial"
              and r.data.tags["dagstudy.study"] == study.data.tags["dagstudy.study"]]
    assert len(trials) == 4
    for run in [study, *trials]:  # nested under the confirmation, tagged with idea and arm
        tags = run.data.tags
        assert tags["dagstudy.idea"] == "OPT-MINIBATCH-L" and tags["dagstudy.arm"] == "treatment"
        assert by_id[tags["mlflow.parentRunId"]].info.run_id in (parent.info.run_id,
                                                                 study.info.run_id)
    tuning = [r.data for r in runs_ if r.data.tags.get("dagstudy.role") == "tuning"]
    assert len(tuning) == 4  # one per tuned (idea, arm)
    assert all(float(d.params["tuned.lr"]) > 0 for d in tuning)


@pytest.mark.slow
def test_from_study_uses_exactly_the_best_trials(runs, tmp_path):
    from dagstudy.study.query import best_configs

    url = optuna_url(runs["run_dir"])
    best = best_configs(runs["smoke"], k=2, storage=url)
    data = {"name": "fs", "base": {"from_study": runs["smoke"], "epochs": 2},
            "ideas": {"OPT-JITTER": {"treatment": {"jitter_spread": 0.1}},
                      "GRAD-FLOOR": {"base": {"from_study": {"name": runs["smoke"], "top": 2}},
                                     "treatment": {"grad_floor": 0.01}}}}
    spec = load_spec(write(tmp_path, data), storage=url)
    arms = {e.idea: e.arms for e in plan(spec)}
    expected = TrainConfig(**{**best.config[0], "epochs": 2})
    assert arms["OPT-JITTER"]["control"] == expected
    assert arms["OPT-JITTER"]["control"].lr == best.params_lr[0]
    assert arms["GRAD-FLOOR"]["control"] == TrainConfig(**best.config[0])
    assert arms["GRAD-FLOOR"]["control@rank=1"] == TrainConfig(**best.config[1])
    assert [t["trial"] for t in spec.ideas["GRAD-FLOOR"].base_trials] == list(best.number)
    from dagstudy.confirmation.run import confirm

    outcome = confirm(spec.model_copy(update={"seeds": 2}), local_runner("cpu"),
                      ideas=["GRAD-FLOOR"])
    rows = outcome.analyses[0].secondary
    assert [r["setting"] for r in rows] == [f"small rank 1 (trial {best.number[1]})"]
    assert set(outcome.results["GRAD-FLOOR"]) == {"control", "treatment", "control@rank=1",
                                                  "treatment@rank=1"}


def test_corollaries_tuned_file_tunes_six_studies_for_the_optimizer_ideas():
    from pathlib import Path

    spec = load_spec(Path(__file__).resolve().parents[1] / "studies" / "corollaries-tuned.yaml")
    assert sorted(spec.ideas) == sorted(["OPT-FULLBATCH", "OPT-LAYERSCALE", "OPT-FISTA",
                                         "OPT-MINIBATCH-L"])
    studies = tuning_studies(spec)
    assert len(studies) == 6 and {len(s.owners) for s in studies.values()} == {1, 3}
    assert all(s.spec.budget.trials == 24 for s in studies.values())
    tuning_seeds = {seed for s in studies.values() for seed in s.spec.seed_list}
    assert tuning_seeds.isdisjoint(spec.verdict_seeds())
