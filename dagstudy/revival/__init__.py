"""Dead-neuron revival policies, one file each, registered by name (IDEAS.md ID in ``idea``).

Adding a policy: write ``dagstudy/revival/<name>.py`` with a ``Policy`` subclass, add one line to
``POLICIES`` below. ``base.py`` documents detection, addressing and what a policy returns;
``history.py`` the per-neuron bookkeeping (natural resurrections, lifetimes, split pairs).
"""

from __future__ import annotations

from typing import Any

from dagstudy.revival.add_neighbor import AddNeighbor
from dagstudy.revival.base import Policy
from dagstudy.revival.flip import Flip
from dagstudy.revival.none import NoRevival
from dagstudy.revival.reinit import Reinit
from dagstudy.revival.split import Split
from dagstudy.revival.wait import Wait

POLICIES: dict[str, type[Policy]] = {
    "none": NoRevival,
    "reinit": Reinit,
    "wait": Wait,
    "add-neighbor": AddNeighbor,
    "split": Split,
    "flip": Flip,
}

DEAD_NEURON_SETTING: dict[str, Any] = {
    "dataset": "digits", "topology": "layered", "depth": 6, "width": 16,
    "bias_init": -1.0, "optimizer": "adam", "lr": 0.01, "batch_size": 64, "epochs": 20,
}
"""``TrainConfig`` fields of a setting where neurons die on digits, so the policies can be compared.

TO BE MEASURED.
"""

__all__ = ["DEAD_NEURON_SETTING", "POLICIES", "Policy"]
