"""``dagstudy confirm`` and ``dagstudy report``: the command-line side of confirmation.

Kept apart from ``cli.py`` so the confirmation path reads top to bottom in one place: load and
validate the file (every arm's config is built before any work starts), run the arms, print the
verdict table as it fills, write the report.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import yaml
from pydantic import ValidationError

from dagstudy.config import format_errors
from dagstudy.confirm import (
    IDEA_IDS,
    ArmJob,
    ConfirmSpec,
    Experiment,
    Outcome,
    analyse,
    confirm,
    plan,
    reanalyse,
)
from dagstudy.report import TABLE_HEAD, table_line, verdict_rows, write_report
from dagstudy.tracking import Tracker, download_confirmation, log_arm, log_report


class ConfirmInputError(ValueError):
    """A bad confirmation file or flag: one line naming the field."""


def load_spec(path: str | Path, seeds: int | None = None) -> ConfirmSpec:
    path = Path(path)
    if not path.is_file():
        raise ConfirmInputError(f"{path}: no such confirmation file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfirmInputError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(raw, dict):
        raise ConfirmInputError(f"{path}: must be a mapping of fields")
    if seeds is not None:
        raw["seeds"] = seeds
    try:
        spec = ConfirmSpec(**raw)
    except ValidationError as e:
        raise ConfirmInputError(f"{path}: {format_errors(e)}") from None
    try:
        plan(spec)
    except ValueError as e:
        raise ConfirmInputError(f"{path}: {e}") from None
    return spec


def parse_ideas(text: str | None, spec: ConfirmSpec) -> list[str] | None:
    if text is None:
        return None
    ideas = [i.strip() for i in text.split(",") if i.strip()]
    bad = [i for i in ideas if i not in spec.ideas]
    if bad or not ideas:
        raise ConfirmInputError(
            f"--ideas: {bad or text!r} not in the file (allowed: {', '.join(spec.ideas)}; "
            f"all IDs: {', '.join(IDEA_IDS)})")
    return ideas


class Progress:
    """Arms done / total with ETA on stderr; each idea's row on stdout as soon as its arms are
    in (unadjusted p: Holm needs every idea), then the final table."""

    def __init__(self, experiments: list[Experiment], spec: ConfirmSpec):
        self.experiments = {e.idea: e for e in experiments}
        self.spec = spec
        self.results: dict[str, dict[str, dict]] = {e.idea: {} for e in experiments}
        self.total = len({ArmJob(e.idea, a, c, ()).key for e in experiments
                          for a, c in e.arms.items()})
        self.done, self.start, self.seen = 0, time.monotonic(), set()

    def arm(self, job: ArmJob, result: dict) -> None:
        if job.key not in self.seen:
            self.seen.add(job.key)
            self.done += 1
            elapsed = time.monotonic() - self.start
            eta = elapsed / self.done * max(self.total - self.done, 0)
            acc = result["test_accuracy"]["mean"]
            print(f"[{self.done}/{self.total} arms, {elapsed:.0f}s, eta {eta:.0f}s] {job.idea} "
                  f"{job.arm}: test_accuracy {'-' if acc is None else f'{acc:.4f}'}",
                  file=sys.stderr, flush=True)
        exp = self.experiments[job.idea]
        arms = self.results[job.idea]
        arms[job.arm] = result
        if len(arms) == len(exp.arms):
            a = analyse(exp, arms, self.spec)
            r = a.raw
            print(f"{job.idea}: {a.metric} control {r.control_mean:.4f} treatment "
                  f"{r.treatment_mean:.4f} diff {r.diff:+.4f} [{r.ci_low:+.4f}, {r.ci_high:+.4f}]"
                  f" d_z {r.d_z:.2f} p {r.p:.3g} (unadjusted; verdicts after all ideas)",
                  flush=True)


def run_confirmation(spec: ConfirmSpec, ideas: list[str] | None, runner, out: Path,
                     tracker: Tracker | None = None) -> Outcome:
    """Run, print the verdict table, write the report to ``out`` and, with a ``tracker``, one
    MLflow run per arm (tags: idea, arm, seeds) under a parent run holding the report."""
    experiments = [e for e in plan(spec) if ideas is None or e.idea in ideas]
    progress = Progress(experiments, spec)

    def on_result(job: ArmJob, result: dict) -> None:
        progress.arm(job, result)
        if tracker is not None:
            log_arm(tracker, job.idea, job.arm, result)

    outcome = confirm(spec, runner, ideas=ideas, on_result=on_result)
    print(f"\n{TABLE_HEAD}")
    for row in verdict_rows(outcome):
        print(table_line(row))
    write_report(spec, outcome, out)
    (out / "confirmation.json").write_text(json.dumps({
        "spec": spec.model_dump(), "results": outcome.results, "looks": outcome.looks,
        "verdicts": [v.to_dict() for v in outcome.verdicts]}))
    if tracker is not None:
        log_report(tracker, out)
    print(f"\nreport: {out / 'report.md'}  ({out / 'report.html'})")
    return outcome


def regenerate(tracking_uri: str, run_id: str, out: Path) -> list[Path]:
    """Rewrite a confirmation's report from its MLflow parent run alone."""
    out.mkdir(parents=True, exist_ok=True)
    saved = json.loads(download_confirmation(tracking_uri, run_id, out).read_text())
    spec = ConfirmSpec(**saved["spec"])
    outcome = reanalyse(spec, saved["results"], saved["verdicts"], saved["looks"])
    return write_report(spec, outcome, out)
