"""Every idea's arms as validated ``TrainConfig``s, and the jobs that train them.

``plan(spec) -> [Experiment]``: per idea and per setting (``settings``: one unnamed setting, the
base, when the idea gives none), the control, the treatment and any extra arms, with the special
designs applied (``match_params``: the control's width matched to the treatment's parameter count
within 5%, at every depth with ``depths``; ``depths``: every arm at every depth; ``fanin_sweep``: a
treatment and a nearest-wiring arm per N). An ``ArmJob`` is one arm on a set of seeds (one
population training run); a ``Runner`` trains jobs and yields ``(job, TrialResult dict)`` as each
finishes (``local_runner`` here, ``dagstudy.study.cluster.ray_runner`` on Ray), calling its
optional ``on_start(job)`` just before each job's training is launched and, when given,
``on_epochs(job, rows, epoch_ms)`` as a running job's per-epoch rows arrive. An arm of a named
setting is called ``"SETTING | ARM"`` (``qualify``). ``check_data`` loads every distinct dataset
once, so bad data is an error naming the idea and setting before any training.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import ValidationError

from dagstudy.config import TrainConfig, format_errors
from dagstudy.confirmation.spec import ConfirmSpec, IdeaSpec
from dagstudy.data.raw import DataError
from dagstudy.trainer import build_model, load_data, train

PARAM_TOLERANCE = 0.05


@dataclass(frozen=True)
class ArmJob:
    """One arm of one idea on a set of seeds: one population training run."""

    idea: str
    arm: str
    config: TrainConfig
    seeds: tuple[int, ...]

    @property
    def key(self) -> str:
        """Identical configs on identical seeds are trained once, whatever idea asks."""
        return json.dumps([self.config.model_dump(), list(self.seeds)], sort_keys=True)


Runner = Callable[..., Iterable[tuple[ArmJob, dict[str, Any]]]]
"""``runner(jobs, on_start=None)``: trains ``jobs``, yields ``(job, result)`` as each finishes
and calls ``on_start(job)`` (when given) just before each job is launched."""


SETTING_SEPARATOR = " | "


def qualify(setting: str, arm: str) -> str:
    """The arm's name in results and MLflow: ``arm`` alone for the unnamed setting."""
    return f"{setting}{SETTING_SEPARATOR}{arm}" if setting else arm


@dataclass
class Experiment:
    """One idea's arms per setting: ``settings[label][arm]``; the label ``""`` is the base."""

    idea: str
    spec: IdeaSpec
    settings: dict[str, dict[str, TrainConfig]]

    @property
    def arms(self) -> dict[str, TrainConfig]:
        """Every arm of every setting, by qualified name."""
        return {qualify(label, arm): cfg for label, arms in self.settings.items()
                for arm, cfg in arms.items()}

    @property
    def pooled(self) -> bool:
        """Whether the idea runs in several named settings (then its verdict is pooled)."""
        return list(self.settings) != [""]


def _config(base: dict, overrides: dict, where: str) -> TrainConfig:
    try:
        return TrainConfig(**{**base, **overrides})
    except ValidationError as e:
        raise ValueError(format_errors(e, prefix=where)) from None


def param_count(config: TrainConfig, d_in: int, n_classes: int) -> int:
    return build_model(config, d_in, n_classes, [0]).param_count()


def matched_width(config: TrainConfig, target: int, d_in: int, n_classes: int) -> TrainConfig:
    """``config`` with the width whose parameter count is closest to ``target`` (within 5%).

    The count grows with the width, so a bisection finds the first width at or above the
    target in about log2(4 width + 64) model builds; it or the width below it is closest."""
    def count(w: int) -> int:
        return param_count(config.model_copy(update={"width": w}), d_in, n_classes)

    lo, hi = 1, 4 * config.width + 63
    while lo < hi:
        mid = (lo + hi) // 2
        if count(mid) >= target:
            hi = mid
        else:
            lo = mid + 1
    best = min({max(lo - 1, 1), lo}, key=lambda w: abs(count(w) - target))
    matched = config.model_copy(update={"width": best})
    got = param_count(matched, d_in, n_classes)
    if abs(got - target) > PARAM_TOLERANCE * target:
        raise ValueError(f"match_params: no width gives {target} params within 5% (best {got})")
    return matched


def _data_shape(config: TrainConfig) -> tuple[int, int]:
    data = load_data(config, [0], torch.device("cpu"))
    return data.d_in, data.n_classes


def plan(spec: ConfirmSpec) -> list[Experiment]:
    """Every idea's arms per setting as validated ``TrainConfig``s; errors name
    ``ideas.ID[SETTING].arm.field``."""
    experiments = []
    for idea, ispec in spec.ideas.items():
        settings_spec = ispec.settings or spec.settings
        named = settings_spec.expand() if settings_spec else [("", {})]
        settings = {}
        for label, overrides in named:
            base = {**spec.base, **ispec.base, **overrides}
            where = f"ideas.{idea}[{label}]" if label else f"ideas.{idea}"
            settings[label] = _arms(ispec, base, where)
        first = settings[next(iter(settings))]
        for r, rank_base in enumerate(ispec.rank_bases, start=1):  # from_study top K
            for name in ("control", "treatment"):
                first[f"{name}@rank={r}"] = _config(rank_base, getattr(ispec, name),
                                                    f"ideas.{idea}.{name}@rank={r}")
        experiments.append(Experiment(idea, ispec, settings))
    return experiments


def _arms(ispec: IdeaSpec, base: dict[str, Any], where: str) -> dict[str, TrainConfig]:
    """One setting's arms: control, treatment, extra controls and the special designs."""
    control = _config(base, ispec.control, f"{where}.control")
    treatment = _config(base, ispec.treatment, f"{where}.treatment")
    arms = {"control": control, "treatment": treatment}
    for name, overrides in ispec.extra_controls.items():
        arms[name] = _config(base, overrides, f"{where}.extra_controls.{name}")
    if ispec.depths:
        arms = {f"{name}@depth={d}": cfg.model_copy(update={"depth": d})
                for name, cfg in arms.items() for d in ispec.depths}
    if ispec.match_params:
        d_in, n_classes = _data_shape(treatment)
        for suffix in [f"@depth={d}" for d in ispec.depths] if ispec.depths else [""]:
            target = param_count(arms[f"treatment{suffix}"], d_in, n_classes)
            for name in [n for n in arms if n.endswith(suffix) and n != f"treatment{suffix}"]:
                arms[name] = matched_width(arms[name], target, d_in, n_classes)
    for n in ispec.fanin_sweep or []:
        for name, wiring in (("treatment", "random"), ("nearest", "nearest")):
            arms[f"{name}@fanin={n}"] = _config(
                base, {**ispec.treatment, "fanin": n, "fanin_wiring": wiring}, where)
    return arms


_DATA_FIELDS = ("dataset", "data_dir", "label_column", "synthetic", "split", "val_fraction",
                "test_fraction")


def check_data(experiments: list[Experiment], seed: int = 0) -> None:
    """Load and split every distinct dataset of ``experiments`` once (on the CPU, one seed);
    a ``DataError`` becomes a ``ValueError`` naming the idea and setting."""
    seen: set[str] = set()
    for exp in experiments:
        for label, arms in exp.settings.items():
            for cfg in arms.values():
                key = json.dumps({f: cfg.model_dump()[f] for f in _DATA_FIELDS}, sort_keys=True)
                if key in seen:
                    continue
                seen.add(key)
                try:
                    load_data(cfg, [seed], torch.device("cpu"))
                except DataError as e:
                    where = f"ideas.{exp.idea}[{label}]" if label else f"ideas.{exp.idea}"
                    raise ValueError(f"{where}.dataset: {e}") from None


def local_runner(device: str = "auto") -> Runner:
    """Train each job in this process, one after another (``on_epochs(job, [row],
    [epoch_ms])`` after each epoch). A job that raises yields a ``TrialResult.crashed`` result
    naming the exception; the next job runs."""
    from dagstudy.trainer import TrialResult, resolve_device

    dev = resolve_device(device)

    def run(jobs: list[ArmJob], on_start: Callable[[ArmJob], None] | None = None,
            on_epochs: Callable[[ArmJob, list, list[int]], None] | None = None):
        for job in jobs:
            if on_start is not None:
                on_start(job)
            seeds = list(job.seeds)
            epoch_ms: list[int] = []
            on_epoch = _stamper(job, epoch_ms, on_epochs)
            try:
                data = load_data(job.config, seeds, dev)
                result = train(job.config, seeds, data, dev, on_epoch).to_dict()
                result["epoch_ms"] = epoch_ms
            except Exception as e:  # recorded as the arm's failure; the confirmation goes on
                result = TrialResult.crashed(job.config, seeds,
                                             f"{type(e).__name__}: {e}").to_dict()
            yield job, result

    return run


def _stamper(job: ArmJob, epoch_ms: list[int],
             on_epochs: Callable[[ArmJob, list, list[int]], None] | None
             ) -> Callable[[dict[str, Any]], None]:
    """The trainer's ``on_epoch`` for ``job``: appends the time (ms) each epoch ended to
    ``epoch_ms`` and hands the row to ``on_epochs``."""
    def on_epoch(row: dict[str, Any]) -> None:
        epoch_ms.append(int(time.time() * 1000))
        if on_epochs is not None:
            on_epochs(job, [row], epoch_ms[-1:])

    return on_epoch
