"""Where a study lives, and its Optuna storage opened for many processes.

``storage_for(spec, run_dir)``: the spec's ``storage`` section, else the environment
(``DAGSTUDY_OPTUNA_STORAGE``, ``MLFLOW_TRACKING_URI``), else SQLite files under the run
directory: ``--run-dir``, else ``$DAGSTUDY_HOME``, else ``./dagstudy-runs``
(``optuna.db``, ``mlflow.db`` and ``mlartifacts/``).
"""

from __future__ import annotations

import os
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


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """An Optuna RDB storage for many processes at once, a ``dagstudy.storage``
    ``RetryingRDBStorage``: processes opening an empty database at the same moment do not
    trip over each other creating its schema. SQLite (one machine only) runs in WAL mode and
    waits up to 60 s for a lock, which makes a trial's per-epoch report about 3x cheaper and
    lets queries read while trials write; it retries nothing else. Other databases ping pooled
    connections before use and ride out a restart of the database server (retrying lost
    connections for up to ``DAGSTUDY_STORAGE_RETRY_SECONDS``, default 120 s, per outage)."""
    from dagstudy.study.rdb import RetryingRDBStorage

    if not url.startswith("sqlite"):
        return RetryingRDBStorage(url, engine_kwargs={"pool_pre_ping": True})
    storage = RetryingRDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}},
                                 retry_seconds=0)
    sqlalchemy.event.listen(storage.engine, "connect", _sqlite_pragmas)
    storage.engine.dispose()  # pooled connections reconnect with the pragmas
    return storage


class StorageError(ValueError):
    """An Optuna storage URL that cannot be opened or read; one line, password redacted."""


def open_study_storage(url: str) -> tuple[optuna.storages.RDBStorage, list[str]]:
    """``open_storage(url)`` and the names of its studies, or ``StorageError`` naming the URL
    and the problem (an unknown database scheme, a file that is not a database, a missing
    driver, a server that refuses) in one line."""
    from dagstudy.study.rdb import error_line

    try:
        rdb = open_storage(url)
        return rdb, [s.study_name for s in rdb.get_all_studies()]
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, optuna.exceptions.StorageInternalError,
            ValueError) as e:
        raise StorageError(f"storage.optuna: cannot open {redact_url(url)}: "
                           f"{error_line(e)}") from None
