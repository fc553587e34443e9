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
Policy.registry.update(POLICIES)

DEAD_NEURON_SETTING: dict[str, Any] = {
    "dataset": "digits", "topology": "layered", "depth": 6, "width": 16,
    "bias_init": -1.0, "optimizer": "adam", "lr": 0.01, "batch_size": 64, "epochs": 20,
}
"""``TrainConfig`` fields of a setting where many neurons die on digits, to compare the policies.

A deep narrow layered MLP (6 blocks of 16) whose biases start at -1 (``bias_init``), trained
with Adam at a high rate (0.01). Block 0 reads standardised pixels and stays alive; deeper blocks
die. Measured on seeds 0-9 (CPU, 20 epochs; dead fraction = final pass, mean over seeds):

- ``none``: dead 17.0% (12.5-22.9% per seed; by block 0, 3, 13, 23, 32, 31%), accuracy 0.525
- ``reinit``: dead 0.1%, accuracy 0.926
- ``wait``: dead 5.5%, accuracy 0.871
- ``add-neighbor``: dead 10.3%, accuracy 0.385
- ``split``: dead 2.9%, accuracy 0.366
- ``flip``: dead 0.2%, accuracy 0.922

(defaults: ``wait`` = base 2, growth 1, inner ``reinit``; ``split`` ratio 0.5, no jitter).
Under ``none``, a dead node of block 1..5 left alone came back by itself in 25, 17, 13, 13, 12%
of the following passes; block 0 never died here. With ``topology="dag", bias_init=-3.0`` (else
the same) 6% of block 0 dies, and none of its 92 dead-node-passes ended in a resurrection
(blocks 1..5: 10-22% per pass).
"""

DYING_NEURON_SETTING: dict[str, Any] = {
    "dataset": "digits", "topology": "layered", "depth": 6, "width": 16,
    "bias_init": 0.0, "optimizer": "adam", "lr": 0.03, "batch_size": 64, "epochs": 40,
}
"""A setting where neurons die *during* training, not at initialisation (the revival ideas'
setting in ``studies/corollaries.yaml``): the same net with biases at 0 and Adam at 0.03.
``DEAD_NEURON_SETTING`` kills ~21% of the neurons at init and ``none`` is still improving at
epoch 20 (0.74), so a policy's gain there is partly a speed effect; here ``none`` is the
reference every revival idea reports (its ``extra_controls``), and 40 passes give it time to
converge. Measured by a review on seeds 0-3 at 20 passes: none 0.923, reinit 0.903,
add-neighbor 0.882, split 0.889, flip 0.917 (test accuracy).
"""

__all__ = ["DEAD_NEURON_SETTING", "DYING_NEURON_SETTING", "POLICIES", "Policy"]
