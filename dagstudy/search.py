"""The study's search space as Optuna suggestions, with conditional parameters.

``suggest(trial, space, base) -> overrides`` samples one trial through ``trial.suggest_*`` and
returns ``TrainConfig`` field overrides. Optuna parameter names: the ``TrainConfig`` field
(``depth``, ``lr``, ...); ``optimizer`` / ``revival`` for the chosen registered name, and
``optimizer.<name>.<param>`` / ``revival.<name>.<param>`` for that name's own parameters,
sampled only when that name is chosen. ``fanin`` and ``fanin_wiring`` are sampled only when the
trial's topology is ``fanin``. A ``Range`` is sampled as an integer when the target field is an
integer (``int`` or ``int | None`` in its pydantic model), else as a float.

``combinations(space, base)`` runs the same ``suggest`` against a stand-in trial to enumerate
every combination of categorical choices (conditional ones included), once with every range at
its low end and once at its high end; the spec validates each as a ``TrainConfig``.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator
from typing import Any, Protocol

from pydantic import BaseModel

from dagstudy.config import TrainConfig
from dagstudy.optim import VARIANTS
from dagstudy.revival import POLICIES
from dagstudy.spec import Range, SearchSpace

REGISTRIES = {"optimizer": VARIANTS, "revival": POLICIES}
SCALARS = tuple(f for f in SearchSpace.model_fields if f not in REGISTRIES)
FANIN_ONLY = ("fanin", "fanin_wiring")


class Suggester(Protocol):
    """The part of ``optuna.Trial`` that ``suggest`` uses."""

    def suggest_categorical(self, name: str, choices: list) -> Any: ...
    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1,
                    log: bool = False) -> int: ...
    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float: ...


def _is_int(model: type[BaseModel], field: str) -> bool:
    annotation = model.model_fields[field].annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return set(typing.get_args(annotation)) - {type(None)} == {int}
    return annotation is int


def _suggest(trial: Suggester, name: str, domain: Range | list, integer: bool) -> Any:
    if isinstance(domain, list):
        return trial.suggest_categorical(name, domain)
    if integer:
        bounds = (domain.low, domain.high, domain.step or 1)
        if not all(float(b).is_integer() for b in bounds):
            raise ValueError(f"search.{name}: an integer field needs integer low, high and step")
        low, high, step = (int(b) for b in bounds)
        return trial.suggest_int(name, low, high, step=step, log=domain.log)
    return trial.suggest_float(name, domain.low, domain.high, step=domain.step, log=domain.log)


def _base_value(base: dict[str, Any], field: str) -> Any:
    return base.get(field, TrainConfig.model_fields[field].default)


def suggest(trial: Suggester, space: SearchSpace, base: dict[str, Any]) -> dict[str, Any]:
    """Sample one trial's ``TrainConfig`` overrides of ``base`` (see the module docstring).

    The chosen optimizer's / policy's params start from ``base``'s ``*_params`` when ``base``
    names the same optimizer / policy, else from its defaults.
    """
    overrides: dict[str, Any] = {}
    for field in SCALARS:
        domain = getattr(space, field)
        if domain is None:
            continue
        topology = overrides.get("topology", _base_value(base, "topology"))
        if field in FANIN_ONLY and topology != "fanin":
            continue
        overrides[field] = _suggest(trial, field, domain, _is_int(TrainConfig, field))
    for kind, registry in REGISTRIES.items():
        options = getattr(space, kind)
        if options is None:
            continue
        chosen = trial.suggest_categorical(kind, list(options))
        params_model = registry[chosen].Params
        sampled = {p: _suggest(trial, f"{kind}.{chosen}.{p}", d, _is_int(params_model, p))
                   for p, d in options[chosen].items()}
        inherited = base.get(f"{kind}_params", {}) if _base_value(base, kind) == chosen else {}
        overrides[kind] = chosen
        overrides[f"{kind}_params"] = {**inherited, **sampled}
    return overrides


class _CornerTrial:
    """Answers like a trial: choice ``picks[name]`` (default the first), ranges at one end."""

    def __init__(self, picks: dict[str, int], high: bool):
        self.picks, self.high = picks, high
        self.sizes: dict[str, int] = {}

    def suggest_categorical(self, name: str, choices: list) -> Any:
        self.sizes[name] = len(choices)
        return choices[self.picks.get(name, 0)]

    def suggest_int(self, name, low, high, *, step=1, log=False):
        return high if self.high else low

    def suggest_float(self, name, low, high, *, step=None, log=False):
        return high if self.high else low


def combinations(space: SearchSpace, base: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every reachable combination of categorical choices, ranges at low then at high."""
    for high in (False, True):
        todo: list[dict[str, int]] = [{}]
        while todo:
            picks = todo.pop()
            trial = _CornerTrial(picks, high)
            yield suggest(trial, space, base)
            fixed = dict(picks)
            for name, size in trial.sizes.items():
                if name not in fixed:
                    todo.extend({**fixed, name: i} for i in range(1, size))
                    fixed[name] = 0
