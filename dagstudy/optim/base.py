"""What an optimizer variant sees: the ``Problem`` (one training pass of a population) and the
``Variant`` base class.

A variant owns one pass over the training data: minibatch variants step after every batch,
full-batch variants accumulate the whole pass and step once. The loss of a population is the sum
over seeds of each seed's mean loss, so ``param.grad[s]`` is exactly seed ``s``'s gradient and
seeds never mix. Every tensor of per-seed state has the seed on dim 0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, ClassVar

import torch
from pydantic import BaseModel, ConfigDict

from dagstudy.model.dagnet import DagNet

if TYPE_CHECKING:
    from dagstudy.data import SplitData

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (logits [S,B,C], y [S,B]) -> [S]


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Problem:
    """One population's training objective over its per-seed training splits.

    - ``batches()``: per-seed index batches ``[S, B]`` in a fresh per-seed order each pass.
    - ``backward(idx)``: zero grads, forward, backward of the summed per-seed mean loss;
      returns the per-seed loss ``[S]`` (detached). Tracks activity for dead-neuron detection.
    - ``full_gradient()``: ``param.grad`` = gradient of each seed's mean loss over its whole
      training split, accumulated in chunks of ``chunk_size`` rows; returns the loss ``[S]``.
    - ``full_loss()``: each seed's mean training loss ``[S]`` at the current weights, no grad.
    """

    def __init__(
        self,
        model: DagNet,
        data: SplitData,
        loss_fn: LossFn,
        batch_size: int,
        *,
        chunk_size: int = 4096,
    ):
        self.model = model
        self.data = data
        self.loss_fn = loss_fn
        self.batch_size = batch_size
        self.chunk_size = chunk_size
        self.params = list(model.parameters())
        self.alive = torch.ones(model.n_seeds, dtype=torch.bool, device=data.x.device)
        self._orders = [torch.Generator().manual_seed(s * 1_000_003 + 17) for s in model.seeds]
        self.failures: dict[int, str] = {}
        self.activity_max = torch.zeros(0)
        self.start_pass()

    def fail(self, seed_index: int, reason: str) -> None:
        """A variant ends seed ``seed_index`` (e.g. its Lipschitz estimate exploded)."""
        self.failures.setdefault(seed_index, reason)

    @property
    def n_train(self) -> int:
        return self.data.train_idx.shape[1]

    def start_pass(self) -> None:
        """Reset what a pass accumulates: per-node max activation ``[S, n_hidden]``."""
        self.activity_max = torch.zeros(
            self.model.n_seeds, self.model.neuron_count(), device=self.data.x.device
        )

    def batches(self) -> Iterator[torch.Tensor]:
        perm = torch.stack([torch.randperm(self.n_train, generator=g) for g in self._orders])
        order = self.data.train_idx.gather(1, perm.to(self.data.train_idx.device))
        for start in range(0, self.n_train, self.batch_size):
            yield order[:, start : start + self.batch_size]

    def _seed_losses(self, idx: torch.Tensor, track: bool) -> torch.Tensor:
        buf = self.model.hidden(self.data.inputs(idx))
        if track:
            d_in = self.model.topo.d_in
            act = buf.detach()[..., d_in:].amax(dim=1)
            torch.maximum(self.activity_max, act, out=self.activity_max)
        losses = self.loss_fn(self.model.readout(buf), self.data.targets(idx))
        return losses

    def _zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def _masked_sum(self, losses: torch.Tensor) -> torch.Tensor:
        """Sum of live seeds' losses; diverged seeds contribute no gradient (and no NaN)."""
        return torch.where(self.alive, losses, torch.zeros_like(losses)).sum()

    def backward(self, idx: torch.Tensor) -> torch.Tensor:
        self._zero_grad()
        losses = self._seed_losses(idx, track=True)
        self._masked_sum(losses).backward()
        return losses.detach()

    def chunks(self) -> Iterator[torch.Tensor]:
        for start in range(0, self.n_train, self.chunk_size):
            yield self.data.train_idx[:, start : start + self.chunk_size]

    def full_gradient(self) -> torch.Tensor:
        self._zero_grad()
        total = torch.zeros(self.model.n_seeds, device=self.data.x.device)
        for idx in self.chunks():
            losses = self._seed_losses(idx, track=True) * (idx.shape[1] / self.n_train)
            self._masked_sum(losses).backward()
            total += losses.detach()
        return total

    @torch.no_grad()
    def full_loss(self) -> torch.Tensor:
        total = torch.zeros(self.model.n_seeds, device=self.data.x.device)
        for idx in self.chunks():
            total += self._seed_losses(idx, track=False) * (idx.shape[1] / self.n_train)
        return total


class Variant:
    """Base class of an optimizer variant (one file per variant, registered by its ID).

    Subclasses set ``id`` (the registry key), ``idea`` (the IDEAS.md ID it tests, or None for a
    baseline) and ``Params`` (a pydantic model of its own hyperparameters, ``extra="forbid"``),
    and implement ``run_pass``. ``lr`` is the config's learning rate (its meaning is the
    variant's: a step size, or a multiplier of a Lipschitz step).
    """

    id: ClassVar[str]
    idea: ClassVar[str | None] = None
    Params: ClassVar[type[BaseModel]] = NoParams

    def __init__(self, params: list[torch.nn.Parameter], lr: float, hp: BaseModel):
        self.params = params
        self.lr = lr
        self.hp = hp

    def run_pass(self, problem: Problem) -> dict[str, torch.Tensor]:
        """Train one pass; return per-seed pass statistics (name -> ``[S]`` tensor)."""
        raise NotImplementedError

    def state_tensors(self, param: torch.nn.Parameter) -> list[torch.Tensor]:
        """Optimizer state shaped like ``param`` (momenta, moments); revival resets entries."""
        return []

    @torch.no_grad()
    def reset_state(self, param: torch.nn.Parameter, where: torch.Tensor) -> None:
        """Zero every state entry of ``param`` where the boolean ``where`` (its shape) is set."""
        for state in self.state_tensors(param):
            state.masked_fill_(where, 0.0)
