"""``adam``: minibatch Adam (elementwise, so each seed's moments are its own). Baseline.

Per seed ``s`` at step ``t`` (``torch.optim.Adam``'s rule, L2 weight decay): ``g += wd_s p``;
``m = beta1_s m + (1 - beta1_s) g``; ``v = beta2_s v + (1 - beta2_s) g^2``;
``p -= lr_s / (1 - beta1_s^t) * m / (sqrt(v) / sqrt(1 - beta2_s^t) + eps_s)``.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field

from dagstudy.optim.base import shaped
from dagstudy.optim.minibatch import MinibatchVariant


class AdamParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    beta1: float = Field(0.9, ge=0.0, lt=1.0)
    beta2: float = Field(0.999, ge=0.0, lt=1.0)
    eps: float = Field(1e-8, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)


class Adam(MinibatchVariant):
    id = "adam"
    Params = AdamParams
    packable: ClassVar[frozenset[str]] = frozenset(
        {"lr", "beta1", "beta2", "eps", "weight_decay"})

    @torch.no_grad()
    def step(self) -> None:
        """Per seed at this step ``t``, once for every parameter's update: the bias-corrected
        step ``lr / (1 - beta1^t)`` and ``sqrt(1 - beta2^t)``."""
        t = self.steps + 1
        self._step_size = [lr / (1 - b1**t)
                           for lr, b1 in zip(self.values("lr"), self.values("beta1"))]
        self._bias2_sqrt = [(1 - b2**t) ** 0.5 for b2 in self.values("beta2")]
        super().step()

    def update_param(self, p, grad, state):
        if self.any_nonzero("weight_decay"):
            grad = grad + self.per_seed("weight_decay", p) * p
        if not state:
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
        beta1, beta2 = self.per_seed("beta1", p), self.per_seed("beta2", p)
        state["exp_avg"].lerp_(grad, 1 - beta1)
        state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad * (1 - beta2))
        step_size, bias2_sqrt = shaped(self._step_size, p), shaped(self._bias2_sqrt, p)
        denom = (state["exp_avg_sq"].sqrt() / bias2_sqrt).add_(self.per_seed("eps", p))
        p.sub_(step_size * state["exp_avg"] / denom)
