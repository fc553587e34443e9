"""Where a study lives, and its Optuna storage opened for many processes.

``storage_for(spec, run_dir)``: the spec's ``storage`` section, else the environment
(``DAGSTUDY_OPTUNA_STORAGE``, ``MLFLOW_TRACKING_URI``), else SQLite files under the run
directory: ``--run-dir``, else ``$DAGSTUDY_HOME``, else ``./dagstudy-runs``
(``optuna.db``, ``mlflow.db`` and ``mlartifacts/``).

``storage.optuna`` is an RDB URL (``sqlite:///...``, ``postgresql://...``), or
``grpc://HOST:PORT``: Optuna's gRPC storage proxy (``dagstudy storage-proxy``) in front of the
RDB, so that the driver and the workers hold no database connections, only the proxy does
(needs ``grpcio``: the ``grpc`` extra).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna
import sqlalchemy

from dagstudy.study.spec import StorageSpec, StudySpec
from dagstudy.urls import redact_url

DEFAULT_RUN_DIR = "dagstudy-runs"


def run_dir_for(run_dir: str | os.PathLike[str] | None = None) -> Path:
    """``run_dir``, else ``$DAGSTUDY_HOME``, else ``./dagstudy-runs`` (absolute)."""
    chosen = run_dir or os.environ.get("DAGSTUDY_HOME") or DEFAULT_RUN_DIR
    return Path(chosen).expanduser().resolve()


@dataclass(frozen=True)
class Storage:
    """Resolved locations: Optuna RDB URL, MLflow tracking URI, artifact location (beside a
    SQLite MLflow database; None for a tracking server, which decides)."""

    optuna: str
    mlflow: str
    artifacts: str | None


def storage_for(spec: StudySpec | None = None, run_dir: str | os.PathLike | None = None,
                *, create: bool = True) -> Storage:
    """Where a study lives (see the module docstring for the order of precedence). A local
    store's run directory is created, unless ``create`` is False (commands that read an
    existing study): then a missing run directory is a ``StorageError``."""
    base = run_dir_for(run_dir)
    given = spec.storage if spec is not None else StorageSpec()
    optuna_url = given.optuna or os.environ.get("DAGSTUDY_OPTUNA_STORAGE")
    mlflow_uri = given.mlflow or os.environ.get("MLFLOW_TRACKING_URI")
    artifacts = given.artifacts
    if not create and (optuna_url is None or mlflow_uri is None) and not base.is_dir():
        raise StorageError(f"--run-dir: {base} does not exist (no study has run there)")
    if optuna_url is None:
        base.mkdir(parents=True, exist_ok=True)
        optuna_url = f"sqlite:///{base / 'optuna.db'}"
    if mlflow_uri is None:
        base.mkdir(parents=True, exist_ok=True)
        mlflow_uri = f"sqlite:///{base / 'mlflow.db'}"
    if artifacts is None and mlflow_uri.startswith("sqlite:///"):
        # beside the database, never MLflow's default of ./mlruns in the working directory
        database = Path(mlflow_uri.removeprefix("sqlite:///"))
        artifacts = (database.parent.resolve() / "mlartifacts").as_uri()
    return Storage(optuna_url, mlflow_uri, artifacts)


def _sqlite_pragmas(connection, _record) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer, nor it them
    cursor.execute("PRAGMA synchronous=NORMAL")  # no fsync per commit; safe with WAL
    cursor.close()


GRPC_SCHEME = "grpc://"
GRPC_READY_SECONDS = 30.0
"""How long ``open_storage`` waits for a gRPC storage proxy to answer."""


def grpc_address(url: str) -> tuple[str, int]:
    """``(host, port)`` of a ``grpc://HOST:PORT`` URL; ``ValueError`` (one line) otherwise."""
    host, sep, port = url.removeprefix(GRPC_SCHEME).rstrip("/").rpartition(":")
    if not (url.startswith(GRPC_SCHEME) and sep and host and port.isdigit()
            and 1 <= int(port) <= 65535):
        raise ValueError(f"{url!r} is not grpc://HOST:PORT (PORT 1-65535)")
    return host, int(port)


def open_grpc(url: str, timeout: float | None = None) -> optuna.storages.BaseStorage:
    """Optuna's ``GrpcStorageProxy`` client for ``grpc://HOST:PORT``, once the proxy answers
    (``ConnectionError`` after ``timeout`` seconds, default ``GRPC_READY_SECONDS``).
    Picklable: a Ray task reconnects."""
    host, port = grpc_address(url)
    with warnings.catch_warnings():  # experimental since Optuna 4.2; we pin and test it
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        proxy = optuna.storages.GrpcStorageProxy(host=host, port=port)
    proxy.wait_server_ready(timeout=GRPC_READY_SECONDS if timeout is None else timeout)
    return proxy


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """The Optuna storage at ``url``: ``open_grpc`` for ``grpc://``; else an Optuna RDB
    storage for many processes at once, a ``dagstudy.storage``
    ``RetryingRDBStorage``: processes opening an empty database at the same moment do not
    trip over each other creating its schema. SQLite (one machine only) runs in WAL mode and
    waits up to 60 s for a lock, which makes a trial's per-epoch report about 3x cheaper and
    lets queries read while trials write; it retries nothing else. Other databases ping pooled
    connections before use and ride out a restart of the database server (retrying lost
    connections for up to ``DAGSTUDY_STORAGE_RETRY_SECONDS``, default 120 s, per outage)."""
    from dagstudy.study.rdb import RetryingRDBStorage

    if url.startswith(GRPC_SCHEME):
        return open_grpc(url)
    if not url.startswith("sqlite"):
        return RetryingRDBStorage(url, engine_kwargs={"pool_pre_ping": True})
    storage = RetryingRDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}},
                                 retry_seconds=0)
    sqlalchemy.event.listen(storage.engine, "connect", _sqlite_pragmas)
    storage.engine.dispose()  # pooled connections reconnect with the pragmas
    return storage


class StorageError(ValueError):
    """An Optuna storage URL that cannot be opened or read; one line, password redacted."""


def open_study_storage(url: str) -> tuple[optuna.storages.BaseStorage, list[str]]:
    """``open_storage(url)`` and the names of its studies, or ``StorageError`` naming the URL
    and the problem (an unknown database scheme, a file that is not a database, a missing
    driver, a server that refuses, a gRPC proxy that does not answer) in one line."""
    from dagstudy.study.rdb import error_line

    try:
        rdb = open_storage(url)
        return rdb, [s.study_name for s in rdb.get_all_studies()]
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, optuna.exceptions.StorageInternalError,
            ValueError, ConnectionError) as e:
        raise StorageError(f"storage.optuna: cannot open {redact_url(url)}: "
                           f"{error_line(e)}") from None
