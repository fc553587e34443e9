"""An Optuna RDB storage that rides out a restart of its database server.

``RetryingRDBStorage`` is an ``optuna.storages.RDBStorage`` (Optuna still wraps it in its
``_CachedStorage``) whose storage calls retry when the connection to the database is lost, so a
PostgreSQL restart pauses a study instead of ending it: the driver's ``ask``/``tell`` and
queries, and a worker's ``trial.report``/``should_prune``, wait for the server to come back.

What is retried: every method in ``RETRIED_METHODS`` (the ``BaseStorage`` API, the heartbeat
API and the private entry points ``_CachedStorage`` calls), ``set_trial_state_values``, and the
constructor (it creates and checks the schema; it also starts over, a few times, when other
processes were creating the schema at the same moment). What counts as a lost connection
(``is_connection_loss``): SQLAlchemy's ``OperationalError`` or ``InterfaceError``, or any
``DBAPIError`` that invalidated its connection, raised directly or as the cause of Optuna's
``StorageInternalError``. PostgreSQL raises ``OperationalError`` for a few other transient
conditions too (a deadlock, a statement timeout, a full disk): those are retried alike. A
refusal that waiting cannot fix (a wrong or missing password, no such database or role:
``REFUSALS``) and every other error (``IntegrityError``, ``DuplicatedStudyError``,
``UpdateFinishedTrialError``, ``KeyError``, ...) propagate at once.

Timing: waits of 0.5 s, doubling up to 5 s, between attempts. An outage starts at the first
lost connection and ends at the next successful call; calls give up (re-raising the last error)
once an outage has lasted ``retry_seconds`` (default 120 s; ``DAGSTUDY_STORAGE_RETRY_SECONDS``;
0 turns retrying off). Each outage warns once (``StorageRetryWarning``) and logs its end, with
the URL's password shown as ``***``. After giving up, calls fail at once (no retrying) until
one succeeds. Each process reads the variable from its own environment: Ray workers from the
one their node's Ray was started with.

Not idempotent: a write whose commit reached the server but whose acknowledgement was lost with
the connection runs again on retry.

- ``create_new_trial`` (``study.ask``) then leaves an extra trial RUNNING that nobody owns;
  ``dagstudy resume`` fails it (``driver died``) and re-queues it, which runs one extra trial.
- ``set_trial_state_values`` from WAITING to RUNNING (``ask`` popping a re-queued trial) finds
  the trial RUNNING and returns False: Optuna takes the next waiting trial and the popped one is
  left RUNNING, as above.
- ``set_trial_state_values`` to a finished state (``study.tell``) finds the trial finished. That
  case is reconciled: the call returns True when the stored state and values are the ones asked
  for (instead of raising ``UpdateFinishedTrialError``).
- ``create_new_study`` raises ``DuplicatedStudyError``; ``delete_study`` raises ``KeyError``.

Value and attribute writes (``set_trial_param``, intermediate values, user and system
attributes) are upserts: running them twice is harmless.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import random
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import optuna
import sqlalchemy
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from dagstudy.urls import redact_url

RETRY_ENV = "DAGSTUDY_STORAGE_RETRY_SECONDS"
DEFAULT_RETRY_SECONDS = 120.0
FIRST_DELAY = 0.5
"""Seconds before the first retry; each later wait doubles, up to ``MAX_DELAY``."""
MAX_DELAY = 5.0
SCHEMA_ATTEMPTS = 5

RETRIED_METHODS = (
    # BaseStorage: studies
    "create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr",
    "get_study_id_from_name", "get_study_name_from_id", "get_study_directions",
    "get_study_user_attrs", "get_study_system_attrs", "get_all_studies",
    # BaseStorage: trials (set_trial_state_values is defined in the class)
    "create_new_trial", "set_trial_param", "get_trial_id_from_study_id_trial_number",
    "get_trial_number_from_id", "get_trial_param", "set_trial_intermediate_value",
    "set_trial_user_attr", "set_trial_system_attr", "get_trial", "get_all_trials",
    "get_n_trials", "get_best_trial", "get_trial_params", "get_trial_user_attrs",
    "get_trial_system_attrs",
    # BaseHeartbeat
    "record_heartbeat", "_get_stale_trial_ids",
    # what optuna's _CachedStorage calls instead of the public methods above
    "_create_new_trial", "_set_trial_param", "_get_best_trial_id", "_get_trials",
)
"""``RDBStorage`` methods that touch the database and are retried on a lost connection."""
REFUSALS = ("authentication failed", "no password supplied", "no pg_hba.conf entry",
            "does not exist", "access denied")
"""Lower-case parts of driver messages (PostgreSQL, MySQL) refusing a connection for good."""

_logger = logging.getLogger(__name__)
_T = TypeVar("_T")


class StorageRetryWarning(UserWarning):
    """The Optuna storage lost its database connection; its calls are being retried."""


def retry_seconds_from_env() -> float:
    """``DAGSTUDY_STORAGE_RETRY_SECONDS`` (seconds, finite, >= 0), else 120; ``ValueError``
    naming the variable if it is set to anything else."""
    raw = os.environ.get(RETRY_ENV, "").strip()
    if not raw:
        return DEFAULT_RETRY_SECONDS
    try:
        return check_retry_seconds(float(raw))
    except ValueError:
        raise ValueError(f"{RETRY_ENV}={raw!r}: must be a number of seconds >= 0") from None


def check_retry_seconds(seconds: float) -> float:
    """``seconds`` if it is a finite number >= 0, else ``ValueError``."""
    if not (math.isfinite(seconds) and seconds >= 0):
        raise ValueError(f"retry_seconds must be a finite number >= 0, not {seconds!r}")
    return float(seconds)


def is_connection_loss(error: BaseException) -> bool:
    """Whether ``error`` (or, for Optuna's ``StorageInternalError``, its cause) says the
    connection to the database was lost or could not be made, except refusals that waiting
    cannot fix (``REFUSALS``: wrong password, no such database or role). SQLAlchemy's
    "Can't reconnect until invalid transaction is rolled back" counts as lost too: it is what
    a session says on its next statement after its connection died inside a transaction (Optuna
    catches the first error in ``_get_trials`` and retries the query without a rollback); the
    session is rolled back before ``StorageInternalError`` is raised, so the retry succeeds."""
    if isinstance(error, optuna.exceptions.StorageInternalError):
        error = error.__cause__
    if isinstance(error, sqlalchemy.exc.PendingRollbackError):
        return "reconnect until invalid transaction" in str(error)
    if not isinstance(error, sqlalchemy.exc.DBAPIError):
        return False
    if any(refusal in str(error.orig).lower() for refusal in REFUSALS):
        return False
    return (isinstance(error, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError))
            or error.connection_invalidated)


def _schema_race(error: BaseException) -> bool:
    """Whether creating the schema failed because another process was creating it too."""
    if isinstance(error, optuna.exceptions.StorageInternalError):
        error = error.__cause__
    return isinstance(error, sqlalchemy.exc.IntegrityError) or (
        isinstance(error, sqlalchemy.exc.DBAPIError) and "already exists" in str(error.orig))


def error_line(error: BaseException) -> str:
    """``Type: first line of the message`` of ``error`` (of its cause, for Optuna's
    ``StorageInternalError``), for reasons and warnings."""
    if isinstance(error, optuna.exceptions.StorageInternalError) and error.__cause__:
        error = error.__cause__
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"


class RetryingRDBStorage(RDBStorage):
    """``RDBStorage(url, engine_kwargs, **kwargs)`` whose database calls retry on a lost
    connection for up to ``retry_seconds`` per outage (None: ``retry_seconds_from_env()``).
    See the module docstring for what is retried and the non-idempotent cases."""

    def __init__(self, url: str, engine_kwargs: dict[str, Any] | None = None, *,
                 retry_seconds: float | None = None, **kwargs: Any) -> None:
        self.retry_seconds = (retry_seconds_from_env() if retry_seconds is None
                              else check_retry_seconds(retry_seconds))
        self.redacted_url = redact_url(url)
        self._outage_start: float | None = None  # time.monotonic() of the first lost call
        self._call(RetryingRDBStorage._connect, url, dict(engine_kwargs or {}), kwargs)

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickling reconnects (``RDBStorage.__setstate__``), retried like any call; an
        outage seen by the pickling process is not carried over (its clock is not ours)."""
        self.__dict__.update(state, _outage_start=None)
        self._call(RDBStorage.__setstate__, dict(self.__dict__))

    def _connect(self, url: str, engine_kwargs: dict[str, Any], kwargs: dict[str, Any]) -> None:
        """``RDBStorage.__init__``, made up to ``SCHEMA_ATTEMPTS`` times, after a random pause
        of up to ``FIRST_DELAY``, while other processes are creating the schema at the same
        moment (drivers starting together on an empty database)."""
        for attempt in range(1, SCHEMA_ATTEMPTS + 1):
            try:
                RDBStorage.__init__(self, url, dict(engine_kwargs), **kwargs)
                return
            except Exception as error:
                if "engine" in self.__dict__:
                    self.engine.dispose()  # the next attempt makes a new engine
                if attempt == SCHEMA_ATTEMPTS or not _schema_race(error):
                    raise
                time.sleep(random.uniform(0, FIRST_DELAY))

    def _call(self, method: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """``method(self, *args, **kwargs)``, retried while the connection is lost."""
        delay = FIRST_DELAY
        while True:
            try:
                result = method(self, *args, **kwargs)
            except Exception as error:
                lost = self.retry_seconds > 0 and is_connection_loss(error)
                left = self._outage_left(error) if lost else 0.0
                if left <= 0:
                    raise
                time.sleep(min(delay, left))
                delay = min(2 * delay, MAX_DELAY)
                continue
            self._outage_over()
            return result

    def _outage_left(self, error: BaseException) -> float:
        """Seconds the current outage may still last; warns when ``error`` starts one."""
        now = time.monotonic()
        if self._outage_start is None:
            self._outage_start = now
            # The time of day keeps each outage's message distinct, so that Python's default
            # warning filter (once per message and place) never hides a later one.
            warnings.warn(
                f"Optuna storage {self.redacted_url} unreachable at {time.strftime('%X')} "
                f"({error_line(error)}); retrying for up to {self.retry_seconds:g} s",
                StorageRetryWarning, stacklevel=4)
        return self._outage_start + self.retry_seconds - now

    def _outage_over(self) -> None:
        if self._outage_start is not None:
            _logger.warning("Optuna storage %s reachable again after %.1f s", self.redacted_url,
                            time.monotonic() - self._outage_start)
            self._outage_start = None

    def set_trial_state_values(self, trial_id: int, state: TrialState,
                               values: Sequence[float] | None = None) -> bool:
        """``RDBStorage.set_trial_state_values``, retried; after a lost connection, a trial
        found finished with exactly this ``state`` and ``values`` counts as set (True)."""
        lost: list[BaseException] = []

        def attempt(storage: RetryingRDBStorage) -> bool:
            try:
                return RDBStorage.set_trial_state_values(storage, trial_id, state, values)
            except optuna.exceptions.UpdateFinishedTrialError:
                if lost and storage._stored_as(trial_id, state, values):
                    return True
                raise
            except Exception as error:
                if is_connection_loss(error):
                    lost.append(error)
                raise

        return self._call(attempt)

    def _stored_as(self, trial_id: int, state: TrialState,
                   values: Sequence[float] | None) -> bool:
        trial = RDBStorage.get_trial(self, trial_id)
        return trial.state == state and (values is None or trial.values == list(values))


def _retried(name: str) -> Callable[..., Any]:
    @functools.wraps(getattr(RDBStorage, name))
    def method(self: RetryingRDBStorage, *args: Any, **kwargs: Any) -> Any:
        return self._call(getattr(RDBStorage, name), *args, **kwargs)

    return method


for _name in RETRIED_METHODS:
    setattr(RetryingRDBStorage, _name, _retried(_name))
