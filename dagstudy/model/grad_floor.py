"""GRAD-FLOOR: a floor on the magnitudes that enter the backward of the masked matmuls.

For a matmul ``z = x W^T`` the weight gradient is ``g^T x`` and the input gradient ``g W``: a
weight whose inputs are 0 does not move, nor does an input whose weights are 0, and a pair that
is both 0 is stuck for good. With a floor ``phi > 0``, the backward (only; the forward and the
loss are untouched) uses ``lift(x)`` and ``lift(W)`` instead, where

    lift(v) = phi * sign(v)  where |v| < phi   (sign(0) = +1: a ReLU output of exactly 0 is +phi)
    lift(v) = v              elsewhere.

Connections a topology mask removes stay removed (their lifted weight is 0).

Hysteresis: the floored weight gradient is used for a weight only when gradient descent with it
moves the weight the same way as the weight's previous update (``Problem.update`` records the
sign of every change), or when the weight has not moved yet; elsewhere the plain gradient
``g^T x`` is used. Both come from the same upstream ``g`` (which, above this matmul, already
flowed through lifted weights). The input gradient always uses the lifted weights.

Keys: hidden block ``k`` is key ``k``; the readout is key ``depth``.
"""

from __future__ import annotations

import torch


class GradFloor:
    """The floor ``phi`` (> 0), the hysteresis switch and each weight's last update sign."""

    def __init__(self, floor: float, hysteresis: bool = False):
        if floor <= 0:
            raise ValueError(f"grad_floor: must be > 0 (got {floor})")
        self.floor = floor
        self.hysteresis = hysteresis
        self.last_sign: dict[int, torch.Tensor] = {}

    def lift(self, v: torch.Tensor) -> torch.Tensor:
        phi = self.floor
        return torch.where(v.abs() < phi, torch.where(v < 0, -phi, phi).to(v.dtype), v)

    def weight_grad(self, key: int, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Gradient ``[S, n_out, n_in]`` of the weights of ``z = x W^T`` from ``g = dL/dz``."""
        floored = torch.bmm(g.transpose(1, 2), self.lift(x))
        last = self.last_sign.get(key)
        if not self.hysteresis or last is None:
            return floored
        plain = torch.bmm(g.transpose(1, 2), x)
        same_way = (last == 0) | (floored * last < 0)  # the step -floored has the sign of last
        return torch.where(same_way, floored, plain)

    def input_weight(self, weight: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """The weights the input gradient ``g W`` uses: lifted, absent connections kept 0."""
        lifted = self.lift(weight)
        return lifted if mask is None else lifted * mask.to(lifted)

    def remember(self, key: int, change: torch.Tensor) -> None:
        """Record the sign of the last update of the weights of ``key``."""
        self.last_sign[key] = change.sign()


class FlooredReadout(torch.autograd.Function):
    """``logits = b + x W^T`` whose backward applies a ``GradFloor`` (key ``key``)."""

    @staticmethod
    def forward(ctx, x, weight, bias, floor: GradFloor, key: int):
        ctx.floor, ctx.key = floor, key
        ctx.save_for_backward(x, weight)
        return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))

    @staticmethod
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        floor: GradFloor = ctx.floor
        gx = torch.bmm(g, floor.input_weight(weight, None)) if ctx.needs_input_grad[0] else None
        gw = floor.weight_grad(ctx.key, g, x) if ctx.needs_input_grad[1] else None
        gb = g.sum(1) if ctx.needs_input_grad[2] else None
        return gx, gw, gb, None, None
