"""The study commands: ``run``, ``resume``, ``submit``, ``best``, ``sync`` (``ui`` and
``dashboard`` are in ``browse``)."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import textwrap

from pydantic import ValidationError

from dagstudy.cli.errors import UsageError
from dagstudy.urls import redact_url


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

    json_help = "print a JSON summary (counts, best trial, where results live) on stdout"
    p = sub.add_parser("run", help="run a study file: trials on Ray, Optuna search, MLflow")
    p.add_argument("study", help="study file, e.g. studies/smoke.yaml")
    ray_options(p)
    p.add_argument("--json", action="store_true", help=json_help)
    p.set_defaults(run=_cmd_run)
    p = sub.add_parser("resume", help="continue an interrupted study (file or name)")
    p.add_argument("study", help="study file, or the name of a study in the storage")
    p.add_argument("--storage", default=None, help="Optuna URL to find a study by name in")
    ray_options(p)
    p.add_argument("--json", action="store_true", help=json_help)
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
    p.add_argument("--wide", action="store_true",
                   help=f"every column (default: the key columns, within {BEST_WIDTH} columns)")
    p.add_argument("--storage", default=None, help="Optuna URL (default: as the study resolves)")
    p.add_argument("--run-dir", default=None, help="local storage directory")
    p.set_defaults(run=_cmd_best)
    p = sub.add_parser("sync", help="upload tracking records spooled while MLflow was down")
    p.add_argument("study", help="study file or name")
    p.add_argument("--storage", default=None, help="Optuna URL (default: as the study resolves)")
    p.add_argument("--run-dir", default=None, help="run directory holding the spool")
    p.set_defaults(run=_cmd_sync)


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
    from dagstudy.tracking.client import experiment_runs_url

    if args.command == "resume" and not spec.storage.optuna:
        try:  # resuming reads a store that exists; it never creates an empty one
            storage_for(spec, args.run_dir, create=False)
        except StorageError as e:
            raise UsageError(str(e)) from None
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(f"study {spec.name}: opening the storage...", file=sys.stderr, flush=True)
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
    storage = storage_for(spec, args.run_dir)
    url = experiment_runs_url(storage.mlflow, spec.name)
    if args.json:
        print(json.dumps(run_summary(study, storage, url), default=str))
        return 0
    print(summary(study, spec, storage))
    where = f" --run-dir {args.run_dir}" if args.run_dir else ""
    if url:
        print(f"mlflow runs: {url}")
    print(f"next: dagstudy best {spec.name}{where}   |   dagstudy ui{where}   |   "
          f"dagstudy dashboard {spec.name}{where}")
    return 0


def run_summary(study, storage, runs_url: str | None) -> dict:
    """``run --json``: the study's counts, its best trial and where its records live."""
    import optuna

    from dagstudy.tracking.records import trial_run_id

    states = [t.state.name for t in study.get_trials(deepcopy=False)]
    best = None
    if "COMPLETE" in states:
        t = study.best_trial
        best = {"number": t.number, "value": t.value, "params": t.params,
                "mlflow_run_id": trial_run_id(study, t)}
    return {"study": study.study_name,
            "direction": study.direction.name.lower(),
            **{s.lower(): states.count(s) for s in ("COMPLETE", "PRUNED", "FAIL")},
            "trials": len(states), "best": best,
            "optuna": redact_url(storage.optuna), "mlflow": redact_url(storage.mlflow),
            "mlflow_runs_url": runs_url,
            "optuna_version": optuna.__version__}


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


def stored_study(args):
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
    study, storage = stored_study(args)
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
        print(best_table(best, wide=args.wide))
    print("parameter importances:", note or "")
    for param, value in (importances or {}).items():
        print(f"  {param:32} {value:.3f}")
    return 0


def _cmd_sync(args) -> int:
    import logging

    from dagstudy.study.driver import spool_dir, sync_study

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    study, storage = stored_study(args)
    where = spool_dir(study.study_name, args.run_dir)
    left = sync_study(study, storage, args.run_dir)
    if left:
        print(f"{left} records still wait in {where}: MLflow ({redact_url(storage.mlflow)}) "
              "is unreachable; run this again when it is back", file=sys.stderr)
        return 1
    print(f"study {study.study_name}: MLflow ({redact_url(storage.mlflow)}) is up to date")
    return 0


BEST_WIDTH = 100
"""``best`` prints its table within this many columns unless ``--wide``."""


def best_table(best, wide: bool = False, width: int = BEST_WIDTH) -> str:
    """``best_configs`` as text: by default the trial number, objective, the objective's std
    over seeds, the sampled params (without their ``params_`` prefix) and the duration, with
    empty columns dropped, numbers to 4 significant digits, and rightmost columns left out
    (named in a last line) until it fits ``width``; ``wide``: every column but the resolved
    config (see ``--json``)."""
    frame = best.drop(columns=["config"])
    if not wide:
        std = [c for c in frame.columns if c.endswith("_std")]
        keep = ["number", "objective", *std, *[c for c in frame if c.startswith("params_")],
                "duration_s"]
        frame = frame[keep].dropna(axis=1, how="all")
        frame = frame.rename(columns=lambda c: c.removeprefix("params_"))
    pd_options = {"float_format": lambda x: f"{x:.4g}", "index": False}
    text = frame.to_string(**pd_options)
    left_out: list[str] = []
    while not wide and max(map(len, text.splitlines())) > width and frame.shape[1] > 2:
        left_out.insert(0, frame.columns[-1])
        frame = frame.iloc[:, :-1]
        text = frame.to_string(**pd_options)
    if left_out:
        note = f"(not shown: {', '.join(left_out)}; see --wide or --json)"
        text += "\n" + textwrap.fill(note, width)
    return text
