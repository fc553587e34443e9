"""``fullbatch-ista`` (OPT-FULLBATCH, OPT-LAYERSCALE): one proximal gradient step per pass.

Each pass: ``problem.full_gradient()`` sums the gradient of each seed's mean loss over its whole
training split in chunks (the weights do not move during the pass), then one step

    x+ = prox_{lambda / (L D)}(w - g / (L D))

with ``L`` per seed by backtracking from ``shrink`` times the last pass's ``L`` (``lipschitz.py``:
units, the acceptance test, float resolution, which parameters the L1 term penalises).
``D = depth`` when ``depth_scale`` (OPT-LAYERSCALE: each of the ``depth`` blocks does an equal
share), else 1. With ``l1 = lambda > 0`` this is ISTA proper on ``f(w) + lambda ||W||_1`` (weight
matrices only, biases unpenalised); with ``shrink = 1`` ``L`` never decreases (Beck & Teboulle's
scheme, which their convergence bounds assume). The objective ``f + lambda ||W||_1`` does not
increase from one pass to the next (up to the float tolerance; jitter aside).

Per pass it reports ``lipschitz`` (accepted ``L``) and ``backtracks`` (evaluations of ``f``).
A seed whose gradient is non-finite or whose ``L`` passes ``lipschitz_cap`` is ended.
The config's ``lr`` is not used: the step is ``1 / (L D)``.
"""

from __future__ import annotations

import torch
from pydantic import Field

from dagstudy.optim.base import Variant
from dagstudy.optim.lipschitz import Backtracker, BacktrackParams, StepResult, depth_divisor
from dagstudy.problem import Problem


class FullBatchParams(BacktrackParams):
    l1: float = Field(0.0, ge=0.0)  # lambda of the L1 penalty on weight matrices


class FullBatchISTA(Variant):
    id = "fullbatch-ista"
    idea = "OPT-FULLBATCH"
    Params = FullBatchParams

    def __init__(self, params, lr, hp, members=None):
        super().__init__(params, lr, hp, members)
        self.backtracker = Backtracker(params, hp)

    def prox_step(self, problem: Problem) -> tuple[StepResult, list[torch.Tensor], list]:
        """Full gradient at the current weights ``y``, then the backtracked step to ``x+``.

        Returns the search result, ``y`` and the gradients (aligned with ``problem.params``).
        """
        f_y = problem.full_gradient()
        y = [p.detach().clone() for p in self.params]
        grads = [p.grad for p in self.params]
        divisor = depth_divisor(problem, self.hp.depth_scale)
        result = problem.update(
            lambda: self.backtracker.step(problem, y, grads, f_y, divisor=divisor, l1=self.hp.l1)
        )
        return result, y, grads

    def run_pass(self, problem: Problem) -> dict[str, torch.Tensor]:
        result, _, _ = self.prox_step(problem)
        return {"lipschitz": result.lipschitz, "backtracks": result.evals}
