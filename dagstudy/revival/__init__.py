"""Dead-neuron revival policies, one file each, registered by name (IDEAS.md ID in ``idea``).

Adding a policy: write ``dagstudy/revival/<name>.py`` with a ``Policy`` subclass, add one line to
``POLICIES`` below.
"""

from __future__ import annotations

from dagstudy.revival.base import Policy
from dagstudy.revival.none import NoRevival

POLICIES: dict[str, type[Policy]] = {
    "none": NoRevival,
}

__all__ = ["POLICIES", "Policy"]
