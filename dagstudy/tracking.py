"""MLflow records of a study: one experiment per study, one parent run for the study, one nested
child run per trial (tag ``mlflow.parentRunId``). Only the driver logs (``execute``).

A child run is created when its trial is launched (params and tags: study, trial number, idea
IDs touched) and completed when the trial ends, with per-epoch metrics (mean over seeds as
``<metric>``, each seed as ``<metric>/seed_<s>``, step = epoch), final metrics (``objective``,
``final_<metric>_mean`` / ``_std``, ``trial_<params|wall_seconds|report_seconds|...>``), the tags
``dagstudy.state`` and ``failure_reason``, and artifacts: ``config.json`` (the resolved
``TrainConfig``, Optuna params, seeds), ``results.json`` (the per-seed ``TrialResult``, or the
per-epoch rows of a pruned or failed trial) and the PNG plots ``learning_curves.png`` and
``dead_fraction.png``. The parent run gets the study's settings as params and, at the end, the
best trial's metrics, ``param_importances.png`` and ``optimization_history.png``.

Tracking never fails a trial: every public ``Tracker`` method turns an MLflow error into one
``TrackingWarning`` and returns None.
"""

from __future__ import annotations

import functools
import json
import math
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from matplotlib.figure import Figure
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from dagstudy.optim import VARIANTS
from dagstudy.revival import POLICIES
from dagstudy.spec import Storage
from dagstudy.train import FINAL_METRICS

TOPOLOGY_IDEAS = {"dag": "DAG-DENSE", "fanin": "DAG-FANIN"}
_BATCH = {"metrics": 1000, "params": 100, "tags": 100}  # MLflow's log_batch limits per call


class TrackingWarning(UserWarning):
    """An MLflow call failed; the study goes on without that record."""


@dataclass
class TrialRecord:
    """What the driver knows about a finished trial.

    ``state``: ``COMPLETE``, ``PRUNED`` or ``FAIL``; ``rows``: the trainer's per-epoch rows
    (``on_epoch``); ``result``: ``TrialResult.to_dict()`` when training returned, else None;
    ``report_seconds``: the worker's time spent reporting to Optuna (None if it died).
    """

    number: int
    state: str
    config: dict[str, Any]
    params: dict[str, Any]
    seeds: list[int]
    rows: list[dict[str, Any]]
    result: dict[str, Any] | None
    objective: float | None
    reason: str | None
    report_seconds: float | None


def ideas_touched(config: dict[str, Any]) -> list[str]:
    """IDEAS.md IDs a configuration exercises: its topology's, optimizer's and policy's."""
    ids = {
        TOPOLOGY_IDEAS.get(config["topology"]),
        VARIANTS[config["optimizer"]].idea,
        POLICIES[config["revival"]].idea,
    }
    return sorted(i for i in ids if i)


def _guarded(method):
    @functools.wraps(method)
    def wrapper(self: Tracker, *args, **kwargs):
        if self.client is None:
            return None
        try:
            return method(self, *args, **kwargs)
        except Exception as e:  # tracking must never fail a trial
            warnings.warn(f"MLflow {method.__name__} failed, the study goes on: "
                          f"{type(e).__name__}: {e}", TrackingWarning, stacklevel=2)
            return None

    return wrapper


def _flat(prefix: str, value: Any) -> dict[str, str]:
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for k, v in value.items():
            out.update(_flat(f"{prefix}.{k}" if prefix else str(k), v))
        return out
    return {prefix: json.dumps(value) if isinstance(value, (list, tuple)) else str(value)}


def _is_seed_scalars(values: Any) -> bool:
    return isinstance(values, list) and all(v is None or isinstance(v, (int, float))
                                            for v in values)


def _finite(values: list) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def epoch_metrics(rows: list[dict[str, Any]], seeds: list[int], timestamp: int) -> list[Metric]:
    """Per-epoch metrics: each per-seed scalar as its mean and per seed, step = epoch."""
    out = []
    for row in rows:
        step = int(row["epoch"])
        for name, values in row.items():
            if name == "epoch" or not _is_seed_scalars(values):
                continue
            finite = _finite(values)
            if finite:
                out.append(Metric(name, sum(finite) / len(finite), timestamp, step))
            out.extend(Metric(f"{name}/seed_{s}", float(v), timestamp, step)
                       for s, v in zip(seeds, values) if v is not None and math.isfinite(v))
    return out


def final_metrics(record: TrialRecord, timestamp: int) -> list[Metric]:
    values: dict[str, float | None] = {"objective": record.objective,
                                       "trial_report_seconds": record.report_seconds}
    if record.result is not None:
        for m in FINAL_METRICS:
            values[f"final_{m}_mean"] = record.result[m]["mean"]
            values[f"final_{m}_std"] = record.result[m]["std"]
        for key in ("params", "flops_per_example", "wall_seconds", "epochs"):
            values[f"trial_{key}"] = record.result[key]
    return [Metric(k, float(v), timestamp, 0) for k, v in values.items()
            if v is not None and math.isfinite(v)]


def _series(rows: list[dict], name: str) -> list[list[float]]:
    """Per seed, the values of ``name`` over epochs (NaN where missing)."""
    return [[math.nan if v is None else v for v in seed_values]
            for seed_values in zip(*(row[name] for row in rows))]


def plot_learning_curves(rows: list[dict], seeds: list[int], title: str, path: Path) -> None:
    fig = Figure(figsize=(10, 3.5), layout="constrained")
    epochs = [row["epoch"] for row in rows]
    for ax, name in zip(fig.subplots(1, 3), ("train_loss", "val_loss", "val_accuracy")):
        for seed, values in zip(seeds, _series(rows, name)):
            ax.plot(epochs, values, marker=".", label=f"seed {seed}")
        ax.set(xlabel="epoch", title=name)
    fig.axes[0].legend(fontsize="small")
    fig.suptitle(title)
    fig.savefig(path, dpi=80)


def plot_dead_fraction(rows: list[dict], seeds: list[int], title: str, path: Path) -> None:
    fig = Figure(figsize=(8, 3.5), layout="constrained")
    left, right = fig.subplots(1, 2)
    epochs = [row["epoch"] for row in rows]
    for seed, values in zip(seeds, _series(rows, "dead_fraction")):
        left.plot(epochs, values, marker=".", label=f"seed {seed}")
    left.set(xlabel="epoch", ylabel="dead fraction", title="per seed", ylim=(-0.02, 1.02))
    left.legend(fontsize="small")
    by_block = [row["dead_by_block"] for row in rows]  # [epoch][seed][block]
    for b in range(len(by_block[0][0])):
        right.plot(epochs, [sum(s[b] for s in e) / len(e) for e in by_block], label=f"block {b}")
    right.set(xlabel="epoch", title="mean over seeds, by block", ylim=(-0.02, 1.02))
    right.legend(fontsize="small")
    fig.suptitle(title)
    fig.savefig(path, dpi=80)


def plot_importances(importances: dict[str, float], path: Path) -> None:
    fig = Figure(figsize=(6, 0.4 * len(importances) + 1.2), layout="constrained")
    ax = fig.subplots()
    names = list(importances)[::-1]
    ax.barh(names, [importances[n] for n in names])
    ax.set(xlabel="importance", title="parameter importances")
    fig.savefig(path, dpi=80)


def plot_history(study: optuna.Study, path: Path) -> None:
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    fig = Figure(figsize=(7, 3.5), layout="constrained")
    ax = fig.subplots()
    numbers, values = [t.number for t in done], [t.value for t in done]
    ax.scatter(numbers, values, s=12, label="trial")
    pick = max if study.direction == optuna.study.StudyDirection.MAXIMIZE else min
    best = [pick(values[: i + 1]) for i in range(len(values))]
    ax.step(numbers, best, where="post", color="C1", label="best so far")
    ax.set(xlabel="trial", ylabel="objective", title=f"optimisation history: {study.study_name}")
    ax.legend(fontsize="small")
    fig.savefig(path, dpi=80)


class Tracker:
    """One study's MLflow records (see the module docstring). A new experiment stores its
    artifacts under ``artifact_location/<study>`` (None: the tracking server decides).
    ``parent_run_id`` resumes an existing parent run; otherwise one is created with the study's
    ``settings`` (the spec as JSON) as params (all but the search space) and as ``study.json``.
    If MLflow cannot be reached at all, the tracker warns once and every method does nothing."""

    def __init__(self, tracking_uri: str, study: str, *, artifact_location: str | None = None,
                 parent_run_id: str | None = None, settings: dict[str, Any] | None = None):
        self.study = study
        self.client: MlflowClient | None = MlflowClient(tracking_uri)
        self.experiment_id: str | None = None
        self.parent_run_id: str | None = None
        self._open(artifact_location, parent_run_id, settings or {})
        if self.parent_run_id is None:
            self.client = None

    @_guarded
    def _open(self, artifact_location: str | None, parent_run_id: str | None, settings: dict):
        client = self.client
        experiment = client.get_experiment_by_name(self.study)
        if experiment is None:
            location = artifact_location and f"{artifact_location.rstrip('/')}/{self.study}"
            self.experiment_id = client.create_experiment(
                self.study, artifact_location=location, tags={"dagstudy.study": self.study})
        else:
            self.experiment_id = experiment.experiment_id
        if parent_run_id is not None:
            client.update_run(parent_run_id, status="RUNNING")
            self.parent_run_id = parent_run_id
            return
        run = client.create_run(self.experiment_id, run_name=self.study,
                                tags={"dagstudy.study": self.study, "dagstudy.role": "study"})
        params = _flat("", {k: v for k, v in settings.items() if k != "search"})
        self._log(run.info.run_id, params=params)
        client.log_dict(run.info.run_id, settings, "study.json")
        self.parent_run_id = run.info.run_id

    def _log(self, run_id: str, metrics=(), params: dict | None = None,
             tags: dict | None = None) -> None:
        metrics = list(metrics)
        params_ = [Param(k, v) for k, v in (params or {}).items()]
        tags_ = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
        for i in range(0, len(metrics), _BATCH["metrics"]):
            self.client.log_batch(run_id, metrics=metrics[i : i + _BATCH["metrics"]])
        for i in range(0, len(params_), _BATCH["params"]):
            self.client.log_batch(run_id, params=params_[i : i + _BATCH["params"]])
        for i in range(0, len(tags_), _BATCH["tags"]):
            self.client.log_batch(run_id, tags=tags_[i : i + _BATCH["tags"]])

    @_guarded
    def start_trial(self, number: int, config: dict[str, Any], params: dict[str, Any]) -> str:
        """Create trial ``number``'s child run (status RUNNING); returns its run id."""
        tags = {
            "mlflow.parentRunId": self.parent_run_id,
            "dagstudy.study": self.study,
            "dagstudy.trial": number,
            "dagstudy.ideas": ",".join(ideas_touched(config)),
            "dagstudy.sampled": ",".join(params),
        }
        run = self.client.create_run(self.experiment_id, run_name=f"trial-{number:04d}",
                                     tags={k: str(v) for k, v in tags.items()})
        self._log(run.info.run_id, params=_flat("", config))
        return run.info.run_id

    @_guarded
    def end_trial(self, run_id: str | None, record: TrialRecord) -> None:
        """Log a finished trial's metrics, tags and artifacts, and end its run."""
        if run_id is None:
            return
        now = int(time.time() * 1000)
        metrics = epoch_metrics(record.rows, record.seeds, now) + final_metrics(record, now)
        tags = {"dagstudy.state": record.state}
        if record.reason:
            tags["failure_reason"] = record.reason
        self._log(run_id, metrics=metrics, tags=tags)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            config = {"config": record.config, "params": record.params, "seeds": record.seeds}
            (out / "config.json").write_text(json.dumps(config, indent=2))
            results = record.result if record.result is not None else {"rows": record.rows}
            (out / "results.json").write_text(json.dumps(results))
            if record.rows:
                title = f"{self.study} trial {record.number} ({record.state.lower()})"
                plot_learning_curves(record.rows, record.seeds, title,
                                     out / "learning_curves.png")
                plot_dead_fraction(record.rows, record.seeds, title, out / "dead_fraction.png")
            self.client.log_artifacts(run_id, tmp)
        status = {"COMPLETE": "FINISHED", "PRUNED": "KILLED"}.get(record.state, "FAILED")
        self.client.set_terminated(run_id, status=status)

    @_guarded
    def fail_run(self, run_id: str | None, reason: str) -> None:
        """Mark a run that will never finish (its driver died) FAILED with the reason."""
        if run_id is None:
            return
        self.client.set_tag(run_id, "failure_reason", reason)
        self.client.set_terminated(run_id, status="FAILED")

    @_guarded
    def finish(self, study: optuna.Study, importances: dict[str, float] | None,
               status: str = "FINISHED") -> None:
        """End the parent run; when the study has a best trial, log it and the summary plots."""
        run_id = self.parent_run_id
        complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if complete:
            best = study.best_trial
            now = int(time.time() * 1000)
            self._log(run_id, metrics=[Metric("best_objective", best.value, now, 0)],
                      tags={"dagstudy.best_trial": best.number,
                            "dagstudy.best_run_id": best.user_attrs.get("mlflow_run_id")})
            with tempfile.TemporaryDirectory() as tmp:
                plot_history(study, Path(tmp) / "optimization_history.png")
                if importances:
                    plot_importances(importances, Path(tmp) / "param_importances.png")
                    (Path(tmp) / "param_importances.json").write_text(json.dumps(importances))
                self.client.log_artifacts(run_id, tmp)
        self.client.set_terminated(run_id, status=status)


def ui_command(storage: Storage, port: int = 5000) -> list[str]:
    """The ``mlflow ui`` command for a local store, bound to 127.0.0.1."""
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", storage.mlflow,
           "--host", "127.0.0.1", "--port", str(port)]
    if storage.artifacts:
        cmd += ["--default-artifact-root", storage.artifacts]
    return cmd


def rows_from_result(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The trainer's per-epoch rows (``on_epoch`` form) rebuilt from ``TrialResult`` curves."""
    curves = result.get("curves", {})
    epochs = max((len(c) for c in curves.values()), default=0)
    return [{"epoch": e + 1, **{k: c[e] for k, c in curves.items() if e < len(c)}}
            for e in range(epochs)]


@_guarded
def log_arm(tracker: Tracker, idea: str, arm: str, result: dict[str, Any]) -> str:
    """One confirmation arm as a child run of the confirmation's parent run, tagged with the
    idea ID, the arm and the seeds; metrics per epoch and final, ``results.json`` artifact."""
    client = tracker.client
    seeds = result["seeds"]
    tags = {"mlflow.parentRunId": tracker.parent_run_id, "dagstudy.idea": idea,
            "dagstudy.arm": arm, "dagstudy.seeds": ",".join(map(str, seeds)),
            "dagstudy.role": "arm"}
    run = client.create_run(tracker.experiment_id, run_name=f"{idea}/{arm}", tags=tags)
    run_id = run.info.run_id
    now = int(time.time() * 1000)
    metrics = epoch_metrics(rows_from_result(result), seeds, now)
    for name in FINAL_METRICS:
        s = result.get(name, {})
        if s.get("mean") is not None:
            metrics.append(Metric(f"final_{name}_mean", s["mean"], now, 0))
    tracker._log(run_id, metrics=metrics, params=_flat("", result["config"]))
    client.log_dict(run_id, result, "results.json")
    failed = any(st != "ok" for st in result.get("status", []))
    if failed:
        client.set_tag(run_id, "failure_reason", "; ".join(r for r in result["reasons"] if r))
    client.set_terminated(run_id, status="FAILED" if failed else "FINISHED")
    return run_id


@_guarded
def log_report(tracker: Tracker, out_dir: Path) -> None:
    """The report directory (and ``confirmation.json``) into the parent run, which ends."""
    tracker.client.log_artifacts(tracker.parent_run_id, str(out_dir))
    tracker.client.set_terminated(tracker.parent_run_id, status="FINISHED")


def download_confirmation(tracking_uri: str, run_id: str, dst: Path) -> Path:
    """``confirmation.json`` of a confirmation's parent run, fetched from MLflow into ``dst``."""
    client = MlflowClient(tracking_uri)
    return Path(client.download_artifacts(run_id, "confirmation.json", str(dst)))
