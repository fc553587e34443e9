"""Confirm or rule out each idea of IDEAS.md with a paired, controlled experiment.

A confirmation file (``studies/corollaries.yaml``) names, per idea ID, a control arm and a
treatment arm as overrides of one base ``TrainConfig``. Both arms train on the same seeds, and
seed ``s`` fixes the split, the data order and (where the architectures match) the initial
weights, so each seed gives one *pair*. ``stats.test_idea`` turns the pairs into raw results,
``stats.decide`` applies Holm across all ideas of the run and issues the verdicts.

Special designs, all still one paired number per seed per arm:

- ``match_params``: the control's (and extra controls') ``width`` is chosen so its parameter
  count is within 5% of the treatment's (DAG-DENSE compares at a matched budget).
- ``depths``: both arms are trained at every depth; the per-seed metric is the *degradation*
  ``max_d m(d) - m(d_max)`` (how much the deepest net lost against the best depth; lower is
  better), and the report gives, per family, the first depth whose mean falls more than
  ``margin`` below the best mean so far (DAG-DEPTH).
- ``noninferiority``: the claim is "not worse by more than ``margin``" (DAG-FANIN, OPT-STOP):
  the primary test runs on ``treatment - control + margin`` (oriented), so *confirmed* means
  significantly better than ``control - margin``, *ruled out* means significantly worse than it;
  no TOST rule-out. Effects are reported unshifted.
- ``fanin_sweep``: extra treatment arms at each N and nearest-N arms (DAG-FANIN), reported as
  secondary rows with accuracy per MFLOP and hop distance.
- ``extra_controls``: further controls compared to the treatment, reported as secondary rows
  (the residual MLP for DAG-DENSE); only the primary control enters the verdict.

Execution is a ``Runner``: ``runner(jobs) -> iterable of (job, TrialResult dict)``. The local
runner trains in this process; ``execute.ray_runner`` runs the jobs as Ray tasks. This module
imports neither Ray nor MLflow.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from dagstudy import stats
from dagstudy.config import TrainConfig, format_errors
from dagstudy.train import build_model, load_data, train

IDEA_IDS = (
    "DAG-DENSE", "DAG-DEPTH", "DAG-FANIN",
    "OPT-FULLBATCH", "OPT-LAYERSCALE", "OPT-FISTA", "OPT-MINIBATCH-L", "OPT-STOP", "OPT-JITTER",
    "REV-WAIT", "REV-ADD", "REV-SPLIT", "REV-FLIP", "GRAD-FLOOR",
)
PARAM_TOLERANCE = 0.05


class IdeaSpec(BaseModel):
    """One idea's experiment; arms are ``TrainConfig`` overrides of the file's and idea's base."""

    model_config = ConfigDict(extra="forbid")
    metric: str = "test_accuracy"
    higher_is_better: bool = True
    margin: float = Field(0.01, gt=0.0, description="smallest difference that matters (units)")
    base: dict[str, Any] = {}
    control: dict[str, Any] = {}
    treatment: dict[str, Any]
    extra_controls: dict[str, dict[str, Any]] = {}
    noninferiority: bool = False
    match_params: bool = False
    depths: list[int] | None = Field(None, min_length=2)
    fanin_sweep: list[int] | None = Field(None, min_length=1)
    diagnostics: list[str] = []


class SequentialSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = False
    looks: int = Field(3, ge=2, le=10)
    add_seeds: int = Field(5, ge=1)
    spending: Literal["obrien-fleming", "bonferroni"] = "obrien-fleming"


class ConfirmSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    base: dict[str, Any] = {}
    seeds: int = Field(10, ge=2)
    first_seed: int = Field(0, ge=0)
    alpha: float = Field(0.05, gt=0.0, lt=1.0)
    test: Literal["permutation", "wilcoxon", "t"] = "permutation"
    ci_method: Literal["bca", "percentile"] = "bca"
    n_resamples: int = Field(10_000, ge=100)
    sequential: SequentialSpec = SequentialSpec()
    ideas: dict[str, IdeaSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _known_ideas(self) -> ConfirmSpec:
        unknown = [k for k in self.ideas if k not in IDEA_IDS]
        if unknown:
            raise ValueError(f"ideas: unknown {unknown} (allowed: {', '.join(IDEA_IDS)})")
        return self


@dataclass(frozen=True)
class ArmJob:
    """One arm of one idea on a set of seeds: one population training run."""

    idea: str
    arm: str
    config: TrainConfig
    seeds: tuple[int, ...]

    @property
    def key(self) -> str:
        """Identical configs on identical seeds are trained once, whatever idea asks."""
        return json.dumps([self.config.model_dump(), list(self.seeds)], sort_keys=True)


Runner = Callable[[list[ArmJob]], Iterable[tuple[ArmJob, dict[str, Any]]]]


@dataclass
class Experiment:
    idea: str
    spec: IdeaSpec
    arms: dict[str, TrainConfig]


def _config(base: dict, overrides: dict, where: str) -> TrainConfig:
    try:
        return TrainConfig(**{**base, **overrides})
    except ValidationError as e:
        raise ValueError(format_errors(e, prefix=where)) from None


def param_count(config: TrainConfig, d_in: int, n_classes: int) -> int:
    return build_model(config, d_in, n_classes, [0]).param_count()


def matched_width(config: TrainConfig, target: int, d_in: int, n_classes: int) -> TrainConfig:
    """``config`` with the width whose parameter count is closest to ``target`` (within 5%)."""
    best = min(
        range(1, 4 * config.width + 64),
        key=lambda w: abs(param_count(config.model_copy(update={"width": w}), d_in, n_classes)
                          - target),
    )
    matched = config.model_copy(update={"width": best})
    got = param_count(matched, d_in, n_classes)
    if abs(got - target) > PARAM_TOLERANCE * target:
        raise ValueError(f"match_params: no width gives {target} params within 5% (best {got})")
    return matched


def _data_shape(config: TrainConfig) -> tuple[int, int]:
    data = load_data(config, [0], torch.device("cpu"))
    return data.d_in, data.n_classes


def plan(spec: ConfirmSpec) -> list[Experiment]:
    """Every idea's arms as validated ``TrainConfig``s; errors name ``ideas.ID.arm.field``."""
    experiments = []
    for idea, ispec in spec.ideas.items():
        base = {**spec.base, **ispec.base}
        where = f"ideas.{idea}"
        control = _config(base, ispec.control, f"{where}.control")
        treatment = _config(base, ispec.treatment, f"{where}.treatment")
        arms = {"control": control, "treatment": treatment}
        for name, overrides in ispec.extra_controls.items():
            arms[name] = _config(base, overrides, f"{where}.extra_controls.{name}")
        if ispec.match_params:
            d_in, n_classes = _data_shape(treatment)
            target = param_count(treatment, d_in, n_classes)
            for name in [n for n in arms if n != "treatment"]:
                arms[name] = matched_width(arms[name], target, d_in, n_classes)
        if ispec.depths:
            arms = {f"{name}@depth={d}": cfg.model_copy(update={"depth": d})
                    for name, cfg in arms.items() for d in ispec.depths}
        for n in ispec.fanin_sweep or []:
            for name, wiring in (("treatment", "random"), ("nearest", "nearest")):
                arms[f"{name}@fanin={n}"] = _config(
                    base, {**ispec.treatment, "fanin": n, "fanin_wiring": wiring}, where)
        experiments.append(Experiment(idea, ispec, arms))
    return experiments


def local_runner(device: str = "auto") -> Runner:
    """Train each job in this process, one after another."""
    from dagstudy.train import resolve_device

    dev = resolve_device(device)

    def run(jobs: list[ArmJob]):
        for job in jobs:
            seeds = list(job.seeds)
            data = load_data(job.config, seeds, dev)
            yield job, train(job.config, seeds, data, dev).to_dict()

    return run


def seed_values(result: dict[str, Any], metric: str) -> np.ndarray:
    """Per-seed value of ``metric`` in a ``TrialResult.to_dict()``; ``epochs`` = epochs each
    seed trained (its stop epoch where a stopping rule ended it)."""
    if metric == "epochs":
        stops = result.get("stop_epoch")
        return np.asarray(stops if stops else [result["epochs"]] * len(result["seeds"]), float)
    if metric not in result:
        raise KeyError(f"metric {metric!r} not in the trainer's results")
    return np.asarray([np.nan if v is None else v for v in result[metric]["per_seed"]], float)


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
    idea: str
    metric: str
    raw: stats.IdeaResult
    control: np.ndarray
    treatment: np.ndarray
    secondary: list[dict[str, Any]] = field(default_factory=list)


def _paired(control, treatment, ispec: IdeaSpec, spec: ConfirmSpec, name: str) -> stats.IdeaResult:
    kwargs = dict(margin=ispec.margin, higher_is_better=ispec.higher_is_better, test=spec.test,
                  name=name, ci_method=spec.ci_method, n_resamples=spec.n_resamples)
    raw = stats.test_idea(control, treatment, **kwargs)
    if not ispec.noninferiority:
        return raw
    shift = ispec.margin if ispec.higher_is_better else -ispec.margin
    shifted = stats.test_idea(control, np.asarray(treatment) + shift, **kwargs)
    return replace(raw, p=shifted.p, effect_sign=shifted.effect_sign, p_tost=1.0)


def analyse(exp: Experiment, results: dict[str, dict], spec: ConfirmSpec) -> IdeaAnalysis:
    """The idea's paired primary comparison plus its secondary rows, from per-arm results."""
    ispec, metric = exp.spec, exp.spec.metric
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
        raw = _paired(control, treatment, primary, spec, exp.idea)
        return IdeaAnalysis(exp.idea, f"{metric} degradation", raw, control, treatment, secondary)

    control = seed_values(results["control"], metric)
    treatment = seed_values(results["treatment"], metric)
    raw = _paired(control, treatment, ispec, spec, exp.idea)
    for arm, cfg in exp.arms.items():
        if arm in ("control", "treatment"):
            continue
        values = seed_values(results[arm], metric)
        row = {"arm": arm, "mean": float(np.nanmean(values)),
               "flops": results[arm]["flops_per_example"], "params": results[arm]["params"]}
        if arm in ispec.extra_controls:
            r = stats.test_idea(values, treatment, margin=ispec.margin,
                                higher_is_better=ispec.higher_is_better, test=spec.test,
                                n_resamples=spec.n_resamples)
            row.update(vs="treatment", diff=r.diff, ci=[r.ci_low, r.ci_high], p=r.p)
        if cfg.topology == "fanin":
            row.update(mean_hops=float(np.mean(results[arm]["mean_hops"])),
                       per_mflop=row["mean"] / (row["flops"] / 1e6))
        secondary.append(row)
    return IdeaAnalysis(exp.idea, metric, raw, control, treatment, secondary)


@dataclass
class Outcome:
    verdicts: list[stats.Verdict]
    analyses: list[IdeaAnalysis]
    results: dict[str, dict[str, dict]]  # idea -> arm -> TrialResult dict (all seeds so far)
    looks: int


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


def _look_alphas(spec: ConfirmSpec) -> list[float]:
    seq = spec.sequential
    if not seq.enabled:
        return [spec.alpha]
    if seq.spending == "bonferroni":
        return list(stats.bonferroni_looks(spec.alpha, seq.looks))
    return list(stats.obrien_fleming_alphas(spec.alpha, seq.looks))


def confirm(
    spec: ConfirmSpec,
    runner: Runner,
    *,
    ideas: list[str] | None = None,
    on_result: Callable[[ArmJob, dict], None] | None = None,
    on_look: Callable[[int, list[stats.Verdict]], None] | None = None,
) -> Outcome:
    """Run every arm of every (selected) idea, then decide; in sequential mode, add seeds in
    looks for ideas still inconclusive, each look at its alpha-spending level."""
    experiments = [e for e in plan(spec) if ideas is None or e.idea in ideas]
    if not experiments:
        raise ValueError(f"--ideas: none of {ideas} is in the file (has: {', '.join(spec.ideas)})")
    results: dict[str, dict[str, dict]] = {e.idea: {} for e in experiments}
    alphas = _look_alphas(spec)
    open_ideas = {e.idea for e in experiments}
    seeds = list(range(spec.first_seed, spec.first_seed + spec.seeds))
    decided: dict[str, stats.Verdict] = {}
    analyses: dict[str, IdeaAnalysis] = {}
    look = 0
    for look, alpha in enumerate(alphas, start=1):
        jobs = [ArmJob(e.idea, arm, cfg, tuple(seeds)) for e in experiments
                if e.idea in open_ideas for arm, cfg in e.arms.items()]
        for job, result in _run_deduplicated(runner, jobs):
            results[job.idea][job.arm] = _merge(results[job.idea].get(job.arm), result)
            if on_result:
                on_result(job, result)
        current = [e for e in experiments if e.idea in open_ideas]
        for e in current:
            analyses[e.idea] = analyse(e, results[e.idea], spec)
        # Holm across every idea of the run; ideas decided at earlier looks keep their verdicts.
        raws = [analyses[e.idea].raw for e in experiments]
        verdicts = stats.decide(raws, alpha)
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
                   [analyses[e.idea] for e in experiments], results, look)


def reanalyse(spec: ConfirmSpec, results: dict[str, dict[str, dict]],
              verdicts: list[dict[str, Any]], looks: int) -> Outcome:
    """An ``Outcome`` rebuilt from stored per-arm results and verdicts (``dagstudy report``):
    the analyses are recomputed (deterministic: seeded bootstrap), the verdicts are the ones
    issued at the time, so a sequential run keeps each idea's verdict from its deciding look."""
    experiments = [e for e in plan(spec) if e.idea in results]
    analyses = [analyse(e, results[e.idea], spec) for e in experiments]
    return Outcome([stats.Verdict(**v) for v in verdicts], analyses, results, looks)


def _run_deduplicated(runner: Runner, jobs: list[ArmJob]):
    """Run each distinct (config, seeds) once and hand its result to every job that asked."""
    unique: dict[str, ArmJob] = {}
    for job in jobs:
        unique.setdefault(job.key, job)
    by_key: dict[str, list[ArmJob]] = {}
    for job in jobs:
        by_key.setdefault(job.key, []).append(job)
    for job, result in runner(list(unique.values())):
        for twin in by_key[job.key]:
            yield twin, result
