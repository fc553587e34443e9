"""A tuned confirmation's MLflow records: each tuning study's runs tagged with the confirmation,
ideas and arms it tuned; and one ``tuning`` child run per tuned (idea, arm) under the
confirmation's parent run, holding the tuned hyperparameters, the best-so-far curve and the
study's run id.

A tuning study that a confirmation runs for the first time writes its runs (by the study
driver) into the confirmation's experiment, its study run a child of the confirmation's parent
run and its trial runs children of that: the MLflow UI shows them nested under the
confirmation. A study that existed before (reused, or made by hand) keeps its own experiment;
its runs are found by their ``dagstudy.study`` tag in either place.

Tags: ``dagstudy.confirmation`` (the confirmation's experiment), ``dagstudy.confirmation_run``
(its parent run id), ``dagstudy.idea`` and ``dagstudy.arm`` (comma lists: one study can tune
identical arms of several ideas), ``dagstudy.tuned_for`` (``IDEA/arm`` pairs). Tracking never
fails a confirmation: an MLflow error warns.
"""

from __future__ import annotations

import math
import time
import warnings
from typing import Any

from mlflow.entities import Metric

from dagstudy.tracking.client import TrackingWarning
from dagstudy.tracking.records import flat_params
from dagstudy.tracking.tracker import Tracker


def _warn(what: str, error: Exception) -> None:
    warnings.warn(f"MLflow {what} failed, the confirmation goes on: {type(error).__name__}: "
                  f"{error}", TrackingWarning, stacklevel=3)


def _owner_tags(tracker: Tracker, owners: list[tuple[str, str]]) -> dict[str, str]:
    return {"dagstudy.confirmation": tracker.study,
            "dagstudy.confirmation_run": str(tracker.parent_run_id),
            "dagstudy.idea": ",".join(dict.fromkeys(i for i, _ in owners)),
            "dagstudy.arm": ",".join(dict.fromkeys(a for _, a in owners)),
            "dagstudy.tuned_for": ",".join(f"{i}/{a}" for i, a in owners)}


def tag_study_runs(tracker: Tracker, study: str, owners: list[tuple[str, str]]) -> int:
    """Tag every run of the tuning study (its run, one per trial, one per seed) with
    the confirmation and the ``(idea, arm)`` pairs it tuned; returns the runs tagged."""
    if tracker.parent_run_id is None:
        return 0
    try:
        runs = _study_runs(tracker, study)
        tags = _owner_tags(tracker, owners)
        for run in runs:
            tracker.log_batch(run.info.run_id, tags=tags)
        return len(runs)
    except Exception as e:  # tracking must never fail the confirmation
        _warn("tagging of a tuning study", e)
        return 0


def _study_runs(tracker: Tracker, study: str, role: str | None = None) -> list:
    """The runs tagged ``dagstudy.study = study`` (with ``role``: of that role) in the
    confirmation's experiment and in the experiment named after the study."""
    experiments = [tracker.experiment_id]
    own = tracker.client.get_experiment_by_name(study)
    if own is not None and own.experiment_id != tracker.experiment_id:
        experiments.append(own.experiment_id)
    where = f"tags.`dagstudy.study` = '{study}'"
    if role is not None:
        where += f" and tags.`dagstudy.role` = '{role}'"
    return tracker.client.search_runs(experiments, filter_string=where, max_results=10_000)


def _study_parent_run(tracker: Tracker, study: str) -> str | None:
    runs = _study_runs(tracker, study, "study")
    return runs[0].info.run_id if runs else None


def log_tuning_arm(tracker: Tracker, idea: str, arm: str, tuning: dict[str, Any]) -> str | None:
    """One ``tuning`` child run of the confirmation's parent run for ``(idea, arm)``: the tuned
    params (``tuned.<name>``), the study and its best trial, and per trial (step = trial
    number + 1) the objective and the best so far."""
    if tracker.parent_run_id is None:
        return None
    client = tracker.client
    try:
        tags = {"mlflow.parentRunId": tracker.parent_run_id, "dagstudy.idea": idea,
                "dagstudy.arm": arm, "dagstudy.role": "tuning",
                "dagstudy.tuning_study": tuning["study"],
                "dagstudy.tuning_study_run": str(_study_parent_run(tracker, tuning["study"])),
                "dagstudy.tuning_seeds": ",".join(map(str, tuning["seeds"]))}
        run = client.create_run(tracker.experiment_id, run_name=f"{idea}/{arm}/tuning", tags=tags)
        run_id = run.info.run_id
        now = int(time.time() * 1000)
        sign = 1.0 if tuning["direction"] == "minimize" else -1.0
        metrics, best = [], math.inf
        for step, value in enumerate(tuning["values"], start=1):
            if value is None:
                continue
            best = min(best, sign * value)
            metrics += [Metric(f"tuning_{tuning['metric']}", value, now, step),
                        Metric(f"tuning_best_{tuning['metric']}", sign * best, now, step)]
        metrics.append(Metric("tuning_best_trial", tuning["best_trial"], now, 0))
        params = {**flat_params("tuned", tuning["params"]), "study": tuning["study"],
                  "budget": tuning["budget"], "status": tuning["status"]}
        tracker.log_batch(run_id, metrics=metrics, params=params)
        client.log_dict(run_id, tuning, "tuning.json")
        client.set_terminated(run_id, status="FINISHED")
        return run_id
    except Exception as e:  # tracking must never fail the confirmation
        _warn("tuning run", e)
        return None
