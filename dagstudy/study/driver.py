"""Run a study: Optuna ask/tell on the driver, one Ray task per trial, MLflow from the driver.

The driver (``run_study``) keeps up to ``max_concurrent`` trials in flight. For each it calls
``study.ask()`` and samples the parameters on the driver (``search.suggest``), creates the
trial's MLflow child run, and launches a Ray task with the spec's ``resources``. The task
(``worker.train_trial``) reopens the study from the storage URL, trains all seeds, reports every
epoch's objective to Optuna (``trial.report``) and asks the study's pruner
(``trial.should_prune``), so Optuna's own pruners act on per-epoch values; it returns an
outcome. The driver then tells Optuna (COMPLETE with the objective, PRUNED, or FAIL with the
``failure_reason`` user attribute) and logs the trial to MLflow. The Optuna study in its RDB
storage is the source of truth; MLflow is the record. Tracking records go through a spool under
the run directory (``spool_dir``): while MLflow is unreachable trials go on and their records
wait there, uploaded when it answers, at the end of the study, or by ``sync_study``
(``dagstudy sync``).

Per-epoch reports: ``step = epoch`` with the objective of that epoch's per-seed values. With the
Wilcoxon pruner, each seed's value is reported on its own, at ``step = (epoch - 1) * S + i``
for seed index ``i``, so the pruner pairs (epoch, seed) values of a trial with the best trial's
(every trial trains the same seeds).

Failures never stop the study. A seed that diverges, a non-finite objective, or an exception in
training fails the trial with its reason. A worker process or node that dies is retried once
by Ray (``max_retries=1``, on any node); if it dies again the trial fails with reason ``worker
died`` and its params are re-queued once (not counted toward the budget; a re-queued trial that
dies twice again stays FAIL and counts).

Budget: ``budget.trials`` counts the study's finished trials: COMPLETE + PRUNED + FAIL, except
FAILs that were re-queued (their params run again as a new trial, which counts instead).
``budget.wall_minutes`` stops launching trials that long after this driver started; trials
already running finish. ``trials=`` (``--trials``) overrides ``budget.trials``.

Resume (``run_study(spec, resume=True)``, ``dagstudy resume``): trials left RUNNING by a dead
driver are marked FAIL (reason ``driver died``, their MLflow runs FAILED) and re-queued with the
same params (``study.enqueue_trial``); finished trials are kept; then the loop runs to the
budget. One driver per study at a time. Ctrl-C (or SIGTERM) cancels running trials, marks them
FAIL (``interrupted``) and re-queues them, so ``resume`` picks them up.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import ray
from pydantic import ValidationError

from dagstudy.config import format_errors
from dagstudy.study.cluster import connect_ray
from dagstudy.study.progress import Status
from dagstudy.study.query import param_importances
from dagstudy.study.rdb import error_line
from dagstudy.study.samplers import make_pruner, make_sampler
from dagstudy.study.space import suggest
from dagstudy.study.spec import StudySpec
from dagstudy.study.storage import Storage, open_storage, run_dir_for, storage_for
from dagstudy.study.worker import TrialJob, TrialOutcome, train_trial
from dagstudy.tracking.client import TrackingAuthError, check_access
from dagstudy.tracking.records import TrialRecord
from dagstudy.tracking.spool import Spool
from dagstudy.tracking.tracker import Tracker
from dagstudy.urls import redact_url

TrialState = optuna.trial.TrialState


class StudyError(RuntimeError):
    """The study cannot be run as asked (it exists already, or does not exist to resume)."""


_train_trial_task = ray.remote(train_trial)


def counted(study: optuna.Study) -> int:
    """Trials that count toward ``budget.trials`` (see the module docstring)."""
    return sum(1 for t in study.get_trials(deepcopy=False)
               if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
               or (t.state == TrialState.FAIL and not t.user_attrs.get("requeued")))


def trial_id(storage: optuna.storages.BaseStorage, study: optuna.Study, number: int) -> int:
    """The storage's id of trial ``number`` of ``study`` (Optuna's public storage API)."""
    study_id = storage.get_study_id_from_name(study.study_name)
    return storage.get_trial_id_from_study_id_trial_number(study_id, number)


def requeue(study: optuna.Study, storage: optuna.storages.BaseStorage,
            trial: optuna.trial.FrozenTrial, reason: str, tracker: Tracker) -> None:
    """Fail a trial that will never report back and queue its params to run again."""
    # The trial may belong to a dead process, so there is no ``optuna.Trial`` to set user
    # attributes through: write them to the storage directly, before the trial is finished.
    for key, value in {"failure_reason": reason, "requeued": True}.items():
        storage.set_trial_user_attr(trial_id(storage, study, trial.number), key, value)
    study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
    study.enqueue_trial(trial.params, user_attrs={"requeued_from": trial.number},
                        skip_if_exists=False)
    attrs = trial.user_attrs
    if "config" in attrs:  # launched: it has (or should have had) an MLflow run
        tracker.end_trial(attrs.get("mlflow_run_id"), TrialRecord(
            number=trial.number, state="FAIL", config=attrs["config"], params=trial.params,
            seeds=attrs.get("seeds", []), rows=[], result=None, objective=None, reason=reason,
            report_seconds=None))


def spool_dir(study: str, run_dir: str | os.PathLike | None = None) -> Path:
    """Where a study's tracking records wait for MLflow: ``<run dir>/spool/<study>``."""
    return run_dir_for(run_dir) / "spool" / study


def study_tracker(study: optuna.Study, storage: Storage,
                  run_dir: str | os.PathLike | None = None) -> Tracker:
    """The study's ``Tracker``, spooling under ``spool_dir``; runs created after an MLflow
    outage are linked in the study's user attributes (``mlflow_parent_run_id`` and
    ``mlflow_run_ids``, see ``query.trial_run_id``)."""
    def link(number: int | None, run_id: str) -> None:
        if number is None:
            study.set_user_attr("mlflow_parent_run_id", run_id)
        else:
            study.set_user_attr("mlflow_run_ids", {**study.user_attrs.get("mlflow_run_ids", {}),
                                                   str(number): run_id})

    name = study.study_name
    return Tracker(storage.mlflow, name, artifact_location=storage.artifacts,
                   parent_run_id=study.user_attrs.get("mlflow_parent_run_id"),
                   settings=study.user_attrs.get("spec"), spool=Spool(spool_dir(name, run_dir)),
                   on_run_created=link)



@dataclass
class _Running:
    trial: optuna.Trial
    config: dict[str, Any]
    run_id: str | None


class _Driver:
    def __init__(self, spec: StudySpec, storage: Storage, study: optuna.Study,
                 rdb: optuna.storages.BaseStorage, tracker: Tracker, target: int | None,
                 progress: Callable[[Status], None] | None):
        self.spec, self.storage, self.study, self.tracker = spec, storage, study, tracker
        self.rdb = rdb
        self.target, self.progress = target, progress
        self.pending: dict[ray.ObjectRef, _Running] = {}
        self.start = time.monotonic()
        self.finished_here = 0
        self.already = counted(study)
        self.counts = {s: len(study.get_trials(deepcopy=False, states=(s,)))
                       for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}

    def _room(self) -> bool:
        if len(self.pending) >= self.spec.max_concurrent:
            return False
        wall = self.spec.budget.wall_minutes
        if wall is not None and time.monotonic() - self.start >= wall * 60:
            return False
        return self.target is None or (
            self.already + self.finished_here + len(self.pending) < self.target)

    def _launch(self) -> None:
        trial = self.study.ask()
        overrides = suggest(trial, self.spec.search, self.spec.base_config())
        try:
            config_dict = self.spec.config_for(overrides).model_dump(mode="json")
        except ValidationError as e:  # a value inside a range the corner checks did not try
            trial.set_user_attr("failure_reason", f"invalid configuration: {format_errors(e)}")
            self.study.tell(trial, state=TrialState.FAIL)
            self._count("FAIL")
            return
        run_id = self.tracker.start_trial(trial.number, config_dict, trial.params)
        trial.set_user_attr("config", config_dict)
        trial.set_user_attr("seeds", self.spec.seed_list)
        trial.set_user_attr("mlflow_run_id", run_id)
        job = TrialJob(self.storage.optuna, trial.number, config_dict, self.spec)
        res = self.spec.resources
        ref = _train_trial_task.options(num_cpus=res.cpus, num_gpus=res.gpu,
                                        max_retries=1).remote(job)
        self.pending[ref] = _Running(trial, config_dict, run_id)

    def _count(self, state: str) -> None:
        self.finished_here += 1
        self.counts[TrialState[state]] += 1

    def _collect(self, ref: ray.ObjectRef) -> None:
        running = self.pending.pop(ref)
        trial = running.trial
        try:
            out: TrialOutcome = ray.get(ref)
        except ray.exceptions.RayTaskError as e:  # the task raised (Ray does not retry that)
            out = TrialOutcome.failed(f"task raised {error_line(e.cause or e)}")
        except ray.exceptions.RayError as e:  # its worker or node died, and again on the retry
            reason = f"worker died (retried once): {error_line(e)}"
            if "requeued_from" not in trial.user_attrs:  # run its params once more, elsewhere
                frozen = self.rdb.get_trial(trial_id(self.rdb, self.study, trial.number))
                requeue(self.study, self.rdb, frozen, reason, self.tracker)
                self.counts[TrialState.FAIL] += 1  # shown, but not counted toward the budget
                self._fill()
                return
            out = TrialOutcome.failed(reason)
        attrs = {"mean": out.mean, "std": out.std, "per_seed": out.per_seed,
                 "failure_reason": out.reason}
        for key, value in attrs.items():
            if value is not None:
                trial.set_user_attr(key, value)
        if out.state == "COMPLETE":
            self.study.tell(trial, out.value)
        else:
            self.study.tell(trial, state=TrialState[out.state])
        self._count(out.state)
        record = TrialRecord(number=trial.number, state=out.state, config=running.config,
                             params=trial.params, seeds=self.spec.seed_list, rows=out.rows,
                             result=out.result, objective=out.value, reason=out.reason,
                             report_seconds=out.report_seconds)
        self._fill()  # launch the next trials before logging, so workers stay busy
        self.tracker.end_trial(running.run_id, record)

    def _fill(self) -> None:
        while self._room():
            self._launch()

    def status(self) -> Status:
        best = best_number = None
        if self.counts[TrialState.COMPLETE]:
            best_trial = self.study.best_trial
            best, best_number = best_trial.value, best_trial.number
        elapsed = time.monotonic() - self.start
        eta = None
        if self.target is not None and self.finished_here:
            left = self.target - self.already - self.finished_here
            eta = elapsed / self.finished_here * max(left, 0)
        wall = self.spec.budget.wall_minutes
        if wall is not None:
            eta = min(eta if eta is not None else math.inf, max(wall * 60 - elapsed, 0))
        return Status(self.study.study_name, self.counts[TrialState.COMPLETE],
                      self.counts[TrialState.PRUNED], self.counts[TrialState.FAIL],
                      len(self.pending), self.target, best, best_number, elapsed, eta)

    def run(self) -> None:
        self._fill()
        while self.pending:
            if self.progress:
                self.progress(self.status())
            ready, _ = ray.wait(list(self.pending), num_returns=1, timeout=1.0)
            for ref in ready:
                self._collect(ref)
            self._fill()
        if self.progress:
            self.progress(self.status())

    def interrupt(self) -> None:
        """Cancel the running trials and re-queue them; one that cannot be re-queued now (the
        storage is down) is left RUNNING for ``resume``, never hiding the original error."""
        for ref in self.pending:
            ray.cancel(ref, force=True)
        for running in self.pending.values():
            try:
                frozen = self.rdb.get_trial(trial_id(self.rdb, self.study, running.trial.number))
                requeue(self.study, self.rdb, frozen, "interrupted", self.tracker)
            except Exception as e:
                warnings.warn(f"trial {running.trial.number} not re-queued ({error_line(e)}); "
                              f"`dagstudy resume {self.study.study_name}` will", stacklevel=2)
        self.pending.clear()


def _open_study(spec: StudySpec, storage: Storage,
                resume: bool) -> tuple[optuna.Study, optuna.storages.BaseStorage]:
    rdb = open_storage(storage.optuna)
    exists = spec.name in [s.study_name for s in rdb.get_all_studies()]
    if resume and not exists:
        raise StudyError(f"no study {spec.name!r} to resume in {redact_url(storage.optuna)}")
    if not resume and exists:
        raise StudyError(f"study {spec.name!r} exists in {redact_url(storage.optuna)}; "
                         f"continue it with `dagstudy resume {spec.name}` or rename it")
    study = optuna.create_study(study_name=spec.name, storage=rdb,
                                sampler=make_sampler(spec.sampler),
                                pruner=make_pruner(spec.pruner, spec.epochs),
                                direction=spec.objective.direction, load_if_exists=resume)
    study.set_user_attr("spec", spec.model_dump(mode="json", exclude={"storage"}))
    return study, rdb


def run_study(
    spec: StudySpec,
    *,
    run_dir: str | os.PathLike | None = None,
    trials: int | None = None,
    address: str | None = None,
    num_cpus: int | None = None,
    resume: bool = False,
    progress: Callable[[Status], None] | None = None,
) -> optuna.Study:
    """Run (or with ``resume=True`` continue) ``spec`` to its budget; returns the study.

    Storage is ``storage_for(spec, run_dir)``; Ray is ``connect_ray(address, num_cpus)`` and
    is shut down at the end if this call started it. ``StudyError`` if the study exists
    already (run) or does not (resume). See the module docstring for budget and failures.
    """
    storage = storage_for(spec, run_dir)
    try:
        check_access(storage.mlflow)
    except TrackingAuthError as e:
        raise StudyError(str(e)) from None
    study, rdb = _open_study(spec, storage, resume)
    tracker = study_tracker(study, storage, run_dir)
    if resume:
        for stale in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            requeue(study, rdb, stale, "driver died", tracker)
    started = connect_ray(address, num_cpus)
    if address and storage.optuna.startswith("sqlite"):
        warnings.warn("SQLite Optuna storage on a cluster works only if every node shares "
                      "the run directory; set DAGSTUDY_OPTUNA_STORAGE to a PostgreSQL URL",
                      stacklevel=2)
    driver = _Driver(spec, storage, study, rdb, tracker, trials or spec.budget.trials, progress)
    try:
        driver.run()
    except BaseException:
        driver.interrupt()
        tracker.finish(study, None, status="KILLED")
        raise
    finally:
        if started:
            ray.shutdown()
    try:
        importances = param_importances(study)
    except ValueError:
        importances = None
    tracker.finish(study, importances)
    return study


def sync_study(study: optuna.Study, storage: Storage,
               run_dir: str | os.PathLike | None = None) -> int:
    """Upload the study's spooled tracking records (``spool_dir``) to ``storage.mlflow`` and,
    if the study ended while MLflow was unreachable, end its parent run with the best trial and
    the summary plots. Idempotent. Returns the number of records still waiting (0: done)."""
    tracker = study_tracker(study, storage, run_dir)
    try:
        importances = param_importances(study)
    except ValueError:
        importances = None
    return tracker.sync(study, importances)


def summary(study: optuna.Study, spec: StudySpec, storage: Storage) -> str:
    """What a finished ``run`` prints: counts, the best trial, where everything is."""
    done = study.get_trials(deepcopy=False)
    states = [t.state for t in done]
    requeued = sum(1 for t in done if t.user_attrs.get("requeued"))
    lines = [f"study {spec.name}: {states.count(TrialState.COMPLETE)} complete, "
             f"{states.count(TrialState.PRUNED)} pruned, {states.count(TrialState.FAIL)} failed"
             + (f" ({requeued} of them re-queued and run again)" if requeued else "")]
    if TrialState.COMPLETE in states:
        best = study.best_trial
        lines.append(f"best trial #{best.number}: {spec.objective.metric} {best.value:.4f}  "
                     f"params {json.dumps(best.params)}  "
                     f"mlflow run {best.user_attrs.get('mlflow_run_id')}")
    lines.append(f"optuna {redact_url(storage.optuna)}\nmlflow {redact_url(storage.mlflow)}")
    return "\n".join(lines)
