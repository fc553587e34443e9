"""The ``Variant`` base class: one optimizer variant of ``dagstudy.optim``, training one pass of a
``dagstudy.problem.Problem`` at a time."""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict

from dagstudy.problem import Problem


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Variant:
    """Base class of an optimizer variant (one file per variant, registered by its ID).

    Subclasses set ``id`` (the registry key), ``idea`` (the IDEAS.md ID it tests, or None for a
    baseline) and ``Params`` (a pydantic model of its own hyperparameters, ``extra="forbid"``),
    and implement ``run_pass``, writing weights through ``problem.update``. ``lr`` is the
    config's learning rate (its meaning is the variant's: a step size; the Lipschitz variants
    take their step from ``L`` and their own ``Params`` and ignore it).
    """

    id: ClassVar[str]
    idea: ClassVar[str | None] = None
    Params: ClassVar[type[BaseModel]] = NoParams

    def __init__(self, params: list[torch.nn.Parameter], lr: float, hp: BaseModel):
        self.params = params
        self.lr = lr
        self.hp = hp

    def run_pass(self, problem: Problem) -> dict[str, torch.Tensor]:
        """Train one pass; return per-seed pass statistics (name -> ``[S]`` tensor)."""
        raise NotImplementedError

    def state_tensors(self, param: torch.nn.Parameter) -> list[torch.Tensor]:
        """Optimizer state shaped like ``param`` (momenta, moments); revival resets entries."""
        return []

    @torch.no_grad()
    def reset_state(self, param: torch.nn.Parameter, where: torch.Tensor) -> None:
        """Zero every state entry of ``param`` where the boolean ``where`` (its shape) is set."""
        for state in self.state_tensors(param):
            state.masked_fill_(where, 0.0)
