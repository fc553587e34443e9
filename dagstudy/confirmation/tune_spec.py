"""The ``tune:`` block of a confirmation file (file or idea level) and each arm's search space.

``TuneSpec``: the budget every arm gets (``trials`` finished trials, each training ``seeds``
seeds as one population), the tuning objective (a validation metric), the space shared by every
arm plus per-arm extras (``control_space``, ``treatment_space``), and the study's sampler,
pruner and resources. Space keys are ``TrainConfig`` fields the study driver can sample
(``lr``, ``batch_size``, ``depth``, ...) and ``optimizer_params.<param>`` /
``revival_params.<param>``, a parameter of the arm's own optimizer variant / revival policy.

Tuning seeds are ``first_seed .. first_seed + seeds - 1`` (default from ``TUNING_FIRST_SEED``),
a range the confirmation checks is disjoint from every verdict seed, so the seeds that decide
never took part in tuning.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from dagstudy.config import StrictModel, TrainConfig
from dagstudy.optim import VARIANTS, ignores_lr
from dagstudy.revival import POLICIES
from dagstudy.study.samplers import MedianPruner, Pruner, Sampler
from dagstudy.study.space import SCALARS, Domain, SearchSpace
from dagstudy.study.spec import Objective, Resources

TUNING_FIRST_SEED = 10_000
"""First tuning seed by default; verdict seeds must stay below the tuning range."""

REGISTRY_KEYS = {"optimizer_params": ("optimizer", VARIANTS),
                 "revival_params": ("revival", POLICIES)}
TUNABLE = (*SCALARS, *(f"{k}.<param>" for k in REGISTRY_KEYS))


class TuneObjective(Objective):
    """The tuning objective: a validation metric (test data only ever decides verdicts)."""

    metric: Literal["val_loss", "val_accuracy"] = "val_loss"
    direction: Literal["maximize", "minimize"] = "minimize"


class TuneSpec(StrictModel):
    """Equal-budget tuning of every arm of an idea (see the module docstring)."""

    trials: int = Field(ge=1, description="finished trials per arm (the same for every arm)")
    seeds: int = Field(3, ge=1, description="seeds per tuning trial (one population)")
    first_seed: int = Field(TUNING_FIRST_SEED, ge=0, description="first tuning seed")
    objective: TuneObjective = TuneObjective()
    space: dict[str, Domain] = {}
    control_space: dict[str, Domain] = {}
    treatment_space: dict[str, Domain] = {}
    sampler: Sampler = Sampler(seed=0)
    pruner: Pruner = MedianPruner(name="median")
    resources: Resources = Resources()
    max_concurrent: int = Field(2, ge=1, description="tuning trials in flight per study")

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.first_seed, self.first_seed + self.seeds))

    def arm_space(self, arm: str) -> tuple[dict[str, Domain], dict[str, str]]:
        """The space of ``arm`` (``control@depth=4`` counts as ``control``) and, per key, the
        field it came from (``space`` or ``<arm>_space``), for error messages."""
        role = arm.split("@")[0]
        extra = {"control": self.control_space, "treatment": self.treatment_space}.get(role, {})
        merged = {**self.space, **extra}
        where = {k: "space" for k in self.space} | {k: f"{role}_space" for k in extra}
        return merged, where


def _registry_param(key: str, config: TrainConfig) -> tuple[str, str]:
    """``optimizer_params.momentum`` -> (``optimizer``, ``momentum``), checked against the
    arm's chosen variant / policy."""
    prefix, _, param = key.partition(".")
    kind, registry = REGISTRY_KEYS[prefix]
    chosen = getattr(config, kind)
    known = registry[chosen].Params.model_fields
    if param not in known:
        raise ValueError(f"{chosen} has no parameter {param!r} (has: "
                         f"{', '.join(known) or 'none'})")
    return kind, param


def search_space(space: dict[str, Domain], where: dict[str, str], config: TrainConfig,
                 prefix: str, arm: str) -> SearchSpace:
    """The study ``SearchSpace`` of ``arm``. ``ValueError`` naming ``prefix.<field>.<key>``
    for a key that is not tunable or does not exist for the arm (its optimizer / policy), or
    ``prefix.space`` when the arm's space is empty."""
    scalars: dict[str, Any] = {}
    registries: dict[str, dict[str, Any]] = {"optimizer": {}, "revival": {}}
    for key, domain in space.items():
        name = f"{prefix}.{where[key]}.{key}"
        if key in SCALARS:
            if key == "lr" and ignores_lr(config.optimizer):
                own = ", ".join(VARIANTS[config.optimizer].Params.model_fields)
                raise ValueError(f"{name}: {config.optimizer} ignores lr (its step is 1/L); "
                                 f"tune its own optimizer_params.<{own}>")
            scalars[key] = domain
        elif key.partition(".")[0] in REGISTRY_KEYS and key.partition(".")[2]:
            try:
                kind, param = _registry_param(key, config)
            except ValueError as e:
                raise ValueError(f"{name}: {e}") from None
            registries[kind][param] = domain
        else:
            raise ValueError(f"{name}: not tunable (allowed: {', '.join(TUNABLE)})")
    for kind, params in registries.items():
        if params:
            scalars[kind] = {getattr(config, kind): params}
    if not scalars:
        raise ValueError(f"{prefix}.space: empty for arm {arm}; tune at least one of "
                         f"{', '.join(TUNABLE)}")
    return SearchSpace(**scalars)


def untuned_base(config: TrainConfig, space: SearchSpace) -> dict[str, Any]:
    """``config`` as a study ``base`` without what the space samples (so arms that differ only
    in a tuned value share one study), nor ``dataset`` and ``epochs`` (top-level fields of a
    study)."""
    base = config.model_dump(mode="json", exclude={"dataset", "epochs"})
    for field in SCALARS:
        if getattr(space, field) is not None:
            base.pop(field, None)
    for kind in ("optimizer", "revival"):
        sampled = getattr(space, kind) or {}
        for params in sampled.values():
            base[f"{kind}_params"] = {k: v for k, v in base[f"{kind}_params"].items()
                                      if k not in params}
    return base


def verdict_seed_range(first_seed: int, seeds: int, sequential_extra: int) -> range:
    """Every seed a verdict may train: the first look's plus every later look's."""
    return range(first_seed, first_seed + seeds + sequential_extra)
