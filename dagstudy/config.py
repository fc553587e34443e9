"""``TrainConfig``: everything that defines one training run of a population, validated.

Errors are pydantic ``ValidationError``s; ``format_errors`` turns them into one line per problem
naming the field path and, where the field is a choice, the allowed values. Optimizer and revival
hyperparameters are validated by the chosen variant's / policy's own ``Params`` model, so the
registries are the one list of what exists.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from dagstudy.data import SyntheticSpec
from dagstudy.model.topology import FANIN_WIRINGS, READOUTS, TOPOLOGIES
from dagstudy.optim import VARIANTS
from dagstudy.revival import POLICIES

DATASET_NAMES = ("digits", "mnist", "synthetic")
LOSSES = ("ce", "mse")


def _choice(value: str, allowed) -> str:
    if value not in allowed:
        raise ValueError(f"unknown {value!r} (allowed: {', '.join(allowed)})")
    return value


CHOICES = {
    "dataset": DATASET_NAMES,
    "topology": TOPOLOGIES,
    "fanin_wiring": FANIN_WIRINGS,
    "readout": READOUTS,
    "loss": LOSSES,
    "optimizer": tuple(VARIANTS),
    "revival": tuple(POLICIES),
}


class TrainConfig(BaseModel):
    """One trainer configuration. Units: ``lr`` per optimizer step; ``epochs`` = passes."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = "digits"
    data_dir: str | None = None
    synthetic: SyntheticSpec = SyntheticSpec()
    split: Literal["per-seed", "fixed"] = "per-seed"
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0)

    topology: str = "dag"
    depth: int = Field(4, ge=1, le=256)
    width: int = Field(32, ge=1, le=65536)
    fanin: int | None = Field(None, ge=1)
    fanin_wiring: str = "random"
    readout: str = "auto"
    bias_init: float = 0.0

    loss: str = "ce"
    optimizer: str = "adam"
    lr: float = Field(1e-3, gt=0.0)
    optimizer_params: dict[str, Any] = {}
    batch_size: int = Field(64, ge=1)
    epochs: int = Field(30, ge=1)
    revival: str = "none"
    revival_params: dict[str, Any] = {}

    divergence_loss: float = Field(1e4, gt=0.0)
    probe_size: int = Field(512, ge=1)
    chunk_size: int = Field(4096, ge=1)

    # --- Optimizer ideas usable with every optimizer (dagstudy/optim, IDEAS.md) ---------------
    # OPT-JITTER: neuron i's update is scaled by 1 + spread * u_i, u evenly spaced in [-1, 1].
    jitter_spread: float = Field(0.0, ge=0.0, lt=1.0)
    # GRAD-FLOOR: in the backward only, |weights| and |inputs| below the floor count as +-floor;
    # hysteresis: only where that moves a weight the way its last update did. 0 = off.
    grad_floor: float = Field(0.0, ge=0.0)
    grad_floor_hysteresis: bool = False
    # stuck_fraction curve (every run): weights with |w| below this; keep it equal across arms.
    stuck_threshold: float = Field(0.01, gt=0.0)
    # OPT-STOP: the rule fires when the last layer's pass gradient / the first pass's stays below
    # stop_ratio for stop_patience passes (recorded always; ends the seed if stop_on_ratio).
    # Overfit flag: that ratio < stop_ratio and (val_loss - train_loss) / val_loss > overfit_gap.
    stop_ratio: float = Field(0.05, gt=0.0)
    stop_patience: int = Field(3, ge=1)
    stop_on_ratio: bool = False
    overfit_gap: float = Field(0.5, gt=0.0, lt=1.0)

    @field_validator(*CHOICES)
    @classmethod
    def _check_choice(cls, value: str, info: ValidationInfo) -> str:
        return _choice(value, CHOICES[info.field_name])

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.topology == "fanin" and self.fanin is None:
            raise ValueError("fanin: required (>= 1) when topology is 'fanin'")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError("val_fraction + test_fraction: must be < 1")
        self.optimizer_hp()
        self.revival_hp()
        return self

    def optimizer_hp(self) -> BaseModel:
        params = VARIANTS[self.optimizer].Params
        return _sub_params("optimizer_params", params, self.optimizer_params)

    def revival_hp(self) -> BaseModel:
        return _sub_params("revival_params", POLICIES[self.revival].Params, self.revival_params)


def _sub_params(field: str, model: type[BaseModel], values: dict[str, Any]) -> BaseModel:
    try:
        return model(**values)
    except ValidationError as e:
        raise ValueError(f"{field}: {format_errors(e)}") from None


def format_errors(error: ValidationError, prefix: str = "", flags: bool = False) -> str:
    """All problems on one line: ``field.path: message; ...``.

    Cross-field checks raise ``"field: message"`` themselves, so an error with no location
    keeps its own leading field name. ``flags=True`` renders fields as CLI flags (``--fanin``).
    """
    parts = []
    for err in error.errors():
        msg = err["msg"].removeprefix("Value error, ")
        loc = [str(p) for p in err["loc"]]
        if not loc and ": " in msg:
            head, msg = msg.split(": ", 1)
            loc = [head]
        path = ".".join([prefix, *loc] if prefix else loc)
        if flags and path:
            path = "--" + path.replace("_", "-")
        parts.append(f"{path}: {msg}" if path else msg)
    return "; ".join(parts)
