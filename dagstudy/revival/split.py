"""``split`` (REV-SPLIT): make the dead node a copy of a neighbour and split the neighbour's
outgoing weights between the two, so the network's function is unchanged at the moment of revival.

Dead node ``d`` and its neighbour ``n`` (``neighbour``: at relative position ``offset`` in the
same block, wrapping, or the nearest live one beyond it in that direction; never dead, never a
node revived in the same event) are in the same block, so they read the same earlier columns and
are read by the same later blocks. With ``r`` = ``ratio``:

1. incoming: ``W_d = W_n``, ``b_d = b_n`` and, with fan-in masks, ``mask_d = mask_n`` (the
   revived node reads exactly the neighbour's inputs: its fan-in count is unchanged under random
   fan-in, where every node of a block reads the same number), so ``d`` now outputs ``h_n``;
2. outgoing, for every weight column that reads ``d``: if the same weights read ``n``,
   ``V[:, d] = r * V[:, n]`` and ``V[:, n] *= 1 - r``, and with fan-in masks the consumer's mask
   entry for ``d`` becomes its entry for ``n`` (every consumer that reads ``n`` now also reads
   ``d`` and no other does, so a consumer's fan-in changes by ``mask[c, n] - mask[c, d]``, one of
   -1, 0, +1: after splits a random fan-in N network has nodes reading N - 1 or N + 1 prior
   nodes); otherwise (a ``fanin`` nearest-N block that reads ``d`` but not ``n``)
   ``V[:, d] = 0``. Weights that read ``n`` but not ``d`` keep their value. Every consumer then
   receives ``r h_n V + (1 - r) h_n V = h_n V`` as before.

Several dead nodes sharing one neighbour are split off in increasing index: the k-th takes ``r``
of what the neighbour has left, and the function is still preserved. Exact for strictly dead
nodes (a dormant node's small contribution is dropped); not function-preserving with the
``residual`` topology (the identity skip carries ``d``'s new output on). With ``r = 0.5`` and
no jitter the pair receives identical gradients and stays identical (``pair_similarity`` 1);
OPT-JITTER's per-neuron rates are what the idea relies on to push it apart.

No neighbour (width 1, or every other node of the block dead): the node is left dead and counted
in ``revival_skipped``; for width-1 networks use ``flip`` or ``reinit``.

Writes (and resets the optimizer state of): the dead node's incoming weights, bias and outgoing
weights, and the neighbour's outgoing weights (the neighbour's incoming state is kept, so under a
momentum optimizer the pair's next steps differ slightly). Rewrites masks as described.
"""

from __future__ import annotations

import torch
from pydantic import Field

from dagstudy.model.dagnet import DagNet
from dagstudy.revival.base import (
    Event,
    NeighbourParams,
    Policy,
    neighbour_pairs,
    outgoing,
    write_mask,
)


class SplitParams(NeighbourParams):
    ratio: float = Field(0.5, gt=0.0, lt=1.0,
                         description="share r of the neighbour's outgoing weights the copy takes")


class Split(Policy):
    id = "split"
    idea = "REV-SPLIT"
    Params = SplitParams

    def revive(
        self, model: DagNet, chosen: torch.Tensor, dead: torch.Tensor, event: Event
    ) -> None:
        w = model.topo.width
        for s, j, k, i, n in neighbour_pairs(model, chosen, dead, self.hp.offset, event):
            self._copy_incoming(model, s, k, i, n, event)
            self._split_outgoing(model, s, j, k * w + n, event)
            event.revived[s, j] = True
            event.partner[s, j] = k * w + n

    @staticmethod
    def _copy_incoming(model: DagNet, s: int, k: int, i: int, n: int, event: Event) -> None:
        """Node ``i`` of block ``k`` becomes a copy of node ``n`` of the same block."""
        if model.mask(k) is not None:
            write_mask(model, k, (s, i), model.mask(k)[s, n].clone())
        event.write(model.weights[k], (s, i), model.weights[k][s, n])
        event.write(model.biases[k], (s, i), model.biases[k][s, n])

    def _split_outgoing(self, model: DagNet, s: int, d: int, n: int, event: Event) -> None:
        """Hidden node ``d`` takes share ``ratio`` of hidden node ``n``'s outgoing weights."""
        r = self.hp.ratio
        reads_n = {(id(p), block): c for p, block, c in outgoing(model, n)}
        for param, block, c in outgoing(model, d):
            c_n = reads_n.get((id(param), block))
            if c_n is None:
                event.write(param, (s, slice(None), c), 0.0)
                continue
            mask = None if block is None else model.mask(block)
            if mask is not None:
                write_mask(model, block, (s, slice(None), c), mask[s, :, c_n].clone())
            share = param[s, :, c_n] if mask is None else param[s, :, c_n] * mask[s, :, c_n]
            event.write(param, (s, slice(None), c), r * share)
            event.write(param, (s, slice(None), c_n), (1 - r) * param[s, :, c_n])
