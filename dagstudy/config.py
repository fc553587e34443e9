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

from dagstudy.data.raw import DataError
from dagstudy.data.sources import SyntheticSpec, parse_dataset
from dagstudy.model.topology import FANIN_WIRINGS, READOUTS, TOPOLOGIES
from dagstudy.optim import VARIANTS, ignores_lr
from dagstudy.revival import POLICIES

LOSSES = ("ce", "mse")


def _choice(value: str, allowed) -> str:
    if value not in allowed:
        raise ValueError(f"unknown {value!r} (allowed: {', '.join(allowed)})")
    return value


CHOICES = {
    "topology": TOPOLOGIES,
    "fanin_wiring": FANIN_WIRINGS,
    "readout": READOUTS,
    "loss": LOSSES,
    "optimizer": tuple(VARIANTS),
    "revival": tuple(POLICIES),
}


class StrictModel(BaseModel):
    """A pydantic model that rejects unknown fields and infinite or NaN numbers (every spec and
    config model is one)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


NAME_MAX = 100
"""Longest study or confirmation name: it names an MLflow experiment (500 characters at most)
and a spool directory (255 bytes per path component on Linux)."""


def check_name(value: str) -> str:
    """A study or confirmation name: 1..NAME_MAX of ``A-Z a-z 0-9 _ . -``, not only dots (a
    name is a directory under the run directory)."""
    if not 1 <= len(value) <= NAME_MAX:
        raise ValueError(f"must be 1 to {NAME_MAX} characters (got {len(value)})")
    if not all(c.isascii() and (c.isalnum() or c in "_.-") for c in value):
        raise ValueError("allowed characters: letters, digits, '_', '.', '-'")
    if set(value) == {"."}:
        raise ValueError(f"{value!r} is not a usable name (it is a directory reference)")
    return value


class TrainConfig(StrictModel):
    """One trainer configuration. Units: ``lr`` per optimizer step; ``epochs`` = passes."""

    # --- data -----------------------------------------------------------------------------------
    dataset: str = Field("digits", description="dataset: digits, mnist, fashion-mnist, "
                         "synthetic, sklearn:NAME, openml:NAME_OR_ID, a .npz/.csv/.parquet file "
                         "or a directory of IDX files (see dagstudy.data.sources)")
    data_dir: str | None = Field(
        None, description="directory of the dataset's files (mnist, fashion-mnist: the IDX "
        "files, default $DAGSTUDY_HOME/data/NAME or ~/.cache/dagstudy/NAME; openml: the cache)")
    label_column: str | None = Field(
        None, description="a .csv/.parquet dataset's label column (default: the last column)")
    synthetic: SyntheticSpec = Field(
        SyntheticSpec(), description="the synthetic dataset's parameters (JSON object: n_samples, "
        "d, order, n_classes, noise, seed)")
    split: Literal["per-seed", "fixed"] = Field(
        "per-seed", description="per-seed: seed s draws its own train/val/test split; fixed: "
        "every seed uses the first seed's split")
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0,
                                description="fraction of the rows held out for validation")
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0,
                                 description="fraction of the rows held out for test (ignored "
                                 "where the dataset has a fixed test set)")

    # --- network (DAG-DENSE, DAG-DEPTH, DAG-FANIN: dagstudy/model/topology.py) ---------------
    topology: str = Field("dag", description="how hidden blocks read earlier nodes")
    depth: int = Field(4, ge=1, le=256, description="hidden blocks")
    width: int = Field(32, ge=1, le=65536, description="ReLU nodes per hidden block")
    fanin: int | None = Field(None, ge=1, description="prior nodes each node reads (topology "
                              "fanin; required there)")
    fanin_wiring: str = Field("random", description="which N prior nodes a fanin node reads")
    readout: str = Field("auto", description="what the output layer reads (auto: every hidden "
                         "node for dag/fanin, the last block otherwise)")
    bias_init: float = Field(0.0, description="initial bias of every hidden node (negative "
                             "values kill neurons at init)")
    init_scale: float = Field(1.0, gt=0.0, le=10.0, description="every initial weight (hidden "
                              "and readout) times this; GRAD-FLOOR's planted setting: 0.01")
    init_duplicates: float = Field(
        0.0, ge=0.0, le=0.5, description="fraction of each hidden block's nodes that start as "
        "exact copies (incoming, bias, outgoing) of others of the block; OPT-JITTER's planted "
        "setting; dense topologies only")

    # --- training ---------------------------------------------------------------------------
    loss: str = Field("ce", description="training loss (ce: cross-entropy; mse: squared error "
                      "on one-hot targets)")
    optimizer: str = Field("adam", description="optimizer variant (dagstudy/optim)")
    lr: float = Field(1e-3, gt=0.0, description="learning rate: step size per optimizer step")
    optimizer_params: dict[str, Any] = Field(
        {}, description="the variant's own hyperparameters (JSON object; see its Params)")
    batch_size: int = Field(64, ge=1, description="training rows per minibatch (per seed)")
    epochs: int = Field(30, ge=1, description="passes over the training split")
    revival: str = Field("none", description="dead-neuron revival policy (dagstudy/revival)")
    revival_params: dict[str, Any] = Field(
        {}, description="the policy's own hyperparameters (JSON object; see its Params)")

    divergence_loss: float = Field(1e4, gt=0.0, description="a seed whose training loss "
                                   "exceeds this (nats) is ended as diverged")
    probe_size: int = Field(512, ge=1, description="training rows per seed used for the "
                            "per-epoch gradient-reach diagnostic")
    chunk_size: int = Field(4096, ge=1, description="rows per chunk when a full-batch pass "
                            "accumulates its gradient (memory vs speed; results equal)")

    # --- optimizer ideas usable with every optimizer (IDEAS.md) -------------------------------
    jitter_spread: float = Field(
        0.0, ge=0.0, lt=1.0, description="OPT-JITTER: neuron i's update is scaled by "
        "1 + spread * u_i, u evenly spaced in [-1, 1] (0: off)")
    grad_floor: float = Field(
        0.0, ge=0.0, description="GRAD-FLOOR: in the backward only, |weights| and |inputs| "
        "below this count as +-floor (0: off)")
    grad_floor_hysteresis: bool = Field(
        False, description="GRAD-FLOOR: floor only where it moves a weight the way its last "
        "update did")
    stuck_threshold: float = Field(
        0.01, gt=0.0, description="the stuck_fraction diagnostic counts weights with |w| below "
        "this (keep it equal across arms)")
    stop_ratio: float = Field(
        0.05, gt=0.0, description="OPT-STOP: the rule fires when the last layer's pass gradient "
        "/ the first pass's stays below this for stop_patience passes")
    stop_patience: int = Field(3, ge=1, description="OPT-STOP: passes the ratio must stay low")
    stop_on_ratio: bool = Field(False, description="OPT-STOP: end each seed when the rule fires "
                                "(else it is only recorded)")
    overfit_gap: float = Field(
        0.5, gt=0.0, lt=1.0, description="overfit flag: the stop ratio is low and "
        "(val_loss - train_loss) / val_loss exceeds this")

    @field_validator(*CHOICES)
    @classmethod
    def _check_choice(cls, value: str, info: ValidationInfo) -> str:
        return _choice(value, CHOICES[info.field_name])

    @field_validator("dataset")
    @classmethod
    def _check_dataset(cls, value: str) -> str:
        try:
            parse_dataset(value)
        except DataError as e:
            raise ValueError(str(e).removeprefix("dataset=")) from None
        return value

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.topology == "fanin" and self.fanin is None:
            raise ValueError("fanin: required (>= 1) when topology is 'fanin'")
        if self.init_duplicates > 0 and self.topology == "fanin":
            raise ValueError("init_duplicates: needs a dense topology (layered, residual, "
                             "residual-norm, dag); a fanin node's mask is its own")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError("val_fraction + test_fraction: must be < 1")
        default_lr = TrainConfig.model_fields["lr"].default
        if self.lr != default_lr and ignores_lr(self.optimizer):
            own = ", ".join(VARIANTS[self.optimizer].Params.model_fields)
            raise ValueError(f"lr: {self.optimizer} ignores lr (its step is 1/L); leave lr at "
                             f"its default {default_lr:g} and set optimizer_params.<{own}>")
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
