"""Confirmation files: read YAML, validate into a ``ConfirmSpec``, build every arm.

``load_spec(path)`` raises ``ConfirmInputError`` (one line naming the field) before any work;
every arm's ``TrainConfig`` is built then (``plan``) and every dataset loaded once
(``check_data``), so a bad value or bad data never reaches training.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from dagstudy.config import format_errors
from dagstudy.confirmation.from_study import resolve_studies
from dagstudy.confirmation.plan import check_data, plan
from dagstudy.confirmation.spec import ConfirmSpec
from dagstudy.confirmation.tune import tuning_studies
from dagstudy.ideas import IDEAS
from dagstudy.study.yamlfile import YamlFileError, read_yaml


class ConfirmInputError(ValueError):
    """A bad confirmation file or flag: one line naming the field."""


def load_spec(path: str | Path, seeds: int | None = None, storage: str | None = None,
              device: str = "auto") -> ConfirmSpec:
    """The validated file; ``from_study`` bases resolved on the Optuna ``storage`` (default
    ``storage_for()``) and every arm and tuning space checked, before anything trains."""
    path = Path(path)
    if not path.is_file():
        raise ConfirmInputError(f"{path}: no such confirmation file")
    try:
        raw = read_yaml(path)
    except YamlFileError as e:
        raise ConfirmInputError(str(e)) from None
    if not isinstance(raw, dict):
        raise ConfirmInputError(f"{path}: must be a mapping of fields")
    if seeds is not None:
        raw["seeds"] = seeds
    try:
        spec = ConfirmSpec(**raw)
    except ValidationError as e:
        raise ConfirmInputError(f"{path}: {format_errors(e)}") from None
    try:
        spec = resolve_studies(spec, storage)
        check_data(plan(spec), spec.first_seed)
        tuning_studies(spec, device)
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
            f"all IDs: {', '.join(IDEAS)})")
    return ideas
