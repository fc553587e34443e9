"""Render a confirmation outcome: ``verdicts.json``, ``report.md``, ``report.html`` (one
self-contained file, figures inlined) and PNG figures:

- ``forest.png``: every idea's mean paired difference with its 95% CI and the +-margin band,
  oriented so that right = treatment better;
- ``pairs-<IDEA>.png``: each seed's paired difference, with the mean and CI;
- ``diag-<IDEA>.png``: the idea's diagnostic curves (``IdeaSpec.diagnostics``), mean over
  seeds, control vs treatment (per-block curves are drawn at the last epoch, by block).

Everything is computed from ``confirm.Outcome``; ``dagstudy report`` rebuilds that from the
``confirmation.json`` artifact in MLflow, so a report can be regenerated from MLflow alone.
"""

from __future__ import annotations

import base64
import html
import json
import math
import warnings
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dagstudy.confirmation.analyse import Outcome  # noqa: E402
from dagstudy.confirmation.spec import ConfirmSpec  # noqa: E402
from dagstudy.confirmation.tune import protocol  # noqa: E402
from dagstudy.confirmation.tune_report import tuning_lines, write_tuning  # noqa: E402

COLUMNS = ("idea", "metric", "control_mean", "treatment_mean", "diff", "ci_low", "ci_high",
           "d_z", "p_adjusted", "verdict", "seeds")


def _num(x: Any) -> float | None:
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else float(x)


def verdict_rows(outcome: Outcome) -> list[dict[str, Any]]:
    """One JSON-ready dict per idea: the fields of ``verdicts.json``."""
    rows = []
    for v, a in zip(outcome.verdicts, outcome.analyses):
        row = v.to_dict()
        row.update(idea=a.idea, metric=a.metric, secondary=a.secondary,
                   protocol=protocol(outcome.tuning.get(a.idea)))
        row.pop("name", None)
        rows.append(row)
    return rows


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}g}" if abs(x) < 1e-3 and x != 0 else f"{x:.{digits}f}"
    return str(x)


def table_line(row: dict[str, Any]) -> str:
    """One markdown table row (also the live progress line of ``dagstudy confirm``)."""
    ci = f"[{_fmt(row['ci_low'])}, {_fmt(row['ci_high'])}]"
    cells = [row["idea"], row["metric"], _fmt(row["control_mean"]), _fmt(row["treatment_mean"]),
             f"{_fmt(row['diff'])} {ci}", _fmt(row["d_z"], 2), _fmt(row["p_adjusted"], 3),
             f"**{row['verdict']}**", str(row["seeds"]),
             "-" if row["seeds_needed"] is None else str(row["seeds_needed"]),
             row.get("protocol", "fixed")]
    return "| " + " | ".join(cells) + " |"


TABLE_HEAD = ("| idea | metric | control | treatment | diff [95% CI] | d_z | adj. p | verdict "
              "| seeds | seeds needed | hyperparameters |\n"
              "|---|---|---|---|---|---|---|---|---|---|---|")


def _forest(rows: list[dict], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.2))
    for i, r in enumerate(reversed(rows)):
        sign = 1 if r["higher_is_better"] else -1
        lo, hi = sorted([sign * (r["ci_low"] or 0), sign * (r["ci_high"] or 0)])
        m = r["margin"]
        ax.add_patch(plt.Rectangle((-m, i - 0.35), 2 * m, 0.7, color="0.9", zorder=0))
        ax.plot([lo, hi], [i, i], color="k")
        color = {"confirmed": "tab:green", "ruled out": "tab:red"}.get(r["verdict"], "tab:gray")
        ax.plot(sign * (r["diff"] or 0), i, "o", color=color)
    ax.axvline(0, color="k", lw=0.5)
    ax.set_yticks(range(len(rows)), [r["idea"] for r in reversed(rows)])
    ax.set_xlabel("treatment - control, oriented (right = treatment better); grey = +-margin")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _pairs(analysis, verdict_row: dict, path: Path) -> None:
    d = analysis.treatment - analysis.control
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(range(len(d)), d, "o", label="seed pairs")
    ax.axhline(verdict_row["diff"] or 0, color="k", label="mean")
    ax.axhspan(verdict_row["ci_low"] or 0, verdict_row["ci_high"] or 0, color="0.85",
               label="95% CI")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xlabel("pair (seed)")
    ax.set_ylabel(f"treatment - control ({analysis.metric})")
    ax.set_title(f"{analysis.idea}: {verdict_row['verdict']}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _seed_mean(epoch_values: list) -> Any:
    """Mean over seeds of one epoch's per-seed values (scalars or per-block lists)."""
    arr = np.asarray([[np.nan if x is None else x for x in v] if isinstance(v, list)
                      else (np.nan if v is None else v) for v in epoch_values], float)
    with warnings.catch_warnings():  # an epoch where no seed has a value (no revival event)
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(arr, axis=0)


def _diagnostics(idea: str, names: list[str], arms: dict[str, dict], path: Path) -> bool:
    names = [n for n in names if any(n in r.get("curves", {}) for r in arms.values())]
    if not names:
        return False
    fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        for arm in ("control", "treatment"):
            curve = arms.get(arm, {}).get("curves", {}).get(name)
            if not curve:
                continue
            last = _seed_mean(curve[-1])
            if np.ndim(last):
                ax.plot(range(len(last)), last, "o-", label=arm)
                ax.set_xlabel("block (last epoch)")
            else:
                ax.plot(range(1, len(curve) + 1), [_seed_mean(e) for e in curve], ".-", label=arm)
                ax.set_xlabel("epoch")
        ax.set_title(name)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(idea)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _markdown(spec: ConfirmSpec, rows: list[dict], outcome: Outcome, figures: list[str],
              timing: dict[str, float] | None = None) -> str:
    lines = [f"# Confirmation: {spec.name}", "",
             f"{len(rows)} ideas, paired by seed, {spec.test} test, Holm across ideas at "
             f"alpha {spec.alpha}; {outcome.looks} look(s).", ""]
    if timing:
        lines += [f"Wall time: tuning {timing['tuning_seconds']:.0f} s, deciding "
                  f"{timing['deciding_seconds']:.0f} s.", ""]
    lines += [TABLE_HEAD]
    lines += [table_line(r) for r in rows]
    lines += ["", "diff = treatment - control in the metric's units; for a loss, negative is "
              "better. 'seeds needed' estimates the total pairs that would likely decide an "
              "inconclusive idea.", "", "![forest](forest.png)", ""]
    for r in rows:
        lines += [f"## {r['idea']}", "", f"{r['reason']}.", ""]
        lines += tuning_lines(spec, r["idea"], outcome.tuning.get(r["idea"]))
        for s in r["secondary"]:
            lines.append("- " + ", ".join(f"{k}: {_fmt(v) if isinstance(v, float) else v}"
                                          for k, v in s.items()))
        lines += [""] + [f"![{f}]({f})" for f in figures if r["idea"] in f] + [""]
    return "\n".join(lines)


def _html(markdown_text: str, out: Path) -> str:
    """A self-contained HTML page: the markdown as preformatted text plus the inlined figures."""
    body = []
    for line in markdown_text.splitlines():
        if line.startswith("![") and line.endswith(")"):
            name = line[line.index("(") + 1 : -1]
            data = base64.b64encode((out / name).read_bytes()).decode()
            body.append(f'<img alt="{html.escape(name)}" src="data:image/png;base64,{data}">')
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{html.escape(line.lstrip('# '))}</h{level}>")
        elif line:
            body.append(f"<pre>{html.escape(line)}</pre>")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>dagstudy report</title>"
            "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}"
            "pre{margin:0;white-space:pre-wrap}img{max-width:100%}</style></head><body>"
            + "\n".join(body) + "</body></html>")


def write_report(spec: ConfirmSpec, outcome: Outcome, out: Path,
                 timing: dict[str, float] | None = None) -> list[Path]:
    """Write every report file into ``out``; returns their paths. ``timing``: seconds spent
    tuning and deciding, stated in the report."""
    out.mkdir(parents=True, exist_ok=True)
    rows = verdict_rows(outcome)
    (out / "verdicts.json").write_text(json.dumps(rows, indent=2))
    _forest(rows, out / "forest.png")
    figures = []
    for analysis, row in zip(outcome.analyses, rows):
        name = f"pairs-{analysis.idea}.png"
        _pairs(analysis, row, out / name)
        figures.append(name)
        diag = f"diag-{analysis.idea}.png"
        if _diagnostics(analysis.idea, spec.ideas[analysis.idea].diagnostics,
                        outcome.results[analysis.idea], out / diag):
            figures.append(diag)
    figures += write_tuning(outcome.tuning, out)
    text = _markdown(spec, rows, outcome, figures, timing)
    (out / "report.md").write_text(text)
    (out / "report.html").write_text(_html(text, out))
    return sorted(out.iterdir())
