"""``base: {from_study: NAME, rank: R}``: a base configuration read from a finished study.

At file or idea level, ``from_study: NAME`` (with ``rank``, default 0) makes the base the
``rank``-th best COMPLETE trial's resolved ``TrainConfig`` (``best_configs`` on the configured
Optuna storage), overridden by the base's other keys; ``from_study: {name: NAME, top: K}``
repeats the idea at each of the top ``K`` configurations: rank 0 decides the verdict, ranks
1..K-1 become arms ``control@rank=r`` / ``treatment@rank=r`` reported as secondary rows.

``resolve_studies(spec, storage)`` returns the spec with every base resolved (the file's base
folded into each idea's, ``IdeaSpec.rank_bases`` and ``IdeaSpec.base_trials`` set), so a saved
spec replans without the study. An unknown study is a one-line ``ValueError`` naming the study
and the storage, raised before anything trains.
"""

from __future__ import annotations

from typing import Any

from dagstudy.confirmation.spec import ConfirmSpec
from dagstudy.study.query import best_configs
from dagstudy.study.storage import storage_for
from dagstudy.urls import redact_url

KEYS = ("from_study", "rank")


def uses_studies(spec: ConfirmSpec) -> bool:
    return "from_study" in spec.base or any("from_study" in i.base for i in spec.ideas.values())


def _reference(base: dict[str, Any], where: str) -> tuple[str, list[int]]:
    """The study name and the ranks a base asks for."""
    ref, rank = base["from_study"], base.get("rank", 0)
    top = None
    if isinstance(ref, dict):
        unknown = set(ref) - {"name", "rank", "top"}
        if unknown:
            raise ValueError(f"{where}.from_study: unknown {sorted(unknown)} (allowed: name, "
                             f"rank, top)")
        ref, rank, top = ref.get("name"), ref.get("rank", rank), ref.get("top")
    if not isinstance(ref, str) or not ref:
        raise ValueError(f"{where}.from_study: needs a study name (NAME or {{name: NAME}})")
    if not isinstance(rank, int) or rank < 0:
        raise ValueError(f"{where}.rank: must be an integer >= 0 (got {rank!r})")
    if top is not None and (not isinstance(top, int) or top < 1):
        raise ValueError(f"{where}.from_study.top: must be an integer >= 1 (got {top!r})")
    return ref, list(range(top)) if top else [rank]


def _resolve(base: dict[str, Any], where: str, url: str) -> list[tuple[dict, dict | None]]:
    """``[(base, trial info)]``, one per rank; ``[(base, None)]`` without ``from_study``."""
    if "from_study" not in base:
        return [(base, None)]
    name, ranks = _reference(base, where)
    rest = {k: v for k, v in base.items() if k not in KEYS}
    try:
        best = best_configs(name, k=max(ranks) + 1, storage=url)
    except KeyError:
        raise ValueError(f"{where}.from_study: no study {name!r} in {redact_url(url)}") from None
    if len(best) <= max(ranks):
        raise ValueError(f"{where}.from_study: study {name!r} in {redact_url(url)} has "
                         f"{len(best)} complete trials; rank {max(ranks)} needs {max(ranks) + 1}")
    out = []
    for r in ranks:
        row = best.iloc[r]
        info = {"study": name, "rank": r, "trial": int(row.number),
                "objective": float(row.objective), "storage": redact_url(url)}
        out.append(({**dict(row.config), **rest}, info))
    return out


def resolve_studies(spec: ConfirmSpec, storage: str | None = None) -> ConfirmSpec:
    """``spec`` with every ``from_study`` base resolved (see the module docstring); ``spec``
    itself when none has one. ``storage``: the Optuna URL (default: ``storage_for()``)."""
    if not uses_studies(spec):
        return spec
    url = storage or storage_for().optuna
    file_bases = _resolve(spec.base, "base", url)
    ideas = {}
    for idea, ispec in spec.ideas.items():
        where = f"ideas.{idea}.base"
        idea_bases = _resolve(ispec.base, where, url)
        if len(file_bases) > 1 and len(idea_bases) > 1:
            raise ValueError(f"{where}.from_study: top at both file and idea level")
        n = max(len(file_bases), len(idea_bases))
        if n > 1 and (ispec.depths or ispec.fanin_sweep or ispec.match_params):
            raise ValueError(f"{where}.from_study.top: cannot be combined with depths, "
                             f"fanin_sweep or match_params")
        merged = [({**file_bases[min(i, len(file_bases) - 1)][0],
                    **idea_bases[min(i, len(idea_bases) - 1)][0]},
                   idea_bases[min(i, len(idea_bases) - 1)][1]
                   or file_bases[min(i, len(file_bases) - 1)][1]) for i in range(n)]
        ideas[idea] = ispec.model_copy(update={
            "base": merged[0][0], "rank_bases": [b for b, _ in merged[1:]],
            "base_trials": [info for _, info in merged if info]})
    return spec.model_copy(update={"base": {}, "ideas": ideas})
