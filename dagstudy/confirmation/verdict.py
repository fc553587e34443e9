"""The verdict rule: raw paired results per idea (``test_idea``), then Holm across the ideas of
one run and the confirmed / ruled out / inconclusive decision (``decide``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from dagstudy.stats.paired import (
    MAX_SEEDS,
    TestName,
    bootstrap_ci,
    check_alpha,
    cohens_dz,
    effect_sign,
    paired_diffs,
    paired_p,
    tost,
)
from dagstudy.stats.power import seeds_for_margin, seeds_needed, seeds_noninferior
from dagstudy.stats.sequential import holm
from dagstudy.stats.signflip import PERMUTATIONS

VerdictName = Literal["confirmed", "ruled out", "inconclusive"]


def jsonable(value: object) -> object:
    """``value`` ready for JSON: dicts and lists converted item by item, numpy scalars made
    Python numbers, NaN and infinite floats made None."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


@dataclass(frozen=True)
class IdeaResult:
    """Raw paired results of one idea, before any multiple-comparison correction.

    ``diff = treatment_mean - control_mean`` (metric units, not oriented); ``effect_sign`` is
    the direction the primary test sees (+1 treatment higher, -1 lower, 0 none); ``p`` is the
    two-sided primary-test p-value and ``p_tost`` the TOST p-value against ``margin``.
    ``failed_seeds``: seeds left out because an arm has no value for them (a crashed arm);
    with fewer than 2 pairs left every statistic is NaN and both p-values are 1.
    ``noninferiority``: ``p`` tests ``diff + margin`` (oriented) and there is no TOST.
    """

    name: str
    test: str
    higher_is_better: bool
    margin: float
    seeds: int
    control_mean: float
    treatment_mean: float
    diff: float
    sd_diff: float
    ci_low: float
    ci_high: float
    d_z: float
    p: float
    p_tost: float
    effect_sign: int
    failed_seeds: tuple[int, ...] = ()
    noninferiority: bool = False

    @property
    def better(self) -> bool:
        """Whether the primary test's direction favours the treatment."""
        oriented = self.effect_sign if self.higher_is_better else -self.effect_sign
        return oriented > 0


@dataclass(frozen=True)
class Verdict:
    """Verdict on one idea: its raw paired ``result`` and what the rule made of it.

    ``verdict`` and ``reason`` (which rule fired); ``alpha`` the family-wise level;
    ``p_adjusted`` the Holm-adjusted primary p and ``p_tost_adjusted`` the same for TOST against
    the margin; ``seeds_needed`` the estimated total number of pairs likely to decide the idea
    (only when inconclusive; equal to the cap means "at least"). The fields of ``result``
    (``diff = treatment_mean - control_mean`` in the metric's own units, ``ci_low``,
    ``ci_high``, ``d_z``, ``p``, ``seeds``, ...) read through the verdict too: ``v.diff``.
    """

    result: IdeaResult
    verdict: VerdictName
    reason: str
    alpha: float
    p_adjusted: float
    p_tost_adjusted: float
    seeds_needed: int | None

    def __getattr__(self, name: str) -> object:
        # Called only for names the verdict itself lacks: the raw result's fields.
        if name == "result":  # not set yet (copying, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.result, name)

    def to_dict(self) -> dict[str, object]:
        """Plain JSON-ready dict, the result's fields flattened in; NaN/inf floats become None."""
        flat = {**asdict(self.result), **{k: v for k, v in asdict(self).items() if k != "result"}}
        return {key: jsonable(value) for key, value in flat.items()}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Verdict:
        """The inverse of ``to_dict`` (None floats come back as NaN)."""
        def value(key: str) -> object:
            v = data[key]
            return math.nan if v is None and key not in ("seeds_needed",) else v

        own_defaults = ("failed_seeds", "noninferiority")
        fields = {f: value(f) for f in IdeaResult.__dataclass_fields__ if f not in own_defaults}
        result = IdeaResult(**fields, failed_seeds=tuple(data.get("failed_seeds") or ()),
                            noninferiority=bool(data.get("noninferiority", False)))
        own = {f: value(f) for f in cls.__dataclass_fields__ if f != "result"}
        return cls(result=result, **own)


def unusable(name: str, test: str, higher_is_better: bool, margin: float, pairs: int,
             failed_seeds: tuple[int, ...]) -> IdeaResult:
    """The raw result of an idea with fewer than 2 complete pairs: nothing to test."""
    nan = math.nan
    return IdeaResult(name=name, test=test, higher_is_better=higher_is_better, margin=margin,
                      seeds=pairs, control_mean=nan, treatment_mean=nan, diff=nan, sd_diff=nan,
                      ci_low=nan, ci_high=nan, d_z=nan, p=1.0, p_tost=1.0, effect_sign=0,
                      failed_seeds=failed_seeds)


def test_idea(
    control: Sequence[float] | np.ndarray,
    treatment: Sequence[float] | np.ndarray,
    *,
    margin: float,
    higher_is_better: bool = True,
    test: TestName = "permutation",
    name: str = "",
    level: float = 0.95,
    ci_method: Literal["bca", "percentile"] = "bca",
    n_resamples: int = 10_000,
    permutations: int = PERMUTATIONS,
    seed: int = 0,
) -> IdeaResult:
    """Compute the raw (uncorrected) paired results of one idea.

    ``margin`` (> 0, metric units) is the smallest difference that matters in practice; the
    TOST uses it. ``n_resamples`` and ``seed`` drive the bootstrap CI (at ``level``);
    ``permutations`` (and ``seed``) the permutation test's Monte Carlo above 40 pairs. Raises
    ValueError on unpaired or non-finite input.
    """
    d = paired_diffs(control, treatment)
    if not margin > 0.0:
        raise ValueError(f"margin must be > 0, got {margin!r}")
    p = paired_p(d, test, "two-sided", permutations=permutations, seed=seed)
    ci_low, ci_high = bootstrap_ci(d, level, n_resamples, seed, ci_method)
    return IdeaResult(
        name=name,
        test=test,
        higher_is_better=higher_is_better,
        margin=float(margin),
        seeds=int(d.size),
        control_mean=float(np.mean(control)),
        treatment_mean=float(np.mean(treatment)),
        diff=float(d.mean()),
        sd_diff=float(d.std(ddof=1)),
        ci_low=ci_low,
        ci_high=ci_high,
        d_z=cohens_dz(d),
        p=p,
        p_tost=tost(d, margin).p,
        effect_sign=effect_sign(d, test),
    )


test_idea.__test__ = False  # a library function, not a pytest test, when imported into tests


def _seeds_to_decide(r: IdeaResult, alpha: float, power: float, max_n: int,
                     permutations: int) -> int:
    """Total pairs likely to decide an inconclusive idea: the cheaper of detecting the observed
    d_z (two-sided t power, never below the fewest pairs with which ``r.test`` can reach
    ``alpha`` with ``permutations`` Monte-Carlo draws) and ruling it out by TOST at the
    observed mean and sd; for a non-inferiority idea the pairs that decide the shifted test at
    ``(diff + margin) / sd`` (no TOST). At least one more pair than already run, at most
    ``max_n``."""
    if r.noninferiority:
        oriented = r.diff if r.higher_is_better else -r.diff
        needed = seeds_noninferior(oriented, r.sd_diff, r.margin, alpha, power, max_n=max_n,
                                   test=r.test, permutations=permutations)
    else:
        detect = seeds_needed(r.d_z, alpha, power, max_n=max_n, test=r.test,
                              permutations=permutations)
        rule_out = seeds_for_margin(r.sd_diff, r.margin, alpha, power, diff=r.diff, max_n=max_n)
        needed = min(detect, rule_out)
    return min(max(needed, r.seeds + 1), max_n)


def _decide_one(
    r: IdeaResult,
    p_adjusted: float,
    p_tost_adjusted: float,
    alpha: float,
    plan_alpha: float,
    power: float,
    max_seeds: int,
    permutations: int,
) -> Verdict:
    needed = None
    if r.seeds < 2:
        left_out = ", ".join(map(str, r.failed_seeds))
        return Verdict(result=r, verdict="inconclusive", alpha=alpha, p_adjusted=1.0,
                       p_tost_adjusted=1.0, seeds_needed=None,
                       reason=f"an arm failed on seeds {left_out}: {r.seeds} complete pairs left "
                              "(the arm runs say why)")
    if p_adjusted < alpha and r.better:
        outcome, reason = "confirmed", f"treatment better, adjusted p < {alpha:g}"
        if p_tost_adjusted < alpha:
            reason += f", but smaller than the margin {r.margin:g} by TOST"
    elif p_adjusted < alpha:
        outcome, reason = "ruled out", f"treatment worse, adjusted p < {alpha:g}"
    elif p_tost_adjusted < alpha:
        outcome, reason = "ruled out", f"|effect| < margin {r.margin:g} by TOST at {alpha:g}"
    else:
        outcome = "inconclusive"
        needed = _seeds_to_decide(r, plan_alpha, power, max_seeds, permutations)
        at_least = "at least " if needed == max_seeds else ""
        reason = f"neither test decisive; {at_least}{needed} pairs likely decide it"
    if r.failed_seeds:
        reason += f"; seeds {', '.join(map(str, r.failed_seeds))} failed and are left out"
    return Verdict(
        result=r,
        verdict=outcome,
        reason=reason,
        alpha=alpha,
        p_adjusted=float(p_adjusted),
        p_tost_adjusted=float(p_tost_adjusted),
        seeds_needed=needed,
    )


def decide(
    results: Sequence[IdeaResult],
    alpha: float = 0.05,
    *,
    power: float = 0.8,
    max_seeds: int = MAX_SEEDS,
    permutations: int = PERMUTATIONS,
) -> list[Verdict]:
    """Verdicts for all ideas of one run, with Holm correction across them.

    Holm is applied separately to the primary p-values and to the TOST p-values of the m ideas
    (so both "confirmed" and the equivalence "ruled out" claims keep family-wise error <= alpha).
    Then, per idea, in this order:

    1. confirmed:   p_adjusted < alpha and the test's direction favours the treatment
                    (higher metric if ``higher_is_better``, else lower);
    2. ruled out:   p_adjusted < alpha in the harmful direction;
    3. ruled out:   p_tost_adjusted < alpha (|mean difference| < margin shown);
    4. inconclusive, with ``seeds_needed`` = the cheaper of the pairs that give 80% (``power``)
       to detect the observed d_z and to show equivalence at the observed mean and sd, planned
       at the Bonferroni level alpha / m (conservative under Holm), never below the pairs the
       sign-flip test needs to reach that level at all (``permutations``: the Monte-Carlo
       draws the p-values were computed with); for a non-inferiority idea, the pairs that
       decide the shifted test at (diff + margin) / sd; capped at ``max_seeds``.

    The two-sided p with a direction check makes each directional claim a one-sided test at
    alpha / 2. Verdicts come back in the order of ``results``.
    """
    check_alpha(alpha)
    if not results:
        return []
    p_adj = holm([r.p for r in results])
    p_tost_adj = holm([r.p_tost for r in results])
    plan_alpha = alpha / len(results)
    return [
        _decide_one(r, pa, pt, alpha, plan_alpha, power, max_seeds, permutations)
        for r, pa, pt in zip(results, p_adj, p_tost_adj, strict=True)
    ]


def verdict(
    control: Sequence[float] | np.ndarray,
    treatment: Sequence[float] | np.ndarray,
    *,
    margin: float,
    higher_is_better: bool = True,
    alpha: float = 0.05,
    test: TestName = "permutation",
    p_adjusted: float | None = None,
    p_tost_adjusted: float | None = None,
    name: str = "",
    level: float = 0.95,
    ci_method: Literal["bca", "percentile"] = "bca",
    n_resamples: int = 10_000,
    permutations: int = PERMUTATIONS,
    seed: int = 0,
    power: float = 0.8,
    max_seeds: int = MAX_SEEDS,
) -> Verdict:
    """Verdict for a single idea: :func:`test_idea` then the rule of :func:`decide`.

    Without ``p_adjusted``/``p_tost_adjusted`` the idea is its own family (adjusted = raw); pass
    adjusted values computed elsewhere (e.g. by :func:`holm` over a run) to use them instead.
    """
    check_alpha(alpha)
    r = test_idea(
        control,
        treatment,
        margin=margin,
        higher_is_better=higher_is_better,
        test=test,
        name=name,
        level=level,
        ci_method=ci_method,
        n_resamples=n_resamples,
        permutations=permutations,
        seed=seed,
    )
    pa = r.p if p_adjusted is None else p_adjusted
    pt = r.p_tost if p_tost_adjusted is None else p_tost_adjusted
    return _decide_one(r, pa, pt, alpha, alpha, power, max_seeds, permutations)
