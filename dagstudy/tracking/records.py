"""What a finished trial leaves behind, shaped for MLflow.

``TrialRecord`` is what the driver knows of a finished trial (it is spooled as JSON);
``epoch_metrics`` / ``final_metrics`` turn it into MLflow metrics; ``flat_params`` flattens a
configuration into params; ``ideas_touched`` names the IDEAS.md ideas a configuration
exercises (from the registry ``dagstudy.ideas``); ``trial_run_id`` finds a trial's MLflow run.
"""

from __future__ import annotations

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
    ``report_seconds``: the worker's time spent reporting to Optuna (None if it died).
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


def flat_params(prefix: str, value: Any) -> dict[str, str]:
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for k, v in value.items():
            out.update(flat_params(f"{prefix}.{k}" if prefix else str(k), v))
        return out
    return {prefix: json.dumps(value) if isinstance(value, (list, tuple)) else str(value)}


def _is_seed_scalars(values: Any) -> bool:
    return isinstance(values, list) and all(v is None or isinstance(v, (int, float))
                                            for v in values)


def _finite(values: list) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def epoch_metrics(rows: list[dict[str, Any]], seeds: list[int], timestamp: int) -> list[Metric]:
    """Per-epoch metrics: each per-seed scalar as its mean and per seed, step = epoch."""
    out = []
    for row in rows:
        step = int(row["epoch"])
        for name, values in row.items():
            if name == "epoch" or not _is_seed_scalars(values):
                continue
            finite = _finite(values)
            if finite:
                out.append(Metric(name, sum(finite) / len(finite), timestamp, step))
            out.extend(Metric(f"{name}/seed_{s}", float(v), timestamp, step)
                       for s, v in zip(seeds, values) if v is not None and math.isfinite(v))
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
