"""The MLflow client as the driver uses it: opened safely, health-checked, with short HTTP retries.

MLflow's HTTP client retries a failing call for about 4 minutes by default; the driver's calls
give up after a few seconds (``short_http_retries``) and the record waits in the spool.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import urllib.request
from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from dagstudy.urls import redact_url


class TrackingWarning(UserWarning):
    """An MLflow call failed; the study goes on (its records wait in the spool)."""


class TrackingAuthError(RuntimeError):
    """The MLflow tracking server refused this client's credentials (HTTP 401 or 403)."""


def check_access(uri: str) -> None:
    """Raise ``TrackingAuthError`` if the tracking server at ``uri`` refuses the credentials,
    so a study with wrong or missing ones stops before any work; an unreachable server or a
    local store passes (records spool until it answers)."""
    if not uri.startswith(("http://", "https://")) or not server_healthy(uri):
        return
    try:
        with short_http_retries():
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


def open_client(uri: str) -> MlflowClient:
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


def server_healthy(uri: str) -> bool:
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
def short_http_retries():
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


LOCAL_UI = "http://127.0.0.1:5000"
"""Where ``dagstudy ui`` serves a local store's MLflow UI by default."""


def runs_url(tracking_uri: str, experiment_id: str | None) -> str | None:
    """The MLflow UI page of an experiment's runs table: on the tracking server itself, or for
    a local store on ``dagstudy ui``'s default address. None without an experiment."""
    if experiment_id is None:
        return None
    base = (redact_url(tracking_uri).rstrip("/")
            if tracking_uri.startswith(("http://", "https://")) else LOCAL_UI)
    return f"{base}/#/experiments/{experiment_id}/runs"


def experiment_runs_url(tracking_uri: str, experiment: str) -> str | None:
    """``runs_url`` of the experiment named ``experiment``; None when MLflow does not answer
    or has no such experiment (a URL is a convenience, never an error)."""
    try:
        with short_http_retries():
            found = open_client(tracking_uri).get_experiment_by_name(experiment)
    except Exception:
        return None
    return runs_url(tracking_uri, found.experiment_id if found else None)
