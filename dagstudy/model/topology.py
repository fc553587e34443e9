"""Connection structure of a DAG network: which buffer columns each hidden block reads.

All nodes live in one column space, the *prefix buffer*: columns ``[0, d_in)`` are the inputs,
block ``k`` (of ``width`` nodes) owns columns ``[d_in + k*width, d_in + (k+1)*width)``.
Block ``k`` reads the contiguous column range ``[lo_k, hi_k)`` with ``hi_k`` = its own first
column, so no node ever reads itself or a later node, optionally through a 0/1 mask.

Topologies (IDs used in configs and study files):
- ``layered``: block 0 reads the inputs, block k reads block k-1 only (a plain MLP).
- ``residual``: ``layered`` plus an identity skip from block k-1 to block k (k >= 1).
- ``residual-norm``: ``residual`` whose block k >= 1 reads block k-1 through a parameter-free
  layer norm over its ``width`` nodes (a pre-norm residual MLP: the skip keeps the raw value, so
  the branch input stays at unit scale however large the sum grows). Same parameters as
  ``residual``; DAG-DENSE's normalised residual control.
- ``dag``: every block reads the inputs and every earlier block (DagNN, DAG-DENSE).
- ``fanin``: every node reads N prior nodes (DAG-FANIN), clipped to what exists:
  ``wiring="random"`` draws them per node from the seed, ``wiring="nearest"`` takes the N
  closest prior columns (the "dense but bounded" control that separates random from dense).

The readout reads every hidden node (``all``) or the last block (``last``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

TOPOLOGIES = ("layered", "residual", "residual-norm", "dag", "fanin")
FANIN_WIRINGS = ("random", "nearest")
READOUTS = ("auto", "all", "last")


@dataclass(frozen=True)
class Block:
    """Block ``k`` reads columns ``[lo, hi)``; ``mask`` is ``[S, width, hi-lo]`` 0/1 or None."""

    lo: int
    hi: int
    mask: torch.Tensor | None


@dataclass(frozen=True)
class Topology:
    kind: str
    d_in: int
    width: int
    depth: int
    blocks: tuple[Block, ...]
    readout_lo: int  # the readout reads columns [readout_lo, n_columns)

    @property
    def n_columns(self) -> int:
        return self.d_in + self.depth * self.width

    @property
    def residual(self) -> bool:
        """Block k >= 1 adds block k-1's value to its ReLU output (an identity skip)."""
        return self.kind in ("residual", "residual-norm")

    @property
    def normed(self) -> bool:
        """Block k >= 1 reads block k-1 through a layer norm (``layer_norm``)."""
        return self.kind == "residual-norm"

    def block_start(self, k: int) -> int:
        """First buffer column owned by block ``k``."""
        return self.d_in + k * self.width

    def fan_in(self, k: int) -> torch.Tensor:
        """Number of inputs of each node of block ``k``: ``[S, width]`` (float)."""
        b = self.blocks[k]
        if b.mask is None:
            return torch.full((1, self.width), float(b.hi - b.lo))
        return b.mask.sum(-1)

    def connections(self) -> int:
        """Hidden connections of one network (one seed), masks counted exactly."""
        total = 0
        for b in self.blocks:
            total += self.width * (b.hi - b.lo) if b.mask is None else int(b.mask[0].sum())
        return total


def _random_mask(n_prior: int, width: int, n: int, seed: int, block: int) -> torch.Tensor:
    """``[width, n_prior]`` 0/1 rows with exactly ``min(n, n_prior)`` ones, drawn from ``seed``."""
    gen = torch.Generator().manual_seed(seed * 7919 + block)
    keys = torch.rand(width, n_prior, generator=gen)
    chosen = keys.argsort(dim=1)[:, : min(n, n_prior)]
    return torch.zeros(width, n_prior).scatter_(1, chosen, 1.0)


def build_topology(
    kind: str,
    d_in: int,
    width: int,
    depth: int,
    seeds: list[int],
    *,
    fanin: int | None = None,
    wiring: str = "random",
    readout: str = "auto",
) -> Topology:
    """Build the wiring for every seed of a population (masks differ by seed for random fan-in).

    ``readout="auto"`` reads all hidden nodes for ``dag``/``fanin`` and the last block for
    ``layered`` and both residual kinds.
    """
    if kind not in TOPOLOGIES:
        raise ValueError(f"topology: unknown {kind!r} (allowed: {', '.join(TOPOLOGIES)})")
    if depth < 1 or width < 1 or d_in < 1:
        raise ValueError(f"depth, width and d_in must be >= 1 (got {depth}, {width}, {d_in})")
    if kind == "fanin" and (fanin is None or fanin < 1):
        raise ValueError(f"fanin: topology 'fanin' needs fanin >= 1 (got {fanin})")
    if wiring not in FANIN_WIRINGS:
        raise ValueError(f"fanin_wiring: unknown {wiring!r} (allowed: {', '.join(FANIN_WIRINGS)})")
    if readout not in READOUTS:
        raise ValueError(f"readout: unknown {readout!r} (allowed: {', '.join(READOUTS)})")

    blocks = []
    for k in range(depth):
        hi = d_in + k * width
        lo, mask = 0, None
        if kind in ("layered", "residual", "residual-norm") and k > 0:
            lo = hi - width
        elif kind == "fanin" and wiring == "nearest":
            lo = max(0, hi - fanin)
        elif kind == "fanin" and fanin < hi:
            mask = torch.stack([_random_mask(hi, width, fanin, s, k) for s in seeds])
        blocks.append(Block(lo, hi, mask))
    if readout == "auto":
        readout = "all" if kind in ("dag", "fanin") else "last"
    readout_lo = d_in + (depth - 1) * width if readout == "last" else d_in
    return Topology(kind, d_in, width, depth, tuple(blocks), readout_lo)


NORM_EPS = 1e-5
"""Added to the variance inside ``layer_norm`` (as ``torch.nn.LayerNorm``'s default)."""


def layer_norm(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x - mean) / sigma`` over the last dim and ``sigma = sqrt(var + NORM_EPS)`` (biased
    variance, kept dim): the ``residual-norm`` branch input, no affine parameters."""
    mean = x.mean(-1, keepdim=True)
    sigma = (x.var(-1, unbiased=False, keepdim=True) + NORM_EPS).sqrt()
    return (x - mean) / sigma, sigma


def layer_norm_backward(xn: torch.Tensor, sigma: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Gradient through ``layer_norm``: from ``g = dL/dxn`` to ``dL/dx``."""
    return (g - g.mean(-1, keepdim=True) - xn * (g * xn).mean(-1, keepdim=True)) / sigma


def hops_to_inputs(topo: Topology, seed_index: int = 0) -> torch.Tensor:
    """Fewest edges from each hidden node down to any input: ``[depth * width]`` (float).

    Inputs are 0 hops away; a node is 1 + the minimum over the nodes it reads. The readout's
    distance is 1 + the minimum over what it reads. DAG-FANIN's "small world" diagnostic: the
    text claims 2-3 hops suffice for the gradient to reach the inputs.
    """
    hops = torch.zeros(topo.n_columns)
    for k, blk in enumerate(topo.blocks):
        src = hops[blk.lo : blk.hi].expand(topo.width, -1)
        if blk.mask is not None:
            src = src.masked_fill(blk.mask[seed_index] == 0, float("inf"))
        start = topo.block_start(k)
        hops[start : start + topo.width] = 1 + src.min(dim=1).values
    return hops[topo.d_in :]
