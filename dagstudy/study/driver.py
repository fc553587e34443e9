"""Run a study: Optuna ask/tell on the driver, one Ray task per trial, MLflow from the driver's
background thread.

The driver (``run_study``) keeps up to ``max_concurrent`` trials in flight. For each it calls
``study.ask()`` and samples the parameters on the driver (``search.suggest``), queues the
creation of the trial's MLflow child run, and launches a Ray task with the spec's
``resources``. The task (``worker.train_pack``) reopens the study from the storage URL (an RDB
or a ``grpc://`` storage proxy), trains all seeds, reports every epoch's objective to Optuna
(``trial.report``) and asks the study's pruner (``trial.should_prune``), so Optuna's own
pruners act on per-epoch values; it writes the outcome's user attributes (``mean``, ``std``,
``per_seed``, ``failure_reason``), renders the trial's figures and returns the outcome. The
driver then tells Optuna (COMPLETE with the objective, PRUNED, or FAIL) and hands the record to
the tracker, which spools it and queues its upload (``tracking.tracker``, background mode), so
the driver never waits for MLflow. The Optuna study in its storage is the source of truth;
MLflow is the record. While MLflow is unreachable trials go on and their records wait in the
spool under the run directory (``spool_dir``), uploaded when it answers, at the end of the
study, or by ``sync_study`` (``dagstudy sync``).

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
import os
import signal
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import ray

from dagstudy.memory import MemoryBudgetError
from dagstudy.study.cluster import ClusterTooSmall, check_fits, connect_ray
from dagstudy.study.lease import Lease, LeaseHeld, acquire, release
from dagstudy.study.loop import TrialLoop, requeue
from dagstudy.study.preflight import check_memory
from dagstudy.study.progress import Status
from dagstudy.study.query import param_importances
from dagstudy.study.samplers import make_pruner, make_sampler
from dagstudy.study.spec import StudySpec
from dagstudy.study.storage import (
    Storage,
    StorageError,
    open_study_storage,
    run_dir_for,
    storage_for,
)
from dagstudy.study.worker import memory_budget, trial_id
from dagstudy.tracking.client import TrackingAuthError, check_access
from dagstudy.tracking.records import trial_run_id
from dagstudy.tracking.spool import Spool
from dagstudy.tracking.tracker import Tracker
from dagstudy.urls import redact_url

TrialState = optuna.trial.TrialState


class StudyError(RuntimeError):
    """The study cannot be run as asked (it exists already, or does not exist to resume)."""


def spool_dir(study: str, run_dir: str | os.PathLike | None = None) -> Path:
    """Where a study's tracking records wait for MLflow: ``<run dir>/spool/<study>``."""
    return run_dir_for(run_dir) / "spool" / study


def study_tracker(study: optuna.Study, storage: Storage,
                  run_dir: str | os.PathLike | None = None, *,
                  rdb: optuna.storages.BaseStorage | None = None) -> Tracker:
    """The study's ``Tracker``, spooling under ``spool_dir``. With ``rdb`` (the driver's
    storage) it runs in background mode (MLflow calls on a background thread), and a trial
    run created there while its trial runs is linked as the trial's ``mlflow_run_id`` user
    attribute, as if the driver had created it. Other runs the driver did not create (after
    an MLflow outage, or for a trial that finished first) are linked in the study's user
    attributes (``mlflow_parent_run_id`` and ``mlflow_run_ids``, see
    ``query.trial_run_id``); the links are read once here, not per trial. The study's
    ``mlflow_home`` user attribute (``run_study``), when set, places its records in another
    experiment under another run."""
    links = dict(study.user_attrs.get("mlflow_run_ids", {}))
    home = study.user_attrs.get("mlflow_home", {})

    def link(number: int | None, run_id: str) -> None:
        if number is None:
            study.set_user_attr("mlflow_parent_run_id", run_id)
            return
        if rdb is not None:
            try:
                rdb.set_trial_user_attr(trial_id(rdb, study, number), "mlflow_run_id", run_id)
                return
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # told already: linked on the study instead
        links[str(number)] = run_id
        study.set_user_attr("mlflow_run_ids", dict(links))

    name = study.study_name
    return Tracker(storage.mlflow, name, artifact_location=storage.artifacts,
                   parent_run_id=study.user_attrs.get("mlflow_parent_run_id"),
                   settings=study.user_attrs.get("spec"), spool=Spool(spool_dir(name, run_dir)),
                   on_run_created=link, background=rdb is not None,
                   experiment=home.get("experiment"), run_tags=home.get("tags"))



def _open_study(spec: StudySpec, storage: Storage,
                resume: bool) -> tuple[optuna.Study, optuna.storages.BaseStorage]:
    """Create (``run``) or load (``resume``) the study. A resumed study's sampler is seeded with
    its seed plus the number of trials already stored, so it does not replay the sequence the
    first driver drew."""
    where = redact_url(storage.optuna)
    try:
        rdb, _ = open_study_storage(storage.optuna)
    except StorageError as e:
        raise StudyError(str(e)) from None
    existing = [s for s in rdb.get_all_studies() if s.study_name == spec.name]
    if resume and not existing:
        raise StudyError(f"no study {spec.name!r} to resume in {where}")
    if not resume and existing:
        raise StudyError(f"study {spec.name!r} exists in {where}; "
                         f"continue it with `dagstudy resume {spec.name}` or rename it")
    stored = (len(rdb.get_all_trials(rdb.get_study_id_from_name(spec.name), deepcopy=False))
              if existing else 0)
    try:
        study = optuna.create_study(study_name=spec.name, storage=rdb,
                                    sampler=make_sampler(spec.sampler, seed_offset=stored),
                                    pruner=make_pruner(spec.pruner, spec.epochs),
                                    direction=spec.objective.direction, load_if_exists=resume)
    except optuna.exceptions.DuplicatedStudyError:
        raise StudyError(f"study {spec.name!r} was just created in {where} by another driver; "
                         f"continue it with `dagstudy resume {spec.name}` or rename it") from None
    return study, rdb


def _stop_on_sigterm(loop: TrialLoop) -> Callable[[], None]:
    """Make SIGTERM stop ``loop`` at its next turn (trials re-queued, exit status 143 from the
    CLI) instead of Ray's handler exiting mid-call; returns the function that restores the
    previous handler. Only the main thread can set a handler; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: loop.request_stop())
    return lambda: signal.signal(signal.SIGTERM, previous)


def run_study(
    spec: StudySpec,
    *,
    run_dir: str | os.PathLike | None = None,
    trials: int | None = None,
    address: str | None = None,
    num_cpus: int | None = None,
    resume: bool = False,
    progress: Callable[[Status | str], None] | None = None,
    mlflow_home: dict[str, Any] | None = None,
) -> optuna.Study:
    """Run (or with ``resume=True`` continue) ``spec`` to its budget; returns the study.

    Storage is ``storage_for(spec, run_dir)``; Ray is ``connect_ray(address, num_cpus)`` and
    is shut down at the end if this call started it. ``StudyError`` before any trial if the
    study exists already (run) or does not (resume), another driver holds it (``lease``), or
    no node of the cluster can hold a trial's ``resources``. ``StopRequested`` after SIGTERM
    (running trials re-queued). See the module docstring for budget and failures.

    ``mlflow_home`` (``{"experiment": NAME, "tags": {...}}``) puts a new study's MLflow records
    in experiment NAME, its run tagged with ``tags`` (a tuning study nested under its
    confirmation's run); kept in the study's ``mlflow_home`` user attribute, so ``resume`` and
    ``sync`` write to the same place. A study that has a home keeps it.
    """
    storage = storage_for(spec, run_dir)
    try:
        check_access(storage.mlflow)
        if spec.resources.memory_gb is not None or not (address or os.environ.get("RAY_ADDRESS")):
            check_memory(spec, *memory_budget(spec.resources))  # a cluster's nodes: per trial
    except (TrackingAuthError, MemoryBudgetError) as e:
        raise StudyError(str(e)) from None
    study, rdb = _open_study(spec, storage, resume)
    try:
        lease = acquire(study)
    except LeaseHeld as e:
        raise StudyError(str(e)) from None
    try:
        if mlflow_home is not None and "mlflow_home" not in study.user_attrs:
            study.set_user_attr("mlflow_home", mlflow_home)
        return _run_leased(spec, storage, study, rdb, lease, run_dir=run_dir, trials=trials,
                           address=address, num_cpus=num_cpus, resume=resume,
                           progress=progress)
    finally:
        release(study, lease)


def _run_leased(spec: StudySpec, storage: Storage, study: optuna.Study,
                rdb: optuna.storages.BaseStorage, lease: Lease, *,
                run_dir: str | os.PathLike | None, trials: int | None, address: str | None,
                num_cpus: int | None, resume: bool,
                progress: Callable[[Status | str], None] | None) -> optuna.Study:
    study.set_user_attr("spec", spec.model_dump(mode="json", exclude={"storage"}))
    tracker = study_tracker(study, storage, run_dir, rdb=rdb)
    if resume:
        for stale in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            requeue(study, rdb, stale, "driver died", tracker, spec.seed_list)
    if progress is not None:
        progress(f"study {spec.name}: starting Ray...")
    started = connect_ray(address, num_cpus)
    loop = TrialLoop(spec, storage, study, rdb, tracker, trials or spec.budget.trials, progress,
                     lease)
    restore = _stop_on_sigterm(loop)
    try:
        check_fits(spec.resources)
        if address and storage.optuna.startswith("sqlite"):
            warnings.warn("SQLite Optuna storage on a cluster works only if every node shares "
                          "the run directory; set DAGSTUDY_OPTUNA_STORAGE to a PostgreSQL URL",
                          stacklevel=2)
        loop.run()
    except ClusterTooSmall as e:
        raise StudyError(str(e)) from None
    except BaseException:
        loop.interrupt()
        tracker.finish(study, None, status="KILLED")
        raise
    finally:
        restore()
        if started:
            ray.shutdown()
    tracker.drain(stop=True)  # its warnings (an MLflow outage) come before the importances'
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
                     f"mlflow run {trial_run_id(study, best)}")
    lines.append(f"optuna {redact_url(storage.optuna)}\nmlflow {redact_url(storage.mlflow)}")
    return "\n".join(lines)
