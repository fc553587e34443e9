"""Packed trials: several configurations that differ only in per-member scalars train as one
population (``trainer.train_packed``), member ``k`` being configuration ``k`` on every seed.

A network's shape and everything the training loop shares (topology, depth, width, fan-in,
dataset, batch size, epochs, optimizer variant, revival, jitter, grad floor, ...) must be equal
across a pack; what may differ per member (``member_fields``):

- ``bias_init`` and ``init_scale`` (the model initialises each seed row with its own value);
- ``lr`` and the ``optimizer_params`` fields the variant lists in ``Variant.packable``
  (``sgd``: lr, momentum, weight_decay; ``adam``: lr, beta1, beta2, eps, weight_decay). The
  Lipschitz variants pack nothing of their own.

Every operation of the trainer is elementwise along the seed dimension, so a member trains
exactly as its configuration would alone on the same seeds (``tests/test_packing.py``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from dagstudy.config import TrainConfig
from dagstudy.optim import VARIANTS

MODEL_FIELDS = ("bias_init", "init_scale")
"""Initialisation scalars that may differ per member."""


def member_fields(config: TrainConfig) -> tuple[set[str], set[str]]:
    """``(top-level fields, optimizer_params fields)`` that may differ between members of a
    pack holding ``config``."""
    packable = VARIANTS[config.optimizer].packable
    top = set(MODEL_FIELDS) | ({"lr"} & packable)
    return top, packable - {"lr"}


def _shared(config: TrainConfig) -> dict[str, Any]:
    """``config`` as JSON-ready fields without the per-member ones (``optimizer_params`` with
    its defaults filled in)."""
    top, params = member_fields(config)
    shared: dict[str, Any] = config.model_dump(mode="json", exclude=top)
    hp = config.optimizer_hp().model_dump(mode="json")
    shared["optimizer_params"] = {k: v for k, v in hp.items() if k not in params}
    return shared


def pack_key(config: TrainConfig) -> str:
    """Equal for exactly the configurations that may share a pack with ``config``."""
    return json.dumps(_shared(config), sort_keys=True)


def check_pack(configs: Sequence[TrainConfig]) -> None:
    """Raise ``ValueError`` naming the first shared field that differs within ``configs``."""
    if not configs:
        raise ValueError("a pack needs at least one configuration")
    first = _shared(configs[0])
    for k, config in enumerate(configs[1:], start=1):
        other = _shared(config)
        for field in first:
            if first[field] != other[field]:
                raise ValueError(f"{field}: configuration {k} of the pack has {other[field]!r}, "
                                 f"configuration 0 has {first[field]!r}; only "
                                 f"{sorted(set().union(*member_fields(configs[0])))} may differ")


def per_seed(configs: Sequence[TrainConfig], n_seeds: int, field: str) -> list[Any]:
    """``field`` of each member, repeated for its ``n_seeds`` seeds (population order)."""
    return [getattr(c, field) for c in configs for _ in range(n_seeds)]
