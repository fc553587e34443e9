"""The DAG network with a leading population (seed) dimension.

Shapes: ``S`` seeds, ``B`` examples per seed, ``d_in`` inputs, ``D`` blocks of ``w`` nodes,
``C`` classes. Every parameter has shape ``[S, neurons, ...]``: dim 0 is the seed, dim 1 the
neuron (a hidden node or an output), so optimizers, revival policies and diagnostics act per seed
and per neuron by indexing those two dims.

- ``weights[k]``: ``[S, w, hi_k - lo_k]`` incoming weights of block k (masked by the topology)
- ``biases[k]``:  ``[S, w]``
- ``out_weight``: ``[S, C, n_columns - readout_lo]``, ``out_bias``: ``[S, C]``

The hidden stack runs in one custom autograd Function that owns a preallocated prefix buffer
``[S, B, n_columns]`` (inputs then every block's ReLU output) and writes its own backward:
no O(depth^2) concatenations, and no in-place writes that autograd's version counter would
reject (see PERF-NOTES.md). Seeds never mix: every matmul is a batched ``bmm`` over dim 0.

``grad_floor`` (a ``GradFloor``, or None: the default, whose path is unchanged) applies
GRAD-FLOOR to the backward of every block and of the readout (see ``grad_floor.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from dagstudy.model.grad_floor import FlooredReadout, GradFloor
from dagstudy.model.topology import Topology, layer_norm, layer_norm_backward


def _per_seed(value: float | Sequence[float], n_seeds: int, dtype: torch.dtype) -> torch.Tensor:
    """``[S, 1]``: one value for every seed, or one per seed (a sequence of ``n_seeds``)."""
    values = [value] * n_seeds if isinstance(value, (int, float)) else list(value)
    if len(values) != n_seeds:
        raise ValueError(f"{len(values)} per-seed values for {n_seeds} seeds")
    return torch.tensor(values, dtype=torch.float64).to(dtype).unsqueeze(1)


class PrefixStack(torch.autograd.Function):
    """Hidden blocks of a DAG over one prefix buffer.

    forward(x [S,B,d_in], topo, floor, *weights_and_biases) -> buffer [S,B,n_columns].
    ``weights_and_biases`` alternates effective (already masked) ``W_k`` and ``b_k``; ``floor``
    is a ``GradFloor`` applied in the backward, or None.
    """

    @staticmethod
    def forward(ctx, x, topo: Topology, floor: GradFloor | None, *wb):
        S, B, d_in = x.shape
        w = topo.width
        buf = x.new_empty(S, B, topo.n_columns)
        buf[..., :d_in] = x
        active = torch.empty(S, B, topo.depth * w, dtype=torch.bool, device=x.device)
        for k, blk in enumerate(topo.blocks):
            W, b = wb[2 * k], wb[2 * k + 1]
            x_k = buf[..., blk.lo : blk.hi]
            if topo.normed and k > 0:
                x_k = layer_norm(x_k)[0]
            z = torch.baddbmm(b.unsqueeze(1), x_k, W.transpose(1, 2))
            active[..., k * w : (k + 1) * w] = z > 0
            h = z.clamp_(min=0)
            if topo.residual and k > 0:
                h += buf[..., blk.hi - w : blk.hi]
            buf[..., blk.hi : blk.hi + w] = h
        ctx.topo, ctx.floor = topo, floor
        ctx.save_for_backward(buf, active, *wb)
        return buf

    @staticmethod
    def backward(ctx, gbuf):
        topo: Topology = ctx.topo
        floor: GradFloor | None = ctx.floor
        buf, active, *wb = ctx.saved_tensors
        w = topo.width
        g = gbuf.clone()
        grads: list[torch.Tensor | None] = [None] * len(wb)
        for k in reversed(range(topo.depth)):
            blk = topo.blocks[k]
            gh = g[..., blk.hi : blk.hi + w]
            if topo.residual and k > 0:
                g[..., blk.hi - w : blk.hi] += gh
            gz = gh * active[..., k * w : (k + 1) * w]
            W, x = wb[2 * k], buf[..., blk.lo : blk.hi]
            normed = topo.normed and k > 0
            if normed:
                x, sigma = layer_norm(x)
            if ctx.needs_input_grad[3 + 2 * k]:
                grads[2 * k] = (torch.bmm(gz.transpose(1, 2), x) if floor is None
                                else floor.weight_grad(k, gz, x))
            if ctx.needs_input_grad[4 + 2 * k]:
                grads[2 * k + 1] = gz.sum(1)
            # Input columns need a gradient only when x does (never in training): skip them.
            lo = blk.lo if ctx.needs_input_grad[0] else max(blk.lo, topo.d_in)
            if lo < blk.hi:
                if floor is not None:
                    W = floor.input_weight(W, blk.mask)
                if normed:  # reads block k-1 only: no input columns
                    g[..., lo : blk.hi] += layer_norm_backward(x, sigma, torch.bmm(gz, W))
                else:
                    g[..., lo : blk.hi].baddbmm_(gz, W[..., lo - blk.lo :])
        gx = g[..., : topo.d_in] if ctx.needs_input_grad[0] else None
        return (gx, None, None, *grads)


class DagNet(nn.Module):
    """A population of ``S`` DAG networks sharing one topology (masks may differ by seed).

    ``bias_init`` and ``init_scale`` (``reset_parameters``) are one value for every seed or one
    per seed (packed trials: several configurations in one population)."""

    def __init__(
        self,
        topo: Topology,
        n_classes: int,
        seeds: list[int],
        *,
        bias_init: float | Sequence[float] = 0.0,
        init_scale: float | Sequence[float] = 1.0,
        duplicates: float = 0.0,
        dtype: torch.dtype = torch.float32,
        grad_floor: GradFloor | None = None,
    ):
        super().__init__()
        self.topo = topo
        self.grad_floor = grad_floor
        self.seeds = list(seeds)
        S, w = len(seeds), topo.width
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for k, blk in enumerate(topo.blocks):
            self.weights.append(nn.Parameter(torch.zeros(S, w, blk.hi - blk.lo, dtype=dtype)))
            self.biases.append(nn.Parameter(_per_seed(bias_init, S, dtype).expand(S, w).clone()))
            if blk.mask is not None:
                self.register_buffer(f"mask{k}", blk.mask.to(dtype))
        n_read = topo.n_columns - topo.readout_lo
        self.out_weight = nn.Parameter(torch.zeros(S, n_classes, n_read, dtype=dtype))
        self.out_bias = nn.Parameter(torch.zeros(S, n_classes, dtype=dtype))
        self.reset_parameters(init_scale)
        self.plant_duplicates(duplicates)

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)

    def mask(self, k: int) -> torch.Tensor | None:
        """Block ``k``'s 0/1 mask ``[S, w, hi-lo]`` on the parameters' device, or None."""
        return getattr(self, f"mask{k}", None)

    def effective_weight(self, k: int) -> torch.Tensor:
        m = self.mask(k)
        return self.weights[k] if m is None else self.weights[k] * m

    @torch.no_grad()
    def reset_parameters(self, scale: float | Sequence[float] = 1.0) -> None:
        """He init by each node's actual (mask-aware) fan-in; LeCun init for the readout; every
        weight times ``scale`` (GRAD-FLOOR's planted setting: weights near zero).

        Seed ``s`` draws from its own generator, so its initial weights do not depend on which
        other seeds share the population.
        """
        scales = _per_seed(scale, self.n_seeds, torch.float64).flatten().tolist()
        for i, seed in enumerate(self.seeds):
            gen = torch.Generator().manual_seed(seed)
            for k in range(self.topo.depth):
                W = self.weights[k]
                fan = self.topo.fan_in(k)[min(i, self.topo.fan_in(k).shape[0] - 1)]
                std = (2.0 / fan.clamp(min=1)).sqrt().unsqueeze(-1)
                noise = torch.randn(W.shape[1:], generator=gen, dtype=torch.float64)
                W[i] = (noise * std.double() * scales[i]).to(W.dtype)
                m = self.mask(k)
                if m is not None:
                    W[i] *= m[i]
            W = self.out_weight
            noise = torch.randn(W.shape[1:], generator=gen, dtype=torch.float64)
            W[i] = (noise * scales[i] / math.sqrt(W.shape[2])).to(W.dtype)
            self.out_bias[i] = 0.0

    @torch.no_grad()
    def plant_duplicates(self, fraction: float) -> None:
        """Make the last ``round(fraction * width)`` nodes of every block exact copies of its
        first ones (``fraction`` <= 0.5): same incoming weights and bias, and the same weight in
        every consumer (later blocks, readout). Such a pair gets identical gradients, so updates
        that treat neurons alike never separate it: OPT-JITTER's planted mechanism. Dense
        topologies only (a fan-in mask differs per node)."""
        w = self.topo.width
        m = round(fraction * w)
        if m == 0:
            return
        if not 0 < fraction <= 0.5 or any(b.mask is not None for b in self.topo.blocks):
            raise ValueError(f"duplicates: needs 0 <= fraction <= 0.5 and a dense topology "
                             f"(got {fraction}, {self.topo.kind})")
        for k in range(self.topo.depth):
            self.weights[k][:, w - m :] = self.weights[k][:, :m]
            self.biases[k][:, w - m :] = self.biases[k][:, :m]
        for k in range(self.topo.depth):
            start = self.topo.block_start(k)
            for t in range(m):
                copy, original = self.consumers(start + w - m + t), self.consumers(start + t)
                for (param, _, c_copy), (_, _, c_orig) in zip(copy, original):
                    param[..., c_copy] = param[..., c_orig]

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """The prefix buffer ``[S, B, n_columns]``: inputs, then every hidden node's output."""
        wb = []
        for k in range(self.topo.depth):
            wb += [self.effective_weight(k), self.biases[k]]
        return PrefixStack.apply(x, self.topo, self.grad_floor, *wb)

    def readout(self, buf: torch.Tensor) -> torch.Tensor:
        """Logits ``[S, B, C]`` from the prefix buffer."""
        read = buf[..., self.topo.readout_lo :]
        if self.grad_floor is not None:
            key = self.topo.depth
            return FlooredReadout.apply(read, self.out_weight, self.out_bias, self.grad_floor, key)
        return torch.baddbmm(self.out_bias.unsqueeze(1), read, self.out_weight.transpose(1, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [S, B, d_in]`` -> logits ``[S, B, C]``."""
        return self.readout(self.hidden(x))

    def neuron_count(self) -> int:
        return self.topo.depth * self.topo.width

    def consumers(self, column: int) -> list[tuple[nn.Parameter, torch.Tensor | None, int]]:
        """Every weight that reads buffer ``column``: ``(param, mask_or_None, local_column)``.

        Hidden blocks whose range covers the column, then the readout if it does. Revival
        policies use this to edit a neuron's outgoing weights.
        """
        out = []
        for k, blk in enumerate(self.topo.blocks):
            if blk.lo <= column < blk.hi:
                out.append((self.weights[k], self.mask(k), column - blk.lo))
        if column >= self.topo.readout_lo:
            out.append((self.out_weight, None, column - self.topo.readout_lo))
        return out

    def param_count(self) -> int:
        """Trainable parameters of one network (one seed): connections + biases + readout."""
        t = self.topo
        readout = self.out_weight[0].numel() + self.out_bias.shape[1]
        return t.connections() + t.depth * t.width + readout

    def flops_per_example(self) -> int:
        """2 x multiply-adds of one network's forward pass per example (masks counted exactly)."""
        return 2 * (self.topo.connections() + self.out_weight[0].numel())
