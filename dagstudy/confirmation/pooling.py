"""One idea's verdict pooled over its settings (``IdeaSpec.settings``).

Each setting is a full paired experiment (its own ``IdeaResult`` and paired differences ``d``
on the same seeds). ``pool`` combines them:

- the primary test (the verdict, Holm across ideas as usual) is the stratified paired sign-flip
  permutation test of ``dagstudy.stats.pooled`` on the differences the per-setting test would
  see (``treatment - control``, plus the margin for a non-inferiority idea), averaging mean
  differences (``scale="diff"``) or d_z (``scale="d_z"``, for metric scales that differ);
- the effect reported (``diff`` and its CI) is the DerSimonian-Laird random-effects estimate on
  the same scale, with tau^2, Q and I^2; the TOST rule-out uses that estimate and its standard
  error (normal), and only on the ``diff`` scale;
- agreement: ``consistent`` when every setting's CI lies on the pooled estimate's side of zero,
  ``heterogeneous`` when I^2 > 50%, ``mixed`` when neither; ``opposite`` lists the settings
  whose mean difference has the other sign.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats as sps

from dagstudy.confirmation.spec import ConfirmSpec, IdeaSpec
from dagstudy.confirmation.verdict import IdeaResult
from dagstudy.stats.pooled import (
    STRATIFIED_TEST,
    Scale,
    pooled_statistic,
    random_effects,
    setting_effect,
    stratified_permutation_p,
)

HETEROGENEOUS_I2 = 0.5
"""I^2 above this flags the settings as heterogeneous."""


def resolve_scale(requested: str, metric: str, datasets: set[str]) -> Scale:
    """``requested`` unless ``auto``: then ``diff`` for an accuracy or a single dataset (one
    metric scale), else ``d_z``."""
    if requested != "auto":
        return requested  # type: ignore[return-value]
    return "diff" if metric.endswith("accuracy") or len(datasets) <= 1 else "d_z"


def _tost_normal(estimate: float, se: float, margin: float) -> float:
    """TOST p of ``|effect| < margin`` for a normal estimate with standard error ``se``."""
    if se <= 0:
        return 0.0 if abs(estimate) < margin else 1.0
    return float(max(sps.norm.sf((estimate + margin) / se), sps.norm.cdf((estimate - margin) / se)))


def agreement(pooled_estimate: float, cis: dict[str, tuple[float, float]],
              diffs: dict[str, float], i2: float) -> dict[str, Any]:
    """``consistent``, ``heterogeneous``, ``opposite`` and the one-word ``agreement``."""
    side = np.sign(pooled_estimate)
    consistent = bool(side != 0 and all(
        (lo > 0 if side > 0 else hi < 0) for lo, hi in cis.values()))
    heterogeneous = bool(i2 > HETEROGENEOUS_I2)
    opposite = [label for label, diff in diffs.items() if side != 0 and np.sign(diff) == -side]
    words = [w for w, on in (("consistent", consistent), ("heterogeneous", heterogeneous)) if on]
    return {"consistent": consistent, "heterogeneous": heterogeneous, "opposite": opposite,
            "agreement": ", ".join(words) or "mixed"}


def pool(
    ispec: IdeaSpec,
    per_setting: dict[str, tuple[IdeaResult, np.ndarray]],
    spec: ConfirmSpec,
    *,
    name: str,
    scale: Scale = "diff",
) -> tuple[IdeaResult, list[dict[str, Any]], dict[str, Any]]:
    """``(pooled IdeaResult, one row per setting, the meta-analysis summary)``.

    ``per_setting[label] = (that setting's IdeaResult, its paired differences d)``, where ``d``
    is ``treatment - control`` (unshifted) of the metric the setting's test used.
    """
    results = {label: r for label, (r, _) in per_setting.items()}
    diffs = {label: np.asarray(d, float) for label, (_, d) in per_setting.items()}
    first = next(iter(results.values()))
    shift = 0.0
    if ispec.noninferiority:
        shift = ispec.margin if ispec.higher_is_better else -ispec.margin
    tested = [d + shift for d in diffs.values()]
    p = stratified_permutation_p(tested, scale, "two-sided", permutations=spec.permutations)
    sign = int(np.sign(pooled_statistic(tested, scale)))
    effects = {label: setting_effect(d, scale) for label, d in diffs.items()}
    meta = random_effects([e for e, _ in effects.values()], [v for _, v in effects.values()])
    weights = meta.weights / meta.weights.sum()
    rows = [{"setting": label, "control_mean": r.control_mean,
             "treatment_mean": r.treatment_mean, "diff": r.diff, "ci_low": r.ci_low,
             "ci_high": r.ci_high, "d_z": r.d_z, "p": r.p, "seeds": r.seeds,
             "effect": effects[label][0], "variance": effects[label][1], "weight": float(w)}
            for (label, r), w in zip(results.items(), weights)]
    agree = agreement(meta.estimate, {k: (r.ci_low, r.ci_high) for k, r in results.items()},
                      {k: r.diff for k, r in results.items()}, meta.i2)
    pooled = {"scale": scale, "test": STRATIFIED_TEST, "p": p, "statistic": pooled_statistic(
        tested, scale), "estimate": meta.estimate, "se": meta.se, "ci_low": meta.ci_low,
        "ci_high": meta.ci_high, "tau2": meta.tau2, "q": meta.q, "i2": meta.i2,
        "settings": len(rows), **agree}
    sd = (math.sqrt(float(np.mean([float(np.var(d, ddof=1)) for d in diffs.values()])))
          if scale == "diff" else 1.0)
    no_tost = ispec.noninferiority or scale != "diff"
    raw = IdeaResult(
        name=name, test=STRATIFIED_TEST, higher_is_better=first.higher_is_better,
        margin=ispec.margin, seeds=sum(r.seeds for r in results.values()),
        control_mean=float(np.mean([r.control_mean for r in results.values()])),
        treatment_mean=float(np.mean([r.treatment_mean for r in results.values()])),
        diff=meta.estimate, sd_diff=sd, ci_low=meta.ci_low, ci_high=meta.ci_high,
        d_z=meta.estimate / sd if sd > 0 else math.nan, p=p,
        p_tost=1.0 if no_tost else _tost_normal(meta.estimate, meta.se, ispec.margin),
        effect_sign=sign, noninferiority=ispec.noninferiority)
    return raw, rows, pooled


def pooled_reason(reason: str, pooled: dict[str, Any]) -> str:
    """A verdict's reason with the settings' agreement appended."""
    text = (f"{reason}; {pooled['settings']} settings {pooled['agreement']} "
            f"(I^2 {pooled['i2']:.0%}, tau^2 {pooled['tau2']:.3g})")
    if pooled["opposite"]:
        text += f"; opposite sign in {', '.join(pooled['opposite'])}"
    return text
