"""``sgd``: minibatch SGD with optional (heavy-ball or Nesterov) momentum. The baseline control.

Per seed ``s`` (``torch.optim.SGD``'s rule, dampening 0): ``d = g + wd_s p``;
``buf = d`` at the first step, else ``buf = momentum_s buf + d``; ``d = buf`` (heavy ball) or
``d + momentum_s buf`` (Nesterov); ``p -= lr_s d``.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from dagstudy.optim.minibatch import MinibatchVariant


class SGDParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    momentum: float = Field(0.0, ge=0.0, lt=1.0)
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0.0)


class SGD(MinibatchVariant):
    id = "sgd"
    Params = SGDParams
    packable: ClassVar[frozenset[str]] = frozenset({"lr", "momentum", "weight_decay"})

    def update_param(self, p, grad, state):
        d = grad
        if self.any_nonzero("weight_decay"):
            d = d + self.per_seed("weight_decay", p) * p
        if self.any_nonzero("momentum"):
            m = self.per_seed("momentum", p)
            if "momentum" not in state:
                state["momentum"] = d.clone()
            else:
                state["momentum"].mul_(m).add_(d)
            buf = state["momentum"]
            d = d + m * buf if self.hp.nesterov else buf
        p.sub_(self.per_seed("lr", p) * d)
