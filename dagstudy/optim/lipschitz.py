"""Proximal gradient steps with a Lipschitz estimate by backtracking (Beck & Teboulle 2009),
per seed. Shared by ``fullbatch-ista`` / ``fista`` (OPT-FULLBATCH, OPT-FISTA) and
``lipschitz-minibatch`` (OPT-MINIBATCH-L).

Notation, per seed (every tensor has the seed on dim 0; seeds never mix): ``f`` is the seed's
MEAN training loss (``Problem.full_loss``), ``y`` the weights where ``g = grad f(y)`` was taken,
``L > 0`` the estimate of the Lipschitz constant of ``grad f`` (units: loss / weight^2),
``D`` the step divisor (1, or the number of hidden blocks under OPT-LAYERSCALE) and
``lambda >= 0`` an L1 weight. The step from ``y`` is

    x+ = prox_{lambda / (L D)}(y - g / (L D)),      prox_t(v) = sign(v) max(|v| - t, 0)

where the soft threshold acts on weight matrices only (parameters ``[S, neuron, input]``, 3 dims);
biases (``[S, neuron]``) are never penalised, like the Lasso's intercept. ``L`` is accepted when
``f`` at ``x+`` lies under the quadratic model of ``f`` around ``y``:

    f(x+) <= f(y) + q + tol,    q = <g, d> + (L / 2) ||d||^2,    d = x+ - y             (*)

which for ``lambda = 0, D = 1`` is the familiar ``f(y - g/L) <= f(y) - ||g||^2 / (2L)``. Every
``L`` at or above the true Lipschitz constant satisfies (*) (descent lemma), so a search that
starts below it and multiplies by ``eta`` until (*) holds ends below ``eta`` times the true
constant; for a quadratic the accepted ``L`` lies in ``[c, eta c)``, ``c`` the curvature along
the step. ``d`` is measured from the written weights, so rounding of ``x+`` is accounted for.

Float resolution. ``tol = 64 eps(dtype) max(1, |f(y)|)`` is about the resolution of ``f`` (a
cross-entropy computed in float32 is quantised at ``eps`` times its logits, and reaches 0): a step
whose predicted change ``|q|`` is below ``tol`` cannot be checked, so it is accepted rather than
driving ``L`` up forever, and it is *unresolved*. Each pass starts from ``shrink * L`` only if the
previous pass's step was resolved, else from ``L`` itself: otherwise near a minimum ``L`` would
shrink every pass while ``f`` cannot tell, and the step ``|g| / L`` would grow without bound.

``backtrack: false`` turns the search off: ``L`` stays ``lipschitz_init`` and every step is
taken (a fixed step ``1 / (L D)``), so OPT-LAYERSCALE's divisor cannot be undone by the search
growing or shrinking ``L`` (with backtracking the steps of the two arms end 1.25 vs 2.0 apart
instead of a factor of the depth).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from pydantic import BaseModel, ConfigDict, Field

from dagstudy.problem import Problem


class BacktrackParams(BaseModel):
    """How ``L`` is searched, shared by every Lipschitz variant."""

    model_config = ConfigDict(extra="forbid")
    lipschitz_init: float = Field(1.0, gt=0.0)  # L before the first pass
    eta: float = Field(2.0, gt=1.0)  # growth factor while (*) fails
    shrink: float = Field(0.5, gt=0.0, le=1.0)  # a pass starts from shrink * last L (1: never)
    lipschitz_cap: float = Field(1e8, gt=0.0)  # L above this ends the seed (problem.fail)
    depth_scale: bool = False  # OPT-LAYERSCALE: divide the step by the number of blocks
    backtrack: bool = True  # False: L stays lipschitz_init, every step accepted (a fixed step)


@dataclass
class StepResult:
    """Per-seed outcome ``[S]`` of one backtracking search."""

    lipschitz: torch.Tensor  # accepted L (unchanged for seeds that did not step)
    evals: torch.Tensor  # evaluations of f this search took (0 for seeds that did not step)
    loss: torch.Tensor  # f(x+) (f(y) for seeds that did not step)


def seed_view(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``[S]`` -> ``[S, 1, ...]`` broadcastable against ``like``."""
    return v.view(-1, *[1] * (like.dim() - 1))


def seed_dot(a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
    """Per-seed inner product over a list of tensors: ``[S]``."""
    return sum((x * y).flatten(1).sum(1) for x, y in zip(a, b))


def soft_threshold(v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``sign(v) max(|v| - t, 0)`` elementwise (``t`` broadcast): exact zeros where ``|v| <= t``."""
    return v.sign() * (v.abs() - t).clamp(min=0.0)


def is_penalised(param: torch.Tensor) -> bool:
    """L1 applies to weight matrices ``[S, neuron, input]``, never to biases ``[S, neuron]``."""
    return param.dim() >= 3


def l1_norm(params: list[torch.Tensor]) -> torch.Tensor:
    """Per-seed L1 norm of the penalised parameters: ``[S]``."""
    return sum(p.detach().abs().flatten(1).sum(1) for p in params if is_penalised(p))


def depth_divisor(problem: Problem, depth_scale: bool) -> int:
    """``D`` of the module doc: the number of hidden blocks under OPT-LAYERSCALE, else 1."""
    return problem.model.topo.depth if depth_scale else 1


class Backtracker:
    """Per-seed ``L`` and whether the last step was resolved (module doc), for ``params``."""

    def __init__(self, params: list[torch.Tensor], hp: BacktrackParams):
        p = params[0]
        self.hp = hp
        self.lipschitz = torch.full((p.shape[0],), hp.lipschitz_init, dtype=p.dtype)
        self.lipschitz = self.lipschitz.to(p.device)
        self.resolved = torch.ones(p.shape[0], dtype=torch.bool, device=p.device)

    @torch.no_grad()
    def step(
        self,
        problem: Problem,
        y: list[torch.Tensor],
        grads: list[torch.Tensor],
        f_y: torch.Tensor,
        *,
        divisor: int = 1,
        l1: float = 0.0,
    ) -> StepResult:
        """Search ``L`` per seed and leave ``problem.params`` at ``x+`` (module doc).

        ``y``/``grads`` align with ``problem.params``; ``f_y [S]`` is ``f(y)``. All seeds are
        evaluated together (one ``problem.full_loss()`` per trial); only seeds whose (*) still
        fails grow ``L``. A live seed whose ``f(y)`` or gradient is non-finite, or whose ``L``
        passes ``lipschitz_cap``, is ended with ``problem.fail`` and left at ``y``.
        """
        hp, params = self.hp, problem.params
        gnorm = seed_dot(grads, grads)
        moving = problem.alive.clone()
        for i in torch.nonzero(moving & ~(f_y.isfinite() & gnorm.isfinite())).flatten().tolist():
            problem.fail(i, f"non-finite loss or gradient at the full-batch step (f={f_y[i]:.3g})")
            moving[i] = False
        if hp.backtrack:
            L = torch.where(moving & self.resolved, self.lipschitz * hp.shrink, self.lipschitz)
        else:
            L = self.lipschitz
        tol = 64 * torch.finfo(f_y.dtype).eps * f_y.abs().clamp(min=1.0)
        evals = torch.zeros_like(f_y)
        loss = f_y.clone()
        resolved = self.resolved.clone()
        pending = moving.clone()
        while bool(pending.any()):
            _write(params, y, grads, moving, 1.0 / (L * divisor), l1)
            f_x = problem.full_loss()
            d = [p - v for p, v in zip(params, y)]
            q = seed_dot(grads, d) + 0.5 * L * seed_dot(d, d)
            ok = pending & (f_x <= f_y + q + tol)  # NaN compares False: keeps growing L
            if not hp.backtrack:
                ok = pending.clone()  # fixed L: the step is taken whatever the loss does
            evals += pending.to(evals.dtype)
            loss = torch.where(ok, f_x, loss)
            resolved = torch.where(ok, q.abs() > tol, resolved)
            pending &= ~ok
            L = torch.where(pending, L * hp.eta, L)
            exploded = pending & (L > hp.lipschitz_cap)
            for i in torch.nonzero(exploded).flatten().tolist():
                problem.fail(i, f"Lipschitz estimate exploded (L > cap {hp.lipschitz_cap:g})")
            if bool(exploded.any()):
                pending &= ~exploded
                moving &= ~exploded
                loss = torch.where(exploded, f_y, loss)
                if not bool(pending.any()):  # leave the ended seeds at y
                    _write(params, y, grads, moving, 1.0 / (L * divisor), l1)
        self.lipschitz, self.resolved = L, resolved
        return StepResult(lipschitz=L, evals=evals, loss=loss)


def _write(params, y, grads, moving: torch.Tensor, step: torch.Tensor, l1: float) -> None:
    """``params <- prox_{l1 * step}(y - step * g)`` per seed (``step [S]``); ``y`` exactly
    where ``moving [S]`` is False (whatever that seed's gradient holds, NaN included)."""
    for p, v, g in zip(params, y, grads):
        s = seed_view(step, p)
        x = v - s * g
        if l1 > 0 and is_penalised(p):
            x = soft_threshold(x, l1 * s)
        p.copy_(torch.where(seed_view(moving, p), x, v))
