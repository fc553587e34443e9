"""``none``: leave dead neurons dead. The control for every revival idea.

It still detects and keeps the history, so its curves hold the natural resurrections (by block)
that REV-WAIT's claim is about. Touches no weight and no optimizer state.
"""

from __future__ import annotations

import torch

from dagstudy.model.dagnet import DagNet
from dagstudy.revival.base import Policy


class NoRevival(Policy):
    id = "none"

    def select(self, model: DagNet, dead: torch.Tensor, epoch: int) -> torch.Tensor:
        """Nothing, ever."""
        return torch.zeros_like(dead)
