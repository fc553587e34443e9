"""``lipschitz-minibatch`` (OPT-MINIBATCH-L): minibatch steps at a Lipschitz-based rate, with
momentum carried from one pass to the next.

Scaling. The Problem's losses are per-seed MEANS: ``f = (1/n) sum_i l_i`` over the ``n``
training cases, and a batch ``B`` gives ``g_B = (1/|B|) sum_{i in B} grad l_i``. ``L`` is the
Lipschitz estimate of ``grad f`` (the mean), refreshed at the start of every pass by the
backtracking search of ``fullbatch-ista`` (``lipschitz.py``) at the pass's starting weights,
whose step is then undone. The text's objective is the SUM ``F = n f``, whose Lipschitz constant
is ``n L``, and its per-case step is ``grad l_i / (n L)``; a batch's step is the sum of its
cases' steps, times a multiplier ``c``:

    rate_B = c |B| / (n L D),     w <- w - rate_B * (update direction below)

(``D`` = depth when ``depth_scale``, else 1). With ``c = 1`` and no momentum, one pass of these
steps moves about as far as one full-batch step ``1/L``. Momentum ``mu`` (buffer ``v`` carried
across passes, or zeroed at every pass start when ``reset_momentum``: the control):
heavy ball ``v <- mu v + g_B`` and direction ``v``; Nesterov: direction ``g_B + mu v``.
The default ``c = 1, mu = 0.9`` (about ten full-batch steps' worth per pass) trains digits well.

Per pass it reports ``lipschitz``, ``backtracks`` and ``rate`` (``rate_B`` of a full batch).
The config's ``lr`` is not used.
"""

from __future__ import annotations

from functools import partial

import torch
from pydantic import Field

from dagstudy.optim.base import Variant
from dagstudy.optim.lipschitz import Backtracker, BacktrackParams, depth_divisor, seed_view
from dagstudy.problem import Problem


class MinibatchLParams(BacktrackParams):
    c: float = Field(1.0, gt=0.0)  # multiplier of the per-case rate 1 / (n L)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    nesterov: bool = False
    reset_momentum: bool = False  # zero the momentum at every pass start (the control)


class LipschitzMinibatch(Variant):
    id = "lipschitz-minibatch"
    idea = "OPT-MINIBATCH-L"
    Params = MinibatchLParams

    def __init__(self, params, lr, hp, members=None):
        super().__init__(params, lr, hp, members)
        self.backtracker = Backtracker(params, hp)
        self.velocity = [torch.zeros_like(q.detach()) for q in params]

    @torch.no_grad()
    def estimate_lipschitz(self, problem: Problem) -> torch.Tensor:
        """Backtracked ``L`` at the current weights (left unchanged); returns the evaluations."""
        with torch.enable_grad():
            f_y = problem.full_gradient()
        y = [p.detach().clone() for p in self.params]
        grads = [p.grad for p in self.params]
        result = self.backtracker.step(problem, y, grads, f_y)
        for p, v in zip(self.params, y):
            p.copy_(v)
        return result.evals

    def run_pass(self, problem: Problem) -> dict[str, torch.Tensor]:
        hp = self.hp
        evals = self.estimate_lipschitz(problem)
        usable = problem.alive.clone()
        usable[list(problem.failures)] = False
        divisor = depth_divisor(problem, hp.depth_scale)
        lipschitz = self.backtracker.lipschitz
        per_case = hp.c / (problem.n_train * lipschitz * divisor)
        per_case = torch.where(usable, per_case, 0.0)
        if hp.reset_momentum:
            for v in self.velocity:
                v.zero_()
        for idx in problem.batches():
            problem.backward(idx)
            problem.update(partial(self._step, per_case * idx.shape[1]))
        return {
            "lipschitz": lipschitz, "backtracks": evals,
            "rate": per_case * problem.batch_size,
        }

    @torch.no_grad()
    def _step(self, rate: torch.Tensor) -> None:
        mu = self.hp.momentum
        for p, v in zip(self.params, self.velocity):
            v.mul_(mu).add_(p.grad)
            direction = p.grad + mu * v if self.hp.nesterov else v
            p.sub_(seed_view(rate, p) * direction)

    def state_tensors(self, param):
        return [v for p, v in zip(self.params, self.velocity) if p is param]
