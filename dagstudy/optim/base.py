"""The ``Variant`` base class: one optimizer variant of ``dagstudy.optim``, training one pass of a
``dagstudy.problem.Problem`` at a time."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict

from dagstudy.problem import Problem


def shaped(values: Sequence[float], like: torch.Tensor) -> torch.Tensor:
    """Per-seed ``values`` (taken as float64, then ``like``'s dtype and device) shaped
    ``[S, 1, ...]`` to broadcast against ``like``."""
    tensor = torch.tensor(values, dtype=torch.float64).to(like.dtype).to(like.device)
    return tensor.view(-1, *[1] * (like.dim() - 1))


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Variant:
    """Base class of an optimizer variant (one file per variant, registered by its ID).

    Subclasses set ``id`` (the registry key), ``idea`` (the IDEAS.md ID it tests, or None for a
    baseline) and ``Params`` (a pydantic model of its own hyperparameters, ``extra="forbid"``),
    and implement ``run_pass``, writing weights through ``problem.update``. ``lr`` is the
    config's learning rate (its meaning is the variant's: a step size; the Lipschitz variants
    take their step from ``L`` and their own ``Params`` and ignore it).

    ``packable``: the hyperparameters (``"lr"`` and ``Params`` field names) that may differ
    between the seeds of one population (packed trials, ``dagstudy.packing``); ``members``
    then gives each seed's ``(lr, hp)`` and the variant reads them with ``per_seed``.
    """

    id: ClassVar[str]
    idea: ClassVar[str | None] = None
    Params: ClassVar[type[BaseModel]] = NoParams
    packable: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, params: list[torch.nn.Parameter], lr: float, hp: BaseModel,
                 members: Sequence[tuple[float, BaseModel]] | None = None):
        self.params = params
        self.lr = lr
        self.hp = hp
        n_seeds = params[0].shape[0]
        if members is not None and len(members) != n_seeds:
            raise ValueError(f"members: {len(members)} given for {n_seeds} seeds")
        self.members = list(members) if members is not None else [(lr, hp)] * n_seeds
        self._values: dict[str, list[float]] = {}
        self._per_seed: dict[tuple, torch.Tensor] = {}

    def values(self, name: str) -> list[float]:
        """Hyperparameter ``name`` (``"lr"`` or a ``Params`` field) of every seed."""
        if name not in self._values:
            self._values[name] = [lr if name == "lr" else getattr(hp, name)
                                  for lr, hp in self.members]
        return self._values[name]

    def per_seed(self, name: str, like: torch.Tensor) -> torch.Tensor:
        """``values(name)`` shaped ``[S, 1, ...]`` to broadcast against ``like`` (computed
        once per name and shape)."""
        key = (name, like.dim(), like.dtype, like.device)
        if key not in self._per_seed:
            self._per_seed[key] = shaped(self.values(name), like)
        return self._per_seed[key]

    def any_nonzero(self, name: str) -> bool:
        """Whether any seed's hyperparameter ``name`` is not 0 (else its term is skipped)."""
        return any(v != 0 for v in self.values(name))

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
