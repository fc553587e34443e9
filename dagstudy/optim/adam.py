"""``adam``: minibatch Adam (elementwise, so each seed's moments are its own). Baseline."""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field

from dagstudy.optim.torch_baseline import TorchOptimizerVariant


class AdamParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    beta1: float = Field(0.9, ge=0.0, lt=1.0)
    beta2: float = Field(0.999, ge=0.0, lt=1.0)
    eps: float = Field(1e-8, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)


class Adam(TorchOptimizerVariant):
    id = "adam"
    Params = AdamParams

    def make_optimizer(self) -> torch.optim.Optimizer:
        hp = self.hp
        return torch.optim.Adam(
            self.params, lr=self.lr, betas=(hp.beta1, hp.beta2), eps=hp.eps,
            weight_decay=hp.weight_decay,
        )
