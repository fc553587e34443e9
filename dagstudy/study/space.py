"""The study's search space: its spec model (``SearchSpace``) and its Optuna suggestions, with
conditional parameters.

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
from typing import Annotated, Any, Protocol

from pydantic import BaseModel, Discriminator, Field, Tag, field_validator, model_validator

from dagstudy.config import StrictModel, TrainConfig
from dagstudy.optim import VARIANTS, ignores_lr
from dagstudy.revival import POLICIES


class Range(StrictModel):
    """A numeric range ``[low, high]``; integer or float as the target field is."""

    low: float
    high: float
    log: bool = False
    step: float | None = Field(None, gt=0.0)

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low:g}) must be < high ({self.high:g})")
        if self.log and self.low <= 0:
            raise ValueError("log: needs low > 0")
        if self.log and self.step is not None:
            raise ValueError("step: cannot be combined with log")
        return self


def _domain_kind(value: Any) -> str:
    return "range" if isinstance(value, (dict, Range)) else "choices"


Choices = Annotated[list[bool | int | float | str | None], Field(min_length=1)]
Domain = Annotated[
    Annotated[Range, Tag("range")] | Annotated[Choices, Tag("choices")],
    Discriminator(_domain_kind),
]
"""A search dimension: a list of choices (categorical) or a ``Range`` mapping."""


def _check_registry(kind: str, registry: dict, value: dict[str, dict[str, Domain]]):
    unknown = [name for name in value if name not in registry]
    if unknown:
        raise ValueError(f"unknown {kind} {unknown} (registered: {', '.join(registry)})")
    for name, params in value.items():
        known = registry[name].Params.model_fields
        bad = [p for p in params if p not in known]
        if bad:
            has = ", ".join(known) or "no parameters"
            raise ValueError(f"{name}: unknown parameter {bad} ({name} has: {has})")
    return value


class SearchSpace(StrictModel):
    """What Optuna samples. Every other ``TrainConfig`` field is fixed by ``base``.

    ``fanin`` and ``fanin_wiring`` are sampled only when the trial's topology is ``fanin``.
    ``optimizer`` / ``revival`` map registered names to their own parameters' domains (``{}``:
    the class defaults); those parameters are sampled only for the chosen name.
    """

    topology: Choices | None = None
    fanin: Domain | None = None
    fanin_wiring: Choices | None = None
    depth: Domain | None = None
    width: Domain | None = None
    readout: Choices | None = None
    bias_init: Domain | None = None
    loss: Choices | None = None
    lr: Domain | None = None
    batch_size: Domain | None = None
    optimizer: dict[str, dict[str, Domain]] | None = Field(None, min_length=1)
    revival: dict[str, dict[str, Domain]] | None = Field(None, min_length=1)

    @field_validator("optimizer")
    @classmethod
    def _known_variants(cls, value):
        return None if value is None else _check_registry("variant", VARIANTS, value)

    @field_validator("revival")
    @classmethod
    def _known_policies(cls, value):
        return None if value is None else _check_registry("policy", POLICIES, value)

    @model_validator(mode="after")
    def _not_empty(self) -> SearchSpace:
        if all(getattr(self, f) is None for f in SearchSpace.model_fields):
            raise ValueError(f"empty; search at least one of {', '.join(SearchSpace.model_fields)}")
        return self



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
    if ignores_lr(overrides.get("optimizer", _base_value(base, "optimizer"))):
        overrides.pop("lr", None)  # a Lipschitz variant's step is 1/L: TrainConfig rejects lr
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
