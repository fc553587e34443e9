"""The tuning part of a confirmation report, per tuned idea:

- each arm's tuned hyperparameters: the study, its best trial and objective, the sampled params;
- ``tune-<IDEA>.png``: the tuning curve, best validation objective so far vs trial, every arm on
  one figure, the equal budget (``trials``) marked;
- sensitivity: the spread of the objective over the arm's COMPLETE tuning trials (min, median,
  max, interquartile range): a wide spread means the arm's result depends much on its
  hyperparameters, so a fixed-hyperparameter comparison of it is fragile;
- the seeds: tuning seeds and verdict seeds, disjoint ranges;
- ``from_study`` bases: the study, rank and trial number each base came from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from dagstudy.confirmation.spec import ConfirmSpec  # noqa: E402
from dagstudy.confirmation.tune import ArmTuning  # noqa: E402


def best_so_far(tuning: ArmTuning) -> list[float | None]:
    """Per trial (trial-number order), the best objective of the COMPLETE trials up to it."""
    sign = 1.0 if tuning.direction == "minimize" else -1.0
    out: list[float | None] = []
    best = None
    for value in tuning.values:
        if value is not None and (best is None or sign * value < sign * best):
            best = value
        out.append(best)
    return out


def sensitivity(tuning: ArmTuning) -> dict[str, float | int | None]:
    """Spread of the objective over the COMPLETE tuning trials (``n`` of them)."""
    done = np.asarray([v for v in tuning.values if v is not None], float)
    if done.size == 0:
        return {"n": 0, "min": None, "median": None, "max": None, "iqr": None}
    q1, med, q3 = np.percentile(done, [25, 50, 75])
    return {"n": int(done.size), "min": float(done.min()), "median": float(med),
            "max": float(done.max()), "iqr": float(q3 - q1)}


def tuning_curve(idea: str, arms: dict[str, ArmTuning], path: Path) -> None:
    """Best validation objective so far vs trial, every arm, the equal budget marked."""
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for arm, t in arms.items():
        curve = best_so_far(t)
        xs = [i for i, v in enumerate(curve, start=1) if v is not None]
        ax.step(xs, [curve[i - 1] for i in xs], where="post", label=f"{arm} ({t.study})")
        ax.plot([i for i, v in enumerate(t.values, start=1) if v is not None],
                [v for v in t.values if v is not None], ".", alpha=0.35,
                color=ax.lines[-1].get_color())
    budget = max(t.budget for t in arms.values())
    ax.axvline(budget, color="k", ls="--", lw=0.8, label=f"equal budget: {budget} trials/arm")
    first = next(iter(arms.values()))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("tuning trial")
    ax.set_ylabel(f"best {first.metric} so far (dots: each trial)")
    ax.set_title(f"{idea}: tuning curves")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _num(x: Any) -> str:
    return "-" if x is None else f"{x:.4g}"


def display_params(params: dict[str, Any]) -> str:
    """Tuned params in the ``tune:`` block's names: Optuna's ``optimizer.sgd.momentum`` as
    ``optimizer_params.momentum``; the single-choice ``optimizer`` / ``revival`` left out."""
    shown = []
    for name, value in params.items():
        kind, _, rest = name.partition(".")
        if kind in ("optimizer", "revival"):
            if not rest:
                continue
            name = f"{kind}_params.{rest.partition('.')[2]}"
        shown.append(f"{name}={_num(value) if isinstance(value, float) else value}")
    return ", ".join(shown)


def tuning_lines(spec: ConfirmSpec, idea: str, arms: dict[str, ArmTuning] | None) -> list[str]:
    """The idea's tuning and base-provenance section of ``report.md``."""
    lines = [f"Base from study {b['study']} trial #{b['trial']} (rank {b['rank']}, objective "
             f"{_num(b['objective'])})." for b in spec.ideas[idea].base_trials]
    if not arms:
        return lines + ["Hyperparameters: fixed (as written in the file).", ""]
    first = next(iter(arms.values()))
    verdict = spec.verdict_seeds()
    lines += [f"Tuned: {first.budget} trials per arm on validation {first.metric} "
              f"({first.direction}); tuning seeds {first.seeds[0]}..{first.seeds[-1]}, verdict "
              f"seeds {verdict.start}..{verdict.stop - 1} (disjoint).", "",
              "| arm | study | trials | best trial | best objective | tuned params | "
              "sensitivity: min / median / max (IQR) over complete trials |",
              "|---|---|---|---|---|---|---|"]
    for arm, t in arms.items():
        s = sensitivity(t)
        params = display_params(t.params)
        lines.append(f"| {arm} | {t.study} ({t.status}) | {t.finished} | #{t.best_trial} | "
                     f"{_num(t.best_value)} | {params} | {_num(s['min'])} / {_num(s['median'])}"
                     f" / {_num(s['max'])} ({_num(s['iqr'])}; n={s['n']}) |")
    return lines + [""]


def write_tuning(tuning: dict[str, dict[str, ArmTuning]], out: Path) -> list[str]:
    """Every tuned idea's curve figure in ``out``; returns the file names."""
    names = []
    for idea, arms in tuning.items():
        name = f"tune-{idea}.png"
        tuning_curve(idea, arms, out / name)
        names.append(name)
    return names
