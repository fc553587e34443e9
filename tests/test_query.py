"""Queries read the Optuna storage alone: best configurations, all trials, importances."""

import json
import threading
import warnings

import optuna
import pytest

from dagstudy import cli
from dagstudy.study.query import best_configs, load_study, param_importances, trials
from dagstudy.tracking.client import TrackingWarning

TrialState = optuna.trial.TrialState


def make_study(url: str, name: str, direction: str, values: list[float | None]) -> None:
    """A study as the driver leaves it: COMPLETE trials with per-seed attrs, one FAIL."""
    study = optuna.create_study(study_name=name, storage=url, direction=direction)
    study.set_user_attr("spec", {"objective": {"metric": "val_accuracy"}})
    for i, value in enumerate(values):
        trial = study.ask()
        trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        trial.suggest_int("depth", 1, 8)
        trial.set_user_attr("mlflow_run_id", f"run{i}")
        trial.set_user_attr("config", {"lr": trial.params["lr"], "depth": trial.params["depth"]})
        if value is None:
            trial.set_user_attr("failure_reason", "seed 1: non-finite training loss")
            study.tell(trial, state=TrialState.FAIL)
            continue
        trial.set_user_attr("per_seed", [value - 0.01, value + 0.01])
        trial.set_user_attr("mean", value)
        trial.set_user_attr("std", 0.014)
        study.tell(trial, value)


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    """One storage for the module (creating an RDB schema takes a second); unique names."""
    return f"sqlite:///{tmp_path_factory.mktemp('query') / 'optuna.db'}"


def test_best_configs_ranks_and_matches_optuna(url):
    make_study(url, "ranks", "maximize", [0.5, 0.9, None, 0.7, 0.9, 0.2])
    best = best_configs("ranks", k=3, storage=url)
    study = optuna.load_study(study_name="ranks", storage=url)
    assert list(best.number) == [study.best_trial.number, 4 if study.best_trial.number == 1
                                 else 1, 3]
    assert list(best.objective) == [0.9, 0.9, 0.7]
    row = best.iloc[0]
    assert row.val_accuracy_mean == 0.9 and row.val_accuracy_std == 0.014
    assert row.val_accuracy_per_seed == [0.89, 0.91]
    assert row.mlflow_run_id == f"run{row.number}"
    assert row.config["depth"] == row.params_depth


def test_minimize_ranks_low_first(url):
    make_study(url, "m", "minimize", [0.5, 0.1, 0.3])
    assert list(best_configs("m", k=5, storage=url).number) == [1, 2, 0]


def test_trials_lists_every_state(url):
    make_study(url, "states", "maximize", [0.5, None, 0.7])
    df = trials("states", storage=url)
    assert list(df.number) == [0, 1, 2]
    assert list(df.state) == ["COMPLETE", "FAIL", "COMPLETE"]
    assert df.failure_reason[1] == "seed 1: non-finite training loss"


def test_unknown_study_names_the_existing(url):
    make_study(url, "named", "maximize", [0.5])
    with pytest.raises(KeyError, match="no study 'nope' in .* \\(has: .*named"):
        trials("nope", storage=url)


def test_empty_best_before_any_complete(url):
    make_study(url, "empty", "maximize", [None])
    assert best_configs("empty", storage=url).empty


def test_importances_need_two_complete_trials(url):
    make_study(url, "one", "maximize", [0.5])
    with pytest.raises(ValueError, match="need at least 2 complete trials \\(have 1\\)"):
        param_importances(load_study("one", url))


def test_importances_hide_optunas_warnings_but_not_another_threads(url, monkeypatch):
    # equal values: PED-ANOVA warns that its quantiles select the same trials
    make_study(url, "flat", "maximize", [0.5, 0.5, 0.5])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert set(param_importances(load_study("flat", url))) == {"lr", "depth"}
    assert caught == []

    def importances_while_the_tracker_warns(study):
        # the tracker's background thread warns (an MLflow outage) while this one computes;
        # warning filters are process-wide, so an "ignore everything" here swallowed it
        logger = threading.Thread(target=warnings.warn, args=("MLflow failed", TrackingWarning))
        logger.start()
        logger.join()
        return {"lr": 1.0}

    monkeypatch.setattr(optuna.importance, "get_param_importances",
                        importances_while_the_tracker_warns)
    with pytest.warns(TrackingWarning, match="MLflow failed"):
        param_importances(load_study("flat", url))


def test_best_cli_json_and_text(url, capsys):
    make_study(url, "cli", "maximize", [0.1 * i for i in range(1, 9)])
    assert cli.main(["best", "cli", "--storage", url, "--k", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["number"] for r in out["best"]] == [7, 6]
    assert set(out["importances"]) == {"lr", "depth"}
    assert cli.main(["best", "cli", "--storage", url]) == 0
    text = capsys.readouterr().out
    # the 100-column table names sampled params without their ``params_`` prefix
    assert "parameter importances:" in text and "lr" in text.splitlines()[0].split()


def test_best_cli_few_trials_and_unknown_study(url, capsys):
    make_study(url, "cli-one", "maximize", [0.5])
    assert cli.main(["best", "cli-one", "--storage", url]) == 0
    assert "unavailable: need at least 2 complete trials" in capsys.readouterr().out
    assert cli.main(["best", "other", "--storage", url]) == 2
    assert "no study 'other'" in capsys.readouterr().err
