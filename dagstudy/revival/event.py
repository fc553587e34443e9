"""``Event``: one revival event of a policy (one pass, all seeds): what was revived, and every
parameter entry written, so the optimizer state of exactly those entries can be reset."""

from __future__ import annotations

import torch
from torch import nn

from dagstudy.model.dagnet import DagNet
from dagstudy.problem import OptimizerState


class Event:
    """One revival event (one pass, all seeds): what was revived, and every entry written.

    - ``revived [S, n_hidden]``: nodes the policy revived;
    - ``skipped [S, n_hidden]``: selected nodes it left as they were (no live neighbour);
    - ``partner [S, n_hidden]``: hidden index of the neighbour a revived node was copied from
      (``split``; the pair whose similarity is tracked), -1 otherwise;
    - ``touched``: per parameter, the boolean mask of entries written (``write``).
    """

    def __init__(self, model: DagNet):
        shape = (model.n_seeds, model.neuron_count())
        device = model.out_bias.device
        self.revived = torch.zeros(shape, dtype=torch.bool, device=device)
        self.skipped = torch.zeros(shape, dtype=torch.bool, device=device)
        self.partner = torch.full(shape, -1, dtype=torch.long, device=device)
        self.touched: dict[int, tuple[nn.Parameter, torch.Tensor]] = {}

    @torch.no_grad()
    def write(self, param: nn.Parameter, index: tuple, value: torch.Tensor | float) -> None:
        """``param[index] = value``, remembering the entries for the optimizer-state reset."""
        param[index] = value
        if id(param) not in self.touched:
            self.touched[id(param)] = (param, torch.zeros_like(param, dtype=torch.bool))
        self.touched[id(param)][1][index] = True

    def reset_optimizer(self, variant: OptimizerState) -> None:
        """Zero the optimizer state (momenta, moments) of every entry written."""
        for param, where in self.touched.values():
            variant.reset_state(param, where)
