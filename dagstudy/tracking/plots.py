"""Per-trial and per-study figures (matplotlib's object API, no global state): learning curves
(each seed thin, the mean over seeds bold; test metrics are final only, never per epoch), dead
fraction, parameter importances (naming the method and the number of trials they rest on) and
the optimisation history (complete trials, and pruned ones at their last reported value)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import BinaryIO

import optuna
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


def _series(rows: list[dict], name: str) -> list[list[float]]:
    """Per seed, the values of ``name`` over epochs (NaN where missing)."""
    return [[math.nan if v is None else v for v in seed_values]
            for seed_values in zip(*(row[name] for row in rows))]


_FIXED_MARGINS = {"left": 0.08, "right": 0.98, "bottom": 0.14, "top": 0.82, "wspace": 0.3}
"""Per-trial figures use fixed margins: matplotlib's constrained layout was about half of
their rendering time, paid once per trial."""

LABELS = {"train_loss": "training loss", "val_loss": "validation loss",
          "val_accuracy": "validation accuracy (fraction)"}


def plot_learning_curves(rows: list[dict], seeds: list[int], title: str,
                         path: Path | BinaryIO) -> None:
    fig = Figure(figsize=(10, 3.5))
    fig.subplots_adjust(**_FIXED_MARGINS)
    epochs = [row["epoch"] for row in rows]
    for ax, name in zip(fig.subplots(1, 3), LABELS):
        series = _series(rows, name)
        for seed, values in zip(seeds, series):
            ax.plot(epochs, values, marker=".", lw=0.8, alpha=0.6, label=f"seed {seed}")
        finite = [[v for v in epoch if not math.isnan(v)] for epoch in zip(*series)]
        ax.plot(epochs, [sum(v) / len(v) if v else math.nan for v in finite], "k-", marker="o",
                lw=2, label="mean over seeds")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set(xlabel="epoch", ylabel=LABELS[name], title=name)
    fig.axes[0].legend(fontsize="small")
    fig.suptitle(title)
    fig.savefig(path, dpi=80)


def plot_dead_fraction(rows: list[dict], seeds: list[int], title: str,
                       path: Path | BinaryIO) -> None:
    fig = Figure(figsize=(8, 3.5))
    fig.subplots_adjust(**_FIXED_MARGINS)
    left, right = fig.subplots(1, 2)
    epochs = [row["epoch"] for row in rows]
    for seed, values in zip(seeds, _series(rows, "dead_fraction")):
        left.plot(epochs, values, marker=".", label=f"seed {seed}")
    left.set(xlabel="epoch", ylabel="dead fraction", title="per seed", ylim=(-0.02, 1.02))
    left.legend(fontsize="small")
    by_block = [row["dead_by_block"] for row in rows]  # [epoch][seed][block]
    for b in range(len(by_block[0][0])):
        right.plot(epochs, [sum(s[b] for s in e) / len(e) for e in by_block], label=f"block {b}")
    right.set(xlabel="epoch", title="mean over seeds, by block", ylim=(-0.02, 1.02))
    for ax in (left, right):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    right.legend(fontsize="small")
    fig.suptitle(title)
    fig.savefig(path, dpi=80)


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
