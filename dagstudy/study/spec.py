"""
``load_spec(path) -> StudySpec`` raises ``SpecError`` (a ``ValueError``) with one line per
problem, ``field.path: problem``, before anything runs. Validation covers every model
(``extra="forbid"`` everywhere), the search space against the optimizer-variant and
revival-policy registries (the registries are the one list of names), and every combination of
categorical choices (each range at its low and at its high end) built into a ``TrainConfig``
over ``base``, so no sampled trial can be an invalid configuration.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from dagstudy.config import StrictModel, TrainConfig, check_name, format_errors
from dagstudy.study.samplers import MedianPruner, Pruner, Sampler
from dagstudy.study.space import SearchSpace
from dagstudy.trainer import FINAL_METRICS


class SpecError(ValueError):
    """An invalid study file; the message names each field path and its problem."""


class Objective(StrictModel):
    """What a trial scores: ``metric``'s final per-seed values, reduced to one number.

    The mean over seeds, or with ``lcb_z`` the conservative bound
    ``mean -/+ lcb_z * std / sqrt(S)`` (minus when maximizing, plus when minimizing).
    """

    metric: str = "val_accuracy"
    direction: Literal["maximize", "minimize"] = "maximize"
    lcb_z: float | None = Field(None, gt=0.0)

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        if value not in FINAL_METRICS:
            raise ValueError(f"unknown {value!r} (allowed: {', '.join(FINAL_METRICS)})")
        return value

    def score(self, per_seed: list[float | None]) -> float | None:
        """The objective of per-seed values; None if any seed has no finite value."""
        if not per_seed or any(v is None or not math.isfinite(v) for v in per_seed):
            return None
        mean = sum(per_seed) / len(per_seed)
        if self.lcb_z is None or len(per_seed) < 2:
            return mean
        std = math.sqrt(sum((v - mean) ** 2 for v in per_seed) / (len(per_seed) - 1))
        sign = -1.0 if self.direction == "maximize" else 1.0
        return mean + sign * self.lcb_z * std / math.sqrt(len(per_seed))


class Budget(StrictModel):
    """When a study stops launching trials: ``trials`` finished trials (see ``execute``) and/or
    ``wall_minutes`` since the driver started (running trials then finish)."""

    trials: int | None = Field(None, ge=1)
    wall_minutes: float | None = Field(None, gt=0.0)

    @model_validator(mode="after")
    def _some_limit(self) -> Budget:
        if self.trials is None and self.wall_minutes is None:
            raise ValueError("set trials and/or wall_minutes")
        return self


class Resources(StrictModel):
    """Per trial: Ray CPUs (also torch's thread count), GPU (a fraction shares one GPU) and
    memory. Requests no node of the cluster has are refused before the study starts."""

    cpus: float = Field(1.0, gt=0.0)
    gpu: float = Field(0.0, ge=0.0)
    memory_gb: float | None = Field(
        None, gt=0.0, description="GiB per trial: Ray schedules trials by it, and a trial whose "
        "estimated memory (dagstudy.memory) exceeds it fails before training")


class Packing(StrictModel):
    """Packed trials (``dagstudy.packing``): up to ``max`` trials asked together that share a
    network shape train in one Ray task as one population, each told to Optuna on its own
    (1: off, one trial per task). ``max_concurrent`` then counts tasks, and a trial's
    ``resources`` serve its whole pack (``memory_gb`` is per trial, times the pack's size)."""

    max: int = Field(1, ge=1, le=64)


class StorageSpec(StrictModel):
    """Where the study lives; unset fields fall back to the environment, then the run dir."""

    optuna: str | None = None
    mlflow: str | None = None
    artifacts: str | None = Field(None, description="artifact location of a new experiment")


class StudySpec(StrictModel):
    """One study file. ``dataset`` and ``epochs`` override ``base``; ``base`` is a complete
    ``TrainConfig`` the search space overrides. Every trial trains seeds
    ``first_seed .. first_seed + seeds - 1`` (the same seeds for every trial: paired)."""

    name: Annotated[str, AfterValidator(check_name)]
    dataset: str = "digits"
    objective: Objective = Objective()
    seeds: int = Field(3, ge=1)
    first_seed: int = Field(0, ge=0)
    budget: Budget
    epochs: int = Field(ge=1)
    search: SearchSpace
    base: dict[str, Any] = {}
    sampler: Sampler = Sampler()
    pruner: Pruner = MedianPruner(name="median")
    resources: Resources = Resources()
    max_concurrent: int = Field(2, ge=1)
    packing: Packing = Packing()
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    storage: StorageSpec = StorageSpec()

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.first_seed, self.first_seed + self.seeds))

    def base_config(self) -> dict[str, Any]:
        return {**self.base, "dataset": self.dataset, "epochs": self.epochs}

    def config_for(self, overrides: dict[str, Any]) -> TrainConfig:
        """The ``TrainConfig`` of one trial: ``base`` with the sampled ``overrides``."""
        return TrainConfig(**{**self.base_config(), **overrides})

    @model_validator(mode="after")
    def _valid_configs(self) -> StudySpec:
        from dagstudy.study.space import combinations

        for key in ("dataset", "epochs"):
            if key in self.base:
                raise ValueError(f"base.{key}: set it at the top level of the study file")
        try:
            TrainConfig(**self.base_config())
        except ValidationError as e:
            raise ValueError(format_errors(e, prefix="base")) from None
        for overrides in combinations(self.search, self.base_config()):
            try:
                self.config_for(overrides)
            except ValidationError as e:
                combo = ", ".join(f"{k}={v!r}" for k, v in overrides.items())
                raise ValueError(f"{format_errors(e, prefix='search')} (when {combo})") from None
        return self
