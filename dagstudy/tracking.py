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

Tracking never fails a trial. A study's tracker writes each finished trial's record to a spool
under the run directory before uploading it (``dagstudy.spool``); while MLflow is unreachable,
records wait there (one ``TrackingWarning`` per outage) and are uploaded when it answers again,
at the end of the study, or by ``dagstudy sync``. Uploads are idempotent, so MLflow ends with
one run per finished trial.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import math
import os
import sys
import tempfile
import time
import urllib.request
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from matplotlib.figure import Figure
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from dagstudy.optim import VARIANTS
from dagstudy.query import trial_run_id
from dagstudy.revival import POLICIES
from dagstudy.spec import Storage, redact_url
from dagstudy.spool import Spool
from dagstudy.train import FINAL_METRICS

TOPOLOGY_IDEAS = {"dag": "DAG-DENSE", "fanin": "DAG-FANIN"}
_BATCH = {"metrics": 1000, "params": 100, "tags": 100}  # MLflow's log_batch limits per call


class TrackingWarning(UserWarning):
    """An MLflow call failed; the study goes on (its records wait in the spool)."""


class TrackingAuthError(RuntimeError):
    """The MLflow tracking server refused this client's credentials (HTTP 401 or 403)."""


def check_access(uri: str) -> None:
    """Raise ``TrackingAuthError`` if the tracking server at ``uri`` refuses the credentials,
    so a study with wrong or missing ones stops before any work; an unreachable server or a
    local store passes (records spool until it answers)."""
    if not uri.startswith(("http://", "https://")) or not _server_healthy(uri):
        return
    try:
        with _short_http_retries():
            MlflowClient(uri).search_experiments(max_results=1)
    except MlflowException as e:
        code = e.get_http_status_code()
        if code in (401, 403):
            raise TrackingAuthError(
                f"MLflow at {redact_url(uri)} refused the credentials (HTTP {code}): set "
                "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (infra/local/up.sh "
                "--mlflow-auth writes them to stack.env)") from None
    except Exception:  # not reachable after all: the spool takes over
        return


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
    """For the confirmation's records: nothing without a parent run; an error warns."""
    @functools.wraps(method)
    def wrapper(self: Tracker, *args, **kwargs):
        if self.parent_run_id is None:
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
    """One study's MLflow records (see the module docstring).

    A new experiment stores its artifacts under ``artifact_location/<study>`` (None: the
    tracking server decides). ``parent_run_id`` resumes an existing parent run; otherwise one
    is created with the study's ``settings`` (the spec as JSON) as params (all but the search
    space) and as ``study.json``.

    MLflow outages: with a ``spool``, every finished trial's record is written there first and
    removed once uploaded, so nothing is lost while MLflow is unreachable. After a failed call
    the tracker is offline: trials are spooled without calling MLflow, and every
    ``retry_seconds`` (seconds) it checks the server again; when it answers, the spool is
    uploaded oldest first. ``finish`` and ``sync`` try regardless of the wait. Runs created
    after the fact (a trial launched while offline, or the parent run) are reported through
    ``on_run_created(trial number or None for the parent, run id)``. One ``TrackingWarning``
    per outage; a tracking failure never raises.
    """

    def __init__(self, tracking_uri: str, study: str, *, artifact_location: str | None = None,
                 parent_run_id: str | None = None, settings: dict[str, Any] | None = None,
                 spool: Spool | None = None,
                 on_run_created: Callable[[int | None, str], None] | None = None,
                 retry_seconds: float = 30.0):
        self.uri = tracking_uri
        self.study = study
        self.client = _client(tracking_uri)
        self.experiment_id: str | None = None
        self.parent_run_id = parent_run_id
        self.spool = spool
        self.on_run_created = on_run_created
        self.retry_seconds = retry_seconds
        self._artifact_location = artifact_location
        self._settings = settings or {}
        self._resumed = parent_run_id is not None
        self._offline_since: float | None = None  # time.monotonic() of the last failure
        self._ready(force=True)

    # --- connection state ---------------------------------------------------------------------

    def _went_offline(self, error: BaseException) -> None:
        if self._offline_since is None:
            where = (f"its records are spooled under {self.spool.directory} and uploaded when "
                     f"it is back (at the end of the study, or `dagstudy sync {self.study}`)"
                     if self.spool is not None else "this record is not kept")
            warnings.warn(f"MLflow at {redact_url(self.uri)} failed ({type(error).__name__}: "
                          f"{error}); the study goes on: {where}", TrackingWarning, stacklevel=3)
        self._offline_since = time.monotonic()

    def _ready(self, force: bool = False) -> bool:
        """Whether MLflow can be used now: the experiment and parent run exist, and after an
        outage the server answers again (then the spool is uploaded first). While offline,
        checks at most every ``retry_seconds`` unless ``force``."""
        if self._offline_since is not None:
            if not force and time.monotonic() - self._offline_since < self.retry_seconds:
                return False
            if not _server_healthy(self.uri):
                self._offline_since = time.monotonic()
                return False
        try:
            with _short_http_retries():
                self._open()
        except Exception as e:  # tracking must never fail the study
            self._went_offline(e)
            return False
        if self.spool is not None and len(self.spool) and not self._flush():
            return False  # still failing: the outage goes on (no second warning)
        self._offline_since = None
        return True

    def _open(self) -> None:
        """Find or create the experiment; create the parent run or mark a resumed one RUNNING
        (each once)."""
        client = self.client
        if self.experiment_id is None:
            experiment = client.get_experiment_by_name(self.study)
            if experiment is None:
                location = (self._artifact_location
                            and f"{self._artifact_location.rstrip('/')}/{self.study}")
                experiment_id = client.create_experiment(
                    self.study, artifact_location=location, tags={"dagstudy.study": self.study})
            else:
                experiment_id = experiment.experiment_id
            self.experiment_id = experiment_id
        if self._resumed:
            client.update_run(self.parent_run_id, status="RUNNING")
            self._resumed = False
        if self.parent_run_id is not None:
            return
        run = client.create_run(self.experiment_id, run_name=self.study,
                                tags={"dagstudy.study": self.study, "dagstudy.role": "study"})
        self.parent_run_id = run.info.run_id
        if self.on_run_created is not None:
            self.on_run_created(None, self.parent_run_id)
        params = _flat("", {k: v for k, v in self._settings.items() if k != "search"})
        self._log(run.info.run_id, params=params)
        client.log_dict(run.info.run_id, self._settings, "study.json")

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

    # --- trials -------------------------------------------------------------------------------

    def _create_trial_run(self, number: int, config: dict[str, Any],
                          params: dict[str, Any]) -> str:
        tags = {
            "mlflow.parentRunId": self.parent_run_id,
            "dagstudy.study": self.study,
            "dagstudy.trial": number,
            "dagstudy.ideas": ",".join(ideas_touched(config)),
            "dagstudy.sampled": ",".join(params),
        }
        run = self.client.create_run(self.experiment_id, run_name=f"trial-{number:04d}",
                                     tags={k: str(v) for k, v in tags.items()})
        return run.info.run_id

    def _find_trial_run(self, number: int) -> str | None:
        """The child run of trial ``number``, if one was created before (its creation may have
        succeeded although the call that made it failed)."""
        runs = self.client.search_runs(
            [self.experiment_id], max_results=1,
            filter_string=(f"tags.`mlflow.parentRunId` = '{self.parent_run_id}' "
                           f"and tags.`dagstudy.trial` = '{number}'"))
        return runs[0].info.run_id if runs else None

    def start_trial(self, number: int, config: dict[str, Any],
                    params: dict[str, Any]) -> str | None:
        """Create trial ``number``'s child run (status RUNNING) with the configuration as
        params; returns its run id, or None while MLflow is unreachable."""
        if not self._ready():
            return None
        run_id = None
        try:
            with _short_http_retries():
                run_id = self._create_trial_run(number, config, params)
                self._log(run_id, params=_flat("", config))
        except Exception as e:
            self._went_offline(e)
        return run_id

    def _upload(self, run_id: str | None, record: TrialRecord, timestamp: int) -> str:
        """Log a finished trial (idempotent: params, metrics with the fixed ``timestamp``, tags
        and artifacts can be logged twice) and end its run; returns the run id."""
        if run_id is None:
            run_id = self._find_trial_run(record.number) or self._create_trial_run(
                record.number, record.config, record.params)
        metrics = (epoch_metrics(record.rows, record.seeds, timestamp)
                   + final_metrics(record, timestamp))
        tags = {"dagstudy.state": record.state}
        if record.reason:
            tags["failure_reason"] = record.reason
        self._log(run_id, metrics=metrics, params=_flat("", record.config), tags=tags)
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
        return run_id

    def _upload_reported(self, run_id: str | None, record: TrialRecord, timestamp: int) -> None:
        uploaded = self._upload(run_id, record, timestamp)
        if uploaded != run_id and self.on_run_created is not None:
            self.on_run_created(record.number, uploaded)

    def _flush(self) -> bool:
        """Upload the spooled trial records, oldest first; False if MLflow failed."""
        if self.spool is None:
            return True
        for item in self.spool.trials():
            try:
                with _short_http_retries():
                    self._upload_reported(item.run_id, TrialRecord(**item.record), item.timestamp)
            except Exception as e:
                self._went_offline(e)
                return False
            item.path.unlink()
        return True

    def end_trial(self, run_id: str | None, record: TrialRecord) -> None:
        """Record a finished trial: spool it, then upload its metrics, tags and artifacts and
        end its run (``run_id`` None: the run is created now, or at upload)."""
        timestamp = int(time.time() * 1000)
        if self.spool is not None:
            self.spool.put_trial(record.number, run_id, timestamp, record)
            self._ready()  # uploads the spool, this record included, if MLflow answers
            return
        if self._ready():
            try:
                with _short_http_retries():
                    self._upload_reported(run_id, record, timestamp)
            except Exception as e:
                self._went_offline(e)

    # --- the study ----------------------------------------------------------------------------

    def _finish(self, study: optuna.Study, importances: dict[str, float] | None,
                status: str) -> None:
        run_id = self.parent_run_id
        complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if complete:
            best = study.best_trial
            now = int(time.time() * 1000)
            self._log(run_id, metrics=[Metric("best_objective", best.value, now, 0)],
                      tags={"dagstudy.best_trial": best.number,
                            "dagstudy.best_run_id": trial_run_id(study, best)})
            with tempfile.TemporaryDirectory() as tmp:
                plot_history(study, Path(tmp) / "optimization_history.png")
                if importances:
                    plot_importances(importances, Path(tmp) / "param_importances.png")
                    (Path(tmp) / "param_importances.json").write_text(json.dumps(importances))
                self.client.log_artifacts(run_id, tmp)
        self.client.set_terminated(run_id, status=status)

    def finish(self, study: optuna.Study, importances: dict[str, float] | None,
               status: str = "FINISHED") -> int:
        """Upload what is spooled, then end the parent run with ``status``; when the study has
        a best trial, log it and the summary plots. While MLflow is unreachable this is
        spooled too. Returns the number of records still waiting in the spool."""
        if self._ready(force=True):
            try:
                with _short_http_retries():
                    self._finish(study, importances, status)
                if self.spool is not None:
                    self.spool.clear_finish()
                return 0
            except Exception as e:
                self._went_offline(e)
        if self.spool is None:
            return 0
        self.spool.put_finish(status)
        left = len(self.spool)
        warnings.warn(f"{left} tracking records wait in {self.spool.directory}: upload them "
                      f"with `dagstudy sync {self.study}` when MLflow "
                      f"({redact_url(self.uri)}) is back", TrackingWarning, stacklevel=2)
        return left

    def sync(self, study: optuna.Study, importances: dict[str, float] | None) -> int:
        """Upload the spool and, if the study ended while MLflow was unreachable, finish the
        parent run. Returns the number of records still waiting."""
        status = self.spool.finish_status() if self.spool is not None else None
        if status is not None:
            return self.finish(study, importances, status)
        self._ready(force=True)
        return len(self.spool) if self.spool is not None else 0


def _client(uri: str) -> MlflowClient:
    """``MlflowClient(uri)``. Creating one creates or migrates a SQLite store's schema; two
    drivers doing that at once on a fresh run directory collide, so a SQLite store is opened
    under an exclusive lock on ``<database>.lock``."""
    if not uri.startswith("sqlite:///"):
        return MlflowClient(uri)
    lock_path = Path(uri.removeprefix("sqlite:///") + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return MlflowClient(uri)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _server_healthy(uri: str) -> bool:
    """An HTTP tracking server answers ``/health`` within 5 s (other stores: True)."""
    if not uri.startswith(("http://", "https://")):
        return True
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=5) as response:
            return response.status == 200
    except (OSError, ValueError):
        return False


_HTTP_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
                 "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "60"}


@contextlib.contextmanager
def _short_http_retries():
    """MLflow's HTTP client retries a failing call for about 4 minutes by default; the driver
    gives up after a few seconds instead (the record stays spooled). Variables the user set
    are left alone."""
    added = {k: v for k, v in _HTTP_RETRIES.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


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
