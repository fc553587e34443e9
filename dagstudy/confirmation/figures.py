"""A confirmation report's figures (matplotlib's object API, PNG files):

- ``forest``: one panel per metric family (e.g. ``test_accuracy``, ``train_loss``): each idea's
  mean paired difference with its 95% CI, oriented so that right = treatment better, the
  ±margin band, the point coloured by verdict and the idea labelled with its verdict;
- ``pairs``: each seed's paired difference (x: the seed number, integer ticks), its mean and
  CI, and the ±margin band;
- ``diagnostics``: the idea's diagnostic curves for every arm (legend: the arm's name), the mean
  over seeds with a ±1 SD band across seeds; per-block curves at the last epoch, by block;
- ``learning_curves``: every arm's train and validation loss and validation accuracy per epoch,
  mean over seeds with a ±1 SD band (test metrics are final only, never plotted per epoch).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

VERDICT_COLOURS = {"confirmed": "tab:green", "ruled out": "tab:red",
                   "inconclusive": "tab:gray"}

UNITS = {
    "train_loss": "training loss", "val_loss": "validation loss",
    "val_accuracy": "validation accuracy (fraction)", "test_accuracy": "test accuracy (fraction)",
    "dead_fraction": "dead hidden nodes (fraction)",
    "grad_reach": "gradient norm, first / last block (ratio)",
    "grad_norm_by_block": "mean gradient row norm (L2)", "lipschitz": "Lipschitz estimate L",
    "backtracks": "backtracks per pass (count)", "momentum": "momentum coefficient",
    "last_layer_grad_ratio": "last-layer gradient / first pass (ratio)",
    "duplicate_pairs": "duplicate node pairs (count)", "stuck_fraction": "stuck weights (fraction)",
    "resurrection_rate_by_block": "resurrected / dead nodes (fraction)",
    "revival_loss_jump": "training-loss jump at revival", "pair_similarity": "cosine similarity",
    "revived_lifetime": "epochs alive after revival",
    "activation_rank_by_block": "activation rank per block (of width)",
    "revived": "nodes revived this pass (count)", "revived_nodes": "distinct nodes revived so far",
    "redied_by_pass": "revived nodes dead again this pass (count)",
}
"""The y-axis label (quantity and unit) of a curve; unknown curves are labelled by name."""


def _save(fig: Figure, path: Path) -> None:
    fig.savefig(path, dpi=100)


def forest(rows: list[dict[str, Any]], path: Path) -> None:
    """One panel per metric family (see the module docstring)."""
    families: dict[str, list[dict]] = {}
    for r in rows:
        families.setdefault(r["metric"], []).append(r)
    height = sum(0.45 * len(f) + 1.1 for f in families.values()) + 0.4
    fig = Figure(figsize=(8, height), layout="constrained")
    axes = fig.subplots(len(families), 1, squeeze=False,
                        height_ratios=[len(f) + 1.5 for f in families.values()])[:, 0]
    for ax, (metric, family) in zip(axes, families.items()):
        for i, r in enumerate(reversed(family)):
            sign = 1 if r["higher_is_better"] else -1
            lo, hi = sorted([sign * (r["ci_low"] or 0), sign * (r["ci_high"] or 0)])
            m = r["margin"]
            ax.fill_betweenx([i - 0.35, i + 0.35], -m, m, color="0.9", zorder=0)
            ax.plot([lo, hi], [i, i], color="k", lw=1.2)
            ax.plot(sign * (r["diff"] or 0), i, "o", ms=7,
                    color=VERDICT_COLOURS.get(r["verdict"], "tab:gray"))
        ax.axvline(0, color="k", lw=0.5)
        ax.set_yticks(range(len(family)),
                      [f"{r['idea']} ({r['verdict']})" for r in reversed(family)])
        ax.set_ylim(-0.7, len(family) - 0.3)
        ax.set_xlabel(f"{metric}: treatment − control, oriented (right = treatment better)")
    handles = [Patch(color=c, label=v) for v, c in VERDICT_COLOURS.items()]
    handles.append(Patch(color="0.9", label="±margin"))
    fig.legend(handles=handles, fontsize=8, loc="outside lower center", ncols=len(handles))
    axes[0].set_title("mean paired difference with 95% CI")
    _save(fig, path)


def pairs(idea: str, metric: str, seeds: list[int], diffs: np.ndarray, row: dict[str, Any],
          path: Path) -> None:
    """Each seed's paired difference (treatment - control, metric units) with mean, CI and the
    ±margin band."""
    fig = Figure(figsize=(7, 3.4), layout="constrained")
    ax = fig.subplots()
    m = row["margin"]
    ax.axhspan(-m, m, color="0.92", label="±margin", zorder=0)
    ax.axhspan(row["ci_low"] or 0, row["ci_high"] or 0, color="tab:blue", alpha=0.15,
               label="95% CI of the mean")
    ax.axhline(row["diff"] or 0, color="tab:blue", label="mean")
    ax.axhline(0, color="k", lw=0.5)
    ax.plot(seeds[: len(diffs)], diffs, "o", color="k", label="one seed pair")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("seed")
    ax.set_ylabel(f"treatment - control\n({metric})")
    ax.set_title(f"{idea}: {row['verdict']}", color=VERDICT_COLOURS.get(row["verdict"], "k"))
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _save(fig, path)


def _values(epoch_values: list) -> np.ndarray:
    """One epoch's per-seed values (scalars or per-block lists) as floats, NaN where None."""
    return np.asarray([[np.nan if x is None else x for x in v] if isinstance(v, list)
                       else (np.nan if v is None else v) for v in epoch_values], float)


def _mean_sd(values: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    with warnings.catch_warnings():  # an epoch where no seed has a value (no revival event)
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(values, axis=axis)
        sd = np.nanstd(values, axis=axis, ddof=1) if values.shape[axis] > 1 else 0 * mean
    return mean, np.nan_to_num(sd)


def _band(ax, x, values: np.ndarray, label: str, colour: str) -> None:
    """Mean over seeds (axis 1 of ``values`` [x, seed]) with a ±1 SD band."""
    mean, sd = _mean_sd(values, axis=1)
    ax.plot(x, mean, ".-", color=colour, label=label)
    ax.fill_between(x, mean - sd, mean + sd, color=colour, alpha=0.2, lw=0)


def _curve_panel(ax, name: str, arms: dict[str, dict]) -> bool:
    drew = False
    for k, (arm, result) in enumerate(arms.items()):
        curve = result.get("curves", {}).get(name)
        if not curve:
            continue
        colour = f"C{k % 10}"
        last = _values(curve[-1])
        if last.ndim == 2:  # per seed, per block: the last epoch, by block
            _band(ax, np.arange(last.shape[1]), last.T, arm, colour)
            ax.set_xlabel("block (at the last epoch)")
        else:
            _band(ax, np.arange(1, len(curve) + 1), np.stack([_values(e) for e in curve]),
                  arm, colour)
            ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        drew = True
    ax.set_ylabel(UNITS.get(name, name))
    ax.set_title(name)
    if drew:
        ax.legend(fontsize=7)
    return drew


def _panels(title: str, names: list[str], arms: dict[str, dict], path: Path) -> bool:
    names = [n for n in names if any(n in r.get("curves", {}) for r in arms.values())]
    if not names:
        return False
    fig = Figure(figsize=(max(7.0, 4.6 * len(names)), 3.6), layout="constrained")
    for ax, name in zip(fig.subplots(1, len(names), squeeze=False)[0], names):
        _curve_panel(ax, name, arms)
    fig.suptitle(f"{title}: mean over seeds, band ±1 SD", fontsize=10)
    _save(fig, path)
    return True


def diagnostics(idea: str, names: list[str], arms: dict[str, dict], path: Path) -> bool:
    """The idea's diagnostic curves for every arm; False (no file) if no arm recorded any."""
    return _panels(f"{idea}: diagnostics", names, arms, path)


def learning_curves(idea: str, arms: dict[str, dict], path: Path) -> bool:
    """Every arm's train and validation loss and validation accuracy per epoch."""
    return _panels(f"{idea}: learning curves", ["train_loss", "val_loss", "val_accuracy"],
                   arms, path)


def setting_forest(row: dict[str, Any], path: Path) -> None:
    """Meta-analysis forest plot of a pooled idea: per setting the effect and its 95% CI
    (marker size by weight), the pooled random-effects estimate as a diamond below."""
    sign = 1 if row["higher_is_better"] else -1
    pooled, settings = row["pooled"], row["settings"]
    on_diff = pooled["scale"] == "diff"
    fig = Figure(figsize=(7.5, 0.45 * len(settings) + 1.8), layout="constrained")
    ax = fig.subplots()
    for i, s in enumerate(settings):
        y = len(settings) - i
        if on_diff:
            lo, hi = s["ci_low"] or 0.0, s["ci_high"] or 0.0
        else:
            half = 1.96 * math.sqrt(s["variance"])
            lo, hi = s["effect"] - half, s["effect"] + half
        lo, hi = sorted([sign * lo, sign * hi])
        ax.plot([lo, hi], [y, y], color="k")
        ax.plot(sign * s["effect"], y, "s", color="tab:blue",
                markersize=4 + 8 * math.sqrt(s["weight"]))
    lo, hi = sorted([sign * pooled["ci_low"], sign * pooled["ci_high"]])
    est = sign * pooled["estimate"]
    ax.fill([lo, est, hi, est], [0, 0.25, 0, -0.25],
            color=VERDICT_COLOURS.get(row["verdict"], "tab:gray"))
    ax.axvline(0, color="k", lw=0.5)
    labels = [s["setting"] for s in settings] + [f"pooled (p {pooled['p']:.3g})"]
    ax.set_yticks(list(range(len(settings), 0, -1)) + [0], labels, fontsize=7)
    unit = f"treatment - control ({row['metric']})" if on_diff else "d_z"
    ax.set_xlabel(f"{unit}, oriented (right = treatment better)")
    ax.set_title(f"{row['idea']}: {pooled['agreement']}, I^2 {pooled['i2']:.0%}, "
                 f"tau^2 {pooled['tau2']:.2g}", fontsize=9)
    _save(fig, path)
