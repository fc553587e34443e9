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
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import ray
from pydantic import ValidationError

import dagstudy
from dagstudy.config import format_errors
from dagstudy.query import param_importances
from dagstudy.search import suggest
from dagstudy.spec import (
    Resources,
    Storage,
    StudySpec,
    open_storage,
    redact_url,
    run_dir_for,
    storage_for,
)
from dagstudy.spool import Spool
from dagstudy.storage import error_line
from dagstudy.tracking import Tracker, TrackingAuthError, TrialRecord, check_access
from dagstudy.worker import TrialJob, make_pruner, train_job, train_trial

TrialState = optuna.trial.TrialState


class StudyError(RuntimeError):
    """The study cannot be run as asked (it exists already, or does not exist to resume)."""


_train_trial_task = ray.remote(train_trial)
_train_job_task = ray.remote(train_job)


def ray_runner(
    resources: Resources | None = None, device: str = "auto"
) -> Callable[[list], Iterable[tuple[Any, dict[str, Any]]]]:
    """A ``confirm.Runner`` over Ray tasks: every job launched at once, each result yielded as
    it finishes. Connect Ray first (``connect_ray``)."""
    res = resources or Resources()

    def run(jobs: list) -> Iterable[tuple[Any, dict[str, Any]]]:
        opts = dict(num_cpus=res.cpus, num_gpus=res.gpu, max_retries=1)
        refs = {_train_job_task.options(**opts).remote(job.config.model_dump(), list(job.seeds),
                                                       device, max(1, int(res.cpus))): job
                for job in jobs}
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1)
            yield refs.pop(ready[0]), ray.get(ready[0])

    return run


def make_sampler(spec: StudySpec) -> optuna.samplers.BaseSampler:
    """The spec's sampler (``tpe`` by default)."""
    s = spec.sampler
    if s.name == "random":
        return optuna.samplers.RandomSampler(seed=s.seed)
    if s.name == "gp":
        return optuna.samplers.GPSampler(seed=s.seed, n_startup_trials=s.n_startup_trials)
    # Optuna 5 defaults: multivariate TPE, constant_liar=True (running trials count as bad).
    return optuna.samplers.TPESampler(seed=s.seed, n_startup_trials=s.n_startup_trials)


SHIPPED_ENV = ("DAGSTUDY_STORAGE_RETRY_SECONDS",)
"""Driver settings the workers of a joined cluster get too. Secrets are not shipped (a Ray
``runtime_env`` is visible in its dashboard): each node's Ray needs ``PGPASSWORD`` (or a
``PGPASSFILE``) in the environment it was started with."""


def connect_ray(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Connect to Ray unless connected already: ``address`` (or ``RAY_ADDRESS``, as inside a
    Ray job) joins a cluster and ships this ``dagstudy`` package to its workers; otherwise a
    new local instance starts (never silently an unrelated ``ray start`` one) with
    ``num_cpus`` (default: this machine's). Returns True when this call started or joined Ray
    (the caller then calls ``ray.shutdown()``)."""
    if ray.is_initialized():
        return False
    quiet = dict(log_to_driver=False, logging_level="WARNING")
    if address:
        package = str(Path(dagstudy.__file__).parent)
        env = {k: os.environ[k] for k in SHIPPED_ENV if k in os.environ}
        ray.init(address=address, runtime_env={"py_modules": [package], "env_vars": env},
                 **quiet)
    elif os.environ.get("RAY_ADDRESS"):
        ray.init(**quiet)
    else:
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False,
                 **quiet)
    return True


def counted(study: optuna.Study) -> int:
    """Trials that count toward ``budget.trials`` (see the module docstring)."""
    return sum(1 for t in study.get_trials(deepcopy=False)
               if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
               or (t.state == TrialState.FAIL and not t.user_attrs.get("requeued")))


def requeue(study: optuna.Study, trial: optuna.trial.FrozenTrial, reason: str,
            tracker: Tracker) -> None:
    """Fail a trial that will never report back and queue its params to run again."""
    # The trial may belong to a dead process, so there is no ``optuna.Trial`` to set user
    # attributes through: write them to the storage directly, before the trial is finished.
    for key, value in {"failure_reason": reason, "requeued": True}.items():
        study._storage.set_trial_user_attr(trial._trial_id, key, value)
    study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
    study.enqueue_trial(trial.params, user_attrs={"requeued_from": trial.number},
                        skip_if_exists=False)
    attrs = trial.user_attrs
    if "config" in attrs:  # launched: it has (or should have had) an MLflow run
        tracker.end_trial(attrs.get("mlflow_run_id"), TrialRecord(
            trial.number, "FAIL", attrs["config"], trial.params, attrs.get("seeds", []), [],
            None, None, reason, None))


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
class Status:
    """Progress of a running study, as the driver sees it."""

    study: str
    complete: int
    pruned: int
    failed: int
    running: int
    target: int | None
    best: float | None
    best_number: int | None
    elapsed: float
    eta: float | None


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def format_status(s: Status) -> str:
    done = s.complete + s.pruned + s.failed
    best = "-" if s.best is None else f"{s.best:.4g} (#{s.best_number})"
    return (f"[{s.study}] {done}/{s.target or '?'} done: {s.complete} complete, {s.pruned} "
            f"pruned, {s.failed} failed; {s.running} running; best {best}; "
            f"elapsed {_clock(s.elapsed)}, ETA {_clock(s.eta)}")


def progress_printer(stream=sys.stderr) -> Callable[[Status], None]:
    """Live progress on ``stream``: one line rewritten in place on a terminal, else a new
    line whenever the counts change."""
    last: list[str] = [""]
    tty = stream.isatty()

    def show(status: Status) -> None:
        line = format_status(status)
        key = line.split("; elapsed")[0]
        if tty:
            stream.write("\r\033[K" + line)
        elif key != last[0]:
            stream.write(line + "\n")
        last[0] = key
        stream.flush()

    return show


def _failed(reason: str) -> dict[str, Any]:
    """The outcome of a trial whose task returned nothing."""
    return {"state": "FAIL", "value": None, "rows": [], "result": None, "reason": reason,
            "report_seconds": None}


@dataclass
class _Running:
    trial: optuna.Trial
    config: dict[str, Any]
    run_id: str | None


class _Driver:
    def __init__(self, spec: StudySpec, storage: Storage, study: optuna.Study, tracker: Tracker,
                 target: int | None, progress: Callable[[Status], None] | None):
        self.spec, self.storage, self.study, self.tracker = spec, storage, study, tracker
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
        job = TrialJob(self.storage.optuna, trial._trial_id, config_dict, self.spec)
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
            out = ray.get(ref)
        except ray.exceptions.RayTaskError as e:  # the task raised (Ray does not retry that)
            out = _failed(f"task raised {error_line(e.cause or e)}")
        except ray.exceptions.RayError as e:  # its worker or node died, and again on the retry
            reason = f"worker died (retried once): {error_line(e)}"
            if "requeued_from" not in trial.user_attrs:  # run its params once more, elsewhere
                requeue(self.study, self.study._storage.get_trial(trial._trial_id), reason,
                        self.tracker)
                self.counts[TrialState.FAIL] += 1  # shown, but not counted toward the budget
                self._fill()
                return
            out = _failed(reason)
        state = out["state"]
        attrs = {k: out.get(k) for k in ("mean", "std", "per_seed") if out.get(k) is not None}
        if out.get("reason"):
            attrs["failure_reason"] = out["reason"]
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        if state == "COMPLETE":
            self.study.tell(trial, out["value"])
        else:
            self.study.tell(trial, state=TrialState[state])
        self._count(state)
        record = TrialRecord(trial.number, state, running.config, trial.params,
                             self.spec.seed_list, out["rows"], out["result"], out["value"],
                             out.get("reason"), out["report_seconds"])
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
                frozen = self.study._storage.get_trial(running.trial._trial_id)
                requeue(self.study, frozen, "interrupted", self.tracker)
            except Exception as e:
                warnings.warn(f"trial {running.trial.number} not re-queued ({error_line(e)}); "
                              f"`dagstudy resume {self.study.study_name}` will", stacklevel=2)
        self.pending.clear()


def _open_study(spec: StudySpec, storage: Storage, resume: bool) -> optuna.Study:
    rdb = open_storage(storage.optuna)
    exists = spec.name in [s.study_name for s in rdb.get_all_studies()]
    if resume and not exists:
        raise StudyError(f"no study {spec.name!r} to resume in {redact_url(storage.optuna)}")
    if not resume and exists:
        raise StudyError(f"study {spec.name!r} exists in {redact_url(storage.optuna)}; "
                         f"continue it with `dagstudy resume {spec.name}` or rename it")
    study = optuna.create_study(study_name=spec.name, storage=rdb, sampler=make_sampler(spec),
                                pruner=make_pruner(spec), direction=spec.objective.direction,
                                load_if_exists=resume)
    study.set_user_attr("spec", spec.model_dump(mode="json", exclude={"storage"}))
    return study


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
    study = _open_study(spec, storage, resume)
    tracker = study_tracker(study, storage, run_dir)
    if resume:
        for stale in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            requeue(study, stale, "driver died", tracker)
    started = connect_ray(address, num_cpus)
    if address and storage.optuna.startswith("sqlite"):
        warnings.warn("SQLite Optuna storage on a cluster works only if every node shares "
                      "the run directory; set DAGSTUDY_OPTUNA_STORAGE to a PostgreSQL URL",
                      stacklevel=2)
    driver = _Driver(spec, storage, study, tracker, trials or spec.budget.trials, progress)
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


def job_submission(study_file: str | os.PathLike, workdir: Path, *,
                   run_dir: str | None = None, trials: int | None = None) -> dict[str, Any]:
    """``JobSubmissionClient.submit_job`` arguments that run ``study_file`` on a cluster.

    The study file is copied into ``workdir`` (the job's ``working_dir``) and the ``dagstudy``
    package travels as a ``py_modules`` entry; the cluster's Python must have the
    dependencies. The job's driver runs ``python -m dagstudy.cli run`` on the head node and
    joins the cluster through ``RAY_ADDRESS``; storage resolves there, from the study's
    ``storage`` section or the head node's environment or ``run_dir``.
    """
    source = Path(study_file)
    shutil.copy(source, workdir / source.name)
    entrypoint = f"python -m dagstudy.cli run {source.name}"
    if run_dir:
        entrypoint += f" --run-dir {run_dir}"
    if trials:
        entrypoint += f" --trials {trials}"
    package = str(Path(dagstudy.__file__).parent)
    return {"entrypoint": entrypoint,
            "runtime_env": {"working_dir": str(workdir), "py_modules": [package]},
            "metadata": {"dagstudy_study": source.stem}}


def submit(study_file: str | os.PathLike, address: str, *, run_dir: str | None = None,
           trials: int | None = None) -> str:
    """Submit ``study_file`` as a Ray job to the cluster whose dashboard is ``address``
    (``http://HEAD:8265``); returns the job id. See ``job_submission``."""
    from ray.job_submission import JobSubmissionClient

    with tempfile.TemporaryDirectory() as tmp:
        kwargs = job_submission(study_file, Path(tmp), run_dir=run_dir, trials=trials)
        return JobSubmissionClient(address).submit_job(**kwargs)
