"""The tracker's background mode (what a study's driver uses): the driver's calls return once
the record is spooled, whether MLflow answers, hangs or fails, and nothing is lost.

MLflow going down is simulated as in ``test_tracking_spool``: the local store's client calls
fail on purpose, here after hanging for ``HANG`` seconds (a server that times out).
"""

import time

import pytest
from mlflow.tracking import MlflowClient
from test_tracking_spool import record

from dagstudy.tracking.figures import FIGURE_NAMES, figure_title, trial_figures
from dagstudy.tracking.spool import Spool
from dagstudy.tracking.tracker import Tracker

HANG = 0.4  # seconds each failing MLflow call hangs before it fails
TRIALS = 6


def hanging_then_failing(*args, **kwargs):
    time.sleep(HANG)
    raise ConnectionError("tracking server timed out")


@pytest.mark.filterwarnings("ignore::dagstudy.tracking.client.TrackingWarning")
def test_driver_calls_do_not_wait_for_a_hanging_mlflow_and_nothing_is_lost(tmp_path,
                                                                            monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    created: dict[int | None, str] = {}
    tracker = Tracker(uri, "background", artifact_location=(tmp_path / "art").as_uri(),
                      spool=Spool(tmp_path / "spool"), retry_seconds=0.0, background=True,
                      queue_size=3, on_run_created=lambda n, r: created.update({n: r}))
    monkeypatch.setattr(MlflowClient, "log_batch", hanging_then_failing)
    monkeypatch.setattr(MlflowClient, "create_run", hanging_then_failing)
    latencies = []
    for number in range(TRIALS):  # the driver: launch (start_trial), then record (end_trial)
        rec = record(number)
        figures = trial_figures(rec.rows, rec.seeds, figure_title("background", number,
                                                                  rec.state))
        start = time.perf_counter()
        assert tracker.start_trial(number, rec.config, rec.params) is None
        tracker.end_trial(None, rec, figures)
        latencies.append(time.perf_counter() - start)
    # every MLflow call hangs HANG s: a driver that waited would take >= HANG per trial
    assert max(latencies) < HANG / 4, latencies
    assert sum(latencies[TRIALS // 2:]) < HANG, latencies  # and does not grow as work piles up
    assert len(tracker.spool) >= 1  # records wait write-ahead in the spool

    monkeypatch.undo()  # MLflow answers again: finish uploads everything that waits
    assert tracker.finish(_empty_study(), None) == 0
    assert len(tracker.spool) == 0
    client = MlflowClient(uri)
    runs = client.search_runs([tracker.experiment_id], "tags.`dagstudy.role` = 'trial'")
    assert sorted(int(r.data.tags["dagstudy.trial"]) for r in runs) == list(range(TRIALS))
    for run in runs:  # one run per trial, every metric, the worker's figures as artifacts
        assert len(client.get_metric_history(run.info.run_id, "val_accuracy")) == 3
        assert run.data.metrics["objective"] == 0.75
        assert run.info.status == "FINISHED"
        names = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert set(FIGURE_NAMES) <= names
        assert created[int(run.data.tags["dagstudy.trial"])] == run.info.run_id  # linked


def _empty_study():
    import optuna

    return optuna.create_study(direction="maximize")
