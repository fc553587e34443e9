"""Per-seed MLflow runs: one nested child run per seed under a trial's or an arm's run.

Each seed run has the configuration's params plus ``seed``, the tag ``dagstudy.config_hash``
(equal for every seed of one configuration), the tag ``dagstudy.role = seed``, that seed's
per-epoch metrics under the plain names (``train_loss``, ``val_accuracy``, ..., test metrics
excepted) and its final metrics (``final_<metric>``). MLflow's runs table can then group by
``config_hash`` (or by any param) and show the mean and spread across seeds, and its charts
draw one line per seed. The parent run keeps the mean over seeds.

Logging is idempotent: the seed runs of a parent are found by tag before any is created, so an
upload retried after an MLflow failure ends with one run per seed.
"""

from __future__ import annotations

import math
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from dagstudy.tracking.records import config_hash, config_params, epoch_metrics
from dagstudy.trainer import FINAL_METRICS

_BATCH = {"metrics": 800, "params": 100, "tags": 100}
"""Per ``log_batch`` call: MLflow allows 1000 metrics, 100 params, 100 tags and 1000 in all."""


def log_batch(client: MlflowClient, run_id: str, metrics=(), params: dict | None = None,
              tags: dict | None = None) -> None:
    """``client.log_batch`` in as few calls as MLflow's per-call limits allow (metrics, params
    and tags share a call: one call for a typical trial); tag values as strings."""
    items = {"metrics": list(metrics),
             "params": [Param(k, v) for k, v in (params or {}).items()],
             "tags": [RunTag(k, str(v)) for k, v in (tags or {}).items()]}
    calls = max(-(-len(v) // _BATCH[k]) for k, v in items.items())
    for i in range(calls):
        client.log_batch(run_id, **{k: v[i * _BATCH[k] : (i + 1) * _BATCH[k]]
                                    for k, v in items.items()})


def _existing(client: MlflowClient, experiment_id: str, parent_run_id: str) -> dict[int, str]:
    runs = client.search_runs([experiment_id], max_results=1000, filter_string=(
        f"tags.`mlflow.parentRunId` = '{parent_run_id}' and tags.`dagstudy.role` = 'seed'"))
    return {int(r.data.tags["dagstudy.seed"]): r.info.run_id for r in runs}


def _final(result: dict[str, Any] | None, index: int, timestamp: int) -> list[Metric]:
    if result is None:
        return []
    out = []
    for name in FINAL_METRICS:
        value = result.get(name, {}).get("per_seed", [None] * (index + 1))[index]
        if value is not None and math.isfinite(value):
            out.append(Metric(f"final_{name}", float(value), timestamp, 0))
    return out


def log_seed_runs(client: MlflowClient, experiment_id: str, parent_run_id: str, *,
                  name: str, config: dict[str, Any], seeds: list[int],
                  rows: list[dict[str, Any]], timestamps: list[int],
                  result: dict[str, Any] | None, start_ms: int, end_ms: int, status: str,
                  tags: dict[str, Any]) -> dict[int, str]:
    """One finished child run per seed under ``parent_run_id`` (see the module docstring);
    ``rows``/``timestamps``: the per-epoch rows and their wall-clock ms; ``start_ms`` /
    ``end_ms``: when training started and ended (wall-clock ms); ``result``:
    ``TrialResult.to_dict()`` when training returned (final metrics, per-seed status);
    ``status``: the MLflow status of every seed unless its own result says it diverged;
    ``tags``: extra tags (study or idea). Returns run id per seed."""
    shared = {**tags, "mlflow.parentRunId": parent_run_id, "dagstudy.role": "seed",
              "dagstudy.config_hash": config_hash(config)}
    params = config_params(config)
    existing = _existing(client, experiment_id, parent_run_id)
    out = {}
    for index, seed in enumerate(seeds):
        run_id = existing.get(seed)
        if run_id is None:
            run_tags = {**shared, "dagstudy.seed": seed}
            run_id = client.create_run(experiment_id, start_time=start_ms,
                                       run_name=f"{name}/seed-{seed}",
                                       tags={k: str(v) for k, v in run_tags.items()}).info.run_id
        metrics = epoch_metrics(rows, timestamps, seed=index) + _final(result, index, end_ms)
        log_batch(client, run_id, metrics=metrics, params={**params, "seed": str(seed)})
        seed_status = status
        if result is not None and result.get("status", ["ok"] * len(seeds))[index] != "ok":
            seed_status = "FAILED"
            client.set_tag(run_id, "failure_reason", result["reasons"][index] or "diverged")
        client.set_terminated(run_id, status=seed_status, end_time=end_ms)
        out[seed] = run_id
    return out
