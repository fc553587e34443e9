"""``dagstudy`` command line. Each subcommand validates its input fully before any work starts;
bad input exits with status 2 and one line naming the option and the allowed values."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from dagstudy.config import TrainConfig, format_errors


class UsageError(Exception):
    """Bad user input: printed as one line, exit status 2."""


def _seeds(text: str) -> list[int]:
    """``"5"`` -> seeds 0..4; ``"3,7,9"`` -> those seeds."""
    try:
        if "," in text:
            seeds = [int(s) for s in text.split(",")]
        else:
            seeds = list(range(int(text)))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count or a comma list") from None
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError("need >= 1 distinct non-negative seeds")
    return seeds


def _json_dict(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not JSON: {e.msg}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train one configuration on S seeds and print the result")
    d = TrainConfig()
    p.add_argument("--dataset", default=d.dataset, help="digits | mnist | synthetic")
    p.add_argument("--data-dir", default=None, help="MNIST directory (IDX files)")
    p.add_argument("--topology", default=d.topology, help="layered | residual | dag | fanin")
    p.add_argument("--depth", type=int, default=d.depth)
    p.add_argument("--width", type=int, default=d.width)
    p.add_argument("--fanin", type=int, default=None, help="N prior nodes per node (fanin)")
    p.add_argument("--fanin-wiring", default=d.fanin_wiring, help="random | nearest")
    p.add_argument("--readout", default=d.readout, help="auto | all | last")
    p.add_argument("--bias-init", type=float, default=d.bias_init)
    p.add_argument("--loss", default=d.loss, help="ce | mse")
    p.add_argument("--optimizer", default=d.optimizer)
    p.add_argument("--optimizer-params", type=_json_dict, default={}, metavar="JSON")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--revival", default=d.revival)
    p.add_argument("--revival-params", type=_json_dict, default={}, metavar="JSON")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--jitter-spread", type=float, default=d.jitter_spread,
                   help="OPT-JITTER: per-neuron rate spread in [0, 1)")
    p.add_argument("--grad-floor", type=float, default=d.grad_floor,
                   help="GRAD-FLOOR: floor on |weights|, |inputs| in the backward (0: off)")
    p.add_argument("--grad-floor-hysteresis", action="store_true",
                   help="use the floored gradient only where it keeps a weight's direction")
    p.add_argument("--stuck-threshold", type=float, default=d.stuck_threshold,
                   help="stuck_fraction counts |w| below this (GRAD-FLOOR's diagnostic)")
    p.add_argument("--stop-ratio", type=float, default=d.stop_ratio,
                   help="OPT-STOP: last-layer pass gradient / first pass's threshold")
    p.add_argument("--stop-patience", type=int, default=d.stop_patience)
    p.add_argument("--stop-on-ratio", action="store_true",
                   help="end each seed when the OPT-STOP rule fires (else only recorded)")
    p.add_argument("--overfit-gap", type=float, default=d.overfit_gap,
                   help="overfit flag: (val_loss - train_loss) / val_loss above this")
    p.add_argument("--seeds", type=_seeds, default=_seeds("3"), help="count, or comma list")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.add_argument("--quiet", action="store_true", help="no per-epoch progress on stderr")
    p.set_defaults(run=_cmd_train)


CONFIG_FLAGS = (
    "dataset", "data_dir", "topology", "depth", "width", "fanin", "fanin_wiring", "readout",
    "bias_init", "loss", "optimizer", "optimizer_params", "lr", "revival", "revival_params",
    "epochs", "batch_size", "jitter_spread", "grad_floor", "grad_floor_hysteresis",
    "stuck_threshold", "stop_ratio", "stop_patience", "stop_on_ratio", "overfit_gap",
)


def _train_config(args) -> TrainConfig:
    try:
        return TrainConfig(**{k: getattr(args, k) for k in CONFIG_FLAGS})
    except ValidationError as e:
        raise UsageError(format_errors(e, flags=True)) from None


def _progress(epochs: int) -> Callable[[dict], None]:
    def show(row: dict) -> None:
        def mean(name):
            vals = [v for v in row[name] if v is not None]
            return sum(vals) / len(vals) if vals else float("nan")

        print(
            f"epoch {row['epoch']:>3}/{epochs}  train_loss {mean('train_loss'):.4f}  "
            f"val_acc {mean('val_accuracy'):.4f}  test_acc {mean('test_accuracy'):.4f}  "
            f"dead {mean('dead_fraction'):.3f}  {row['seconds'][0]:.1f}s",
            file=sys.stderr, flush=True,
        )

    return show


def _cmd_train(args) -> int:
    from dagstudy.data import DataError
    from dagstudy.train import load_data, resolve_device, train

    config = _train_config(args)
    try:
        device = resolve_device(args.device)
        data = load_data(config, args.seeds, device)
    except DataError as e:
        raise UsageError(f"--data-dir / --dataset: {e}") from None
    except ValueError as e:
        raise UsageError(f"--{e}") from None
    result = train(config, args.seeds, data, device, None if args.quiet else _progress(args.epochs))
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        for m in ("train_loss", "val_accuracy", "test_accuracy"):
            s = result.summary(m)
            print(f"{m:14} mean {s['mean']:.4f}  std {s['std'] or 0:.4f}  per seed {s['per_seed']}")
        print(f"params {result.params}  flops/example {result.flops_per_example}  "
              f"epochs {result.epochs}  wall {result.wall_seconds:.1f}s  device {result.device}")
        for seed, reason in zip(result.seeds, result.reasons):
            if reason:
                print(f"seed {seed}: {reason}")
    return 0


def _add_confirm(sub) -> None:
    p = sub.add_parser("confirm", help="confirm or rule out each idea: paired arms -> verdicts")
    p.add_argument("file", help="confirmation file, e.g. studies/corollaries.yaml")
    p.add_argument("--ideas", default=None, help="comma list of idea IDs (default: all in file)")
    p.add_argument("--seeds", type=int, default=None, help="paired seeds (overrides the file)")
    p.add_argument("--out", default=None, help="report directory (default: under the run dir)")
    p.add_argument("--address", default=None, help="Ray cluster address (default: local Ray)")
    p.add_argument("--local", action="store_true", help="train in this process, without Ray")
    p.add_argument("--run-dir", default=None, help="local store (default $DAGSTUDY_HOME or "
                   "./dagstudy-runs)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    p.set_defaults(run=_cmd_confirm)

    p = sub.add_parser("report", help="regenerate a confirmation report from MLflow alone")
    p.add_argument("run_id", help="the confirmation's MLflow parent run id")
    p.add_argument("--out", default=None, help="report directory (default: under the run dir)")
    p.add_argument("--run-dir", default=None)
    p.set_defaults(run=_cmd_report)


def _cmd_confirm(args) -> int:
    import time

    import ray

    from dagstudy.confirm import local_runner
    from dagstudy.confirm_cli import ConfirmInputError, load_spec, parse_ideas, run_confirmation
    from dagstudy.execute import connect_ray, ray_runner
    from dagstudy.spec import run_dir_for, storage_for
    from dagstudy.tracking import Tracker
    from dagstudy.train import resolve_device

    try:
        if args.seeds is not None and args.seeds < 2:
            raise ConfirmInputError("--seeds: must be >= 2 (10 or more for a verdict)")
        spec = load_spec(args.file, args.seeds)
        ideas = parse_ideas(args.ideas, spec)
    except ValueError as e:
        raise UsageError(str(e)) from None
    try:
        resolve_device(args.device)
    except ValueError as e:
        raise UsageError(f"--{e}") from None
    storage = storage_for(None, args.run_dir)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = (Path(args.out) if args.out
           else run_dir_for(args.run_dir) / "confirm" / f"{spec.name}-{stamp}")
    tracker = Tracker(storage.mlflow, f"confirm-{spec.name}", artifact_location=storage.artifacts,
                      settings=spec.model_dump())
    started = False
    if args.local:
        runner = local_runner(args.device)
    else:
        started = connect_ray(args.address)
        runner = ray_runner(device=args.device)
    try:
        run_confirmation(spec, ideas, runner, out, tracker)
    finally:
        if started:
            ray.shutdown()
    print(f"mlflow parent run: {tracker.parent_run_id}")
    return 0


def _cmd_report(args) -> int:
    from dagstudy.confirm_cli import regenerate
    from dagstudy.spec import run_dir_for, storage_for

    storage = storage_for(None, args.run_dir)
    out = Path(args.out) if args.out else run_dir_for(args.run_dir) / "report" / args.run_id
    try:
        files = regenerate(storage.mlflow, args.run_id, out)
    except Exception as e:  # MLflow's own errors for an unknown run id or missing artifact
        raise UsageError(f"run_id: no confirmation report for {args.run_id!r} ({e})") from None
    print("\n".join(str(f) for f in files))
    return 0


def _load_study_spec(path: str):
    from dagstudy.spec import SpecError, load_spec

    try:
        return load_spec(path)
    except SpecError as e:
        raise UsageError(f"{path}: {e}") from None


def _is_file(study: str) -> bool:
    return study.endswith((".yaml", ".yml")) or os.path.isfile(study)


def _add_study_commands(sub) -> None:
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
    from dagstudy.query import load_study
    from dagstudy.spec import SpecError, StorageSpec, StudySpec, storage_for

    url = args.storage or storage_for(None, args.run_dir).optuna
    try:
        spec = StudySpec(**load_study(args.study, url).user_attrs["spec"])
    except KeyError as e:
        raise UsageError(f"study: {e.args[0]}") from None
    except (ValidationError, SpecError) as e:
        raise UsageError(f"stored spec of {args.study}: {e}") from None
    return spec.model_copy(update={"storage": StorageSpec(optuna=args.storage)})


def _cmd_run(args) -> int:
    import logging

    spec = _study_spec(args) if args.command == "resume" else _load_study_spec(args.study)
    if args.trials is not None and args.trials < 1:
        raise UsageError("--trials: must be >= 1")
    import optuna

    from dagstudy.execute import StudyError, progress_printer, run_study, summary
    from dagstudy.spec import storage_for

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = run_study(spec, run_dir=args.run_dir, trials=args.trials, address=args.address,
                          num_cpus=args.num_cpus, resume=args.command == "resume",
                          progress=progress_printer())
    except StudyError as e:
        raise UsageError(str(e)) from None
    except (KeyboardInterrupt, SystemExit) as e:  # Ctrl-C; SIGTERM (Ray's driver exits on it)
        print(f"\ninterrupted; continue with: dagstudy resume {spec.name}", file=sys.stderr)
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
    from dagstudy.execute import submit

    job_id = submit(args.study, args.address, run_dir=args.run_dir, trials=args.trials)
    print(job_id)
    print(f"submitted study {spec.name}; follow its logs with:\n"
          f"  ray job logs --address {args.address} --follow {job_id}", file=sys.stderr)
    return 0


def _stored_study(args):
    """The Optuna study that ``args.study`` (a file or a name) names, and its ``Storage``
    (``--storage`` overrides the Optuna URL)."""
    from dagstudy.query import load_study
    from dagstudy.spec import storage_for

    spec = _load_study_spec(args.study) if _is_file(args.study) else None
    storage = storage_for(spec, args.run_dir)
    if args.storage:
        storage = dataclasses.replace(storage, optuna=args.storage)
    try:
        return load_study(spec.name if spec else args.study, storage.optuna), storage
    except KeyError as e:
        raise UsageError(f"study: {e.args[0]}") from None


def _cmd_best(args) -> int:
    from dagstudy.query import best_configs, param_importances

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

    from dagstudy.execute import spool_dir, sync_study
    from dagstudy.spec import redact_url

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
    from dagstudy.spec import redact_url, storage_for
    from dagstudy.tracking import ui_command

    storage = storage_for(None, args.run_dir)
    if not storage.mlflow.startswith("sqlite"):
        print(f"MLflow tracking is at {redact_url(storage.mlflow)}: open that server's UI")
        return 0
    print(f"MLflow UI: http://127.0.0.1:{args.port}  (store {redact_url(storage.mlflow)}; "
          "Ctrl-C stops it)",
          flush=True)
    command = ui_command(storage, args.port)
    os.execv(command[0], command)  # the UI replaces this process: signals reach it directly


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dagstudy", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_confirm(sub)
    _add_study_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except UsageError as e:
        print(f"dagstudy {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
