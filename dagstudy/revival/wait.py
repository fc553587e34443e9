"""``wait`` (REV-WAIT): depth-aware patience before an inner policy revives a dead node.

A dead node of block ``k`` is left alone for ``K_k`` passes, then the inner policy acts on it:
``K_0 = 0`` (block 0's inputs never change, so it cannot come back by itself: revived at its first
detection) and ``K_k = base + growth * k`` for ``k >= 1``. Precisely: a node's *streak* counts the
consecutive passes it has been detected dead (including this one); it is selected when the streak
exceeds ``K_k``, i.e. after the pass ``K_k`` passes after its first detection, having been left
alone for those ``K_k`` passes. A node that comes back by itself meanwhile restarts at 0, and so
does a node handed to the inner policy (revived, or skipped for want of a neighbour): if it dies
again, it waits again. (A selected node that fires at the current weights is not handed over;
its streak goes on.) The control of REV-WAIT is the inner policy alone ("revive at once").

Writes (and resets the optimizer state of) what the inner policy writes. The inner policy's
own detection setting is not used (this policy's ``dormant_threshold`` applies).
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field, ValidationError, field_validator, model_validator

from dagstudy.model.dagnet import DagNet
from dagstudy.revival.base import Event, Policy, RevivalParams

NOT_INNER = ("none", "wait")


class WaitParams(RevivalParams):
    base: int = Field(2, ge=0, description="K_k = base + growth * k passes for block k >= 1")
    growth: int = Field(1, ge=0, description="extra passes of patience per block of depth")
    inner: str = Field("reinit", description="the policy that revives once patience runs out")
    inner_params: dict[str, Any] = {}

    @field_validator("inner")
    @classmethod
    def _known(cls, value: str) -> str:
        allowed = [name for name in Policy.registry if name not in NOT_INNER]
        if value not in allowed:
            raise ValueError(f"unknown {value!r} (allowed: {', '.join(allowed)})")
        return value

    @model_validator(mode="after")
    def _check_inner_params(self) -> WaitParams:
        self.inner_policy()
        return self

    def inner_policy(self) -> Policy:
        """The inner policy, its ``inner_params`` validated by its own ``Params``."""
        cls = Policy.registry[self.inner]
        try:
            return cls(cls.Params(**self.inner_params))
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}"
                                 for err in e.errors())
            raise ValueError(f"inner_params ({self.inner}): {problems}") from None


class Wait(Policy):
    id = "wait"
    idea = "REV-WAIT"
    Params = WaitParams

    def __init__(self, hp: WaitParams):
        super().__init__(hp)
        self.inner = hp.inner_policy()
        self.streak: torch.Tensor | None = None

    def patience(self, model: DagNet) -> torch.Tensor:
        """``K_k`` for every hidden node ``[n_hidden]`` (passes)."""
        blocks = torch.arange(model.topo.depth, device=model.out_bias.device)
        k_of = blocks.repeat_interleave(model.topo.width)
        return torch.where(k_of == 0, 0, self.hp.base + self.hp.growth * k_of)

    def select(self, model: DagNet, dead: torch.Tensor, epoch: int) -> torch.Tensor:
        if self.streak is None:
            self.streak = torch.zeros(dead.shape, dtype=torch.long, device=dead.device)
        self.streak = (self.streak + 1) * dead
        return self.streak > self.patience(model)

    def revive(
        self, model: DagNet, chosen: torch.Tensor, dead: torch.Tensor, event: Event
    ) -> None:
        self.streak.masked_fill_(chosen, 0)
        self.inner.revive(model, chosen, dead, event)
