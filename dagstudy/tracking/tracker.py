"""MLflow records of a study: one experiment per study (a tuning study's runs go to its
confirmation's experiment instead, its run nested under the confirmation's: ``experiment``,
``run_tags``), one parent run for the study, one nested child run per trial (tag
``mlflow.parentRunId``). Only the driver logs (``study.driver``).

The experiment is tagged ``mlflow.experimentKind = custom_model_development``, so MLflow 3
opens it on its runs table (not the GenAI traces overview).

A child run is created when its trial is launched (params: the configuration's used fields,
``records.config_params``; tags: study, trial number, idea IDs touched, ``dagstudy.config_hash``)
and completed when the trial ends, with per-epoch metrics (mean over seeds as ``<metric>``,
step = epoch, at the wall-clock time the epoch ended; test metrics only at the end), final
metrics (``objective``, ``final_<metric>_mean`` / ``_std``,
``trial_<params|wall_seconds|report_seconds|...>``), the tags ``dagstudy.state`` and
``failure_reason``, and artifacts: ``config.json`` (the resolved ``TrainConfig``, Optuna params,
seeds), ``results.json`` (the per-seed ``TrialResult``, or the per-epoch rows of a pruned or
failed trial) and the PNG plots ``learning_curves.png`` and ``dead_fraction.png`` (rendered by
the worker that trained the trial, ``tracking.figures``; rendered at upload when a record came
without them). Under it, one
child run per seed (``tracking.seeds``: param ``seed``, the shared ``dagstudy.config_hash`` tag,
that seed's curves), so MLflow's "group by" gives the mean and spread across seeds. The parent
run gets the study's settings as params and, at the end, the best trial's metrics,
``param_importances.png`` and ``optimization_history.png``.

Tracking never fails a trial. A study's tracker writes each finished trial's record to a spool
under the run directory before uploading it (``dagstudy.spool``); while MLflow is unreachable,
records wait there (one ``TrackingWarning`` per outage) and are uploaded when it answers again,
at the end of the study, or by ``dagstudy sync``. Uploads are idempotent, so MLflow ends with
one run per finished trial.

With ``background=True`` (what a study's driver uses) every MLflow call after the tracker is
created runs on a background thread (``tracking.background``): ``start_trial`` and ``end_trial``
only queue work (``end_trial`` writes the spool first), so the driver's ask/tell never waits
for MLflow, up or down. ``finish`` waits for the queued work, then ends the study's run.
"""

from __future__ import annotations

import json
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from mlflow.entities import Metric

from dagstudy.tracking.background import BackgroundLogger
from dagstudy.tracking.client import (
    TrackingWarning,
    open_client,
    server_healthy,
    short_http_retries,
)
from dagstudy.tracking.plots import plot_history, plot_importances
from dagstudy.tracking.records import (
    TrialRecord,
    flat_params,
    trial_run_id,
)
from dagstudy.tracking.seeds import log_batch
from dagstudy.tracking.spool import Spool
from dagstudy.tracking.trial_runs import StudyRuns
from dagstudy.urls import redact_url

EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
"""The experiment tag that makes MLflow 3 open an experiment on its runs table."""


class Tracker:
    """One study's MLflow records (see the module docstring).

    The records go to the MLflow experiment ``experiment`` (default: named after the study);
    a new experiment stores its artifacts under ``artifact_location/<experiment>`` (None: the
    tracking server decides). ``run_tags`` are added to (or replace) the tags of the study's
    run when it is created, e.g. ``mlflow.parentRunId`` to nest a tuning study under a
    confirmation's run, or ``dagstudy.role``. ``parent_run_id`` resumes an existing parent
    run; otherwise one is created with the study's ``settings`` (the spec as JSON) as params
    (all but the search space) and as ``study.json``.

    MLflow outages: with a ``spool``, every finished trial's record is written there first and
    removed once uploaded, so nothing is lost while MLflow is unreachable. After a failed call
    the tracker is offline: trials are spooled without calling MLflow, and every
    ``retry_seconds`` (seconds) it checks the server again; when it answers, the spool is
    uploaded oldest first. ``finish`` and ``sync`` try regardless of the wait. Runs created
    after the fact (a trial launched while offline, or the parent run) are reported through
    ``on_run_created(trial number or None for the parent, run id)``. One ``TrackingWarning``
    per outage; a tracking failure never raises.

    ``background``: MLflow work runs on a background thread with a queue of at most
    ``queue_size`` jobs (module docstring); needs a ``spool``. Trial runs it creates are
    reported through ``on_run_created`` too (called on that thread).
    """

    def __init__(self, tracking_uri: str, study: str, *, artifact_location: str | None = None,
                 parent_run_id: str | None = None, settings: dict[str, Any] | None = None,
                 spool: Spool | None = None,
                 on_run_created: Callable[[int | None, str], None] | None = None,
                 retry_seconds: float = 30.0, background: bool = False,
                 queue_size: int = 256, experiment: str | None = None,
                 run_tags: dict[str, str] | None = None):
        if background and spool is None:
            raise ValueError("Tracker: background=True needs a spool (records are written "
                             "there before their upload is queued)")
        self.uri = tracking_uri
        self.study = study
        self.experiment = experiment or study
        self._run_tags = run_tags or {}
        self.client = open_client(tracking_uri)
        self.experiment_id: str | None = None
        self.parent_run_id = parent_run_id
        self.spool = spool
        self.on_run_created = on_run_created
        self.retry_seconds = retry_seconds
        self._artifact_location = artifact_location
        self._settings = settings or {}
        self._resumed = parent_run_id is not None
        self._offline_since: float | None = None  # time.monotonic() of the last failure
        self._run_ids: dict[int, str] = {}  # trial runs created on the background thread
        self._ended: set[int] = set()  # trials end_trial was called for (background mode)
        self._ready(force=True)
        self._logger = BackgroundLogger(queue_size) if background else None

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
            if not server_healthy(self.uri):
                self._offline_since = time.monotonic()
                return False
        try:
            with short_http_retries():
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
            experiment = client.get_experiment_by_name(self.experiment)
            if experiment is None:
                location = (self._artifact_location
                            and f"{self._artifact_location.rstrip('/')}/{self.experiment}")
                experiment_id = client.create_experiment(
                    self.experiment, artifact_location=location,
                    tags={"dagstudy.study": self.study, **EXPERIMENT_KIND})
            else:
                experiment_id = experiment.experiment_id
                if "mlflow.experimentKind" not in experiment.tags:
                    client.set_experiment_tag(experiment_id, *next(iter(EXPERIMENT_KIND.items())))
            self.experiment_id = experiment_id
        if self._resumed:
            client.update_run(self.parent_run_id, status="RUNNING")
            self._resumed = False
        if self.parent_run_id is not None:
            return
        run = client.create_run(self.experiment_id, run_name=self.study,
                                tags={"dagstudy.study": self.study, "dagstudy.role": "study",
                                      **self._run_tags})
        self.parent_run_id = run.info.run_id
        if self.on_run_created is not None:
            self.on_run_created(None, self.parent_run_id)
        params = flat_params("", {k: v for k, v in self._settings.items() if k != "search"})
        self.log_batch(run.info.run_id, params=params)
        client.log_dict(run.info.run_id, self._settings, "study.json")

    def log_batch(self, run_id: str, metrics=(), params: dict | None = None,
                  tags: dict | None = None) -> None:
        """Metrics, params and tags in as few calls as MLflow's limits allow."""
        log_batch(self.client, run_id, metrics, params, tags)

    # --- trials -------------------------------------------------------------------------------

    def _runs(self) -> StudyRuns:
        assert self.experiment_id is not None and self.parent_run_id is not None
        return StudyRuns(self.client, self.experiment_id, self.parent_run_id, self.study)

    def start_trial(self, number: int, config: dict[str, Any],
                    params: dict[str, Any]) -> str | None:
        """Create trial ``number``'s child run (status RUNNING) with the configuration as
        params; returns its run id, or None while MLflow is unreachable. In background mode
        the run is created on the background thread: returns None at once (the run id goes to
        ``on_run_created``; a run that could not be created then is created at upload)."""
        if self._logger is not None:
            self._logger.submit(lambda: self._start_reported(number, config, params),
                                urgent=True)
            return None
        return self._create_run(number, config, params) if self._ready() else None

    def _start_reported(self, number: int, config: dict[str, Any],
                        params: dict[str, Any]) -> None:
        # A trial that ended already gets its run at upload (the flush in ``_ready`` may just
        # have made it): creating one here too would give it two.
        if not self._ready() or number in self._ended or number in self._run_ids:
            return
        run_id = self._create_run(number, config, params)
        if run_id is not None:
            self._run_ids[number] = run_id
            if self.on_run_created is not None:
                self.on_run_created(number, run_id)

    def _create_run(self, number: int, config: dict[str, Any],
                            params: dict[str, Any]) -> str | None:
        try:
            with short_http_retries():
                return self._runs().create(number, config, params)
        except Exception as e:
            self._went_offline(e)
        return None

    def log_epochs(self, number: int, rows: list[dict[str, Any]], epoch_ms: list[int]) -> None:
        """Live per-epoch rows of running trial ``number`` (``study.feed``) to its run, so its
        curves grow while it trains; ``epoch_ms``: when each row's epoch ended. Background
        mode only; rows are dropped while MLflow is unreachable, before the trial's run
        exists or after the trial ended: its upload logs every row at the same times."""
        if self._logger is not None and rows:
            self._logger.submit(lambda: self._log_epochs(number, rows, epoch_ms))

    def _log_epochs(self, number: int, rows: list[dict[str, Any]], epoch_ms: list[int]) -> None:
        run_id = self._run_ids.get(number)
        if run_id is None or number in self._ended or self._offline_since is not None:
            return
        try:
            with short_http_retries():
                self._runs().log_epochs(run_id, rows, epoch_ms)
        except Exception as e:
            self._went_offline(e)

    def _upload_reported(self, run_id: str | None, record: TrialRecord, timestamp: int,
                         figures: dict[str, bytes]) -> None:
        run_id = run_id or self._run_ids.get(record.number)
        uploaded = self._runs().upload(run_id, record, timestamp, figures)
        self._run_ids[record.number] = uploaded
        if uploaded != run_id and self.on_run_created is not None:
            self.on_run_created(record.number, uploaded)

    def _flush(self) -> bool:
        """Upload the spooled trial records, oldest first; False if MLflow failed."""
        if self.spool is None:
            return True
        for item in self.spool.trials():
            try:
                figures = ({p.name: p.read_bytes() for p in item.figures_dir.iterdir()}
                           if item.figures_dir.is_dir() else {})
                with short_http_retries():
                    self._upload_reported(item.run_id, TrialRecord(**item.record), item.timestamp,
                                          figures)
            except Exception as e:
                self._went_offline(e)
                return False
            self.spool.remove(item)
        return True

    def end_trial(self, run_id: str | None, record: TrialRecord,
                  figures: dict[str, bytes] | None = None) -> None:
        """Record a finished trial: spool it (with ``figures``, PNG bytes by file name), then
        upload its metrics, tags and artifacts and end its run (``run_id`` None: the run is
        created now, or at upload). In background mode the upload is queued: this returns
        once the record is spooled."""
        timestamp = int(time.time() * 1000)
        self._ended.add(record.number)
        if self.spool is not None:
            self.spool.put_trial(record.number, run_id, timestamp, record, figures)
            if self._logger is not None:
                self._logger.submit(self._ready)  # a refused job: the next flush uploads it
            else:
                self._ready()  # uploads the spool, this record included, if MLflow answers
            return
        if self._ready():
            try:
                with short_http_retries():
                    self._upload_reported(run_id, record, timestamp, figures or {})
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
            self.log_batch(run_id, metrics=[Metric("best_objective", best.value, now, 0)],
                      tags={"dagstudy.best_trial": best.number,
                            "dagstudy.best_run_id": trial_run_id(study, best)})
            with tempfile.TemporaryDirectory() as tmp:
                plot_history(study, Path(tmp) / "optimization_history.png")
                if importances:
                    plot_importances(importances, Path(tmp) / "param_importances.png",
                                     len(complete))
                    (Path(tmp) / "param_importances.json").write_text(json.dumps(importances))
                self.client.log_artifacts(run_id, tmp)
        self.client.set_terminated(run_id, status=status)

    def finish(self, study: optuna.Study, importances: dict[str, float] | None,
               status: str = "FINISHED") -> int:
        """Upload what is spooled, then end the parent run with ``status``; when the study has
        a best trial, log it and the summary plots. While MLflow is unreachable this is
        spooled too. Returns the number of records still waiting in the spool. In background
        mode this first waits for the queued work and stops the background thread."""
        self.drain(stop=True)
        if self._ready(force=True):
            try:
                with short_http_retries():
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

    def drain(self, stop: bool = False) -> None:
        """Wait until the background thread has done the work queued so far (and with
        ``stop``, stop it: later calls run in the caller's thread). No-op when not in
        background mode."""
        if self._logger is None:
            return
        if stop:
            self._logger.close()
            self._logger = None
        else:
            self._logger.drain()

    def sync(self, study: optuna.Study, importances: dict[str, float] | None) -> int:
        """Upload the spool and, if the study ended while MLflow was unreachable, finish the
        parent run. Returns the number of records still waiting."""
        status = self.spool.finish_status() if self.spool is not None else None
        if status is not None:
            return self.finish(study, importances, status)
        self._ready(force=True)
        return len(self.spool) if self.spool is not None else 0
