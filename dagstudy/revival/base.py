"""What every revival policy shares: detection, node addressing, the revival event, ``Policy``.

Addressing. Hidden node ``j`` (``0 <= j < depth * width``) is node ``i = j % width`` of block
``k = j // width`` and buffer column ``d_in + j``. Its *incoming* weights are
``model.weights[k][s, i, :]`` (masked by ``model.mask(k)[s, i, :]`` when the topology has masks)
and its bias ``model.biases[k][s, i]``; its *outgoing* weights are ``param[s, :, c]`` for every
``(param, block, c)`` of ``outgoing(model, j)`` (the later blocks that read it, then the readout
if it reads it). ``s`` is the seed's index in the population.

Per pass, ``Policy.after_pass`` runs for all seeds at once:

1. detection: the trainer's ``dead [S, n_hidden]`` (max ReLU output <= 0 over the pass), plus the
   dormant nodes when ``dormant_threshold > 0`` (``dormant``);
2. bookkeeping of the previous passes' revivals and natural resurrections (``History.observe``);
3. ``select``: which dead nodes to act on now (all of them, unless the policy waits), less the
   strictly dead ones that fire at the current weights (``loss_and_firing``);
4. ``revive``: the policy's edit, written through an ``Event`` that records every parameter entry
   it wrote; the optimizer state of exactly those entries is then zeroed
   (``OptimizerState.reset_state``, which every optimizer variant has), and the full training
   loss is measured before and after.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from dagstudy.model.dagnet import DagNet
from dagstudy.problem import OptimizerState, Problem, relu_outputs
from dagstudy.revival.event import Event
from dagstudy.revival.history import History


class RevivalParams(BaseModel):
    """Hyperparameters every policy has (detection)."""

    model_config = ConfigDict(extra="forbid")
    dormant_threshold: float = Field(
        0.0, ge=0.0,
        description="tau: also treat a node as dead when a_i / mean_j a_j <= tau over its block "
                    "(a = mean ReLU output over the pass; ReDo); 0 = strictly dead only",
    )


class NeighbourParams(RevivalParams):
    """Policies that build the revived node from a neighbour in its block (see ``neighbour``)."""

    offset: int = Field(1, description="relative position of the neighbour in the block (!= 0)")

    @field_validator("offset")
    @classmethod
    def _nonzero(cls, value: int) -> int:
        if value == 0:
            raise ValueError("must be != 0 (0 is the node itself)")
        return value


def dormant(problem: Problem, threshold: float) -> torch.Tensor:
    """Dormant hidden nodes ``[S, n_hidden]`` (bool) of the pass just run (ReDo, Sokar et al. 2023).

    Node i of a block is dormant when ``a_i / mean_{j in block} a_j <= threshold``, where ``a_i``
    is its mean ReLU output (= mean |activation|) over the pass's tracked rows; the row count
    cancels, so ``problem.activity_sum`` is used as is. For ``threshold > 0`` the strictly dead
    nodes are dormant too; ``threshold = 0`` gives none (the strictly dead nodes are the trainer's
    ``dead``). Ended seeds have none.
    """
    act = problem.activity_sum
    if threshold <= 0:
        return torch.zeros_like(act, dtype=torch.bool)
    blocks = act.view(act.shape[0], -1, problem.model.topo.width)
    score = blocks / blocks.mean(-1, keepdim=True)  # NaN for an all-zero block: all dead anyway
    return (score <= threshold).view_as(act) & problem.alive[:, None]


@torch.no_grad()
def loss_and_firing(problem: Problem) -> tuple[torch.Tensor, torch.Tensor]:
    """At the current weights: each seed's mean training loss ``[S]`` (as ``full_loss``) and
    which hidden nodes fire (ReLU output > 0) on at least one training row ``[S, n_hidden]``."""
    model = problem.model
    top = torch.zeros_like(problem.activity_max)
    loss = torch.zeros_like(top[:, 0])
    for idx in problem.chunks():
        buf = model.hidden(problem.data.inputs(idx))
        part = problem.loss_fn(model.readout(buf), problem.data.targets(idx))
        loss += part * (idx.shape[1] / problem.n_train)
        torch.maximum(top, relu_outputs(buf, model.topo).amax(dim=1), out=top)
    return loss, top > 0


def outgoing(model: DagNet, j: int) -> list[tuple[nn.Parameter, int | None, int]]:
    """Every weight reading hidden node ``j``: ``(param, block, c)``, the weights being
    ``param[s, :, c]``; ``block`` is the reading block's index (its mask is ``model.mask(block)``),
    None for the readout."""
    block_of = {id(w): k for k, w in enumerate(model.weights)}
    return [(p, block_of.get(id(p)), c) for p, _, c in model.consumers(model.topo.d_in + j)]


@torch.no_grad()
def write_mask(model: DagNet, k: int, index: tuple, value: torch.Tensor) -> None:
    """``mask(k)[index] = value`` in the model and in its topology (which describes the wiring;
    the two are one tensor unless the model's dtype or device differs from the topology's)."""
    model.mask(k)[index] = value
    topo_mask = model.topo.blocks[k].mask
    if topo_mask is not model.mask(k):
        topo_mask[index] = value.to(topo_mask)


def neighbour(dead_block: list[bool], i: int, offset: int) -> int | None:
    """In-block index of node ``i``'s neighbour: the first of ``i + offset``, ``i + offset + step``,
    ... (``step`` = the sign of ``offset``, indices modulo the width) that is neither ``i`` nor dead
    (``dead_block``: this seed's detection for the block, so nodes revived in the same event are
    excluded too). None when there is none: width 1, or every other node of the block dead.
    Deterministic."""
    width = len(dead_block)
    step = 1 if offset > 0 else -1
    for t in range(width):
        c = (i + offset + step * t) % width
        if c != i and not dead_block[c]:
            return c
    return None


def neighbour_pairs(
    model: DagNet, chosen: torch.Tensor, dead: torch.Tensor, offset: int, event: Event
) -> Iterator[tuple[int, int, int, int, int]]:
    """``(seed, hidden index, block, node, neighbour)`` for every chosen node of
    ``chosen [S, n_hidden]`` that has a live neighbour (``neighbour``); the others are marked
    ``event.skipped`` and left alone."""
    w = model.topo.width
    dead_rows = dead.tolist()
    for s, j in chosen.nonzero().tolist():
        k, i = divmod(j, w)
        n = neighbour(dead_rows[s][k * w : (k + 1) * w], i, offset)
        if n is None:
            event.skipped[s, j] = True
        else:
            yield s, j, k, i, n


class Policy:
    """A revival policy: one file each, registered by ``id``; ``idea`` is its IDEAS.md ID.

    Subclasses implement ``revive`` (and may override ``select``); their ``Params`` extend
    ``RevivalParams``. State that must persist across passes lives on the instance: one instance
    serves one population for one training run.
    """

    id: ClassVar[str]
    idea: ClassVar[str | None] = None
    Params: ClassVar[type[RevivalParams]] = RevivalParams
    registry: ClassVar[dict[str, type[Policy]]] = {}
    """Every registered policy by ``id``: ``dagstudy.revival.POLICIES``, which fills it when the
    package is imported (a policy that wraps another, ``wait``, looks it up here)."""

    def __init__(self, hp: RevivalParams):
        self.hp = hp
        self.history: History | None = None

    def after_pass(
        self, model: DagNet, dead: torch.Tensor, variant: OptimizerState, problem: Problem,
        epoch: int,
    ) -> dict[str, torch.Tensor]:
        """Detect, revive, reset the touched optimizer state; return per-seed curves.

        ``dead [S, n_hidden]``: the trainer's detection for pass ``epoch`` (ended seeds all
        False). Returns, besides ``History.observe``'s statistics (all ``[S]`` or
        ``[S, depth]``): ``revived`` and ``revival_skipped`` (node counts of this event),
        ``revival_firing`` (selected strictly dead nodes left as they are because they fire at
        the current weights: a minibatch pass detects a node dead at the weights of each row's
        step, and it may have come back by the end of the pass; editing it would break the
        function-preserving policies' promise) and ``revival_loss_jump`` (full training loss
        after minus before the event; NaN for a seed with no revival in it).
        """
        if self.history is None:
            self.history = History(model)
        dead = dead | dormant(problem, self.hp.dormant_threshold)
        stats = self.history.observe(model, dead, problem.alive, epoch)
        event = Event(model)
        jump = torch.full((model.n_seeds,), float("nan"), device=dead.device)
        chosen = self.select(model, dead, epoch)
        firing = torch.zeros_like(chosen)
        if bool(chosen.any()):
            before, fires = loss_and_firing(problem)
            firing = chosen & fires & (problem.activity_max <= 0)
            chosen = chosen & ~firing
            if bool(chosen.any()):
                self.revive(model, chosen, dead, event)
                event.reset_optimizer(variant)
                after, _ = loss_and_firing(problem)
                jump = torch.where(event.revived.any(1), after - before, jump)
        self.history.record(event, dead, epoch)
        stats.update(
            revived=event.revived.sum(1), revival_skipped=event.skipped.sum(1),
            revival_firing=firing.sum(1), revival_loss_jump=jump,
        )
        return stats

    def select(self, model: DagNet, dead: torch.Tensor, epoch: int) -> torch.Tensor:
        """The dead nodes to act on after pass ``epoch`` ``[S, n_hidden]``: all of them."""
        return dead

    def revive(
        self, model: DagNet, chosen: torch.Tensor, dead: torch.Tensor, event: Event
    ) -> None:
        """Revive the ``chosen`` nodes (a subset of ``dead``) in place, writing every parameter
        entry through ``event.write`` and marking ``event.revived`` / ``event.skipped``."""
        raise NotImplementedError
