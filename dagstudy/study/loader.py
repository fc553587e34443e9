"""Study files: read YAML, expand ``${ENV}`` references, validate into a ``StudySpec``.

``load_spec(path) -> StudySpec`` raises ``SpecError`` (a ``ValueError``) with one line per
problem, ``field.path: problem``, before anything runs.

Strings may reference environment variables: ``${VAR}`` (an error if unset) or
``${VAR:-default}``; a value that expands to the empty string becomes null. Storage URLs must
not hold a literal password (``user:secret@``, ``?password=secret``, or a ``${VAR:-secret}``
fallback): write ``user:${PGPASSWORD}@`` instead (``dagstudy.urls``).
"""

from __future__ import annotations

import os
import re
from typing import Any

from pydantic import (
    ValidationError,
)

from dagstudy.config import format_errors
from dagstudy.study.spec import SpecError, StudySpec
from dagstudy.study.yamlfile import YamlFileError, read_yaml
from dagstudy.urls import has_literal_secret

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(value: Any, path: str = "") -> Any:
    """``${VAR}`` / ``${VAR:-default}`` in every string of ``value``; "" becomes None."""
    if isinstance(value, dict):
        return {k: expand_env(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, f"{path}.{i}") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def sub(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is None:
            raise SpecError(f"{path}: environment variable {name} is not set "
                            f"(write ${{{name}:-default}} for a fallback)")
        return default

    expanded = _ENV_REF.sub(sub, value)
    return None if expanded == "" else expanded


def parse_spec(data: Any) -> StudySpec:
    """Validate a parsed study document (before env expansion); raises ``SpecError``."""
    if not isinstance(data, dict):
        raise SpecError("the study file must be a mapping of fields (name, budget, search, ...)")
    odd = [key for key in data if not isinstance(key, str)]
    if odd:  # YAML allows `1:`, `null:`, `true:` keys; StudySpec(**data) would raise TypeError
        raise SpecError(f"{odd[0]!r}: not a field name (field names are strings)")
    storage = data.get("storage")
    if isinstance(storage, dict):
        for key, url in storage.items():
            if isinstance(url, str) and has_literal_secret(url):
                raise SpecError(f"storage.{key}: holds a literal password; reference an "
                                "environment variable with no default (user:${PGPASSWORD}@host)")
    try:
        return StudySpec(**expand_env(data))
    except ValidationError as e:
        raise SpecError(format_errors(e)) from None


def load_spec(path: str | os.PathLike[str]) -> StudySpec:
    """Read and validate a study file; raises ``SpecError`` naming the file's problems."""
    return parse_spec(load_yaml(path))


def load_yaml(path: str | os.PathLike[str]) -> Any:
    """The data of the YAML file at ``path`` (``yamlfile.read_yaml``: size, alias and
    duplicate-key limits); ``SpecError`` naming the problem."""
    try:
        return read_yaml(path)
    except YamlFileError as e:
        raise SpecError(str(e)) from None
