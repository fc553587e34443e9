"""The trial loop of one study's driver: ask, launch a Ray task, collect, tell, record.

``TrialLoop.run`` keeps up to ``max_concurrent`` tasks in flight until the budget is met (see
``driver`` for the budget, failures and re-queueing). A task trains one trial or, with
``packing.max`` > 1, a pack: the trials asked together that share a network shape
(``packing.pack_key``), each told on its own. It also passes the per-epoch rows its workers
send through an ``EpochFeed`` to the tracker at most every ``STREAM_SECONDS`` (live MLflow
curves; read with a ``FeedReader``, which never waits), renews the driver's lease
(``lease.renew``) every ``lease.heartbeat_seconds()`` and stops, re-queueing what runs, when
``request_stop`` was called (SIGTERM) or the lease was lost.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
import ray
from pydantic import ValidationError

from dagstudy.config import format_errors
from dagstudy.memory import GIB
from dagstudy.packing import pack_key
from dagstudy.study.feed import FeedReader, open_feed
from dagstudy.study.lease import Lease, heartbeat_seconds, renew
from dagstudy.study.progress import Status
from dagstudy.study.rdb import error_line
from dagstudy.study.space import suggest
from dagstudy.study.spec import StudySpec
from dagstudy.study.storage import Storage
from dagstudy.study.worker import TrialJob, TrialOutcome, train_pack, trial_id
from dagstudy.tracking.records import TrialRecord
from dagstudy.tracking.tracker import Tracker

TrialState = optuna.trial.TrialState
_train_pack_task = ray.remote(train_pack)



class StopRequested(Exception):
    """The driver was asked to stop (SIGTERM); running trials were re-queued."""


def counted(study: optuna.Study) -> int:
    """Trials that count toward ``budget.trials`` (see the module docstring)."""
    return sum(1 for t in study.get_trials(deepcopy=False)
               if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
               or (t.state == TrialState.FAIL and not t.user_attrs.get("requeued")))


def requeue(study: optuna.Study, storage: optuna.storages.BaseStorage,
            trial: optuna.trial.FrozenTrial, reason: str, tracker: Tracker,
            seeds: list[int]) -> None:
    """Fail a trial that will never report back and queue its params to run again; its MLflow
    run (if it was launched) ends FAILED with ``reason``; ``seeds``: the study's."""
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
            seeds=seeds, rows=[], result=None, objective=None, reason=reason,
            report_seconds=None))


def pack_size(left: int, most: int, slots: int) -> int:
    """How many trials the next task holds when ``left`` trials are still to launch, a task
    holds at most ``most`` and ``slots`` tasks run at once: guided self-scheduling, at most
    ``left / slots`` (rounded up), so that the tasks near the end shrink and the slots finish
    together instead of one slot training a last full pack alone (24 left, up to 8, 2 slots:
    8, 8, 4, 2, 1, 1)."""
    return max(0, min(most, math.ceil(left / slots)))


@dataclass
class _Running:
    trial: optuna.Trial
    config: dict[str, Any]
    run_id: str | None


class TrialLoop:
    """The driver's loop over one study (module docstring); ``lease`` is renewed as it runs."""

    def __init__(self, spec: StudySpec, storage: Storage, study: optuna.Study,
                 rdb: optuna.storages.BaseStorage, tracker: Tracker, target: int | None,
                 progress: Callable[[Status], None] | None, lease: Lease | None = None):
        self.spec, self.storage, self.study, self.tracker = spec, storage, study, tracker
        self.rdb, self.lease = rdb, lease
        self.target, self.progress = target, progress
        self.pending: dict[ray.ObjectRef, list[_Running]] = {}  # a task's trials
        self.start = self.renewed = time.monotonic()
        self.heartbeat = heartbeat_seconds()
        self.stop_requested = False
        self.finished_here = 0
        self.already = counted(study)
        trials = study.get_trials(deepcopy=False)
        self.counts = {s: sum(1 for t in trials if t.state == s)
                       for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
        self.requeued = sum(1 for t in trials if t.user_attrs.get("requeued"))
        self.best: tuple[float, int] | None = None  # (value, number), kept from outcomes
        self.feed: ray.actor.ActorHandle | None = None  # made by ``run`` (Ray is up by then)
        self.reader: FeedReader | None = None
        for t in trials:
            if t.state == TrialState.COMPLETE:
                self._note_best(t.value, t.number)

    def _note_best(self, value: float, number: int) -> None:
        """Keep the best complete trial as outcomes arrive (no re-read of the study)."""
        better = (value > self.best[0] if self.spec.objective.direction == "maximize"
                  else value < self.best[0]) if self.best is not None else True
        if better:
            self.best = (value, number)

    def request_stop(self) -> None:
        """Stop at the next turn of the loop (safe to call from a signal handler)."""
        self.stop_requested = True

    @property
    def running(self) -> int:
        """Trials in flight (a pack's task holds several)."""
        return sum(len(trials) for trials in self.pending.values())

    def _room(self) -> int:
        """How many trials the next task may hold (0: launch none now)."""
        if len(self.pending) >= self.spec.max_concurrent:
            return 0
        wall = self.spec.budget.wall_minutes
        if wall is not None and time.monotonic() - self.start >= wall * 60:
            return 0
        most = self.spec.packing.max
        if self.target is None:
            return most
        left = self.target - self.already - self.finished_here - self.running
        return pack_size(left, most, self.spec.max_concurrent)

    def _launch(self, n: int) -> None:
        """Ask ``n`` trials and launch them, one task per network shape among them."""
        packs: dict[str, list[_Running]] = {}
        for _ in range(n):
            trial = self.study.ask()
            overrides = suggest(trial, self.spec.search, self.spec.base_config())
            try:
                config = self.spec.config_for(overrides)
            except ValidationError as e:  # a value inside a range the corner checks missed
                trial.set_user_attr("failure_reason",
                                    f"invalid configuration: {format_errors(e)}")
                self.study.tell(trial, state=TrialState.FAIL)
                self._count("FAIL")
                continue
            config_dict = config.model_dump(mode="json")
            run_id = self.tracker.start_trial(trial.number, config_dict, trial.params)
            trial.set_user_attr("config", config_dict)
            if run_id is not None:  # a background tracker links its runs itself
                trial.set_user_attr("mlflow_run_id", run_id)
            packs.setdefault(pack_key(config), []).append(_Running(trial, config_dict, run_id))
        res = self.spec.resources
        for pack in packs.values():
            jobs = [TrialJob(self.storage.optuna, r.trial.number, r.config, self.spec,
                             self.feed) for r in pack]
            options: dict[str, Any] = dict(num_cpus=res.cpus, num_gpus=res.gpu, max_retries=1)
            if res.memory_gb is not None:
                options["memory"] = int(res.memory_gb * len(pack) * GIB)
            self.pending[_train_pack_task.options(**options).remote(jobs)] = pack

    def _count(self, state: str) -> None:
        self.finished_here += 1
        self.counts[TrialState[state]] += 1

    def _collect(self, ref: ray.ObjectRef) -> None:
        pack = self.pending.pop(ref)
        try:
            outs: list[TrialOutcome | None] = ray.get(ref)
        except ray.exceptions.RayTaskError as e:  # the task raised (Ray does not retry that)
            outs = [TrialOutcome.failed(f"task raised {error_line(e.cause or e)}")] * len(pack)
        except ray.exceptions.RayError as e:  # its worker or node died, and again on the retry
            reason = f"worker died (retried once): {error_line(e)}"
            outs = []
            for running in pack:
                if "requeued_from" in running.trial.user_attrs:
                    outs.append(TrialOutcome.failed(reason))
                    continue
                # run its params once more, elsewhere
                number = running.trial.number
                frozen = self.rdb.get_trial(trial_id(self.rdb, self.study, number))
                requeue(self.study, self.rdb, frozen, reason, self.tracker, self.spec.seed_list)
                self.counts[TrialState.FAIL] += 1  # shown, but not counted toward the budget
                self.requeued += 1
                outs.append(None)
        for running, out in zip(pack, outs):
            if out is not None:
                # spooled right after the tell (the upload is the tracker's background work): a
                # driver killed after this never leaves a told trial's MLflow run open
                self.tracker.end_trial(running.run_id, *self._tell(running, out))
        self._fill()

    def _tell(self, running: _Running, out: TrialOutcome) -> tuple[TrialRecord, dict]:
        """Tell Optuna one trial's outcome; its record and figures for the tracker."""
        trial = running.trial
        if not out.recorded:  # the worker did not write them (it died, or could not)
            for key, value in out.user_attrs().items():
                trial.set_user_attr(key, value)
        if out.state == "COMPLETE":
            self.study.tell(trial, out.value)
            self._note_best(out.value, trial.number)
        else:
            self.study.tell(trial, state=TrialState[out.state])
        self._count(out.state)
        record = TrialRecord(number=trial.number, state=out.state, config=running.config,
                             params=trial.params, seeds=self.spec.seed_list, rows=out.rows,
                             result=out.result, objective=out.value, reason=out.reason,
                             report_seconds=out.report_seconds, epoch_ms=out.epoch_ms)
        return record, out.figures

    def _fill(self) -> None:
        while n := self._room():
            self._launch(n)

    def status(self) -> Status:
        best, best_number = self.best if self.best is not None else (None, None)
        elapsed = time.monotonic() - self.start
        eta = None
        if self.target is not None and self.finished_here:
            left = self.target - self.already - self.finished_here
            eta = elapsed / self.finished_here * max(left, 0)
        wall = self.spec.budget.wall_minutes
        if wall is not None:
            eta = min(eta if eta is not None else math.inf, max(wall * 60 - elapsed, 0))
        return Status(self.study.study_name, self.counts[TrialState.COMPLETE],
                      self.counts[TrialState.PRUNED],
                      self.counts[TrialState.FAIL] - self.requeued, self.running,
                      self.target, best, best_number, elapsed, eta, requeued=self.requeued)

    def run(self) -> None:
        """Run to the budget; ``StopRequested`` after ``request_stop``, ``LeaseLost`` if
        another driver took the study (the caller re-queues what runs: ``interrupt``)."""
        self.feed = open_feed()
        self.reader = FeedReader(self.feed)
        self._fill()
        while self.pending:
            if self.stop_requested:
                raise StopRequested("stop requested (SIGTERM)")
            self._heartbeat()
            self._stream()
            if self.progress:
                self.progress(self.status())
            ready, _ = ray.wait(list(self.pending), num_returns=1, timeout=1.0)
            for ref in ready:
                self._collect(ref)
            self._fill()
        if self.progress:
            self.progress(self.status())

    def _stream(self) -> None:
        """Hand the live rows that arrived to the tracker (``FeedReader``: never waits)."""
        if self.reader is None:
            return
        for number, (rows, epoch_ms) in self.reader.poll().items():
            self.tracker.log_epochs(number, rows, epoch_ms)

    def _heartbeat(self) -> None:
        if self.lease is not None and time.monotonic() - self.renewed >= self.heartbeat:
            self.lease = renew(self.study, self.lease)
            self.renewed = time.monotonic()

    def interrupt(self) -> None:
        """Cancel the running trials and re-queue them; one that cannot be re-queued now (the
        storage is down) is left RUNNING for ``resume``, never hiding the original error."""
        for ref in self.pending:
            ray.cancel(ref, force=True)
        for running in (r for pack in self.pending.values() for r in pack):
            try:
                frozen = self.rdb.get_trial(trial_id(self.rdb, self.study, running.trial.number))
                requeue(self.study, self.rdb, frozen, "interrupted", self.tracker,
                        self.spec.seed_list)
            except Exception as e:
                warnings.warn(f"trial {running.trial.number} not re-queued ({error_line(e)}); "
                              f"`dagstudy resume {self.study.study_name}` will", stacklevel=2)
        self.pending.clear()


