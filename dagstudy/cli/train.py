"""``dagstudy train``: one configuration on S seeds, in this process.

Its configuration flags are generated from ``TrainConfig``: one flag per field (``--field-name``),
its help the field's description with the allowed values and the default, so a new field is a
new flag with nothing to keep in step. Dict and model fields take a JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
import typing
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from dagstudy.cli.errors import UsageError
from dagstudy.config import CHOICES, TrainConfig, format_errors


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


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not JSON: {e.msg}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def _finite_float(text: str) -> float:
    value = float(text)
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _flag_kwargs(name: str, field: Any) -> dict[str, Any]:
    """``add_argument`` keywords for one ``TrainConfig`` field (type, choices, help)."""
    annotation = field.annotation
    args = set(typing.get_args(annotation)) - {type(None)}
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        annotation = args.pop()  # ``int | None`` -> int
    default = field.default
    help_text = field.description or ""
    kwargs: dict[str, Any] = {"default": argparse.SUPPRESS}
    if annotation is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    elif typing.get_origin(annotation) is Literal:
        kwargs["metavar"] = "{" + ",".join(typing.get_args(annotation)) + "}"
    elif name in CHOICES:  # checked by TrainConfig, whose error names the allowed values
        kwargs["metavar"] = "{" + ",".join(CHOICES[name]) + "}"
    elif annotation is int:
        kwargs["type"] = int
    elif annotation is float:
        kwargs["type"] = _finite_float
    elif typing.get_origin(annotation) is dict or (
            isinstance(annotation, type) and issubclass(annotation, BaseModel)):
        kwargs["type"], kwargs["metavar"] = _json_object, "JSON"
        default = default.model_dump() if isinstance(default, BaseModel) else default
    kwargs["help"] = f"{help_text} (default: {json.dumps(default)})".replace("%", "%%")
    return kwargs


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train one configuration on S seeds and print the result",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    config = p.add_argument_group("configuration (TrainConfig fields)")
    for name, field in TrainConfig.model_fields.items():
        config.add_argument("--" + name.replace("_", "-"), dest=name, **_flag_kwargs(name, field))
    p.add_argument("--seeds", type=_seeds, default=_seeds("3"), help="count, or comma list")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.add_argument("--quiet", action="store_true", help="no per-epoch progress on stderr")
    p.set_defaults(run=run)


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The ``TrainConfig`` of the given flags (unset fields keep their defaults)."""
    given = {k: v for k, v in vars(args).items() if k in TrainConfig.model_fields}
    try:
        return TrainConfig(**given)
    except ValidationError as e:
        raise UsageError(format_errors(e, flags=True)) from None


def _progress(epochs: int) -> Callable[[dict], None]:
    """Per-epoch progress on stderr: training and validation numbers only (test accuracy is
    shown once, after training, so nothing invites selecting on it)."""
    def show(row: dict) -> None:
        def mean(name):
            vals = [v for v in row[name] if v is not None]
            return sum(vals) / len(vals) if vals else float("nan")

        print(
            f"epoch {row['epoch']:>3}/{epochs}  train_loss {mean('train_loss'):.4f}  "
            f"val_acc {mean('val_accuracy'):.4f}  "
            f"dead {mean('dead_fraction'):.3f}  {row['seconds'][0]:.1f}s",
            file=sys.stderr, flush=True,
        )

    return show


def run(args: argparse.Namespace) -> int:
    from dagstudy.data.raw import DataError
    from dagstudy.memory import MemoryBudgetError, available_bytes, check
    from dagstudy.trainer import load_data, resolve_device, train

    config = train_config(args)
    try:
        device = resolve_device(args.device)
        data = load_data(config, args.seeds, device)
        check(config, len(args.seeds), data.x.shape[0], data.d_in, data.n_classes,
              available_bytes(), "this machine's available memory")
    except DataError as e:
        raise UsageError(f"--data-dir / --dataset: {e}") from None
    except MemoryBudgetError as e:
        raise UsageError(f"--width / --depth / --seeds: {e}") from None
    except ValueError as e:
        raise UsageError(f"--{e}") from None
    on_epoch = None if args.quiet else _progress(config.epochs)
    try:
        result = train(config, args.seeds, data, device, on_epoch)
    except KeyboardInterrupt:
        print("\ninterrupted (Ctrl-C): nothing was saved", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(result.to_dict()))
        return 0
    for m in ("train_loss", "val_accuracy", "test_accuracy"):
        s = result.summary(m)
        print(f"{m:14} mean {s['mean']:.4f}  std {s['std'] or 0:.4f}  per seed {s['per_seed']}")
    print(f"params {result.params}  flops/example {result.flops_per_example}  "
          f"epochs {result.epochs}  wall {result.wall_seconds:.1f}s  device {result.device}")
    for seed, reason in zip(result.seeds, result.reasons):
        if reason:
            print(f"seed {seed}: {reason}")
    return 0
