"""``reinit``: fresh random incoming weights and bias; outgoing weights unchanged.

The control arm of REV-ADD, REV-SPLIT and REV-FLIP ("random re-initialisation"). Node ``i`` of
block ``k`` with fan-in ``f`` (its mask row's count, or the block's input width without a mask)
draws every incoming weight it reads and its bias from N(0, 2/f) (He init, as at construction;
the bias is drawn like one more weight, so it is random too). Masked-out entries stay 0.

Reproducible: seed ``s`` draws from its own generator (``REINIT_STREAM``), kept for the whole
run, and the nodes of a seed are re-drawn in increasing hidden index, so the draws depend on
neither the other seeds of the population nor the hardware.

Writes (and resets the optimizer state of): the node's incoming weights and its bias.
"""

from __future__ import annotations

import math

import torch

from dagstudy.model.dagnet import DagNet
from dagstudy.revival.base import Event, Policy, RevivalParams

REINIT_STREAM = 0x5EED_AB1E
"""Seed ``s``'s re-initialisation generator is seeded with ``s * 1_000_003 + REINIT_STREAM``,
a stream distinct from the initial weights' (seed ``s``) and the data order's."""


class Reinit(Policy):
    id = "reinit"

    def __init__(self, hp: RevivalParams):
        super().__init__(hp)
        self.generators: dict[int, torch.Generator] = {}

    def _generator(self, seed: int) -> torch.Generator:
        if seed not in self.generators:
            self.generators[seed] = torch.Generator().manual_seed(seed * 1_000_003 + REINIT_STREAM)
        return self.generators[seed]

    def revive(
        self, model: DagNet, chosen: torch.Tensor, dead: torch.Tensor, event: Event
    ) -> None:
        for s, j in chosen.nonzero().tolist():
            k, i = divmod(j, model.topo.width)
            W, b, mask = model.weights[k], model.biases[k], model.mask(k)
            n_in = W.shape[2]
            fan = n_in if mask is None else float(mask[s, i].sum())
            draw = torch.randn(n_in + 1, generator=self._generator(model.seeds[s]),
                               dtype=torch.float64) * math.sqrt(2.0 / max(fan, 1.0))
            weight = draw[:n_in].to(W)
            event.write(W, (s, i), weight if mask is None else weight * mask[s, i])
            event.write(b, (s, i), draw[n_in].to(b))
            event.revived[s, j] = True
