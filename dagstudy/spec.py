"""Study files: load a YAML study, expand ``${ENV}`` references, validate everything up front.

``load_spec(path) -> StudySpec`` raises ``SpecError`` (a ``ValueError``) with one line per
problem, ``field.path: problem``, before anything runs. Validation covers every model
(``extra="forbid"`` everywhere), the search space against the optimizer-variant and
revival-policy registries (the registries are the one list of names), and every combination of
categorical choices (each range at its low and at its high end) built into a ``TrainConfig``
over ``base``, so no sampled trial can be an invalid configuration.

Strings may reference environment variables: ``${VAR}`` (an error if unset) or
``${VAR:-default}``; a value that expands to the empty string becomes null. Storage URLs must
not hold a literal password (``user:secret@``, ``?password=secret``, or a ``${VAR:-secret}``
fallback): write ``user:${PGPASSWORD}@`` instead. ``redact_url`` hides passwords in output.

Where things are stored (``storage_for``): the spec's ``storage`` section, else the environment
(``DAGSTUDY_OPTUNA_STORAGE``, ``MLFLOW_TRACKING_URI``), else SQLite files under the run
directory: ``--run-dir``, else ``$DAGSTUDY_HOME``, else ``./dagstudy-runs``
(``optuna.db``, ``mlflow.db`` and ``mlartifacts/``).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import optuna
import sqlalchemy
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from dagstudy.config import TrainConfig, format_errors
from dagstudy.optim import VARIANTS
from dagstudy.revival import POLICIES
from dagstudy.train import FINAL_METRICS

DEFAULT_RUN_DIR = "dagstudy-runs"
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
# A URL's secrets: the password of ``scheme://user:password@`` (SQLAlchemy's rule: everything
# up to the first ``@``) and the values of password-like query parameters.
_URL_PASSWORD = re.compile(r"^([\w+.-]+://[^:/@]*:)([^@]*)(@)")
_URL_QUERY_SECRET = re.compile(r"(?i)([?&](?:password|passwd|pwd|token|secret)=)([^&#]*)()")
_ENV_ONLY = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}")


class SpecError(ValueError):
    """An invalid study file; the message names each field path and its problem."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Objective(_Model):
    """What a trial scores: ``metric``'s final per-seed values, reduced to one number.

    The mean over seeds, or with ``lcb_z`` the conservative bound
    ``mean -/+ lcb_z * std / sqrt(S)`` (minus when maximizing, plus when minimizing).
    """

    metric: str = "val_accuracy"
    direction: Literal["maximize", "minimize"] = "maximize"
    lcb_z: float | None = Field(None, gt=0.0)

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        if value not in FINAL_METRICS:
            raise ValueError(f"unknown {value!r} (allowed: {', '.join(FINAL_METRICS)})")
        return value

    def score(self, per_seed: list[float | None]) -> float | None:
        """The objective of per-seed values; None if any seed has no finite value."""
        if not per_seed or any(v is None or not math.isfinite(v) for v in per_seed):
            return None
        mean = sum(per_seed) / len(per_seed)
        if self.lcb_z is None or len(per_seed) < 2:
            return mean
        std = math.sqrt(sum((v - mean) ** 2 for v in per_seed) / (len(per_seed) - 1))
        sign = -1.0 if self.direction == "maximize" else 1.0
        return mean + sign * self.lcb_z * std / math.sqrt(len(per_seed))


class Budget(_Model):
    """When a study stops launching trials: ``trials`` finished trials (see ``execute``) and/or
    ``wall_minutes`` since the driver started (running trials then finish)."""

    trials: int | None = Field(None, ge=1)
    wall_minutes: float | None = Field(None, gt=0.0)

    @model_validator(mode="after")
    def _some_limit(self) -> Budget:
        if self.trials is None and self.wall_minutes is None:
            raise ValueError("set trials and/or wall_minutes")
        return self


class Range(_Model):
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


class SearchSpace(_Model):
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


class Sampler(_Model):
    name: Literal["tpe", "gp", "random"] = "tpe"
    seed: int | None = None
    n_startup_trials: int = Field(10, ge=0, description="random trials first (tpe, gp)")


class NoPruner(_Model):
    name: Literal["none"]


class MedianPruner(_Model):
    name: Literal["median"]
    n_startup_trials: int = Field(5, ge=0)
    n_warmup_steps: int = Field(0, ge=0, description="epochs before pruning may start")


class SuccessiveHalvingPruner(_Model):
    name: Literal["successive-halving"]
    min_resource: int = Field(1, ge=1, description="epochs")
    reduction_factor: int = Field(3, ge=2)


class HyperbandPruner(_Model):
    name: Literal["hyperband"]
    min_resource: int = Field(1, ge=1, description="epochs; max_resource is the study's epochs")
    reduction_factor: int = Field(3, ge=2)


class WilcoxonPruner(_Model):
    name: Literal["wilcoxon"]
    p_threshold: float = Field(0.1, gt=0.0, lt=1.0)
    n_startup_steps: int = Field(2, ge=0, description="paired (epoch, seed) values first")


Pruner = Annotated[
    NoPruner | MedianPruner | SuccessiveHalvingPruner | HyperbandPruner | WilcoxonPruner,
    Field(discriminator="name"),
]


class Resources(_Model):
    """Per trial: Ray CPUs (also torch's thread count) and GPU (a fraction shares one GPU)."""

    cpus: float = Field(1.0, gt=0.0)
    gpu: float = Field(0.0, ge=0.0)


class StorageSpec(_Model):
    """Where the study lives; unset fields fall back to the environment, then the run dir."""

    optuna: str | None = None
    mlflow: str | None = None
    artifacts: str | None = Field(None, description="artifact location of a new experiment")


class StudySpec(_Model):
    """One study file. ``dataset`` and ``epochs`` override ``base``; ``base`` is a complete
    ``TrainConfig`` the search space overrides. Every trial trains seeds
    ``first_seed .. first_seed + seeds - 1`` (the same seeds for every trial: paired)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    dataset: str = "digits"
    objective: Objective = Objective()
    seeds: int = Field(3, ge=1)
    first_seed: int = Field(0, ge=0)
    budget: Budget
    epochs: int = Field(ge=1)
    search: SearchSpace
    base: dict[str, Any] = {}
    sampler: Sampler = Sampler()
    pruner: Pruner = MedianPruner(name="median")
    resources: Resources = Resources()
    max_concurrent: int = Field(2, ge=1)
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    storage: StorageSpec = StorageSpec()

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.first_seed, self.first_seed + self.seeds))

    def base_config(self) -> dict[str, Any]:
        return {**self.base, "dataset": self.dataset, "epochs": self.epochs}

    def config_for(self, overrides: dict[str, Any]) -> TrainConfig:
        """The ``TrainConfig`` of one trial: ``base`` with the sampled ``overrides``."""
        return TrainConfig(**{**self.base_config(), **overrides})

    @model_validator(mode="after")
    def _valid_configs(self) -> StudySpec:
        from dagstudy.search import combinations

        for key in ("dataset", "epochs"):
            if key in self.base:
                raise ValueError(f"base.{key}: set it at the top level of the study file")
        try:
            TrainConfig(**self.base_config())
        except ValidationError as e:
            raise ValueError(format_errors(e, prefix="base")) from None
        for overrides in combinations(self.search, self.base_config()):
            try:
                self.config_for(overrides)
            except ValidationError as e:
                combo = ", ".join(f"{k}={v!r}" for k, v in overrides.items())
                raise ValueError(f"{format_errors(e, prefix='search')} (when {combo})") from None
        return self


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
            if isinstance(url, str) and _literal_secret(url):
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
    try:
        return yaml.safe_load(Path(path).read_text())
    except OSError as e:
        raise SpecError(f"{path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise SpecError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except yaml.YAMLError as e:
        raise SpecError(f"{path}: not valid YAML: {e}") from None


def run_dir_for(run_dir: str | os.PathLike[str] | None = None) -> Path:
    """``run_dir``, else ``$DAGSTUDY_HOME``, else ``./dagstudy-runs`` (absolute)."""
    chosen = run_dir or os.environ.get("DAGSTUDY_HOME") or DEFAULT_RUN_DIR
    return Path(chosen).expanduser().resolve()


@dataclass(frozen=True)
class Storage:
    """Resolved locations: Optuna RDB URL, MLflow tracking URI, artifact location (beside a
    SQLite MLflow database; None for a tracking server, which decides)."""

    optuna: str
    mlflow: str
    artifacts: str | None


def _url_secrets(url: str) -> list[str]:
    return [m.group(2) for pattern in (_URL_PASSWORD, _URL_QUERY_SECRET)
            for m in pattern.finditer(url)]


def _literal_secret(url: str) -> bool:
    """A secret of ``url`` is anything but one ``${VAR}`` reference (a fallback is literal)."""
    return any(secret and not _ENV_ONLY.fullmatch(secret) for secret in _url_secrets(url))


def redact_url(url: str) -> str:
    """``url`` fit for logs: its password and password-like query values replaced by ``***``."""
    for pattern in (_URL_PASSWORD, _URL_QUERY_SECRET):
        url = pattern.sub(lambda m: m.group(1) + "***" + m.group(3), url)
    return url


def storage_for(spec: StudySpec | None = None, run_dir: str | os.PathLike | None = None) -> Storage:
    """Where a study lives (see the module docstring for the order of precedence)."""
    base = run_dir_for(run_dir)
    given = spec.storage if spec is not None else StorageSpec()
    optuna_url = given.optuna or os.environ.get("DAGSTUDY_OPTUNA_STORAGE")
    mlflow_uri = given.mlflow or os.environ.get("MLFLOW_TRACKING_URI")
    artifacts = given.artifacts
    if optuna_url is None:
        base.mkdir(parents=True, exist_ok=True)
        optuna_url = f"sqlite:///{base / 'optuna.db'}"
    if mlflow_uri is None:
        base.mkdir(parents=True, exist_ok=True)
        mlflow_uri = f"sqlite:///{base / 'mlflow.db'}"
    if artifacts is None and mlflow_uri.startswith("sqlite:///"):
        # beside the database, never MLflow's default of ./mlruns in the working directory
        database = Path(mlflow_uri.removeprefix("sqlite:///"))
        artifacts = (database.parent.resolve() / "mlartifacts").as_uri()
    return Storage(optuna_url, mlflow_uri, artifacts)


def _sqlite_pragmas(connection, _record) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer, nor it them
    cursor.execute("PRAGMA synchronous=NORMAL")  # no fsync per commit; safe with WAL
    cursor.close()


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """An Optuna RDB storage for many processes at once, a ``dagstudy.storage``
    ``RetryingRDBStorage``: processes opening an empty database at the same moment do not
    trip over each other creating its schema. SQLite (one machine only) runs in WAL mode and
    waits up to 60 s for a lock, which makes a trial's per-epoch report about 3x cheaper and
    lets queries read while trials write; it retries nothing else. Other databases ping pooled
    connections before use and ride out a restart of the database server (retrying lost
    connections for up to ``DAGSTUDY_STORAGE_RETRY_SECONDS``, default 120 s, per outage)."""
    from dagstudy.storage import RetryingRDBStorage

    if not url.startswith("sqlite"):
        return RetryingRDBStorage(url, engine_kwargs={"pool_pre_ping": True})
    storage = RetryingRDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}},
                                 retry_seconds=0)
    sqlalchemy.event.listen(storage.engine, "connect", _sqlite_pragmas)
    storage.engine.dispose()  # pooled connections reconnect with the pragmas
    return storage
