"""Every idea's arms as validated ``TrainConfig``s, and the jobs that train them.

``plan(spec) -> [Experiment]``: per idea, the control, the treatment and any extra arms, with
the special designs applied (``match_params``: the control's width matched to the treatment's
parameter count within 5%; ``depths``: every arm at every depth; ``fanin_sweep``: a treatment
and a nearest-wiring arm per N). An ``ArmJob`` is one arm on a set of seeds (one population
training run); a ``Runner`` trains jobs and yields ``(job, TrialResult dict)`` as each finishes
(``local_runner`` here, ``dagstudy.study.cluster.ray_runner`` on Ray).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import ValidationError

from dagstudy.config import TrainConfig, format_errors
from dagstudy.confirmation.spec import ConfirmSpec, IdeaSpec
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


Runner = Callable[[list[ArmJob]], Iterable[tuple[ArmJob, dict[str, Any]]]]


@dataclass
class Experiment:
    idea: str
    spec: IdeaSpec
    arms: dict[str, TrainConfig]


def _config(base: dict, overrides: dict, where: str) -> TrainConfig:
    try:
        return TrainConfig(**{**base, **overrides})
    except ValidationError as e:
        raise ValueError(format_errors(e, prefix=where)) from None


def param_count(config: TrainConfig, d_in: int, n_classes: int) -> int:
    return build_model(config, d_in, n_classes, [0]).param_count()


def matched_width(config: TrainConfig, target: int, d_in: int, n_classes: int) -> TrainConfig:
    """``config`` with the width whose parameter count is closest to ``target`` (within 5%)."""
    best = min(
        range(1, 4 * config.width + 64),
        key=lambda w: abs(param_count(config.model_copy(update={"width": w}), d_in, n_classes)
                          - target),
    )
    matched = config.model_copy(update={"width": best})
    got = param_count(matched, d_in, n_classes)
    if abs(got - target) > PARAM_TOLERANCE * target:
        raise ValueError(f"match_params: no width gives {target} params within 5% (best {got})")
    return matched


def _data_shape(config: TrainConfig) -> tuple[int, int]:
    data = load_data(config, [0], torch.device("cpu"))
    return data.d_in, data.n_classes


def plan(spec: ConfirmSpec) -> list[Experiment]:
    """Every idea's arms as validated ``TrainConfig``s; errors name ``ideas.ID.arm.field``."""
    experiments = []
    for idea, ispec in spec.ideas.items():
        base = {**spec.base, **ispec.base}
        where = f"ideas.{idea}"
        control = _config(base, ispec.control, f"{where}.control")
        treatment = _config(base, ispec.treatment, f"{where}.treatment")
        arms = {"control": control, "treatment": treatment}
        for name, overrides in ispec.extra_controls.items():
            arms[name] = _config(base, overrides, f"{where}.extra_controls.{name}")
        if ispec.match_params:
            d_in, n_classes = _data_shape(treatment)
            target = param_count(treatment, d_in, n_classes)
            for name in [n for n in arms if n != "treatment"]:
                arms[name] = matched_width(arms[name], target, d_in, n_classes)
        if ispec.depths:
            arms = {f"{name}@depth={d}": cfg.model_copy(update={"depth": d})
                    for name, cfg in arms.items() for d in ispec.depths}
        for n in ispec.fanin_sweep or []:
            for name, wiring in (("treatment", "random"), ("nearest", "nearest")):
                arms[f"{name}@fanin={n}"] = _config(
                    base, {**ispec.treatment, "fanin": n, "fanin_wiring": wiring}, where)
        experiments.append(Experiment(idea, ispec, arms))
    return experiments


def local_runner(device: str = "auto") -> Runner:
    """Train each job in this process, one after another. A job that raises yields a
    ``TrialResult.crashed`` result naming the exception; the next job runs."""
    from dagstudy.trainer import TrialResult, resolve_device

    dev = resolve_device(device)

    def run(jobs: list[ArmJob]):
        for job in jobs:
            seeds = list(job.seeds)
            try:
                data = load_data(job.config, seeds, dev)
                result = train(job.config, seeds, data, dev)
            except Exception as e:  # recorded as the arm's failure; the confirmation goes on
                result = TrialResult.crashed(job.config, seeds, f"{type(e).__name__}: {e}")
            yield job, result.to_dict()

    return run
