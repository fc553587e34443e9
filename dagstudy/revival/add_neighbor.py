"""``add-neighbor`` (REV-ADD): add the incoming weights and bias of a neighbour in the block.

The dead node ``i`` gets ``W_i += W_n * m_i`` and ``b_i += b_n``, where ``n`` is its neighbour
(``neighbour``: the node at relative position ``offset`` in the same block, wrapping, or the
nearest live one beyond it in that direction; never a dead node, whose weights added to a dead
node's leave it dead, since the sum of two pre-activations negative on every case is negative on
every case) and ``m_i`` the dead node's own mask row: with fan-in masks it keeps its own wiring and
adds the neighbour's weights on the inputs both read. Outgoing weights unchanged. Deterministic:
no random draw, and neighbours are never edited, so the order of revivals does not matter.

``rescale`` (the second treatment of REV-ADD: IDEAS.md worries that the sum doubles the
variance): the summed incoming weights and bias are multiplied by one positive factor so that
the weights' norm is that of a fresh initialisation row (sqrt(kept inputs / columns), the
expected norm of ``reset_parameters``' draw); a positive factor keeps the sign of every
pre-activation, so which cases the node fires on is unchanged.

No neighbour (width 1, or every other node of the block dead): the node is left dead and counted
in ``revival_skipped``; for width-1 networks use ``flip`` or ``reinit``.

Writes (and resets the optimizer state of): the node's incoming weights and its bias.
"""

from __future__ import annotations

import torch
from pydantic import Field

from dagstudy.model.dagnet import DagNet
from dagstudy.revival.base import Event, NeighbourParams, Policy, neighbour_pairs


class AddNeighborParams(NeighbourParams):
    rescale: bool = Field(False, description="scale the summed incoming weights and bias to "
                          "the norm of a fresh initialisation row")


class AddNeighbor(Policy):
    id = "add-neighbor"
    idea = "REV-ADD"
    Params = AddNeighborParams

    def revive(
        self, model: DagNet, chosen: torch.Tensor, dead: torch.Tensor, event: Event
    ) -> None:
        for s, j, k, i, n in neighbour_pairs(model, chosen, dead, self.hp.offset, event):
            W, b, mask = model.weights[k], model.biases[k], model.mask(k)
            added = W[s, n] if mask is None else W[s, n] * mask[s, i]
            row, bias = W[s, i] + added, b[s, i] + b[s, n]
            if self.hp.rescale:
                kept = W.shape[2] if mask is None else float(mask[s, i].sum())
                factor = (kept / W.shape[2]) ** 0.5 / row.norm().clamp(min=1e-30)
                row, bias = row * factor, bias * factor
            event.write(W, (s, i), row)
            event.write(b, (s, i), bias)
            event.revived[s, j] = True
