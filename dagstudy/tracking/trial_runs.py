"""A study trial's MLflow child run: created at launch, fed live epochs, completed at the end.

Functions of an MLflow client and the study's place in it (experiment id, the study's parent
run); the ``Tracker`` decides when each is called (now, on its background thread, or from the
spool after an outage). Every call is idempotent: a run is found by its tags before one is
created, and metric points, params, tags and artifacts can be logged twice.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from dagstudy.ideas import ideas_touched
from dagstudy.tracking.figures import figure_title, trial_figures
from dagstudy.tracking.records import (
    TrialRecord,
    config_hash,
    config_params,
    epoch_metrics,
    epoch_timestamps,
    final_metrics,
    training_start_ms,
)
from dagstudy.tracking.seeds import log_batch, log_seed_runs


@dataclass(frozen=True)
class StudyRuns:
    """Where a study's trial runs go: ``experiment_id``, under ``parent_run_id`` (the study's
    run), tagged with the ``study`` name."""

    client: MlflowClient
    experiment_id: str
    parent_run_id: str
    study: str

    def create(self, number: int, config: dict[str, Any], params: dict[str, Any]) -> str:
        """A new RUNNING child run for trial ``number`` (tags: study, trial, idea IDs touched,
        sampled param names, ``dagstudy.config_hash``; params: the used config fields)."""
        tags = {"mlflow.parentRunId": self.parent_run_id, "dagstudy.study": self.study,
                "dagstudy.trial": number, "dagstudy.role": "trial",
                "dagstudy.ideas": ",".join(ideas_touched(config)),
                "dagstudy.sampled": ",".join(params), "dagstudy.config_hash": config_hash(config)}
        run = self.client.create_run(self.experiment_id, run_name=f"trial-{number:04d}",
                                     tags={k: str(v) for k, v in tags.items()})
        log_batch(self.client, run.info.run_id, params=config_params(config))
        return run.info.run_id

    def find(self, number: int) -> str | None:
        """The child run of trial ``number``, if one was created before (its creation may have
        succeeded although the call that made it failed)."""
        runs = self.client.search_runs(
            [self.experiment_id], max_results=1,
            filter_string=(f"tags.`mlflow.parentRunId` = '{self.parent_run_id}' "
                           f"and tags.`dagstudy.trial` = '{number}'"))
        return runs[0].info.run_id if runs else None

    def log_epochs(self, run_id: str, rows: list[dict[str, Any]], epoch_ms: list[int]) -> None:
        """Live rows of a running trial: each per-seed scalar's mean, step = epoch, at the time
        (ms) the worker stamped (the same points the final upload logs)."""
        log_batch(self.client, run_id, metrics=epoch_metrics(rows, epoch_ms))

    def upload(self, run_id: str | None, record: TrialRecord, timestamp: int,
               figures: dict[str, bytes]) -> str:
        """Log a finished trial and end its run (``run_id`` None: found or created now);
        returns the run id. Per-epoch metrics at ``record.epoch_ms`` (else rebuilt from
        ``timestamp``, when the driver got the outcome), final metrics at ``timestamp``, one
        child run per seed, ``config.json``, ``results.json`` and ``figures`` (the worker's
        PNGs by file name; rendered here when empty and the trial has rows)."""
        client = self.client
        if run_id is None:
            run_id = self.find(record.number) or self.create(record.number, record.config,
                                                             record.params)
        timestamps = epoch_timestamps(record.rows, timestamp, record.epoch_ms)
        metrics = epoch_metrics(record.rows, timestamps) + final_metrics(record, timestamp)
        tags = {"dagstudy.state": record.state}
        if record.reason:
            tags["failure_reason"] = record.reason
        log_batch(client, run_id, metrics=metrics, params=config_params(record.config),
                  tags=tags)
        status = {"COMPLETE": "FINISHED", "PRUNED": "KILLED"}.get(record.state, "FAILED")
        if record.seeds and (record.rows or record.result is not None):
            last = timestamps[-1] if timestamps else timestamp
            log_seed_runs(client, self.experiment_id, run_id,
                          name=f"trial-{record.number:04d}", config=record.config,
                          seeds=record.seeds, rows=record.rows, timestamps=timestamps,
                          result=record.result, start_ms=training_start_ms(record.rows, last),
                          end_ms=timestamp, status=status,
                          tags={"dagstudy.study": self.study, "dagstudy.trial": record.number})
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            config = {"config": record.config, "params": record.params, "seeds": record.seeds}
            (out / "config.json").write_text(json.dumps(config, indent=2))
            results = record.result if record.result is not None else {"rows": record.rows}
            (out / "results.json").write_text(json.dumps(results))
            if not figures:
                figures = trial_figures(record.rows, record.seeds,
                                        figure_title(self.study, record.number, record.state))
            for name, data in figures.items():
                (out / name).write_bytes(data)
            client.log_artifacts(run_id, tmp)
        client.set_terminated(run_id, status=status)
        return run_id
