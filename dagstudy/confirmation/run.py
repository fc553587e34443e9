"""Run a confirmation: train every arm of every idea, decide, and record it.

Both arms of an idea train on the same seeds, and seed ``s`` fixes the split, the data order
and (where the architectures match) the initial weights, so each seed gives one *pair*.
``confirm`` runs the arms through a ``Runner`` (``plan``), analyses each idea (``analyse``) and
applies the verdict rule with Holm across all ideas of the run (``verdict.decide``); in
sequential mode it adds seeds in looks to ideas still inconclusive, each look at its
alpha-spending level. ``run_confirmation`` adds the progress lines, the report and the MLflow
records (an arm's run is created as its training is launched and completed with its per-epoch
metrics when it returns; the verdicts go on the parent run); ``regenerate`` rewrites a report
from MLflow alone. With a ``tune.TuningRun`` (the file's ``tune:`` blocks, run by ``tune.tune``
first), tuned arms train their best tuning trial's configuration on the verdict seeds. This
module imports neither Ray
nor MLflow directly (tracking goes through ``dagstudy.tracking``).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from dagstudy.confirmation.analyse import IdeaAnalysis, Outcome, analyse, seed_values
from dagstudy.confirmation.plan import ArmJob, Experiment, Runner, check_data, plan
from dagstudy.confirmation.pooling import pooled_reason
from dagstudy.confirmation.power_check import look_alphas
from dagstudy.confirmation.provenance import provenance
from dagstudy.confirmation.report import TABLE_HEAD, table_line, verdict_rows, write_report
from dagstudy.confirmation.spec import ConfirmSpec
from dagstudy.confirmation.tune import Tuning, TuningRun, apply_tuning, tuning_from_dicts
from dagstudy.confirmation.verdict import Verdict, decide
from dagstudy.tracking.confirmation import (
    download_confirmation,
    end_arm,
    log_arm_epochs,
    log_report,
    log_verdicts,
    start_arm,
)
from dagstudy.tracking.tracker import Tracker
from dagstudy.tracking.tuning import log_tuning_arm, tag_study_runs


def _merge(old: dict | None, new: dict) -> dict:
    """Concatenate per-seed results of a later look onto an earlier one."""
    if old is None:
        return new
    merged = dict(new)
    merged["seeds"] = old["seeds"] + new["seeds"]
    for key, value in new.items():
        if isinstance(value, dict) and "per_seed" in value:
            per_seed = old[key]["per_seed"] + value["per_seed"]
            finite = [v for v in per_seed if v is not None and math.isfinite(v)]
            merged[key] = {"per_seed": per_seed, "mean": float(np.mean(finite)) if finite else None,
                           "std": float(np.std(finite, ddof=1)) if len(finite) > 1 else None}
    merged["curves"] = {k: [a + b for a, b in zip(old["curves"][k], v)]
                        for k, v in new["curves"].items() if k in old["curves"]
                        and len(old["curves"][k]) == len(v)}
    for key in ("status", "reasons", "best_val_epoch", "stop_epoch"):
        if key in new and key in old:
            merged[key] = old[key] + new[key]
    return merged


def confirm(
    spec: ConfirmSpec,
    runner: Runner,
    *,
    ideas: list[str] | None = None,
    on_result: Callable[[ArmJob, dict], None] | None = None,
    on_look: Callable[[int, list[Verdict]], None] | None = None,
    on_start: Callable[[ArmJob], None] | None = None,
    on_epochs: Callable[[ArmJob, list, list[int]], None] | None = None,
    tuning: Tuning | None = None,
) -> Outcome:
    """Run every arm of every (selected) idea, then decide; in sequential mode, add seeds in
    looks for ideas still inconclusive, each look at its alpha-spending level. ``on_start(job)``
    is called as each arm's training is launched, ``on_epochs(job, rows, epoch_ms)`` as its
    per-epoch rows arrive (when the runner streams them), ``on_result(job, result)`` as it
    returns.
    With ``tuning`` (``tune.tune``), tuned arms train their best tuning trial's configuration."""
    experiments = [e for e in apply_tuning(plan(spec), tuning) if ideas is None or e.idea in ideas]
    if not experiments:
        raise ValueError(f"--ideas: none of {ideas} is in the file (has: {', '.join(spec.ideas)})")
    check_data(experiments, spec.first_seed)
    results: dict[str, dict[str, dict]] = {e.idea: {} for e in experiments}
    alphas = look_alphas(spec)
    open_ideas = {e.idea for e in experiments}
    seeds = list(range(spec.first_seed, spec.first_seed + spec.seeds))
    decided: dict[str, Verdict] = {}
    analyses: dict[str, IdeaAnalysis] = {}
    look = 0
    for look, alpha in enumerate(alphas, start=1):
        jobs = [ArmJob(e.idea, arm, cfg, tuple(seeds)) for e in experiments
                if e.idea in open_ideas for arm, cfg in e.arms.items()]
        for job, result in _run_deduplicated(runner, jobs, on_start, on_epochs):
            kept = {k: v for k, v in result.items() if k != "epoch_ms"}  # the arm run has them
            results[job.idea][job.arm] = _merge(results[job.idea].get(job.arm), kept)
            if on_result:
                on_result(job, result)
        current = [e for e in experiments if e.idea in open_ideas]
        for e in current:
            analyses[e.idea] = analyse(e, results[e.idea], spec)
        # Holm across every idea of the run; ideas decided at earlier looks keep their verdicts.
        raws = [analyses[e.idea].raw for e in experiments]
        decisions = decide(raws, alpha, permutations=spec.permutations)
        verdicts = [_with_agreement(v, analyses[e.idea])
                    for e, v in zip(experiments, decisions)]
        for e, v in zip(experiments, verdicts):
            if e.idea in open_ideas:
                decided[e.idea] = v
        if on_look:
            on_look(look, [decided[e.idea] for e in experiments])
        open_ideas = {i for i in open_ideas if decided[i].verdict == "inconclusive"}
        if not open_ideas:
            break
        seeds = list(range(seeds[-1] + 1, seeds[-1] + 1 + spec.sequential.add_seeds))
    return Outcome([decided[e.idea] for e in experiments],
                   [analyses[e.idea] for e in experiments], results, look,
                   {e.idea: tuning[e.idea] for e in experiments if tuning and e.idea in tuning})


def _with_agreement(verdict: Verdict, analysis: IdeaAnalysis) -> Verdict:
    """A pooled idea's verdict, its reason naming the settings' agreement."""
    if analysis.pooled is None:
        return verdict
    return replace(verdict, reason=pooled_reason(verdict.reason, analysis.pooled))


def reanalyse(spec: ConfirmSpec, results: dict[str, dict[str, dict]],
              verdicts: list[dict[str, Any]], looks: int,
              tuning: Tuning | None = None) -> Outcome:
    """An ``Outcome`` rebuilt from stored per-arm results and verdicts (``dagstudy report``):
    the analyses are recomputed (deterministic: seeded bootstrap), the verdicts are the ones
    issued at the time, so a sequential run keeps each idea's verdict from its deciding look."""
    experiments = [e for e in apply_tuning(plan(spec), tuning) if e.idea in results]
    analyses = [analyse(e, results[e.idea], spec) for e in experiments]
    return Outcome([Verdict.from_dict(v) for v in verdicts], analyses, results, looks,
                   tuning or {})


def _run_deduplicated(runner: Runner, jobs: list[ArmJob],
                      on_start: Callable[[ArmJob], None] | None = None,
                      on_epochs: Callable[[ArmJob, list, list[int]], None] | None = None):
    """Run each distinct (config, seeds) once and hand its result to every job that asked
    (``on_start`` and ``on_epochs`` too: every twin of the job that trains)."""
    unique: dict[str, ArmJob] = {}
    for job in jobs:
        unique.setdefault(job.key, job)
    by_key: dict[str, list[ArmJob]] = {}
    for job in jobs:
        by_key.setdefault(job.key, []).append(job)

    def started(job: ArmJob) -> None:
        for twin in by_key[job.key]:
            on_start(twin)

    def epochs(job: ArmJob, rows: list, epoch_ms: list[int]) -> None:
        for twin in by_key[job.key]:
            on_epochs(twin, rows, epoch_ms)

    streams = {"on_epochs": epochs} if on_epochs else {}
    launched = runner(list(unique.values()), on_start=started if on_start else None, **streams)
    for job, result in launched:
        for twin in by_key[job.key]:
            yield twin, result


def _arm_value(result: dict, metric: str) -> str:
    """``"METRIC MEAN"`` over the arm's seeds for the progress line (log10 and passes-to
    metrics included); the epochs trained where the result has no such values."""
    try:
        values = seed_values(result, metric)
    except (KeyError, IndexError, ValueError):
        return f"{result['epochs']} epochs"
    finite = values[np.isfinite(values)]
    return f"{metric} {finite.mean():.4g}" if finite.size else f"{metric} -"


class Progress:
    """Arms done / total with ETA on stderr (each arm's final value of its idea's metric; the
    ETA from the arms trained here, not those a resumed run reused, which never start);
    each idea's row on ``rows`` (stdout) as soon as its arms are in (unadjusted p: Holm needs
    every idea), then the final table. In sequential mode the row is printed again after each
    look, on the seeds of every look so far, once every arm has them."""

    def __init__(self, experiments: list[Experiment], spec: ConfirmSpec, rows=sys.stdout):
        self.rows = rows
        self.experiments = {e.idea: e for e in experiments}
        self.spec = spec
        self.results: dict[str, dict[str, dict]] = {e.idea: {} for e in experiments}
        self.total = len({ArmJob(e.idea, a, c, ()).key for e in experiments
                          for a, c in e.arms.items()})
        self.done, self.trained, self.start, self.seen = 0, 0, time.monotonic(), set()
        self.started_keys: set[str] = set()

    def started(self, job: ArmJob) -> None:
        """A job began; a later look's jobs raise the total (first look: ``total`` as planned)."""
        self.started_keys.add(job.key)
        self.total = max(self.total, len(self.started_keys))

    def arm(self, job: ArmJob, result: dict) -> None:
        if job.key not in self.seen:
            self.seen.add(job.key)
            self.done += 1
            reused = job.key not in self.started_keys
            self.trained += not reused
            elapsed = time.monotonic() - self.start
            left = max(self.total - self.done, 0)
            eta = f"{elapsed / self.trained * left:.0f}s" if self.trained else "-"
            shown = _arm_value(result, self.experiments[job.idea].spec.metric)
            print(f"[{self.done}/{self.total} arms, {elapsed:.0f}s, eta {eta}] {job.idea} "
                  f"{job.arm}: {shown}{' (reused)' if reused else ''}", file=sys.stderr,
                  flush=True)
        exp = self.experiments[job.idea]
        arms = self.results[job.idea]
        arms[job.arm] = _merge(arms.get(job.arm), result)
        seeds = {tuple(r["seeds"]) for r in arms.values()}
        if len(arms) == len(exp.arms) and len(seeds) == 1:
            a = analyse(exp, arms, self.spec)
            r = a.raw
            print(f"{job.idea}: {a.metric} control {r.control_mean:.4f} treatment "
                  f"{r.treatment_mean:.4f} diff {r.diff:+.4f} [{r.ci_low:+.4f}, {r.ci_high:+.4f}]"
                  f" d_z {r.d_z:.2f} p {r.p:.3g} on {len(seeds.pop())} seeds (unadjusted; "
                  "verdicts after all ideas)", file=self.rows, flush=True)


def log_tuning(tracker: Tracker, tuning: TuningRun) -> None:
    """Each tuning study's MLflow runs tagged with the confirmation, ideas and arms it tuned;
    one ``tuning`` child run per tuned (idea, arm) under the confirmation's parent run."""
    for name, owners in tuning.studies.items():
        tag_study_runs(tracker, name, owners)
    for idea, arms in tuning.arms.items():
        for arm, result in arms.items():
            log_tuning_arm(tracker, idea, arm, result.to_dict())


def run_confirmation(spec: ConfirmSpec, ideas: list[str] | None, runner, out: Path,
                     tracker: Tracker | None = None, tuning: TuningRun | None = None, *,
                     meta: dict[str, Any] | None = None, stdout=sys.stdout) -> Outcome:
    """Run, print the verdict table on ``stdout``, write the report to ``out`` and, with a
    ``tracker``, one MLflow run per arm (tags: idea, arm, seeds; created as the arm's training
    is launched, its per-epoch metrics logged as they arrive) under a parent run holding the
    verdicts and the report. ``meta``: the run's provenance for the report (default:
    ``provenance()`` of this process). With ``tuning`` (``tune.tune``), tuned arms train their
    best configuration and the tuning studies are linked to the parent run (``log_tuning``)."""
    meta = meta or provenance()
    arms = tuning.arms if tuning else None
    experiments = [e for e in apply_tuning(plan(spec), arms) if ideas is None or e.idea in ideas]
    progress = Progress(experiments, spec, rows=stdout)
    arm_runs: dict[tuple[str, str], str | None] = {}
    print(f"{progress.total} arms of {len(experiments)} ideas to train; first results when "
          "an arm finishes", file=sys.stderr, flush=True)

    def on_start(job: ArmJob) -> None:
        progress.started(job)
        if tracker is not None:
            arm_runs[job.idea, job.arm] = start_arm(tracker, job.idea, job.arm,
                                                    job.config.model_dump(), list(job.seeds))

    def on_epochs(job: ArmJob, rows: list, epoch_ms: list[int]) -> None:  # with a tracker only
        run_id = arm_runs.get((job.idea, job.arm))
        if run_id is not None:
            log_arm_epochs(tracker, run_id, rows, epoch_ms)

    def on_result(job: ArmJob, result: dict) -> None:
        progress.arm(job, result)
        if tracker is not None:
            end_arm(tracker, arm_runs.pop((job.idea, job.arm), None), job.idea, job.arm, result)

    start = time.monotonic()
    outcome = confirm(spec, runner, ideas=ideas, on_result=on_result, on_start=on_start,
                      on_epochs=on_epochs if tracker is not None else None, tuning=arms)
    deciding = time.monotonic() - start
    if tracker is not None and tuning is not None:
        log_tuning(tracker, tuning)
    rows = verdict_rows(outcome)
    print(f"\n{TABLE_HEAD}", file=stdout)
    for row in rows:
        print(table_line(row), file=stdout)
    timing = {"tuning_seconds": tuning.seconds if tuning else 0.0, "deciding_seconds": deciding}
    write_report(spec, outcome, out, meta, timing)
    (out / "confirmation.json").write_text(json.dumps({
        "spec": spec.model_dump(), "results": outcome.results, "looks": outcome.looks,
        "verdicts": [v.to_dict() for v in outcome.verdicts], "meta": meta, "timing": timing,
        "tuning": {i: {a: t.to_dict() for a, t in arms.items()}
                   for i, arms in outcome.tuning.items()}}))
    if tracker is not None:
        log_verdicts(tracker, rows)
        log_report(tracker, out)
    print(f"\nreport: {out / 'report.html'}  ({out / 'report.md'})", file=stdout)
    return outcome


def regenerate(tracking_uri: str, run_id: str, out: Path) -> list[Path]:
    """Rewrite a confirmation's report from its MLflow parent run alone."""
    out.mkdir(parents=True, exist_ok=True)
    saved = json.loads(download_confirmation(tracking_uri, run_id, out).read_text())
    spec = ConfirmSpec(**saved["spec"])
    outcome = reanalyse(spec, saved["results"], saved["verdicts"], saved["looks"],
                        tuning_from_dicts(saved.get("tuning", {})))
    return write_report(spec, outcome, out, saved.get("meta"), saved.get("timing"))
