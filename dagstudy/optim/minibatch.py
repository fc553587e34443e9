"""Minibatch baselines whose hyperparameters may differ per seed (packed trials).

``MinibatchVariant`` runs one ``step`` per minibatch through ``problem.update``. Its
hyperparameters are per-seed tensors (``Variant.per_seed``), so one population can hold several
configurations (``dagstudy.packing``) and each seed is updated exactly as if it trained alone:
every operation is elementwise along the seed dim. ``sgd`` and ``adam`` follow the arithmetic of
``torch.optim.SGD`` and ``torch.optim.Adam`` (single-tensor path), with a per-seed tensor where
torch has a Python scalar; they match torch to float rounding (``tests/test_optim.py``).
"""

from __future__ import annotations

import torch

from dagstudy.optim.base import Variant
from dagstudy.problem import Problem


class MinibatchVariant(Variant):
    """One ``step()`` per minibatch of ``problem.batches()``; ``state`` maps a parameter to its
    optimizer tensors (shaped like it: momenta, moments)."""

    def __init__(self, params, lr, hp, members=None):
        super().__init__(params, lr, hp, members)
        self.state: dict[torch.nn.Parameter, dict[str, torch.Tensor]] = {}
        self.steps = 0

    def run_pass(self, problem: Problem) -> dict[str, torch.Tensor]:
        for idx in problem.batches():
            problem.backward(idx)
            problem.update(self.step)
        return {}

    @torch.no_grad()
    def step(self) -> None:
        self.steps += 1
        for p in self.params:
            if p.grad is not None:
                self.update_param(p, p.grad, self.state.setdefault(p, {}))

    def update_param(self, p: torch.Tensor, grad: torch.Tensor,
                     state: dict[str, torch.Tensor]) -> None:
        """Write ``p``'s new value in place from ``grad`` and its ``state``."""
        raise NotImplementedError

    def state_tensors(self, param):
        return list(self.state.get(param, {}).values())
