"""A confirmation's MLflow records: one child run per arm under the confirmation's parent run,
one child run per seed under each arm, the verdicts on the parent, the report as the parent's
artifacts, and ``confirmation.json`` read back for ``dagstudy report``.

An arm's run is created when its training is launched (``start_arm``, status RUNNING) and
completed when its result comes back (``end_arm``): per-epoch metrics (mean over seeds, step =
epoch) at the wall-clock time each epoch ended (``records.epoch_timestamps``), so the run's
start precedes its first metric and timestamps increase with the epoch, final metrics
(``final_<metric>_mean``, test metrics only here), ``results.json``, and one child run per seed
(``tracking.seeds``). The trainer stays free of MLflow: the driver logs what the trainer's
result records (its per-epoch elapsed ``seconds``).

The parent run (``log_verdicts``) gets per idea the metrics ``<IDEA>.diff``, ``.ci_low``,
``.ci_high``, ``.p``, ``.p_adjusted``, ``.d_z`` and the tag ``<IDEA>.verdict``, so verdicts can
be sorted and searched in MLflow, and the verdict table as an MLflow table artifact
(``verdicts_table.json``).
"""

from __future__ import annotations

import functools
import math
import time
import warnings
from pathlib import Path
from typing import Any

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from dagstudy.tracking.client import TrackingWarning
from dagstudy.tracking.records import (
    config_hash,
    config_params,
    epoch_metrics,
    epoch_timestamps,
    rows_from_result,
    training_start_ms,
)
from dagstudy.tracking.seeds import log_seed_runs
from dagstudy.tracking.tracker import Tracker
from dagstudy.trainer import FINAL_METRICS

VERDICT_METRICS = ("diff", "ci_low", "ci_high", "p", "p_adjusted", "d_z")
"""The per-idea metrics of a confirmation's parent run, logged as ``<IDEA>.<name>``."""


def _guarded(method):
    """For the confirmation's records: nothing without a parent run; an error warns."""
    @functools.wraps(method)
    def wrapper(self: Tracker, *args, **kwargs):
        if self.parent_run_id is None:
            return None
        try:
            return method(self, *args, **kwargs)
        except Exception as e:  # tracking must never fail a trial
            warnings.warn(f"MLflow {method.__name__} failed, the study goes on: "
                          f"{type(e).__name__}: {e}", TrackingWarning, stacklevel=2)
            return None

    return wrapper


def _now_ms() -> int:
    return int(time.time() * 1000)


@_guarded
def start_arm(tracker: Tracker, idea: str, arm: str, config: dict[str, Any],
              seeds: list[int]) -> str:
    """Create one arm's run (RUNNING) under the parent run as its training is launched: tags
    idea, arm, seeds, ``dagstudy.config_hash``; params the configuration's used fields."""
    tags = {"mlflow.parentRunId": tracker.parent_run_id, "dagstudy.idea": idea,
            "dagstudy.arm": arm, "dagstudy.seeds": ",".join(map(str, seeds)),
            "dagstudy.role": "arm", "dagstudy.config_hash": config_hash(config)}
    run = tracker.client.create_run(tracker.experiment_id, run_name=f"{idea}/{arm}",
                                    start_time=_now_ms(), tags=tags)
    tracker.log_batch(run.info.run_id, params=config_params(config))
    return run.info.run_id


@_guarded
def log_arm_epochs(tracker: Tracker, run_id: str, rows: list[dict[str, Any]],
                   epoch_ms: list[int]) -> None:
    """Live per-epoch rows of a running arm (each per-seed scalar's mean, step = epoch, at
    ``epoch_ms``, when each epoch ended): the points ``end_arm`` logs again at the same times."""
    tracker.log_batch(run_id, metrics=epoch_metrics(rows, epoch_ms))


@_guarded
def end_arm(tracker: Tracker, run_id: str | None, idea: str, arm: str,
            result: dict[str, Any]) -> str:
    """Complete an arm's run (``run_id`` None: create it now) with its per-epoch and final
    metrics, ``results.json`` and one child run per seed; returns the run id."""
    end = _now_ms()
    if run_id is None:
        run_id = start_arm.__wrapped__(tracker, idea, arm, result["config"], result["seeds"])
    client = tracker.client
    rows = rows_from_result(result)
    timestamps = epoch_timestamps(rows, end, result.get("epoch_ms"))
    metrics = epoch_metrics(rows, timestamps)
    for name in FINAL_METRICS:
        mean = result.get(name, {}).get("mean")
        if mean is not None and math.isfinite(mean):
            metrics.append(Metric(f"final_{name}_mean", mean, end, 0))
    tracker.log_batch(run_id, metrics=metrics)
    client.log_dict(run_id, result, "results.json")
    failed = any(st != "ok" for st in result.get("status", []))
    status = "FAILED" if failed else "FINISHED"
    log_seed_runs(client, tracker.experiment_id, run_id, name=f"{idea}/{arm}",
                  config=result["config"], seeds=result["seeds"], rows=rows,
                  timestamps=timestamps, result=result,
                  start_ms=training_start_ms(rows, timestamps[-1] if timestamps else end),
                  end_ms=end, status="FINISHED",
                  tags={"dagstudy.idea": idea, "dagstudy.arm": arm})
    if failed:
        client.set_tag(run_id, "failure_reason", "; ".join(r for r in result["reasons"] if r))
    client.set_terminated(run_id, status=status, end_time=end)
    return run_id


@_guarded
def log_verdicts(tracker: Tracker, rows: list[dict[str, Any]]) -> None:
    """Per idea, ``VERDICT_METRICS`` as ``<IDEA>.<name>`` metrics and ``<IDEA>.verdict`` and
    ``<IDEA>.source`` (built-in or user-defined) tags on the parent run, and the rows as the
    table artifact ``verdicts_table.json``."""
    now = _now_ms()
    metrics = [Metric(f"{r['idea']}.{name}", float(r[name]), now, 0)
               for r in rows for name in VERDICT_METRICS
               if r.get(name) is not None and math.isfinite(r[name])]
    tags = {f"{r['idea']}.verdict": r["verdict"] for r in rows}
    tags.update({f"{r['idea']}.source": r["source"] for r in rows if "source" in r})
    tracker.log_batch(tracker.parent_run_id, metrics=metrics, tags=tags)
    columns = ("idea", "metric", "verdict", "control_mean", "treatment_mean", *VERDICT_METRICS,
               "seeds")
    table = {c: [r.get(c) for r in rows] for c in columns}
    tracker.client.log_table(tracker.parent_run_id, data=table,
                             artifact_file="verdicts_table.json")


@_guarded
def log_report(tracker: Tracker, out_dir: Path) -> None:
    """The report directory (and ``confirmation.json``) into the parent run, which ends."""
    tracker.client.log_artifacts(tracker.parent_run_id, str(out_dir))
    tracker.client.set_terminated(tracker.parent_run_id, status="FINISHED")


def download_confirmation(tracking_uri: str, run_id: str, dst: Path) -> Path:
    """``confirmation.json`` of a confirmation's parent run, fetched from MLflow into ``dst``."""
    client = MlflowClient(tracking_uri)
    return Path(client.download_artifacts(run_id, "confirmation.json", str(dst)))
