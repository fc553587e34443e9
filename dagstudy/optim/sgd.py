"""``sgd``: minibatch SGD with optional (heavy-ball or Nesterov) momentum. The baseline control."""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field

from dagstudy.optim.torch_baseline import TorchOptimizerVariant


class SGDParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    momentum: float = Field(0.0, ge=0.0, lt=1.0)
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0.0)


class SGD(TorchOptimizerVariant):
    id = "sgd"
    Params = SGDParams

    def make_optimizer(self) -> torch.optim.Optimizer:
        hp = self.hp
        return torch.optim.SGD(
            self.params, lr=self.lr, momentum=hp.momentum,
            nesterov=hp.nesterov and hp.momentum > 0, weight_decay=hp.weight_decay,
        )
