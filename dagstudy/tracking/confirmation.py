"""A confirmation's MLflow records: one child run per arm under the confirmation's parent run,
the report as the parent's artifacts, and ``confirmation.json`` read back for ``dagstudy report``.
"""

from __future__ import annotations

import functools
import time
import warnings
from pathlib import Path
from typing import Any

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from dagstudy.tracking.client import TrackingWarning
from dagstudy.tracking.records import epoch_metrics, flat_params, rows_from_result
from dagstudy.tracking.tracker import Tracker
from dagstudy.trainer import FINAL_METRICS


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


@_guarded
def log_arm(tracker: Tracker, idea: str, arm: str, result: dict[str, Any]) -> str:
    """One confirmation arm as a child run of the confirmation's parent run, tagged with the
    idea ID, the arm and the seeds; metrics per epoch and final, ``results.json`` artifact."""
    client = tracker.client
    seeds = result["seeds"]
    tags = {"mlflow.parentRunId": tracker.parent_run_id, "dagstudy.idea": idea,
            "dagstudy.arm": arm, "dagstudy.seeds": ",".join(map(str, seeds)),
            "dagstudy.role": "arm"}
    run = client.create_run(tracker.experiment_id, run_name=f"{idea}/{arm}", tags=tags)
    run_id = run.info.run_id
    now = int(time.time() * 1000)
    metrics = epoch_metrics(rows_from_result(result), seeds, now)
    for name in FINAL_METRICS:
        s = result.get(name, {})
        if s.get("mean") is not None:
            metrics.append(Metric(f"final_{name}_mean", s["mean"], now, 0))
    tracker.log_batch(run_id, metrics=metrics, params=flat_params("", result["config"]))
    client.log_dict(run_id, result, "results.json")
    failed = any(st != "ok" for st in result.get("status", []))
    if failed:
        client.set_tag(run_id, "failure_reason", "; ".join(r for r in result["reasons"] if r))
    client.set_terminated(run_id, status="FAILED" if failed else "FINISHED")
    return run_id


@_guarded
def log_report(tracker: Tracker, out_dir: Path) -> None:
    """The report directory (and ``confirmation.json``) into the parent run, which ends."""
    tracker.client.log_artifacts(tracker.parent_run_id, str(out_dir))
    tracker.client.set_terminated(tracker.parent_run_id, status="FINISHED")


def download_confirmation(tracking_uri: str, run_id: str, dst: Path) -> Path:
    """``confirmation.json`` of a confirmation's parent run, fetched from MLflow into ``dst``."""
    client = MlflowClient(tracking_uri)
    return Path(client.download_artifacts(run_id, "confirmation.json", str(dst)))
