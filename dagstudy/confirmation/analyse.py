"""Per idea, the paired primary comparison and its secondary rows, from the arms' results.

- plain ideas: the per-seed metric of treatment vs control;
- ``depths`` (DAG-DEPTH): the per-seed *degradation* ``max_d m(d) - m(d_max)`` (how much the
  deepest net lost against the best depth; lower is better), plus the first depth whose mean
  falls more than ``margin`` below the best mean so far, per arm;
- ``noninferiority`` (DAG-FANIN, OPT-STOP): the primary test runs on ``treatment - control +
  margin`` (oriented), so *confirmed* means significantly better than ``control - margin`` and
  *ruled out* significantly worse than it; no TOST rule-out. Effects are reported unshifted;
- ``extra_controls`` and ``fanin_sweep`` arms: secondary rows (accuracy per MFLOP and hop
  distance for fan-in arms); only the primary control enters the verdict;
- ideas run in several ``settings``: each setting is analysed as above, then pooled
  (``pooling.pool``: stratified permutation test, random-effects estimate, agreement).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from dagstudy.config import TrainConfig
from dagstudy.confirmation import val_stopping
from dagstudy.confirmation.plan import Experiment, qualify
from dagstudy.confirmation.pooling import pool, resolve_scale
from dagstudy.confirmation.spec import ConfirmSpec, IdeaSpec
from dagstudy.confirmation.verdict import IdeaResult, Verdict, test_idea, unusable

LOG10 = "log10_"
PASSES_TO = "passes_to:"
LOSS_FLOOR = 1e-30
"""Losses below this count as it on the log10 scale (a loss of exactly 0 would be -inf)."""


def seed_values(result: dict[str, Any], metric: str) -> np.ndarray:
    """Per-seed value of ``metric`` in a ``TrialResult.to_dict()``; ``epochs`` = epochs each
    seed trained (its stop epoch where a stopping rule ended it); ``log10_<m>`` = log10 of
    metric ``m`` (losses spanning orders of magnitude: a difference of log10(1.25) = 0.097 is a
    factor 1.25); ``passes_to:<curve>:<target>`` = :func:`passes_to`."""
    if metric.startswith(PASSES_TO):
        return passes_to(result, *metric.removeprefix(PASSES_TO).split(":"))
    if metric.startswith(LOG10):
        values = seed_values(result, metric.removeprefix(LOG10))
        return np.log10(np.maximum(values, LOSS_FLOOR))
    if metric == "epochs":
        stops = result.get("stop_epoch")
        return np.asarray(stops if stops else [result["epochs"]] * len(result["seeds"]), float)
    if metric not in result:
        raise KeyError(f"metric {metric!r} not in the trainer's results")
    return np.asarray([np.nan if v is None else v for v in result[metric]["per_seed"]], float)


def passes_to(result: dict[str, Any], curve: str, target: str) -> np.ndarray:
    """Per seed, the first pass (1-based) after which ``curves[curve]`` is at or below
    ``target`` (IDEAS.md's "passes to a target loss"); a seed that never gets there counts as
    ``epochs + 1`` (censored: a lower bound, which only favours the arm that did not reach)."""
    values = np.asarray(result["curves"][curve], dtype=float)  # [epoch, seed]
    reached = values <= float(target)
    first = np.where(reached.any(axis=0), reached.argmax(axis=0) + 1, values.shape[0] + 1)
    return first.astype(float)


def _degradation(results: dict[str, dict], arm: str, depths: list[int], metric: str, sign: int):
    """Per seed: best value over depths minus the value at the deepest (>= 0; lower is better)."""
    values = np.stack([seed_values(results[f"{arm}@depth={d}"], metric) for d in depths]) * sign
    return values.max(axis=0) - values[-1]


def first_degrading_depth(means: list[float], depths: list[int], margin: float) -> int | None:
    """First depth whose mean falls more than ``margin`` below the best mean at smaller depths."""
    best = means[0]
    for d, m in zip(depths[1:], means[1:]):
        if m < best - margin:
            return d
        best = max(best, m)
    return None


@dataclass
class IdeaAnalysis:
    """One idea's primary comparison (``raw``: pooled over settings where there are several),
    its per-seed arrays (concatenated over settings), secondary rows, and for a pooled idea one
    row per setting (``settings``) and the meta-analysis (``pooled``, see ``pooling.pool``)."""

    idea: str
    metric: str
    raw: IdeaResult
    control: np.ndarray
    treatment: np.ndarray
    secondary: list[dict[str, Any]] = field(default_factory=list)
    settings: list[dict[str, Any]] = field(default_factory=list)
    pooled: dict[str, Any] | None = None


def _paired(control: np.ndarray, treatment: np.ndarray, seeds: list[int], ispec: IdeaSpec,
            spec: ConfirmSpec, name: str) -> IdeaResult:
    """The paired test on the seeds where both arms have a value (a crashed arm has none)."""
    complete = np.isfinite(control) & np.isfinite(treatment)
    failed = tuple(int(s) for s, ok in zip(seeds, complete) if not ok)
    if complete.sum() < 2:
        return unusable(name, spec.test, ispec.higher_is_better, ispec.margin,
                        int(complete.sum()), failed)
    control, treatment = control[complete], treatment[complete]
    kwargs = dict(margin=ispec.margin, higher_is_better=ispec.higher_is_better, test=spec.test,
                  name=name, ci_method=spec.ci_method, n_resamples=spec.n_resamples,
                  permutations=spec.permutations)
    raw = replace(test_idea(control, treatment, **kwargs), failed_seeds=failed)
    if not ispec.noninferiority:
        return raw
    shift = ispec.margin if ispec.higher_is_better else -ispec.margin
    shifted = test_idea(control, treatment + shift, **kwargs)
    return replace(raw, p=shifted.p, effect_sign=shifted.effect_sign, p_tost=1.0,
                   noninferiority=True)


def analyse(exp: Experiment, results: dict[str, dict], spec: ConfirmSpec) -> IdeaAnalysis:
    """The idea's paired primary comparison plus its secondary rows, from per-arm results
    (keyed by qualified arm name); pooled over settings where the idea has several."""
    if not exp.pooled:
        return analyse_setting(exp.idea, exp.spec, exp.settings[""], results, spec)
    per_setting = {
        label: analyse_setting(exp.idea, exp.spec, arms,
                               {arm: results[qualify(label, arm)] for arm in arms}, spec)
        for label, arms in exp.settings.items()}
    requested = (exp.spec.settings or spec.settings).scale  # pooled: one of them is set
    datasets = {cfg.dataset for arms in exp.settings.values() for cfg in arms.values()}
    raw, rows, pooled = pool(
        exp.spec, {label: (a.raw, a.treatment - a.control) for label, a in per_setting.items()},
        spec, name=exp.idea, scale=resolve_scale(requested, exp.spec.metric, datasets))
    first = next(iter(per_setting.values()))
    return IdeaAnalysis(
        exp.idea, first.metric, raw,
        np.concatenate([a.control for a in per_setting.values()]),
        np.concatenate([a.treatment for a in per_setting.values()]),
        [{"setting": label, **row} for label, a in per_setting.items() for row in a.secondary],
        rows, pooled)


def analyse_setting(idea: str, ispec: IdeaSpec, arms: dict[str, TrainConfig],
                    results: dict[str, dict], spec: ConfirmSpec) -> IdeaAnalysis:
    """One setting's paired comparison and secondary rows; ``results`` keyed by arm name."""
    metric = ispec.metric
    secondary: list[dict[str, Any]] = []
    if ispec.depths:
        sign = 1 if ispec.higher_is_better else -1
        control = _degradation(results, "control", ispec.depths, metric, sign)
        treatment = _degradation(results, "treatment", ispec.depths, metric, sign)
        primary = ispec.model_copy(update={"higher_is_better": False})
        for arm in ("control", "treatment"):
            means = [float(np.nanmean(seed_values(results[f"{arm}@depth={d}"], metric)))
                     for d in ispec.depths]
            secondary.append({"arm": arm, "depths": ispec.depths, "means": means,
                              "first_degrading_depth": first_degrading_depth(
                                  [m * sign for m in means], ispec.depths, ispec.margin)})
        seeds = results[f"control@depth={ispec.depths[0]}"]["seeds"]
        raw = _paired(control, treatment, seeds, primary, spec, idea)
        return IdeaAnalysis(idea, f"{metric} degradation", raw, control, treatment, secondary)

    control = seed_values(results["control"], metric)
    treatment = seed_values(results["treatment"], metric)
    seeds = results["control"]["seeds"]
    raw = _paired(control, treatment, seeds, ispec, spec, idea)
    if ispec.co_primary is not None:
        raw, row = co_primary(raw, ispec, results, seeds, spec, idea)
        secondary.append(row)
    secondary += [_metric_row(results, m, seeds, spec) for m in shown_beside(ispec)]
    if ispec.val_stopping is not None:
        secondary += val_stopping.rows(
            results["control"], seed_values(results["treatment"], "test_accuracy"),
            seed_values(results["treatment"], "epochs"), ispec.val_stopping, spec.test,
            spec.n_resamples, spec.permutations)
    for r, info in enumerate(ispec.base_trials[1:], start=1):  # from_study top K: ranks 1..
        if f"control@rank={r}" not in results:
            continue
        rr = _paired(seed_values(results[f"control@rank={r}"], metric),
                     seed_values(results[f"treatment@rank={r}"], metric), seeds, ispec, spec,
                     idea)
        secondary.append({"setting": f"{info['study']} rank {r} (trial {info['trial']})",
                          "diff": rr.diff, "ci": [rr.ci_low, rr.ci_high], "p": rr.p})
    for arm, cfg in arms.items():
        if arm in ("control", "treatment") or "@rank=" in arm:
            continue
        values = seed_values(results[arm], metric)
        row = {"arm": arm, "mean": float(np.nanmean(values)),
               "flops": results[arm]["flops_per_example"], "params": results[arm]["params"]}
        if arm in ispec.extra_controls:
            r = test_idea(values, treatment, margin=ispec.margin,
                                higher_is_better=ispec.higher_is_better, test=spec.test,
                                n_resamples=spec.n_resamples, permutations=spec.permutations)
            row.update(vs="treatment", diff=r.diff, ci=[r.ci_low, r.ci_high], p=r.p)
        if cfg.topology == "fanin":
            row.update(mean_hops=float(np.mean(results[arm]["mean_hops"])),
                       per_mflop=row["mean"] / (row["flops"] / 1e6))
        secondary.append(row)
    return IdeaAnalysis(idea, metric, raw, control, treatment, secondary)


def shown_beside(ispec: IdeaSpec) -> list[str]:
    """Metrics compared (paired, unadjusted) in secondary rows: the idea's
    ``secondary_metrics``, and test accuracy beside every verdict on another metric."""
    extra = [] if ispec.metric == "test_accuracy" else ["test_accuracy"]
    return list(dict.fromkeys([*ispec.secondary_metrics, *extra]))


def _metric_row(results: dict[str, dict], metric: str, seeds: list[int],
                spec: ConfirmSpec) -> dict[str, Any]:
    """A secondary row: treatment vs control on ``metric``, paired, unadjusted p."""
    control = seed_values(results["control"], metric)
    treatment = seed_values(results["treatment"], metric)
    ok = np.isfinite(control) & np.isfinite(treatment)
    row: dict[str, Any] = {"arm": "treatment", "vs": "control", "metric": metric}
    if ok.sum() < 2:
        return row
    r = test_idea(control[ok], treatment[ok], margin=1.0, test=spec.test,
                  n_resamples=spec.n_resamples, permutations=spec.permutations)
    row.update(control_mean=r.control_mean, treatment_mean=r.treatment_mean, diff=r.diff,
               ci=[r.ci_low, r.ci_high], p=r.p)
    return row


def co_primary(raw: IdeaResult, ispec: IdeaSpec, results: dict[str, dict], seeds: list[int],
               spec: ConfirmSpec, idea: str) -> tuple[IdeaResult, dict[str, Any]]:
    """Both outcomes must hold (intersection-union test): the primary result with ``p`` the
    larger of the two tests' p-values (a level-alpha test of "both", no extra correction) and
    its direction favourable only when both are; plus the second outcome's row."""
    second = ispec.co_primary
    other = _paired(seed_values(results["control"], second.metric),
                    seed_values(results["treatment"], second.metric), seeds,
                    ispec.model_copy(update={"higher_is_better": second.higher_is_better,
                                             "margin": second.margin,
                                             "noninferiority": False}), spec, idea)
    both_good = raw.better and other.better
    oriented = 1 if both_good else -1
    sign = oriented if raw.higher_is_better else -oriented
    combined = replace(raw, p=max(raw.p, other.p), effect_sign=sign, p_tost=1.0)
    row = {"arm": "treatment", "vs": "control", "metric": f"{second.metric} (co-primary)",
           "control_mean": other.control_mean, "treatment_mean": other.treatment_mean,
           "diff": other.diff, "ci": [other.ci_low, other.ci_high], "p": other.p}
    return combined, row


@dataclass
class Outcome:
    verdicts: list[Verdict]
    analyses: list[IdeaAnalysis]
    results: dict[str, dict[str, dict]]  # idea -> arm -> TrialResult dict (all seeds so far)
    looks: int
    tuning: dict[str, dict[str, Any]] = field(default_factory=dict)  # idea -> arm -> ArmTuning
