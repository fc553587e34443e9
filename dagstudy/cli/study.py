"""The study commands: ``run``, ``resume``, ``submit``, ``best``, ``sync``, ``ui``."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import TYPE_CHECKING

from pydantic import ValidationError

from dagstudy.cli.errors import UsageError
from dagstudy.urls import redact_url

if TYPE_CHECKING:
    from dagstudy.study.storage import Storage


def _load_study_spec(path: str):
    from dagstudy.study.loader import load_spec
    from dagstudy.study.spec import SpecError

    try:
        return load_spec(path)
    except SpecError as e:
        raise UsageError(f"{path}: {e}") from None


def _is_file(study: str) -> bool:
    return study.endswith((".yaml", ".yml")) or os.path.isfile(study)


def add_parsers(sub) -> None:
    def ray_options(p) -> None:
        p.add_argument("--address", default=None,
                       help="Ray cluster to join (default: $RAY_ADDRESS, else a local Ray)")
        p.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray")
        p.add_argument("--trials", type=int, default=None, help="override budget.trials")
        p.add_argument("--run-dir", default=None,
                       help="local storage (default: $DAGSTUDY_HOME, else ./dagstudy-runs)")

    p = sub.add_parser("run", help="run a study file: trials on Ray, Optuna search, MLflow")
    p.add_argument("study", help="study file, e.g. studies/smoke.yaml")
    ray_options(p)
    p.set_defaults(run=_cmd_run)
    p = sub.add_parser("resume", help="continue an interrupted study (file or name)")
    p.add_argument("study", help="study file, or the name of a study in the storage")
    p.add_argument("--storage", default=None, help="Optuna URL to find a study by name in")
    ray_options(p)
    p.set_defaults(run=_cmd_run)
    p = sub.add_parser("submit", help="submit a study file as a Ray job to a cluster")
    p.add_argument("study", help="study file")
    p.add_argument("--address", default=os.environ.get("RAY_ADDRESS"),
                   help="Ray dashboard, e.g. http://HEAD:8265 (default: $RAY_ADDRESS)")
    p.add_argument("--run-dir", default=None, help="run directory on the head node")
    p.add_argument("--trials", type=int, default=None, help="override budget.trials")
    p.set_defaults(run=_cmd_submit)
    p = sub.add_parser("best", help="best configurations and parameter importances")
    p.add_argument("study", help="study file or name")
    p.add_argument("--k", type=int, default=5, help="how many configurations")
    p.add_argument("--json", action="store_true", help="print JSON on stdout")
    p.add_argument("--storage", default=None, help="Optuna URL (default: as the study resolves)")
    p.add_argument("--run-dir", default=None, help="local storage directory")
    p.set_defaults(run=_cmd_best)
    p = sub.add_parser("sync", help="upload tracking records spooled while MLflow was down")
    p.add_argument("study", help="study file or name")
    p.add_argument("--storage", default=None, help="Optuna URL (default: as the study resolves)")
    p.add_argument("--run-dir", default=None, help="run directory holding the spool")
    p.set_defaults(run=_cmd_sync)
    p = sub.add_parser("ui", help="start the MLflow UI for the local store on 127.0.0.1")
    p.add_argument("--run-dir", default=None, help="local storage directory")
    p.add_argument("--port", type=int, default=5000)
    p.set_defaults(run=_cmd_ui)


def _study_spec(args):
    """The spec to run or resume: from the file, or stored in the study found by name."""
    if _is_file(args.study):
        return _load_study_spec(args.study)
    from dagstudy.study.query import load_study
    from dagstudy.study.spec import SpecError, StorageSpec, StudySpec
    from dagstudy.study.storage import StorageError, storage_for

    try:
        url = args.storage or storage_for(None, args.run_dir, create=False).optuna
        spec = StudySpec(**load_study(args.study, url).user_attrs["spec"])
    except KeyError as e:
        raise UsageError(f"study: {e.args[0]}") from None
    except StorageError as e:
        raise UsageError(str(e)) from None
    except (ValidationError, SpecError) as e:
        raise UsageError(f"stored spec of {args.study}: {e}") from None
    return spec.model_copy(update={"storage": StorageSpec(optuna=args.storage)})


def _cmd_run(args) -> int:
    import logging

    spec = _study_spec(args) if args.command == "resume" else _load_study_spec(args.study)
    if args.trials is not None and args.trials < 1:
        raise UsageError("--trials: must be >= 1")
    import optuna

    from dagstudy.study.driver import StudyError, run_study, summary
    from dagstudy.study.loop import StopRequested
    from dagstudy.study.progress import progress_printer
    from dagstudy.study.storage import StorageError, storage_for

    if args.command == "resume" and not spec.storage.optuna:
        try:  # resuming reads a store that exists; it never creates an empty one
            storage_for(spec, args.run_dir, create=False)
        except StorageError as e:
            raise UsageError(str(e)) from None
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = run_study(spec, run_dir=args.run_dir, trials=args.trials, address=args.address,
                          num_cpus=args.num_cpus, resume=args.command == "resume",
                          progress=progress_printer())
    except StudyError as e:
        raise UsageError(str(e)) from None
    except (KeyboardInterrupt, StopRequested, SystemExit) as e:  # Ctrl-C; SIGTERM
        print(f"\ninterrupted; running trials re-queued; continue with: dagstudy resume "
              f"{spec.name}", file=sys.stderr)
        return 130 if isinstance(e, KeyboardInterrupt) else 143
    print(summary(study, spec, storage_for(spec, args.run_dir)))
    where = f" --run-dir {args.run_dir}" if args.run_dir else ""
    print(f"next: dagstudy best {spec.name}{where}   |   dagstudy ui{where}")
    return 0


def _cmd_submit(args) -> int:
    spec = _load_study_spec(args.study)
    if not args.address:
        raise UsageError("--address: required (the Ray dashboard, e.g. http://HEAD:8265)")
    if args.trials is not None and args.trials < 1:
        raise UsageError("--trials: must be >= 1")
    from dagstudy.study.cluster import submit

    job_id = submit(args.study, args.address, run_dir=args.run_dir, trials=args.trials)
    print(job_id)
    print(f"submitted study {spec.name}; follow its logs with:\n"
          f"  ray job logs --address {args.address} --follow {job_id}", file=sys.stderr)
    return 0


def _stored_study(args):
    """The Optuna study that ``args.study`` (a file or a name) names, and its ``Storage``
    (``--storage`` overrides the Optuna URL)."""
    from dagstudy.study.query import load_study
    from dagstudy.study.storage import StorageError, storage_for

    spec = _load_study_spec(args.study) if _is_file(args.study) else None
    try:
        storage = storage_for(spec, args.run_dir, create=bool(args.storage))
        if args.storage:
            storage = dataclasses.replace(storage, optuna=args.storage)
        return load_study(spec.name if spec else args.study, storage.optuna), storage
    except KeyError as e:
        raise UsageError(f"study: {e.args[0]}") from None
    except StorageError as e:
        raise UsageError(str(e)) from None


def _cmd_best(args) -> int:
    from dagstudy.study.query import best_configs, param_importances

    if args.k < 1:
        raise UsageError("--k: must be >= 1")
    study, storage = _stored_study(args)
    name, url = study.study_name, storage.optuna
    best = best_configs(name, k=args.k, storage=url)
    try:
        importances, note = param_importances(study), None
    except ValueError as e:
        importances, note = None, f"unavailable: {e}"
    if args.json:
        print(json.dumps({"study": name, "best": best.to_dict(orient="records"),
                          "importances": importances, "importances_note": note}, default=str))
        return 0
    if best.empty:
        print(f"study {name}: no complete trial yet")
    else:
        shown = best.drop(columns=["config", "state", "datetime_start"])
        print(shown.to_string(index=False))
    print("parameter importances:", note or "")
    for param, value in (importances or {}).items():
        print(f"  {param:32} {value:.3f}")
    return 0


def _cmd_sync(args) -> int:
    import logging

    from dagstudy.study.driver import spool_dir, sync_study

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    study, storage = _stored_study(args)
    where = spool_dir(study.study_name, args.run_dir)
    left = sync_study(study, storage, args.run_dir)
    if left:
        print(f"{left} records still wait in {where}: MLflow ({redact_url(storage.mlflow)}) "
              "is unreachable; run this again when it is back", file=sys.stderr)
        return 1
    print(f"study {study.study_name}: MLflow ({redact_url(storage.mlflow)}) is up to date")
    return 0


def _cmd_ui(args) -> int:
    from dagstudy.study.storage import StorageError, storage_for

    try:
        storage = storage_for(None, args.run_dir, create=False)
    except StorageError as e:
        raise UsageError(str(e)) from None
    if not storage.mlflow.startswith("sqlite"):
        print(f"MLflow tracking is at {redact_url(storage.mlflow)}: open that server's UI")
        return 0
    print(f"MLflow UI: http://127.0.0.1:{args.port}  (store {redact_url(storage.mlflow)}; "
          "Ctrl-C stops it)",
          flush=True)
    command = ui_command(storage, args.port)
    os.execv(command[0], command)  # the UI replaces this process: signals reach it directly


def ui_command(storage: Storage, port: int = 5000) -> list[str]:
    """The ``mlflow ui`` command for a local store, bound to 127.0.0.1."""
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", storage.mlflow,
           "--host", "127.0.0.1", "--port", str(port)]
    if storage.artifacts:
        cmd += ["--default-artifact-root", storage.artifacts]
    return cmd
