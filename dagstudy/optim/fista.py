"""``fista`` (OPT-FISTA): FISTA momentum on top of the ``fullbatch-ista`` step.

Pass ``k`` (Beck & Teboulle 2009), per seed: the weights hold the extrapolated point ``y_k``;

    x_k     = prox step from y_k             (fullbatch-ista: full gradient, backtracked L)
    v_k     = x_k - x_{k-1}                  (momentum; x_0 = y_1, so v_1 = x_1 - y_1)
    t_{k+1} = (1 + sqrt(1 + 4 t_k^2)) / 2,   t_1 = 1
    beta_k  = (t_k - 1) / t_{k+1}            (the momentum coefficient, in [0, 1))
    y_{k+1} = x_k + beta_k v_k

``t`` is kept per neuron (one value per row along dim 1 of every parameter, ``[S, rows]``) so
restarts can act on part of a seed. Adaptive restart (O'Donoghue & Candes 2015), ``restart``:

- ``none``: plain FISTA.
- ``function``: when the objective ``F(x_k) = f(x_k) + lambda ||W||_1`` exceeds ``F(x_{k-1})``,
  set the seed's ``t_k = 1`` (so ``beta_k = 0``, ``y_{k+1} = x_k``) before the update above.
  ``F(x_k)`` is the value the backtracking search accepted (before jitter, if any).
- ``gradient-neuron``: the gradient scheme applied per neuron: a row whose gradient at ``y_k``
  opposes its momentum, ``<g_row, v_k,row> > 0`` (the momentum points uphill), gets
  ``t_k = 1``; other rows keep their ``t``. A neuron's incoming weights and its bias are
  separate rows of separate parameters and are tested separately.

Per pass it reports ``lipschitz``, ``backtracks``, ``momentum`` (mean ``beta_k`` over the seed's
rows), ``restarts`` (fraction of the seed's rows reset) and ``objective`` (``F(x_k)``). The
momentum state revival may reset is the pending extrapolation ``beta v``.
"""

from __future__ import annotations

from typing import Literal

import torch

from dagstudy.optim.fullbatch_ista import FullBatchISTA, FullBatchParams
from dagstudy.optim.lipschitz import l1_norm
from dagstudy.problem import Problem


class FistaParams(FullBatchParams):
    restart: Literal["none", "function", "gradient-neuron"] = "function"


def rows(v: torch.Tensor) -> torch.Tensor:
    """``[S, n, ...]`` -> ``[S, n, m]``: one row per neuron (dim 1)."""
    return v.reshape(v.shape[0], v.shape[1], -1)


def next_t(t: torch.Tensor) -> torch.Tensor:
    """``t_{k+1} = (1 + sqrt(1 + 4 t_k^2)) / 2``."""
    return (1.0 + torch.sqrt(1.0 + 4.0 * t * t)) / 2.0


def opposing_rows(grad: torch.Tensor, momentum: torch.Tensor) -> torch.Tensor:
    """Rows ``[S, n]`` whose gradient opposes their momentum: ``<g_row, v_row> > 0``."""
    return (rows(grad) * rows(momentum)).sum(-1) > 0


class FISTA(FullBatchISTA):
    id = "fista"
    idea = "OPT-FISTA"
    Params = FistaParams

    def __init__(self, params, lr, hp, members=None):
        super().__init__(params, lr, hp, members)
        self.t = [torch.ones(p.shape[:2], dtype=p.dtype, device=p.device) for p in params]
        self.extrapolation = [torch.zeros_like(p.detach()) for p in params]  # beta_{k-1} v_{k-1}
        self.objective = torch.full_like(self.backtracker.lipschitz, float("inf"))  # F(x_{k-1})

    @torch.no_grad()
    def run_pass(self, problem: Problem) -> dict[str, torch.Tensor]:
        with torch.enable_grad():
            result, y, grads = self.prox_step(problem)
        objective = result.loss + self.hp.l1 * l1_norm(self.params)
        restart = self.hp.restart
        rose = objective > self.objective
        n_rows = sum(t.shape[1] for t in self.t)
        beta_sum = torch.zeros_like(objective)
        reset_sum = torch.zeros_like(objective)
        for i, p in enumerate(self.params):
            v = p - y[i] + self.extrapolation[i]  # x_k - x_{k-1}
            t = self.t[i]
            if restart == "function":
                reset = rose[:, None].expand_as(t)
            elif restart == "gradient-neuron":
                reset = opposing_rows(grads[i], v)
            else:
                reset = torch.zeros_like(t, dtype=torch.bool)
            t = torch.where(reset, torch.ones_like(t), t)
            self.t[i] = next_t(t)
            beta = (t - 1.0) / self.t[i]
            self.extrapolation[i] = beta.view(*beta.shape, *[1] * (p.dim() - 2)) * v
            p.add_(self.extrapolation[i])
            beta_sum += beta.sum(1)
            reset_sum += reset.sum(1)
        self.objective = objective
        return {
            "lipschitz": result.lipschitz, "backtracks": result.evals,
            "momentum": beta_sum / n_rows, "restarts": reset_sum / n_rows,
            "objective": objective,
        }

    def state_tensors(self, param):
        return [self.extrapolation[i] for i, p in enumerate(self.params) if p is param]

