"""The confirmation report as one self-contained HTML document (figures inlined as PNG data).

Sections: a header (what was run: file, command, date, versions, commit, device), the verdict
table with the forest plot, the base configuration, one section per idea (its claim, the
verdict and why, its arms spelled out: the configuration fields that differ between them and
their parameter counts, its secondary comparisons, its figures) and a methods section generated
from the settings actually used. Built with ``html.escape`` on every value; no markdown.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from dagstudy.confirmation.spec import ConfirmSpec
from dagstudy.ideas import IDEAS
from dagstudy.stats.signflip import EXCEEDANCES

STYLE = """
body{font-family:system-ui,sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
table{border-collapse:collapse;margin:.6em 0 1em;font-size:.92em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f2f2f2}td.num{text-align:right;font-variant-numeric:tabular-nums}
.confirmed{color:#1a7f37;font-weight:600}.ruled-out{color:#c62828;font-weight:600}
.inconclusive{color:#666;font-weight:600}img{max-width:100%;margin:.4em 0}
.figures img{display:block}.note{color:#555;font-size:.9em}
table.meta th{background:none;font-weight:600}
code{background:#f5f5f5;padding:0 .2em}
"""


def fmt(x: Any, digits: int = 4) -> str:
    """A number for people: ``digits`` significant digits, '-' for none."""
    if x is None:
        return "-"
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    if isinstance(x, int):
        return str(x)
    return f"{x:.{digits}g}"


def _e(x: Any) -> str:
    return html.escape(str(x))


def table(head: list[str] | None, rows: list[list[Any]], numeric: set[int] = frozenset(),
          cls: str = "") -> str:
    """An HTML table (``head`` None: no header row, the first column as row headers); cells
    are escaped unless given as ``Raw``."""
    attr = f' class="{cls}"' if cls else ""
    out = [f"<table{attr}>"]
    if head is not None:
        out.append("<thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr></thead>")
    out.append("<tbody>")
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            text = cell.html if isinstance(cell, Raw) else _e(cell)
            tag = "th" if head is None and i == 0 else "td"
            num = ' class="num"' if i in numeric else ""
            cells.append(f"<{tag}{num}>{text}</{tag}>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "".join(out) + "</tbody></table>"


class Raw:
    """A table cell that is HTML already."""

    def __init__(self, markup: str):
        self.html = markup


def verdict_cell(verdict: str) -> Raw:
    return Raw(f'<span class="{verdict.replace(" ", "-")}">{_e(verdict)}</span>')


def image(out: Path, name: str) -> str:
    data = base64.b64encode((out / name).read_bytes()).decode()
    return f'<img alt="{_e(name)}" src="data:image/png;base64,{data}">'


VERDICT_HEAD = ["idea", "metric", "control", "treatment", "diff", "95% CI", "d_z", "adj. p",
                "verdict", "seeds", "seeds needed", "hyperparameters"]


def verdict_table(rows: list[dict[str, Any]]) -> str:
    body = [[r["idea"] + (" (user-defined)" if r.get("source") == "user-defined" else ""),
             r["metric"], fmt(r["control_mean"]), fmt(r["treatment_mean"]),
             fmt(r["diff"], 3), f"[{fmt(r['ci_low'], 3)}, {fmt(r['ci_high'], 3)}]",
             fmt(r["d_z"], 2), fmt(r["p_adjusted"], 2), verdict_cell(r["verdict"]), r["seeds"],
             fmt(r["seeds_needed"]), r.get("protocol", "fixed")] for r in rows]
    return table(VERDICT_HEAD, body, numeric={2, 3, 4, 5, 6, 7, 9, 10}, cls="verdicts")


def _header(spec: ConfirmSpec, meta: dict[str, Any], devices: list[str]) -> str:
    versions = meta.get("versions", {})
    rows = [["file", meta.get("file") or "-"], ["command", meta.get("command") or "-"],
            ["date", meta.get("date") or "-"], ["dagstudy", meta.get("dagstudy") or "-"],
            ["git commit", meta.get("commit") or "not in a git work tree"],
            ["device", ", ".join(devices) or "-"], ["python", meta.get("python") or "-"]]
    rows += [[lib, v] for lib, v in versions.items()]
    return f"<h1>Confirmation: {_e(spec.name)}</h1>" + table(None, rows, cls="meta")


def differing_fields(configs: dict[str, dict[str, Any]]) -> list[str]:
    """The configuration fields whose values differ between the arms, in field order."""
    keys: list[str] = []
    for config in configs.values():
        keys += [k for k in config if k not in keys]
    return [k for k in keys if len({repr(c.get(k)) for c in configs.values()}) > 1]


def _value(v: Any) -> str:
    if isinstance(v, dict):
        return ", ".join(f"{k}={_value(x)}" for k, x in v.items()) or "{}"
    return fmt(v) if isinstance(v, float) else str(v)


def arms_table(arms: dict[str, dict[str, Any]], metric: str) -> str:
    """One row per arm: the differing configuration fields, parameters, FLOPs per example and
    the final value of the idea's metric (mean ± SD over seeds)."""
    fields = differing_fields({a: r["config"] for a, r in arms.items()})
    shown = metric.removeprefix("log10_")  # the arms' own values, not their logarithm
    head = ["arm", *fields, "parameters", "FLOPs / example", f"{shown} (mean ± SD)"]
    rows = []
    for arm, r in arms.items():
        summary = r.get(shown) if isinstance(r.get(shown), dict) else {}
        value = (f"{fmt(summary.get('mean'))} ± {fmt(summary.get('std'), 2)}"
                 if summary else "-")
        rows.append([arm, *(_value(r["config"].get(f)) for f in fields), r.get("params", "-"),
                     r.get("flops_per_example", "-"), value])
    n = len(fields)
    note = "" if fields else ('<p class="note">The arms have identical configurations '
                              "(an A/A comparison).</p>")
    return table(head, rows, numeric={n + 1, n + 2, n + 3}, cls="arms") + note


def secondary_table(secondary: list[dict[str, Any]]) -> str:
    if not secondary:
        return ""
    keys: list[str] = []
    for s in secondary:
        keys += [k for k in s if k not in keys]

    def cell(v: Any) -> str:
        if isinstance(v, list):
            return "[" + ", ".join(fmt(x, 3) for x in v) + "]"
        return fmt(v) if isinstance(v, float) else ("-" if v is None else str(v))

    rows = [[cell(s.get(k)) for k in keys] for s in secondary]
    return "<h4>Secondary comparisons</h4>" + table(keys, rows, cls="secondary")


SETTINGS_TABLE_HEAD = ["setting", "control", "treatment", "diff", "95% CI", "d_z", "p",
                       "weight"]


def settings_table(row: dict[str, Any]) -> str:
    """A pooled idea's per-setting rows and its pooled random-effects row ("" if unpooled)."""
    pooled = row.get("pooled")
    if not pooled:
        return ""
    rows = [[s["setting"], fmt(s["control_mean"]), fmt(s["treatment_mean"]), fmt(s["diff"]),
             f"[{fmt(s['ci_low'])}, {fmt(s['ci_high'])}]", fmt(s["d_z"], 2), fmt(s["p"], 3),
             f"{s['weight']:.2f}"] for s in row["settings"]]
    unit = "" if pooled["scale"] == "diff" else " (d_z scale)"
    rows.append([f"pooled, random effects{unit}", fmt(row["control_mean"]),
                 fmt(row["treatment_mean"]), fmt(pooled["estimate"]),
                 f"[{fmt(pooled['ci_low'])}, {fmt(pooled['ci_high'])}]", "-",
                 fmt(pooled["p"], 3), f"I² {pooled['i2']:.0%}, τ² {fmt(pooled['tau2'])}"])
    opposite = ", ".join(pooled["opposite"]) or "none"
    return ("<h4>Settings</h4>" + table(SETTINGS_TABLE_HEAD, rows, numeric={1, 2, 3, 5, 6})
            + f"<p>Settings {_e(pooled['agreement'])}; opposite sign: {_e(opposite)}. p per "
            "setting is unadjusted; the pooled p is the stratified sign-flip permutation test "
            "(Holm-adjusted in the verdict table).</p>")


def lines_html(lines: list[str]) -> str:
    """Plain report lines as HTML: runs of ``| a | b |`` rows become a table (the first row
    its header, ``|---|`` rows dropped), other non-empty lines paragraphs."""
    parts: list[str] = []
    rows: list[list[str]] = []
    for line in [*lines, ""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(set(c) <= {"-", ":"} for c in cells):
                rows.append(cells)
            continue
        if rows:
            parts.append(table(rows[0], rows[1:]))
            rows = []
        if line.strip():
            parts.append(f"<p>{_e(line)}</p>")
    return "".join(parts)


def _idea_section(spec: ConfirmSpec, row: dict[str, Any], arms: dict[str, dict],
                  figures: list[str], out: Path, tuning: list[str] | None = None) -> str:
    idea = row["idea"]
    ispec = spec.ideas[idea]
    claim = IDEAS[idea].claim if idea in IDEAS else (
        "user-defined idea (not in dagstudy/ideas.py): the confirmation file defines it")
    direction = "higher" if ispec.higher_is_better else "lower"
    parts = [f'<h2 id="{_e(idea)}">{_e(idea)}</h2>',
             f"<p><em>{_e(claim)}</em></p>",
             f"<p>Verdict: {verdict_cell(row['verdict']).html}: {_e(row['reason'])}.</p>",
             f"<p>Primary metric <code>{_e(row['metric'])}</code> ({direction} is better), "
             f"margin {fmt(ispec.margin)}"
             + (", non-inferiority design" if ispec.noninferiority else "") + ".</p>",
             verdict_table([row]), settings_table(row),
             ("<h4>Hyperparameters</h4>" + lines_html(tuning)) if tuning else "",
             "<h4>Arms</h4>",
             arms_table(arms, ispec.metric),
             secondary_table(row.get("secondary") or []),
             '<div class="figures">' + "".join(image(out, f) for f in figures) + "</div>"]
    return "\n".join(parts)


def methods(spec: ConfirmSpec, looks: int) -> str:
    """The methods section, from the settings this confirmation used."""
    test = {"permutation": "a paired sign-flip permutation test (exact for up to 40 pairs, "
                           "else sequential Monte Carlo: random sign patterns until "
                           f"{EXCEEDANCES} are as extreme as observed or "
                           f"{spec.permutations} are drawn)",
            "wilcoxon": "the Wilcoxon signed-rank test",
            "t": "the paired t-test"}[spec.test]
    seq = spec.sequential
    ci = "BCa" if spec.ci_method == "bca" else "percentile"
    items = [
        f"Pairing: both arms of an idea train on the same seeds ({spec.seeds} pairs from seed "
        f"{spec.first_seed}); seed s fixes the data split, the data order and, where the "
        "architectures match, the initial weights. Each seed gives one paired difference "
        "d = treatment - control in the metric's units.",
        f"Primary test: {test}, two-sided, on the paired differences; the direction of the "
        "mean decides whether a significant result confirms or rules out the idea.",
        f"Multiple comparisons: Holm's step-down correction across all ideas of this run, "
        f"family-wise alpha {spec.alpha:g}, separately for the primary and the TOST p-values.",
        "Rule-out by equivalence: two one-sided t-tests (TOST) against each idea's margin; "
        "ruled out when the adjusted TOST p is below alpha (|effect| smaller than the margin).",
        f"Confidence intervals: 95% {ci} bootstrap of the mean difference "
        f"({spec.n_resamples} resamples, fixed seed). Effect size d_z = mean(d) / sd(d).",
        "Inconclusive ideas: 'seeds needed' is the cheaper of the pairs giving 80% power to "
        "detect the observed d_z and to show equivalence, at the Bonferroni level alpha / m.",
        "Failures: a seed whose loss diverges is ended and scored as its zeroed network "
        "(chance level), never dropped, so failures count against the arm that caused them.",
        "Assumptions: pairs are independent across seeds; the permutation and Wilcoxon tests "
        "assume the differences are symmetric about their centre under the null; the t-based "
        "TOST assumes their mean is roughly normal.",
        "Test-set discipline: test metrics are computed at the end of training only and are "
        "never used for early stopping or selection.",
    ]
    if seq.enabled:
        items.append(f"Sequential design: up to {seq.looks} looks ({looks} used), adding "
                     f"{seq.add_seeds} seeds per look to ideas still inconclusive, with "
                     f"{seq.spending} alpha spending; a verdict is kept from its deciding look.")
    special = [f"{i}: " + ", ".join(k for k in ("noninferiority", "match_params", "depths",
                                                "fanin_sweep") if getattr(s, k))
               for i, s in spec.ideas.items()
               if s.noninferiority or s.match_params or s.depths or s.fanin_sweep]
    if special:
        items.append("Special designs (see the README): " + "; ".join(special) + ".")
    return "<h2>Methods</h2><ul>" + "".join(f"<li>{_e(i)}</li>" for i in items) + "</ul>"


def document(spec: ConfirmSpec, rows: list[dict[str, Any]], results: dict[str, dict],
             figures: dict[str, list[str]], looks: int, meta: dict[str, Any], out: Path,
             tuning: dict[str, list[str]] | None = None) -> str:
    """The whole report as HTML (``figures``: file names per idea, and ``forest`` under
    the key ''; ``tuning``: each idea's hyperparameter lines, ``tune_report.tuning_lines``)."""
    devices = sorted({r.get("device", "") for arms in results.values() for r in arms.values()}
                     - {""})
    counts = {v: sum(r["verdict"] == v for r in rows)
              for v in ("confirmed", "ruled out", "inconclusive")}
    summary = ", ".join(f"{n} {v}" for v, n in counts.items())
    parts = [_header(spec, meta, devices), "<h2>Verdicts</h2>",
             f"<p>{len(rows)} ideas: {_e(summary)}. Paired by seed, {_e(spec.test)} test, "
             f"Holm across ideas at alpha {spec.alpha:g}; {looks} look(s)."
             + (f" Wall time: tuning {meta['timing']['tuning_seconds']:.0f} s, deciding "
                f"{meta['timing']['deciding_seconds']:.0f} s." if meta.get("timing") else "")
             + "</p>",
             verdict_table(rows),
             '<p class="note">diff = treatment - control in the metric\'s units (for a loss, '
             "negative is better); adj. p is Holm-adjusted; 'seeds needed' estimates the total "
             "pairs likely to decide an inconclusive idea.</p>",
             "".join(image(out, f) for f in figures.get("", [])),
             "<h2>Base configuration</h2>",
             table(["field", "value"], [[k, _value(v)] for k, v in spec.base.items()])
             if spec.base else "<p>(the trainer's defaults)</p>"]
    for row in rows:
        parts.append(_idea_section(spec, row, results.get(row["idea"], {}),
                                   figures.get(row["idea"], []), out,
                                   (tuning or {}).get(row["idea"])))
    parts.append(methods(spec, looks))
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>Confirmation {_e(spec.name)}</title><style>{STYLE}</style></head><body>"
            + "\n".join(parts) + "</body></html>")
