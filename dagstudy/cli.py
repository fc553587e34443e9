"""``dagstudy`` command line. Each subcommand validates its input fully before any work starts;
bad input exits with status 2 and one line naming the option and the allowed values."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

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
    p.add_argument("--seeds", type=_seeds, default=_seeds("3"), help="count, or comma list")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.add_argument("--quiet", action="store_true", help="no per-epoch progress on stderr")
    p.set_defaults(run=_cmd_train)


CONFIG_FLAGS = (
    "dataset", "data_dir", "topology", "depth", "width", "fanin", "fanin_wiring", "readout",
    "bias_init", "loss", "optimizer", "optimizer_params", "lr", "revival", "revival_params",
    "epochs", "batch_size",
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
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    p.set_defaults(run=_cmd_confirm)


def _cmd_confirm(args) -> int:
    import time
    from pathlib import Path

    from dagstudy.confirm import local_runner
    from dagstudy.confirm_cli import ConfirmInputError, load_spec, parse_ideas, run_confirmation

    try:
        if args.seeds is not None and args.seeds < 2:
            raise ConfirmInputError("--seeds: must be >= 2 (10 or more for a verdict)")
        spec = load_spec(args.file, args.seeds)
        ideas = parse_ideas(args.ideas, spec)
        runner = local_runner(args.device)
    except ValueError as e:
        raise UsageError(str(e)) from None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else Path("dagstudy-runs") / "confirm" / f"{spec.name}-{stamp}"
    run_confirmation(spec, ideas, runner, out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dagstudy", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_confirm(sub)
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
