"""What a revival policy sees and returns.

A policy runs between passes. ``after_pass`` receives the model, the boolean ``dead`` mask
``[S, n_hidden]`` from this pass's detection (hidden node j of block k is column
``k * width + i``), the optimizer variant (to reset state of touched weights) and the problem
(to measure the loss jump), and returns per-seed statistics (name -> ``[S]`` tensor) for the
curves.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict

from dagstudy.model.dagnet import DagNet
from dagstudy.optim.base import Problem, Variant


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Policy:
    id: ClassVar[str]
    idea: ClassVar[str | None] = None
    Params: ClassVar[type[BaseModel]] = NoParams

    def __init__(self, hp: BaseModel):
        self.hp = hp

    def after_pass(
        self, model: DagNet, dead: torch.Tensor, variant: Variant, problem: Problem, epoch: int
    ) -> dict[str, torch.Tensor]:
        raise NotImplementedError
