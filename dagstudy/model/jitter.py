"""OPT-JITTER: a slightly different step rate for every neuron.

Neuron ``i`` of a group (one hidden block, or the readout's outputs) gets the multiplier
``m_i = 1 + spread * u_i``, where the ``u`` of a group of ``n`` neurons are ``n`` evenly spaced
values in ``[-1, 1]`` (0 when ``n = 1``) in an order shuffled by the seed: fixed for the whole
run, and seed ``s``'s multipliers do not depend on which other seeds share the population.
``Problem.update`` applies them after every optimizer step to the neuron's change (its incoming
weights and its bias, rows along dim 1): ``p <- p_old + m_i (p_new - p_old)``, which for every
variant equals training with the neuron's learning rate times ``m_i``. ``spread`` lies in
``[0, 1)`` so every ``m_i > 0`` (a step never reverses). For the ISTA/FISTA step with an L1 term
the rescaled point is not re-thresholded, so a jittered weight may sit near, not at, zero.
"""

from __future__ import annotations

import torch

from dagstudy.model.dagnet import DagNet


def _spaced(n: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` evenly spaced values in ``[-1, 1]`` (``[0.]`` for one), in a shuffled order."""
    if n == 1:
        return torch.zeros(1, dtype=torch.float64)
    return torch.linspace(-1.0, 1.0, n, dtype=torch.float64)[torch.randperm(n, generator=gen)]


class Jitter:
    """Fixed per-neuron multipliers of one population; see the module doc."""

    def __init__(self, model: DagNet, spread: float):
        if not 0.0 <= spread < 1.0:
            raise ValueError(f"jitter_spread: must be in [0, 1) (got {spread})")
        groups = [(model.weights[k], model.biases[k]) for k in range(model.topo.depth)]
        groups.append((model.out_weight, model.out_bias))
        gens = [torch.Generator().manual_seed(seed * 4_000_037 + 29) for seed in model.seeds]
        self.multipliers: dict[int, torch.Tensor] = {}  # id(param) -> [S, neurons]
        for weight, bias in groups:
            u = torch.stack([_spaced(weight.shape[1], g) for g in gens])
            m = (1.0 + spread * u).to(device=weight.device, dtype=weight.dtype)
            self.multipliers[id(weight)] = self.multipliers[id(bias)] = m

    @torch.no_grad()
    def rescale(self, params: list[torch.nn.Parameter], before: list[torch.Tensor]) -> None:
        """``p <- before + m (p - before)`` for every parameter, ``m`` per (seed, neuron)."""
        for p, old in zip(params, before):
            m = self.multipliers[id(p)]
            p.copy_(torch.lerp(old, p, m.view(*m.shape, *[1] * (p.dim() - 2))))
