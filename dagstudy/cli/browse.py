"""The browsing commands: ``ui`` (the MLflow UI of the local store) and ``dashboard`` (Optuna's
own dashboard on a study's storage). Both bind to 127.0.0.1 by default: neither has any
authentication, so exposing them is a deliberate ``--host`` choice."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from dagstudy.cli.errors import UsageError
from dagstudy.urls import redact_url

if TYPE_CHECKING:
    from dagstudy.study.storage import Storage


def port(value: int, flag: str = "--port") -> int:
    """``value`` if it is a TCP port (1-65535), else a one-line ``UsageError``."""
    if not 1 <= value <= 65535:
        raise UsageError(f"{flag}: {value} is not a port (allowed: 1-65535)")
    return value


def add_parsers(sub) -> None:
    p = sub.add_parser("ui", help="start the MLflow UI for the local store (127.0.0.1:5000)",
                       description="Start the MLflow UI on the local MLflow store (one worker). "
                       "For an MLflow server, open that server's own UI.")
    p.add_argument("--run-dir", default=None, help="local storage directory (default: "
                   "$DAGSTUDY_HOME, else ./dagstudy-runs)")
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to bind (default: 127.0.0.1, this machine only; the UI "
                   "has no authentication)")
    p.add_argument("--port", type=int, default=5000, help="TCP port, 1-65535 (default: 5000)")
    p.add_argument("--workers", type=int, default=1,
                   help="server worker processes (default: 1; each takes about 0.6 GB)")
    p.set_defaults(run=_cmd_ui)

    p = sub.add_parser("dashboard", help="start optuna-dashboard on a study's storage "
                       "(127.0.0.1:8080; needs the 'dashboard' extra)",
                       description="Start Optuna's own dashboard (optuna-dashboard) on the "
                       "storage of STUDY: optimisation history, importances, parallel "
                       "coordinates, per-trial intermediate values. Install it with "
                       "pip install 'dagstudy[dashboard]'.")
    p.add_argument("study", help="study file or name")
    p.add_argument("--storage", default=None, help="Optuna URL (default: as the study resolves)")
    p.add_argument("--run-dir", default=None, help="local storage directory")
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to bind (default: 127.0.0.1; the dashboard has no "
                   "authentication)")
    p.add_argument("--port", type=int, default=8080, help="TCP port, 1-65535 (default: 8080)")
    p.set_defaults(run=_cmd_dashboard)


JOBS_OFF = ("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
"""The environment variable that keeps MLflow's GenAI job runner (two Huey processes, ~2.5 s
more to start) out of the UI: dagstudy runs no MLflow jobs."""


def ui_command(storage: Storage, port: int = 5000, host: str = "127.0.0.1",
               workers: int = 1) -> list[str]:
    """The ``mlflow ui`` command for a local store: bound to ``host`` with ``workers`` server
    processes (MLflow's default of 4 takes ~2.6 GB and starts slowly)."""
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", storage.mlflow,
           "--host", host, "--port", str(port), "--workers", str(workers)]
    if storage.artifacts:
        cmd += ["--default-artifact-root", storage.artifacts]
    return cmd


def _cmd_ui(args) -> int:
    from dagstudy.study.storage import StorageError, storage_for

    port(args.port)
    if args.workers < 1:
        raise UsageError("--workers: must be >= 1")
    try:
        storage = storage_for(None, args.run_dir, create=False)
    except StorageError as e:
        raise UsageError(str(e)) from None
    if not storage.mlflow.startswith("sqlite"):
        print(f"MLflow tracking is at {redact_url(storage.mlflow)}: open that server's UI")
        return 0
    print(f"starting the MLflow UI on http://{args.host}:{args.port} (store "
          f"{redact_url(storage.mlflow)}); it answers once MLflow has loaded, Ctrl-C stops it",
          flush=True)
    command = ui_command(storage, args.port, args.host, args.workers)
    os.environ.setdefault(*JOBS_OFF)
    os.execv(command[0], command)  # the UI replaces this process: signals reach it directly


def _cmd_dashboard(args) -> int:
    port(args.port)
    try:
        from optuna_dashboard import run_server
    except ImportError:
        raise UsageError("optuna-dashboard is not installed: pip install "
                         "'dagstudy[dashboard]' (or pip install optuna-dashboard)") from None
    from dagstudy.cli.study import stored_study
    from dagstudy.study.storage import open_storage

    study, storage = stored_study(args)
    rdb = open_storage(storage.optuna)
    study_id = rdb.get_study_id_from_name(study.study_name)
    print(f"optuna-dashboard for study {study.study_name}: "
          f"http://{args.host}:{args.port}/dashboard/studies/{study_id}  (storage "
          f"{redact_url(storage.optuna)}; Ctrl-C stops it)", flush=True)
    try:
        run_server(rdb, host=args.host, port=args.port)
    except KeyboardInterrupt:
        return 0
    return 0
