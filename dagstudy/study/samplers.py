"""The study's sampler and pruner: their spec models and the one factory for each.

``make_sampler(sampler)`` and ``make_pruner(pruner, epochs)`` build the Optuna objects the
driver (sampler and pruner) and the workers (pruner: ``trial.should_prune``) use.
"""

from __future__ import annotations

import warnings
from typing import Annotated, Literal

import optuna
from pydantic import (
    Field,
)

from dagstudy.config import StrictModel


class Sampler(StrictModel):
    name: Literal["tpe", "gp", "random"] = "tpe"
    seed: int | None = None
    n_startup_trials: int = Field(10, ge=0, description="random trials first (tpe, gp)")


class NoPruner(StrictModel):
    name: Literal["none"]


class MedianPruner(StrictModel):
    name: Literal["median"]
    n_startup_trials: int = Field(5, ge=0)
    n_warmup_steps: int = Field(0, ge=0, description="epochs before pruning may start")


class SuccessiveHalvingPruner(StrictModel):
    name: Literal["successive-halving"]
    min_resource: int = Field(1, ge=1, description="epochs")
    reduction_factor: int = Field(3, ge=2)


class HyperbandPruner(StrictModel):
    name: Literal["hyperband"]
    min_resource: int = Field(1, ge=1, description="epochs; max_resource is the study's epochs")
    reduction_factor: int = Field(3, ge=2)


class WilcoxonPruner(StrictModel):
    name: Literal["wilcoxon"]
    p_threshold: float = Field(0.1, gt=0.0, lt=1.0)
    n_startup_steps: int = Field(2, ge=0, description="paired (epoch, seed) values first")


Pruner = Annotated[
    NoPruner | MedianPruner | SuccessiveHalvingPruner | HyperbandPruner | WilcoxonPruner,
    Field(discriminator="name"),
]


def make_sampler(sampler: Sampler, seed_offset: int = 0) -> optuna.samplers.BaseSampler:
    """The Optuna sampler ``sampler`` describes (``tpe`` by default). A seeded sampler starts
    from ``seed + seed_offset``: a resumed study passes its number of stored trials, so it
    draws new configurations instead of replaying the first driver's."""
    s = sampler
    seed = None if s.seed is None else s.seed + seed_offset
    if s.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if s.name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=s.n_startup_trials)
    # Optuna 5 defaults: multivariate TPE, constant_liar=True (running trials count as bad).
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=s.n_startup_trials)


def make_pruner(pruner: Pruner, epochs: int) -> optuna.pruners.BasePruner:
    """The Optuna pruner ``pruner`` describes; Hyperband's ``max_resource`` is ``epochs``."""
    p = pruner
    if p.name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=p.n_startup_trials,
                                           n_warmup_steps=p.n_warmup_steps)
    if p.name == "successive-halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=p.min_resource,
                                                      reduction_factor=p.reduction_factor)
    if p.name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=p.min_resource,
                                              max_resource=epochs,
                                              reduction_factor=p.reduction_factor)
    if p.name == "wilcoxon":
        with warnings.catch_warnings():  # experimental since Optuna 3.6; chosen knowingly
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.pruners.WilcoxonPruner(p_threshold=p.p_threshold,
                                                 n_startup_steps=p.n_startup_steps)
    return optuna.pruners.NopPruner()
