"""Per-neuron revival bookkeeping over one training run, and the curves it yields.

Tables, ``[S, n_hidden]``, updated once per pass:

- ``left_dead``: dead at the previous pass and not revived then. If such a node is alive at this
  pass, nothing but the changes in the rest of the network brought it back: a *natural
  resurrection* (for block 0, whose inputs never change, this should essentially never happen).
- ``revived_at``: the pass after which the node was last revived, while it has not been found
  dead since; -1 otherwise.
- ``partner``: for a node built from a neighbour (``split``), the neighbour's hidden index, while
  neither node has been revived again; -1 otherwise.

Units: passes (= epochs). A revived node's *lifetime* is the number of passes from its revival to
the pass in which it is found dead again (1 = dead again in the very next pass).
"""

from __future__ import annotations

import torch

from dagstudy.model.dagnet import DagNet
from dagstudy.revival.event import Event


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``num / den``, NaN where ``den == 0``."""
    return torch.where(den > 0, num / den.clamp(min=1), torch.full_like(num, float("nan")))


@torch.no_grad()
def pair_similarity(model: DagNet, partner: torch.Tensor) -> torch.Tensor:
    """Mean over tracked pairs ``(j, partner[s, j])`` of the cosine similarity of the two nodes'
    incoming weights (as masked, bias appended), per seed ``[S]``; NaN for a seed with none.
    Both members of a pair are in the same block."""
    S, w = model.n_seeds, model.topo.width
    total = torch.zeros(S, dtype=torch.float64, device=partner.device)
    count = torch.zeros(S, dtype=torch.float64, device=partner.device)
    for k in range(model.topo.depth):
        mate = partner[:, k * w : (k + 1) * w]
        tracked = mate >= 0
        if not bool(tracked.any()):
            continue
        rows = torch.cat([model.effective_weight(k), model.biases[k].unsqueeze(-1)], dim=-1)
        unit = rows / rows.norm(dim=-1, keepdim=True).clamp(min=1e-30)
        local = (mate - k * w).clamp(min=0).unsqueeze(-1).expand_as(unit)
        cos = (unit * unit.gather(1, local)).sum(-1)
        total += (cos * tracked).sum(1).double()
        count += tracked.sum(1)
    return _ratio(total, count)


class History:
    """Bookkeeping of one population's revivals; ``observe`` then ``record`` once per pass."""

    def __init__(self, model: DagNet):
        S, n = model.n_seeds, model.neuron_count()
        device = model.out_bias.device
        self.depth = model.topo.depth
        self.left_dead = torch.zeros(S, n, dtype=torch.bool, device=device)
        self.revived_at = torch.full((S, n), -1, dtype=torch.long, device=device)
        self.partner = torch.full((S, n), -1, dtype=torch.long, device=device)
        self.resurrected_total = torch.zeros(S, self.depth, device=device)
        self.left_total = torch.zeros(S, self.depth, device=device)
        self.redied_total = torch.zeros(S, device=device)
        self.ever_revived = torch.zeros((S, n), dtype=torch.bool, device=device)
        self.lifetime_total = torch.zeros(S, device=device)

    def _by_block(self, nodes: torch.Tensor) -> torch.Tensor:
        """``[S, n_hidden]`` bool -> count per block ``[S, depth]`` (float)."""
        return nodes.view(nodes.shape[0], self.depth, -1).sum(-1).float()

    def observe(
        self, model: DagNet, dead: torch.Tensor, alive: torch.Tensor, epoch: int
    ) -> dict[str, torch.Tensor]:
        """Account for pass ``epoch``'s detection ``dead [S, n_hidden]``; ended seeds (``alive``
        False) are dropped from every table. Returns per-seed curves:

        - ``resurrected_by_block [S, depth]``: natural resurrections at this pass;
        - ``resurrection_rate_by_block [S, depth]``: natural resurrections so far / node-passes
          a dead node was left alone so far (the per-pass chance that a dead node left alone
          comes back by itself); NaN where none was left alone yet;
        - ``revived_alive [S]``: nodes revived at an earlier pass and not found dead since;
        - ``revived_redied [S]``: revived nodes found dead again, so far;
        - ``redied_by_pass [S]``: revived nodes found dead again at this pass (re-deaths);
        - ``revived_nodes [S]``: distinct nodes revived at least once so far (with the per-pass
          ``revived`` counts: how often the same nodes are revived again and again);
        - ``revived_lifetime [S]``: their mean lifetime in passes; NaN if none re-died yet;
        - ``pair_similarity [S]``: mean cosine similarity of the tracked ``split`` pairs.
        """
        ended = ~alive[:, None]
        self.left_dead &= ~ended
        self.revived_at.masked_fill_(ended, -1)
        self.partner.masked_fill_(ended, -1)

        resurrected = self.left_dead & ~dead
        self.resurrected_total += self._by_block(resurrected)
        self.left_total += self._by_block(self.left_dead)
        redied = (self.revived_at >= 0) & dead
        self.lifetime_total += ((epoch - self.revived_at) * redied).sum(1)
        self.redied_total += redied.sum(1)
        self.revived_at.masked_fill_(redied, -1)
        return {
            "resurrected_by_block": self._by_block(resurrected),
            "resurrection_rate_by_block": _ratio(self.resurrected_total, self.left_total),
            "revived_alive": (self.revived_at >= 0).sum(1),
            "revived_redied": self.redied_total.clone(),
            "redied_by_pass": redied.sum(1),
            "revived_nodes": self.ever_revived.sum(1),
            "revived_lifetime": _ratio(self.lifetime_total, self.redied_total),
            "pair_similarity": pair_similarity(model, self.partner),
        }

    def record(self, event: Event, dead: torch.Tensor, epoch: int) -> None:
        """Account for the revival event that followed pass ``epoch``: a pair ends when either
        member is revived again."""
        revived = event.revived
        self.ever_revived |= revived
        self.left_dead = dead & ~revived
        self.revived_at.masked_fill_(revived, epoch)
        mate_revived = revived.gather(1, self.partner.clamp(min=0)) & (self.partner >= 0)
        self.partner.masked_fill_(mate_revived, -1)
        self.partner = torch.where(revived, event.partner, self.partner)
