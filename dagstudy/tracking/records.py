"""What a finished trial leaves behind, shaped for MLflow.

``TrialRecord`` is what the driver knows of a finished trial (it is spooled as JSON);
``epoch_metrics`` / ``final_metrics`` turn it into MLflow metrics; ``config_params`` flattens
the fields a configuration uses into params (``flat_params`` any settings), ``config_hash``
names a configuration for grouping its per-seed runs; ``trial_run_id`` finds a trial's MLflow
run.

Test metrics (``test_*``) are never logged per epoch: only at the end of training, as final
metrics, so nothing invites selecting on the test set.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

import optuna
from mlflow.entities import Metric

from dagstudy.trainer import FINAL_METRICS


@dataclass(kw_only=True)
class TrialRecord:
    """What the driver knows about a finished trial.

    ``state``: ``COMPLETE``, ``PRUNED`` or ``FAIL``; ``rows``: the trainer's per-epoch rows
    (``on_epoch``); ``result``: ``TrialResult.to_dict()`` when training returned, else None;
    ``report_seconds``: the worker's time spent reporting to Optuna (None if it died);
    ``epoch_ms``: the wall-clock time (ms) each row's epoch ended, stamped by the worker (None:
    records from before it did, rebuilt by ``epoch_timestamps``).
    """

    number: int
    state: str
    config: dict[str, Any]
    params: dict[str, Any]
    seeds: list[int]
    rows: list[dict[str, Any]]
    result: dict[str, Any] | None
    objective: float | None
    reason: str | None
    report_seconds: float | None
    epoch_ms: list[int] | None = None


def flat_params(prefix: str, value: Any) -> dict[str, str]:
    """``value`` flattened to MLflow params (``a.b`` keys, lists as JSON); None values and
    empty dicts leave no param."""
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for k, v in value.items():
            out.update(flat_params(f"{prefix}.{k}" if prefix else str(k), v))
        return out
    if value is None:
        return {}
    return {prefix: json.dumps(value) if isinstance(value, (list, tuple)) else str(value)}


UNUSED_UNLESS = {"synthetic": ("dataset", "synthetic"), "fanin_wiring": ("topology", "fanin")}
"""Config fields that matter only when another field has a value: field -> (field, value)."""


def used_config(config: dict[str, Any]) -> dict[str, Any]:
    """The fields of a ``TrainConfig`` dict that this configuration uses: without None values
    and without ``UNUSED_UNLESS`` fields whose condition does not hold (a digits run has no
    ``synthetic.*``, a DAG no ``fanin_wiring``)."""
    return {k: v for k, v in config.items() if v is not None
            and (k not in UNUSED_UNLESS or config.get(UNUSED_UNLESS[k][0]) == UNUSED_UNLESS[k][1])}


def config_params(config: dict[str, Any]) -> dict[str, str]:
    """MLflow params of a ``TrainConfig`` dict: the fields it uses, flattened."""
    return flat_params("", used_config(config))


def config_hash(config: dict[str, Any]) -> str:
    """12 hex digits naming a configuration (its used fields): the ``dagstudy.config_hash`` tag
    shared by a trial's or arm's per-seed runs, so MLflow groups them."""
    text = json.dumps(used_config(config), sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def _is_seed_scalars(values: Any) -> bool:
    return isinstance(values, list) and all(v is None or isinstance(v, (int, float))
                                            for v in values)


def _finite(values: list) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def logged_per_epoch(name: str) -> bool:
    """Whether metric ``name`` is logged every epoch (test metrics only at the end)."""
    return name != "epoch" and not name.startswith("test_")


def epoch_timestamps(rows: list[dict[str, Any]], end_ms: int,
                     epoch_ms: list[int] | None = None) -> list[int]:
    """Wall-clock ms of each row's epoch: ``epoch_ms`` when the worker stamped every row (the
    times its live rows were logged at), else rebuilt from the trainer's elapsed ``seconds``
    and ``end_ms``, the time the results reached the driver (training ended by then): epoch
    ``e`` ended ``last seconds - seconds[e]`` before the last one. Increasing with the epoch,
    and never before training started; rows without ``seconds`` get ``end_ms``."""
    if epoch_ms and len(epoch_ms) == len(rows):
        return list(epoch_ms)
    def seconds(row: dict[str, Any]) -> float | None:
        values = _finite(row.get("seconds") or [])
        return max(values) if values else None

    last = seconds(rows[-1]) if rows else None
    out = []
    for row in rows:
        s = seconds(row)
        out.append(end_ms if s is None or last is None else end_ms - round((last - s) * 1000))
    return out


def training_start_ms(rows: list[dict[str, Any]], end_ms: int) -> int:
    """Wall-clock ms when training started: ``end_ms`` (when the last row's epoch ended, or
    later) less the trainer's last elapsed ``seconds`` (``end_ms`` itself when the rows have
    none)."""
    values = _finite(rows[-1].get("seconds") or []) if rows else []
    return end_ms - round(max(values) * 1000) if values else end_ms


def epoch_metrics(rows: list[dict[str, Any]], timestamps: list[int],
                  seed: int | None = None) -> list[Metric]:
    """Per-epoch metrics (step = epoch, at ``timestamps[i]`` for ``rows[i]``): each per-seed
    scalar as its mean over seeds, or with ``seed`` (an index into the seeds) that seed's
    value. Test metrics are left out (``logged_per_epoch``)."""
    out = []
    for row, timestamp in zip(rows, timestamps):
        step = int(row["epoch"])
        for name, values in row.items():
            if not logged_per_epoch(name) or not _is_seed_scalars(values):
                continue
            finite = _finite(values if seed is None else values[seed : seed + 1])
            if finite:
                out.append(Metric(name, sum(finite) / len(finite), timestamp, step))
    return out


def final_metrics(record: TrialRecord, timestamp: int) -> list[Metric]:
    values: dict[str, float | None] = {"objective": record.objective,
                                       "trial_report_seconds": record.report_seconds}
    if record.result is not None:
        for m in FINAL_METRICS:
            values[f"final_{m}_mean"] = record.result[m]["mean"]
            values[f"final_{m}_std"] = record.result[m]["std"]
        for key in ("params", "flops_per_example", "wall_seconds", "epochs"):
            values[f"trial_{key}"] = record.result[key]
    return [Metric(k, float(v), timestamp, 0) for k, v in values.items()
            if v is not None and math.isfinite(v)]


def rows_from_result(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The trainer's per-epoch rows (``on_epoch`` form) rebuilt from ``TrialResult`` curves."""
    curves = result.get("curves", {})
    epochs = max((len(c) for c in curves.values()), default=0)
    return [{"epoch": e + 1, **{k: c[e] for k, c in curves.items() if e < len(c)}}
            for e in range(epochs)]


def trial_run_id(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> str | None:
    """The trial's MLflow run id: set at launch, or (a run created after an MLflow outage) in
    the study's ``mlflow_run_ids`` user attribute, keyed by trial number."""
    return (trial.user_attrs.get("mlflow_run_id")
            or study.user_attrs.get("mlflow_run_ids", {}).get(str(trial.number)))
