"""Baselines that wrap a ``torch.optim`` optimizer (elementwise, so per seed)."""

from __future__ import annotations

import torch

from dagstudy.optim.base import Variant
from dagstudy.problem import Problem


class TorchOptimizerVariant(Variant):
    """Minibatch training with a ``torch.optim`` optimizer built by ``make_optimizer``."""

    def make_optimizer(self) -> torch.optim.Optimizer:
        raise NotImplementedError

    def __init__(self, params, lr, hp):
        super().__init__(params, lr, hp)
        self.opt = self.make_optimizer()

    def run_pass(self, problem: Problem) -> dict[str, torch.Tensor]:
        for idx in problem.batches():
            problem.backward(idx)
            problem.update(self.opt.step)
        return {}

    def state_tensors(self, param):
        state = self.opt.state.get(param, {})
        return [v for v in state.values() if torch.is_tensor(v) and v.shape == param.shape]
