"""A trial's figures as PNG bytes, rendered where the trial trained (the Ray worker), so the
driver never runs matplotlib per trial.

``trial_figures`` returns ``{"learning_curves.png": bytes, "dead_fraction.png": bytes}`` for a
trial's per-epoch rows (empty when there are none); the tracker uploads them as the trial run's
artifacts. matplotlib is imported on the first call, not with this module.
"""

from __future__ import annotations

import io
from typing import Any

FIGURE_NAMES = ("learning_curves.png", "dead_fraction.png")


def figure_title(study: str, number: int, state: str) -> str:
    """The title of a trial's figures: study, trial number and final state."""
    return f"{study} trial {number} ({state.lower()})"


def trial_figures(rows: list[dict[str, Any]], seeds: list[int],
                  title: str) -> dict[str, bytes]:
    """The trial's figures (``FIGURE_NAMES``) as PNG bytes; ``{}`` without rows."""
    if not rows:
        return {}
    from dagstudy.tracking.plots import plot_dead_fraction, plot_learning_curves

    out = {}
    for name, plot in zip(FIGURE_NAMES, (plot_learning_curves, plot_dead_fraction)):
        buffer = io.BytesIO()
        plot(rows, seeds, title, buffer)
        out[name] = buffer.getvalue()
    return out
