"""Per-trial and per-study figures (matplotlib's object API, no global state): learning curves,
dead fraction, parameter importances, optimisation history."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
from matplotlib.figure import Figure


def _series(rows: list[dict], name: str) -> list[list[float]]:
    """Per seed, the values of ``name`` over epochs (NaN where missing)."""
    return [[math.nan if v is None else v for v in seed_values]
            for seed_values in zip(*(row[name] for row in rows))]


def plot_learning_curves(rows: list[dict], seeds: list[int], title: str, path: Path) -> None:
    fig = Figure(figsize=(10, 3.5), layout="constrained")
    epochs = [row["epoch"] for row in rows]
    for ax, name in zip(fig.subplots(1, 3), ("train_loss", "val_loss", "val_accuracy")):
        for seed, values in zip(seeds, _series(rows, name)):
            ax.plot(epochs, values, marker=".", label=f"seed {seed}")
        ax.set(xlabel="epoch", title=name)
    fig.axes[0].legend(fontsize="small")
    fig.suptitle(title)
    fig.savefig(path, dpi=80)


def plot_dead_fraction(rows: list[dict], seeds: list[int], title: str, path: Path) -> None:
    fig = Figure(figsize=(8, 3.5), layout="constrained")
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
    right.legend(fontsize="small")
    fig.suptitle(title)
    fig.savefig(path, dpi=80)


def plot_importances(importances: dict[str, float], path: Path) -> None:
    fig = Figure(figsize=(6, 0.4 * len(importances) + 1.2), layout="constrained")
    ax = fig.subplots()
    names = list(importances)[::-1]
    ax.barh(names, [importances[n] for n in names])
    ax.set(xlabel="importance", title="parameter importances")
    fig.savefig(path, dpi=80)


def plot_history(study: optuna.Study, path: Path) -> None:
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    fig = Figure(figsize=(7, 3.5), layout="constrained")
    ax = fig.subplots()
    numbers, values = [t.number for t in done], [t.value for t in done]
    ax.scatter(numbers, values, s=12, label="trial")
    pick = max if study.direction == optuna.study.StudyDirection.MAXIMIZE else min
    best = [pick(values[: i + 1]) for i in range(len(values))]
    ax.step(numbers, best, where="post", color="C1", label="best so far")
    ax.set(xlabel="trial", ylabel="objective", title=f"optimisation history: {study.study_name}")
    ax.legend(fontsize="small")
    fig.savefig(path, dpi=80)
