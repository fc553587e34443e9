"""Per-trial and per-study figures (matplotlib's object API; the per-trial figures are built once
per process and layout and refilled for each trial, ``_TrialFigure``): learning curves
(each seed thin, the mean over seeds bold; test metrics are final only, never per epoch), dead
fraction, parameter importances (naming the method and the number of trials they rest on) and
the optimisation history (complete trials, and pruned ones at their last reported value)."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import optuna
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.text import Text
from matplotlib.ticker import MaxNLocator


def _series(rows: list[dict], name: str) -> list[list[float]]:
    """Per seed, the values of ``name`` over epochs (NaN where missing)."""
    return [[math.nan if v is None else v for v in seed_values]
            for seed_values in zip(*(row[name] for row in rows))]


def _mean_over_seeds(series: list[list[float]]) -> list[float]:
    """Per epoch, the mean of the seeds' finite values (NaN where none is finite)."""
    finite = [[v for v in epoch if not math.isnan(v)] for epoch in zip(*series)]
    return [sum(v) / len(v) if v else math.nan for v in finite]


_FIXED_MARGINS = {"left": 0.08, "right": 0.98, "bottom": 0.14, "top": 0.82, "wspace": 0.3}
"""Per-trial figures use fixed margins: matplotlib's constrained layout was about half of
their rendering time, paid once per trial."""

LABELS = {"train_loss": "training loss", "val_loss": "validation loss",
          "val_accuracy": "validation accuracy (fraction)"}


@dataclass
class _TrialFigure:
    """A per-trial figure built once per process and layout (seeds, blocks) and refilled for
    each trial: its axes, ticks, labels and legends are reused, which takes about 40% off a
    trial's rendering; the PNG bytes equal a figure built afresh for that trial
    (``tests/test_tracking_figures.py``). ``lines[name]``: the lines ``name``'s values fill."""

    fig: Figure
    title: Text
    lines: dict[str, list[Line2D]]

    def save(self, title: str, path: Path | BinaryIO) -> None:
        """Rescale every axis to the data now in its lines, set the title, write a PNG."""
        for ax in self.fig.axes:
            ax.relim()
            ax.autoscale_view()
        self.title.set_text(title)
        self.fig.savefig(path, dpi=80)


_figures: dict[tuple, _TrialFigure] = {}
_figures_lock = threading.Lock()  # the tracker's background thread renders too (at upload)


def _figure(key: tuple, build: Callable[[], _TrialFigure]) -> _TrialFigure:
    """This process's figure for ``key`` (a kind and its layout), built on first use; call
    with ``_figures_lock`` held."""
    if key not in _figures:
        _figures[key] = build()
    return _figures[key]


def _learning_figure(seeds: tuple[int, ...]) -> _TrialFigure:
    fig = Figure(figsize=(10, 3.5))
    fig.subplots_adjust(**_FIXED_MARGINS)
    lines = {}
    for ax, name in zip(fig.subplots(1, 3), LABELS):
        lines[name] = [ax.plot([], [], marker=".", lw=0.8, alpha=0.6, label=f"seed {seed}")[0]
                       for seed in seeds]
        lines[name].append(ax.plot([], [], "k-", marker="o", lw=2, label="mean over seeds")[0])
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set(xlabel="epoch", ylabel=LABELS[name], title=name)
    fig.axes[0].legend(fontsize="small")
    return _TrialFigure(fig, fig.suptitle(""), lines)


def plot_learning_curves(rows: list[dict], seeds: list[int], title: str,
                         path: Path | BinaryIO) -> None:
    """Training loss, validation loss and validation accuracy per epoch: each seed thin, the
    mean over seeds bold."""
    with _figures_lock:
        figure = _figure(("learning_curves", tuple(seeds)),
                         lambda: _learning_figure(tuple(seeds)))
        epochs = [row["epoch"] for row in rows]
        for name, lines in figure.lines.items():
            series = _series(rows, name)
            for line, values in zip(lines, [*series, _mean_over_seeds(series)], strict=True):
                line.set_data(epochs, values)  # strict: rows of other seeds never refill
        figure.save(title, path)


def _dead_figure(seeds: tuple[int, ...], blocks: int) -> _TrialFigure:
    fig = Figure(figsize=(8, 3.5))
    fig.subplots_adjust(**_FIXED_MARGINS)
    left, right = fig.subplots(1, 2)
    per_seed = [left.plot([], [], marker=".", label=f"seed {seed}")[0] for seed in seeds]
    left.set(xlabel="epoch", ylabel="dead fraction", title="per seed", ylim=(-0.02, 1.02))
    left.legend(fontsize="small")
    by_block = [right.plot([], [], label=f"block {b}")[0] for b in range(blocks)]
    right.set(xlabel="epoch", title="mean over seeds, by block", ylim=(-0.02, 1.02))
    for ax in (left, right):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    right.legend(fontsize="small")
    return _TrialFigure(fig, fig.suptitle(""), {"per_seed": per_seed, "by_block": by_block})


def plot_dead_fraction(rows: list[dict], seeds: list[int], title: str,
                       path: Path | BinaryIO) -> None:
    """The dead fraction per epoch: per seed, and the mean over seeds per block."""
    by_block = [row["dead_by_block"] for row in rows]  # [epoch][seed][block]
    blocks = len(by_block[0][0])
    with _figures_lock:
        figure = _figure(("dead_fraction", tuple(seeds), blocks),
                         lambda: _dead_figure(tuple(seeds), blocks))
        epochs = [row["epoch"] for row in rows]
        for line, values in zip(figure.lines["per_seed"], _series(rows, "dead_fraction"),
                                strict=True):
            line.set_data(epochs, values)
        for b, line in enumerate(figure.lines["by_block"]):
            line.set_data(epochs, [sum(s[b] for s in e) / len(e) for e in by_block])
        figure.save(title, path)


IMPORTANCE_METHOD = "Optuna's default evaluator (PED-ANOVA)"
"""How ``query.param_importances`` computes importances (named on the figure)."""


def plot_importances(importances: dict[str, float], path: Path, n_trials: int) -> None:
    """Importances as bars, titled with the method and ``n_trials`` (complete trials) they
    rest on: with few trials they are a rough guide."""
    fig = Figure(figsize=(6.5, 0.4 * len(importances) + 1.6), layout="constrained")
    ax = fig.subplots()
    names = list(importances)[::-1]
    ax.barh(names, [importances[n] for n in names])
    caveat = " (few trials: a rough guide)" if n_trials < 30 else ""
    ax.set(xlabel="importance (fraction of the objective's variation)",
           title=f"parameter importances, n = {n_trials} complete trials{caveat}")
    fig.suptitle(IMPORTANCE_METHOD, fontsize=9)
    fig.savefig(path, dpi=80)


def plot_history(study: optuna.Study, path: Path) -> Figure:
    """Complete trials' objectives with the best so far, and pruned trials at the last value
    they reported (where the pruner stopped them); failed trials are counted in the title.
    Returns the figure saved to ``path``."""
    state = optuna.trial.TrialState
    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state == state.COMPLETE]
    pruned = [t for t in trials if t.state == state.PRUNED and t.intermediate_values]
    failed = sum(t.state == state.FAIL for t in trials)
    fig = Figure(figsize=(7, 3.5), layout="constrained")
    ax = fig.subplots()
    numbers, values = [t.number for t in done], [t.value for t in done]
    ax.scatter(numbers, values, s=14, label="complete")
    if pruned:
        last = [t.intermediate_values[max(t.intermediate_values)] for t in pruned]
        ax.scatter([t.number for t in pruned], last, s=18, marker="x", color="C3",
                   label="pruned (last reported value)")
    if values:
        pick = max if study.direction == optuna.study.StudyDirection.MAXIMIZE else min
        best = [pick(values[: i + 1]) for i in range(len(values))]
        ax.step(numbers, best, where="post", color="C1", label="best so far")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="trial number", ylabel="objective",
           title=f"optimisation history: {study.study_name} ({failed} failed, not shown)")
    ax.legend(fontsize="small")
    fig.savefig(path, dpi=80)
    return fig
