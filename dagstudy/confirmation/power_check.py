"""Power by design: before anything trains, can each idea reach significance at all?

A sign-flip test with n pairs cannot give p below 2 / 2**n, nor below 1 / (1 + permutations)
where its p is Monte Carlo (``stats.smallest_p``), and Holm
across the m ideas of a run rejects nothing unless the smallest p is below alpha / m. So an
idea whose pairs cannot beat alpha / m at any look can never be confirmed (nor ruled out as
harmful), however large the effect: ``unreachable`` names it before any training. In
sequential mode look k has ``seeds + (k - 1) * add_seeds`` seeds and its alpha-spending level
(``look_alphas``); the idea is reachable when some look is, usually the last (most seeds,
largest alpha), and the message names the look it checked. A pooled idea's pairs are the seeds
times its settings (the stratified test flips signs over all of them).
"""

from __future__ import annotations

from dagstudy import stats
from dagstudy.confirmation.spec import ConfirmSpec


def look_seeds(spec: ConfirmSpec) -> list[int]:
    """Seeds per idea at each look: ``[seeds]``, or ``seeds + k * add_seeds`` for each look."""
    seq = spec.sequential
    if not seq.enabled:
        return [spec.seeds]
    return [spec.seeds + k * seq.add_seeds for k in range(seq.looks)]


def look_alphas(spec: ConfirmSpec) -> list[float]:
    """Each look's nominal alpha: ``[alpha]``, or the spending function's per-look levels at
    information fractions proportional to the seeds gathered by each look."""
    seq = spec.sequential
    if not seq.enabled:
        return [spec.alpha]
    if seq.spending == "bonferroni":
        return list(stats.bonferroni_looks(spec.alpha, seq.looks))
    return list(stats.obrien_fleming_alphas(spec.alpha, seq.looks, look_seeds(spec)))


def _settings(spec: ConfirmSpec, idea: str) -> int:
    settings = spec.ideas[idea].settings or spec.settings
    return len(settings.expand()) if settings else 1


def unreachable(spec: ConfirmSpec, ideas: list[str] | None = None) -> list[str]:
    """One line per idea (of ``ideas``, default all) that no look can make significant under
    Holm: ``ideas.ID: cannot reach significance: n pairs give p >= P (test), above the Holm
    threshold alpha/m = T (...); need at least N pairs`` (or ``need permutations >= D`` when
    the Monte-Carlo floor is what stops it). Empty when every idea can."""
    chosen = ideas or list(spec.ideas)
    m = len(chosen)
    seeds, alphas = look_seeds(spec), look_alphas(spec)
    problems = []
    for idea in chosen:
        per_seed = _settings(spec, idea)
        test = spec.test if per_seed == 1 else stats.STRATIFIED_TEST
        looks = [(n * per_seed, a / m) for n, a in zip(seeds, alphas)]
        if any(stats.smallest_p(n, test, spec.permutations) < t for n, t in looks):
            continue
        n, threshold = looks[-1]
        where = (f"last of {len(seeds)} looks, {seeds[-1]} seeds, alpha {alphas[-1]:.3g}"
                 if spec.sequential.enabled else f"alpha {spec.alpha:g}")
        problems.append(
            f"ideas.{idea}: cannot reach significance: {n} pairs give p >= "
            f"{stats.smallest_p(n, test, spec.permutations):.3g} ({test} test), above the Holm "
            f"threshold alpha/m = {threshold:.3g} ({where}, m = {m} ideas); "
            f"{_remedy(n, test, threshold, spec.permutations)}")
    return problems


def _remedy(n: int, test: str, threshold: float, permutations: int) -> str:
    """What would let ``n`` pairs of ``test`` beat ``threshold``: more Monte-Carlo draws when
    the floor 1 / (1 + permutations) is what stops them, else more pairs."""
    draws = stats.min_permutations(threshold)
    if draws > permutations and stats.smallest_p(n, test, draws) < threshold:
        return f"need permutations >= {draws} (now {permutations})"
    return f"need at least {stats.min_pairs(threshold, test, permutations=permutations)} pairs"
