"""The ``Variant`` base class: one optimizer variant of ``dagstudy.optim``, training one pass of a
``dagstudy.problem.Problem`` at a time."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict

from dagstudy.problem import Problem


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
        self._per_seed: dict[tuple, torch.Tensor] = {}

    def per_seed(self, name: str, like: torch.Tensor,
                 value: Callable[[float, BaseModel], float] | None = None) -> torch.Tensor:
        """Hyperparameter ``name`` (``"lr"`` or a ``Params`` field) of every seed, or
        ``value(lr, hp)`` of each seed's, computed in float64 and shaped ``[S, 1, ...]`` to
        broadcast against ``like`` (whose dtype and device it takes)."""
        key = (name, like.dim(), like.dtype, like.device)
        if value is None and key in self._per_seed:
            return self._per_seed[key]
        get = value or (lambda lr, hp: lr if name == "lr" else getattr(hp, name))
        values = torch.tensor([get(lr, hp) for lr, hp in self.members], dtype=torch.float64)
        out = values.to(like.dtype).to(like.device).view(-1, *[1] * (like.dim() - 1))
        if value is None:
            self._per_seed[key] = out
        return out

    def any_nonzero(self, name: str) -> bool:
        """Whether any seed's hyperparameter ``name`` is not 0 (else its term is skipped)."""
        return any((lr if name == "lr" else getattr(hp, name)) != 0 for lr, hp in self.members)

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
