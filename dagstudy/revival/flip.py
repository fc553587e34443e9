"""``flip`` (REV-FLIP): negate the dead node's incoming weights and bias, zero its outgoing ones.

Node ``i`` of block ``k`` computes ``z = W_i . x + b_i``; after the flip it computes ``-z``, so it
fires (``relu(-z) > 0``) on every training case where ``z`` was negative, i.e. on every case of
a strictly dead node except those with ``z = 0`` exactly. Its outgoing weights are set to 0 so that
the network's function is unchanged at the moment of revival (exactly, for a strictly dead node;
for a merely dormant one, its small contribution is dropped). Not function-preserving with the
``residual`` topology, whose identity skip carries the node's output on regardless.

Writes (and resets the optimizer state of): the node's incoming weights, its bias, its
outgoing weights.
"""

from __future__ import annotations

import torch

from dagstudy.model.dagnet import DagNet
from dagstudy.revival.base import Event, Policy, outgoing


class Flip(Policy):
    id = "flip"
    idea = "REV-FLIP"

    def revive(
        self, model: DagNet, chosen: torch.Tensor, dead: torch.Tensor, event: Event
    ) -> None:
        for s, j in chosen.nonzero().tolist():
            k, i = divmod(j, model.topo.width)
            event.write(model.weights[k], (s, i), -model.weights[k][s, i])
            event.write(model.biases[k], (s, i), -model.biases[k][s, i])
            for param, _, c in outgoing(model, j):
                event.write(param, (s, slice(None), c), 0.0)
            event.revived[s, j] = True
