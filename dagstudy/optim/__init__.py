"""Optimizer variants, one file each, registered by ID (IDEAS.md IDs in each class's ``idea``).

Adding a variant: write ``dagstudy/optim/<name>.py`` with a ``Variant`` subclass, add one line to
``VARIANTS`` below.
"""

from __future__ import annotations

from dagstudy.optim.adam import Adam
from dagstudy.optim.base import Variant
from dagstudy.optim.fista import FISTA
from dagstudy.optim.fullbatch_ista import FullBatchISTA
from dagstudy.optim.lipschitz import BacktrackParams
from dagstudy.optim.lipschitz_minibatch import LipschitzMinibatch
from dagstudy.optim.sgd import SGD

VARIANTS: dict[str, type[Variant]] = {
    "sgd": SGD,
    "adam": Adam,
    "fullbatch-ista": FullBatchISTA,
    "fista": FISTA,
    "lipschitz-minibatch": LipschitzMinibatch,
}



def ignores_lr(optimizer: str) -> bool:
    """Whether the variant takes its step from a Lipschitz estimate (its ``Params`` extend
    ``BacktrackParams``: fullbatch-ista, fista, lipschitz-minibatch) and so ignores the config's
    ``lr`` (``TrainConfig`` rejects an ``lr`` other than the default for them)."""
    return issubclass(VARIANTS[optimizer].Params, BacktrackParams)


__all__ = ["VARIANTS", "Variant", "ignores_lr"]
