"""Per-seed diagnostics computed between passes (all return tensors with the seed on dim 0).

- ``gradient_reach``: mean row-norm of the gradient of block 0's incoming weights divided by the
  last block's (the vanishing-gradient ratio of DAG-DENSE; < 1 means early blocks learn slower),
  on a fixed probe of each seed's training rows.
- ``dead_by_block``: fraction of hidden nodes whose ReLU output was 0 (max activation <= 0) on
  every training case of the pass, per block.
- ``duplicate_pairs``: pairs of nodes in the same block whose incoming weights (masked, bias
  included) have cosine similarity above ``threshold`` (OPT-JITTER's wasted capacity).
- ``stuck_fraction``: fraction of weights (hidden connections the topology keeps, and the
  readout) with magnitude below ``threshold`` (GRAD-FLOOR's stuck weights).
- ``activation_rank``: numerical rank of each block's activations on a probe of training
  rows, per block (a block that collapsed to copies of a few neurons, or died, has a low rank
  even where the dead fraction is 0: the revival ideas' mechanism).
"""

from __future__ import annotations

import torch

from dagstudy.model.dagnet import DagNet
from dagstudy.problem import Problem


def gradient_reach(
    model: DagNet, problem: Problem, probe_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns ``(ratio [S], block_grad_norm [S, depth], hidden)``, ``hidden`` the probe's
    prefix buffer ``[S, B, n_columns]`` (detached; for :func:`activation_rank`, so the probe
    is run forward once); does not touch ``param.grad``."""
    idx = problem.data.train_idx[:, :probe_size]
    hidden = model.hidden(problem.data.inputs(idx))
    losses = problem.loss_fn(model.readout(hidden), problem.data.targets(idx))
    weights = list(model.weights)
    grads = torch.autograd.grad(losses.sum(), weights)
    norms = torch.stack([g.norm(dim=-1).mean(dim=-1) for g in grads], dim=1)
    ratio = norms[:, 0] / norms[:, -1].clamp(min=1e-30)
    return ratio, norms, hidden.detach()


def dead_by_block(activity_max: torch.Tensor, depth: int) -> torch.Tensor:
    """``activity_max [S, depth*width]`` -> dead fraction ``[S, depth]``."""
    return (activity_max <= 0).float().view(activity_max.shape[0], depth, -1).mean(-1)


@torch.no_grad()
def duplicate_pairs(model: DagNet, threshold: float = 0.99) -> torch.Tensor:
    """Same-block node pairs with incoming-weight cosine similarity > threshold: ``[S]``."""
    count = torch.zeros(model.n_seeds, device=model.out_bias.device)
    for k in range(model.topo.depth):
        rows = torch.cat([model.effective_weight(k), model.biases[k].unsqueeze(-1)], dim=-1)
        unit = rows / rows.norm(dim=-1, keepdim=True).clamp(min=1e-30)
        cos = unit @ unit.transpose(1, 2)
        count += (cos > threshold).triu(diagonal=1).sum(dim=(1, 2))
    return count


@torch.no_grad()
def stuck_fraction(model: DagNet, threshold: float) -> torch.Tensor:
    """Fraction of each seed's weights with ``|w| < threshold``: ``[S]``."""
    stuck = torch.zeros(model.n_seeds, device=model.out_bias.device)
    total = torch.zeros_like(stuck)
    for k in range(model.topo.depth):
        small = (model.weights[k].abs() < threshold).float()
        mask = model.mask(k)
        kept = torch.ones_like(small) if mask is None else mask
        stuck += (small * kept).flatten(1).sum(1)
        total += kept.flatten(1).sum(1)
    stuck += (model.out_weight.abs() < threshold).float().flatten(1).sum(1)
    total += model.out_weight[0].numel()
    return stuck / total


@torch.no_grad()
def activation_rank(model: DagNet, hidden: torch.Tensor, rtol: float = 1e-4) -> torch.Tensor:
    """Numerical rank of each block's ReLU outputs in the prefix buffer ``hidden [S, B,
    n_columns]`` (``model.hidden(x)``): ``[S, depth]`` (float, in 0..width). The rank of the
    ``[B, width]`` activation matrix counts singular values above ``rtol`` times the largest; a
    block of copies of two neurons has rank 2, an all-dead block rank 0. Needs B >= width to
    see the full rank."""
    buf = hidden
    width = model.topo.width
    ranks = []
    for k in range(model.topo.depth):
        lo = model.topo.block_start(k)
        acts = buf[..., lo:lo + width].double()
        # singular values of acts = sqrt(eigenvalues of its [width, width] Gram matrix): a
        # small symmetric eigenproblem instead of an SVD of [B, width] (float64 keeps 1e-8)
        sv = torch.linalg.eigvalsh(acts.transpose(1, 2) @ acts).clamp(min=0.0).sqrt()
        top = sv.amax(dim=1, keepdim=True)
        ranks.append(((sv > rtol * top) & (top > 0)).sum(dim=1))
    return torch.stack(ranks, dim=1).float()
