"""Render a confirmation outcome into a directory: ``verdicts.json``, ``report.html`` (one
self-contained HTML document, ``document``), ``report.md`` (the same for plain-text readers)
and the PNG figures (``figures``):

- ``forest.png``: every idea's oriented mean difference with its CI, one panel per metric;
- ``pairs-<IDEA>.png``: each seed's paired difference, mean, CI and the +-margin band;
- ``forest-<IDEA>.png`` (ideas run in several settings): one line per setting and the pooled
  random-effects estimate as a diamond, oriented like ``forest.png``;
- ``curves-<IDEA>.png``: every arm's train/validation loss and validation accuracy per epoch;
- ``diag-<IDEA>.png``: the idea's diagnostic curves (``IdeaSpec.diagnostics``), every arm.

Everything is computed from ``analyse.Outcome`` and the run's provenance (``meta``: file,
command, date, versions, commit); ``dagstudy report`` rebuilds both from the
``confirmation.json`` artifact in MLflow, so a report can be regenerated from MLflow alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dagstudy.confirmation import figures
from dagstudy.confirmation.analyse import Outcome
from dagstudy.confirmation.document import document, fmt
from dagstudy.confirmation.spec import ConfirmSpec, is_user_defined
from dagstudy.confirmation.tune import protocol
from dagstudy.confirmation.tune_report import tuning_lines, write_tuning
from dagstudy.confirmation.verdict import jsonable


def verdict_rows(outcome: Outcome) -> list[dict[str, Any]]:
    """One JSON-ready dict per idea: the fields of ``verdicts.json``."""
    rows = []
    for v, a in zip(outcome.verdicts, outcome.analyses):
        row = v.to_dict()
        row.update(idea=a.idea, source="user-defined" if is_user_defined(a.idea) else "built-in",
                   metric=a.metric, secondary=jsonable(a.secondary),
                   settings=jsonable(a.settings), pooled=jsonable(a.pooled),
                   protocol=protocol(outcome.tuning.get(a.idea)))
        row.pop("name", None)
        rows.append(row)
    return rows


def table_line(row: dict[str, Any]) -> str:
    """One markdown table row (also the live progress line of ``dagstudy confirm``)."""
    ci = f"[{fmt(row['ci_low'], 3)}, {fmt(row['ci_high'], 3)}]"
    idea = row["idea"] + (" (user-defined)" if row.get("source") == "user-defined" else "")
    cells = [idea, row["metric"], fmt(row["control_mean"]), fmt(row["treatment_mean"]),
             f"{fmt(row['diff'], 3)} {ci}", fmt(row["d_z"], 2), fmt(row["p_adjusted"], 2),
             row["verdict"], str(row["seeds"]), fmt(row["seeds_needed"]),
             row.get("protocol", "fixed")]
    return "| " + " | ".join(cells) + " |"


TABLE_HEAD = ("| idea | metric | control | treatment | diff [95% CI] | d_z | adj. p | verdict "
              "| seeds | seeds needed | hyperparameters |\n"
              "|---|---|---|---|---|---|---|---|---|---|---|")


def _markdown(spec: ConfirmSpec, rows: list[dict], outcome: Outcome,
              files: dict[str, list[str]], meta: dict[str, Any],
              timing: dict[str, float] | None) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items())
    lines = [f"# Confirmation: {spec.name}", "",
             f"Run {meta.get('date', '-')} with dagstudy {meta.get('dagstudy', '-')} (commit "
             f"{meta.get('commit') or '-'}; {versions}).", "",
             f"{len(rows)} ideas, paired by seed, {spec.test} test, Holm across ideas at "
             f"alpha {spec.alpha}; {outcome.looks} look(s). report.html has the arms, the "
             "figures and the methods.", ""]
    if timing:
        lines += [f"Wall time: tuning {timing['tuning_seconds']:.0f} s, deciding "
                  f"{timing['deciding_seconds']:.0f} s.", ""]
    lines += [TABLE_HEAD]
    lines += [table_line(r) for r in rows]
    lines += ["", "![forest](forest.png)", ""]
    for r in rows:
        lines += [f"## {r['idea']}", "", f"{r['verdict']}: {r['reason']}.", ""]
        lines += tuning_lines(spec, r["idea"], outcome.tuning.get(r["idea"]))
        if r["pooled"]:
            lines += settings_lines(r) + [""]
        lines += [f"![{f}]({f})" for f in files.get(r["idea"], [])] + [""]
    return "\n".join(lines)


SETTINGS_HEAD = ("| setting | control | treatment | diff [95% CI] | d_z | p | weight |\n"
                 "|---|---|---|---|---|---|---|")


def settings_lines(row: dict) -> list[str]:
    """The per-setting table of a pooled idea (markdown), its pooled row last."""
    pooled = row["pooled"]
    lines = [SETTINGS_HEAD]
    for s in row["settings"]:
        lines.append(f"| {s['setting']} | {fmt(s['control_mean'])} | "
                     f"{fmt(s['treatment_mean'])} | {fmt(s['diff'])} [{fmt(s['ci_low'])}, "
                     f"{fmt(s['ci_high'])}] | {fmt(s['d_z'], 2)} | {fmt(s['p'], 3)} | "
                     f"{s['weight']:.2f} |")
    unit = "" if pooled["scale"] == "diff" else " (d_z)"
    lines.append(f"| **pooled**, random effects{unit} | {fmt(row['control_mean'])} | "
                 f"{fmt(row['treatment_mean'])} | {fmt(pooled['estimate'])} "
                 f"[{fmt(pooled['ci_low'])}, {fmt(pooled['ci_high'])}] | - | "
                 f"{fmt(pooled['p'], 3)} | I^2 {pooled['i2']:.0%}, tau^2 {fmt(pooled['tau2'])} |")
    opposite = ", ".join(pooled["opposite"]) or "none"
    lines += ["", f"Settings {pooled['agreement']}; opposite sign: {opposite}. p per setting is "
              "unadjusted; the pooled p is the stratified sign-flip permutation test (the "
              "verdict, Holm-adjusted in the table above)."]
    return lines


def ordered(arms: dict[str, dict]) -> dict[str, dict]:
    """An idea's arms with control and treatment first, the others in their planned order."""
    first = [a for a in ("control", "treatment") if a in arms]
    return {a: arms[a] for a in first + [a for a in arms if a not in first]}


def _seeds(arms: dict[str, dict]) -> list[int]:
    return next(iter(arms.values()))["seeds"] if arms else []


def write_report(spec: ConfirmSpec, outcome: Outcome, out: Path,
                 meta: dict[str, Any] | None = None,
                 timing: dict[str, float] | None = None) -> list[Path]:
    """Write every report file into ``out``; returns their paths. ``meta``: the run's
    provenance (``provenance.provenance``), shown in the header; ``timing``: seconds spent
    tuning and deciding."""
    meta = {**(meta or {}), **({"timing": timing} if timing else {})}
    out.mkdir(parents=True, exist_ok=True)
    rows = verdict_rows(outcome)
    (out / "verdicts.json").write_text(json.dumps(rows, indent=2))
    figures.forest(rows, out / "forest.png")
    files: dict[str, list[str]] = {"": ["forest.png"]}
    results = {idea: ordered(arms) for idea, arms in outcome.results.items()}
    for analysis, row in zip(outcome.analyses, rows):
        idea, arms = analysis.idea, results[analysis.idea]
        names = [f"pairs-{idea}.png"]
        diffs = analysis.treatment - analysis.control
        seeds = _seeds(arms) * (len(row["settings"]) if row["pooled"] else 1)  # per setting
        figures.pairs(idea, analysis.metric, seeds[: len(diffs)], diffs, row, out / names[0])
        if row["pooled"]:
            figures.setting_forest(row, out / f"forest-{idea}.png")
            names.append(f"forest-{idea}.png")
        if figures.learning_curves(idea, arms, out / f"curves-{idea}.png"):
            names.append(f"curves-{idea}.png")
        if figures.diagnostics(idea, spec.ideas[idea].diagnostics, arms,
                               out / f"diag-{idea}.png"):
            names.append(f"diag-{idea}.png")
        files[idea] = names
    for name in write_tuning(outcome.tuning, out):  # tune-<IDEA>.png
        files.setdefault(name.removeprefix("tune-").removesuffix(".png"), []).append(name)
    (out / "report.md").write_text(_markdown(spec, rows, outcome, files, meta, timing))
    (out / "report.html").write_text(
        document(spec, rows, results, files, outcome.looks, meta, out,
                 {r["idea"]: tuning_lines(spec, r["idea"], outcome.tuning.get(r["idea"]))
                  for r in rows}))
    return sorted(out.iterdir())
