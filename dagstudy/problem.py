"""What an optimizer variant and a revival policy see: the ``Problem`` (one training pass of a
population), and ``OptimizerState``, the part of a variant a revival policy may reset.

A variant owns one pass over the training data: minibatch variants step after every batch,
full-batch variants accumulate the whole pass and step once. The loss of a population is the sum
over seeds of each seed's mean loss, so ``param.grad[s]`` is exactly seed ``s``'s gradient and
seeds never mix. Every tensor of per-seed state has the seed on dim 0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Protocol, TypeVar

import torch

from dagstudy.model.dagnet import DagNet
from dagstudy.model.jitter import Jitter
from dagstudy.model.topology import Topology

if TYPE_CHECKING:
    from dagstudy.data.splits import SplitData

T = TypeVar("T")
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (logits [S,B,C], y [S,B]) -> [S]


def relu_outputs(buf: torch.Tensor, topo: Topology) -> torch.Tensor:
    """Each hidden node's ReLU output ``[S, B, n_hidden]`` from the prefix buffer.

    The buffer holds them directly, except with the ``residual`` topology, where block k >= 1
    holds ReLU output + block k-1's value; subtracting it back is exact where the ReLU is 0.
    """
    hidden = buf[..., topo.d_in :]
    if not topo.residual:
        return hidden
    w = topo.width
    return torch.cat([hidden[..., :w], hidden[..., w:] - hidden[..., :-w]], dim=-1)


class Problem:
    """One population's training objective over its per-seed training splits.

    - ``batches()``: per-seed index batches ``[S, B]`` in a fresh per-seed order each pass.
    - ``backward(idx)``: zero grads, forward, backward of the summed per-seed mean loss;
      returns the per-seed loss ``[S]`` (detached). Tracks activity for dead-neuron detection.
    - ``full_gradient()``: ``param.grad`` = gradient of each seed's mean loss over its whole
      training split, accumulated in chunks of ``chunk_size`` rows; returns the loss ``[S]``.
    - ``full_loss()``: each seed's mean training loss ``[S]`` at the current weights, no grad.
    - ``update(step)``: every variant writes its weights through this, once per optimizer step;
      the per-step hooks run here, for every variant, on the change ``p_new - p_old``: OPT-JITTER
      rescales each neuron's change (``jitter_spread``), GRAD-FLOOR's hysteresis remembers each
      weight's direction (``model.grad_floor``).
    - ``readout_grad``: OPT-STOP's cumulative last-layer gradient of the pass ``[S, C, n_read]``:
      the sum over the pass's ``backward`` calls of ``out_weight.grad`` weighted by batch rows /
      ``n_train`` (the mean-loss gradient summed as the weights move), or, in a pass without
      ``backward`` calls, the last ``full_gradient``'s.
    """

    def __init__(
        self,
        model: DagNet,
        data: SplitData,
        loss_fn: LossFn,
        batch_size: int,
        *,
        chunk_size: int = 4096,
        jitter_spread: float = 0.0,
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
        self.jitter = Jitter(model, jitter_spread) if jitter_spread > 0 else None
        self.start_pass()

    def fail(self, seed_index: int, reason: str) -> None:
        """A variant ends seed ``seed_index`` (e.g. its Lipschitz estimate exploded)."""
        self.failures.setdefault(seed_index, reason)

    @property
    def n_train(self) -> int:
        return self.data.train_idx.shape[1]

    def start_pass(self) -> None:
        """Reset what a pass accumulates over its tracked rows, per hidden node ``[S, n_hidden]``:
        ``activity_max``, the max ReLU output (dead-neuron detection), and ``activity_sum``, the
        sum of ReLU outputs (dormant-neuron detection uses sums relative to the block mean, so
        the row count cancels)."""
        shape = (self.model.n_seeds, self.model.neuron_count())
        like = {"device": self.data.x.device, "dtype": self.model.out_bias.dtype}
        self.activity_max = torch.zeros(shape, **like)
        self.activity_sum = torch.zeros(shape, **like)
        self.readout_grad = torch.zeros_like(self.model.out_weight.detach())
        self._readout_from_batches = False

    def batches(self) -> Iterator[torch.Tensor]:
        perm = torch.stack([torch.randperm(self.n_train, generator=g) for g in self._orders])
        order = self.data.train_idx.gather(1, perm.to(self.data.train_idx.device))
        for start in range(0, self.n_train, self.batch_size):
            yield order[:, start : start + self.batch_size]

    def _seed_losses(self, idx: torch.Tensor, track: bool) -> torch.Tensor:
        buf = self.model.hidden(self.data.inputs(idx))
        if track:
            act = relu_outputs(buf.detach(), self.model.topo)
            torch.maximum(self.activity_max, act.amax(dim=1), out=self.activity_max)
            self.activity_sum += act.sum(dim=1)
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
        if not self._readout_from_batches:
            self.readout_grad.zero_()
            self._readout_from_batches = True
        self.readout_grad.add_(self.model.out_weight.grad, alpha=idx.shape[1] / self.n_train)
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
        if not self._readout_from_batches:
            self.readout_grad.copy_(self.model.out_weight.grad)
        return total

    @torch.no_grad()
    def full_loss(self) -> torch.Tensor:
        total = torch.zeros(self.model.n_seeds, device=self.data.x.device)
        for idx in self.chunks():
            total += self._seed_losses(idx, track=False) * (idx.shape[1] / self.n_train)
        return total

    def update(self, step: Callable[[], T]) -> T:
        """Run ``step()``, which writes new weights into ``params``, and return its result.

        With jitter (OPT-JITTER), each neuron's change is then rescaled: ``p <- p_old +
        m (p_new - p_old)`` per row of ``m`` (``Jitter``); with GRAD-FLOOR hysteresis, the sign
        of each weight's change is remembered for the next backward. With neither, this is
        exactly ``step()`` (no copies), so the default path is unchanged bit for bit.
        """
        floor = self.model.grad_floor
        remember = floor is not None and floor.hysteresis
        if self.jitter is None and not remember:
            return step()
        before = [p.detach().clone() for p in self.params]
        result = step()
        with torch.no_grad():
            if self.jitter is not None:
                self.jitter.rescale(self.params, before)
            if remember:
                change = {id(p): p - b for p, b in zip(self.params, before)}
                weights = [*self.model.weights, self.model.out_weight]
                for key, w in enumerate(weights):
                    floor.remember(key, change[id(w)])
        return result


class OptimizerState(Protocol):
    """The part of an optimizer variant (``dagstudy.optim.base.Variant``) a revival policy uses."""

    def reset_state(self, param: torch.nn.Parameter, where: torch.Tensor) -> None:
        """Zero every state entry of ``param`` where the boolean ``where`` (its shape) is set."""
