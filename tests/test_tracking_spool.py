"""MLflow outages: records spooled under the run directory, uploaded when MLflow is back.

A real ``mlflow server`` on 127.0.0.1 is stopped while a study runs (``dagstudy run`` in a
subprocess) and started again; ``dagstudy sync`` then leaves MLflow with exactly one run per
finished trial and all its metrics. The tracker's own reconnect-and-flush path is tested against
a local store whose client fails on purpose.
"""

import copy
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import optuna
import pytest
import yaml
from local_stack_util import free_port, mlflow_healthy
from mlflow.tracking import MlflowClient

from dagstudy.study.query import trials
from dagstudy.tracking.client import TrackingWarning
from dagstudy.tracking.records import TrialRecord
from dagstudy.tracking.spool import Spool
from dagstudy.tracking.tracker import Tracker

ROOT = Path(__file__).resolve().parents[1]
TrialState = optuna.trial.TrialState


class MlflowServer:
    """``mlflow server`` with a SQLite store in ``home``, on a fixed port, restartable."""

    def __init__(self, home: Path):
        self.home, self.port = home, free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        log = (self.home / "mlflow-server.log").open("a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1",
             "--port", str(self.port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{self.home / 'mlflow-server.db'}",
             "--artifacts-destination", str(self.home / "mlflow-artifacts")],
            stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + 120
        while not mlflow_healthy(self.uri):
            assert self.proc.poll() is None, (self.home / "mlflow-server.log").read_text()
            assert time.monotonic() < deadline, "mlflow server did not start"
            time.sleep(0.3)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None


@pytest.fixture
def mlflow_server(tmp_path):
    server = MlflowServer(tmp_path)
    server.start()
    yield server
    server.stop()


def study_file(tmp_path: Path, name: str) -> Path:
    data = copy.deepcopy(yaml.safe_load((ROOT / "studies" / "smoke.yaml").read_text()))
    data.update(name=name, epochs=6, seeds=2, budget={"trials": 6},
                search={"lr": {"low": 1e-3, "high": 3e-2}, "topology": ["dag"]},
                base={"depth": 3, "width": 32, "probe_size": 64},
                pruner={"name": "none"}, sampler={"name": "random", "seed": 0})
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def dagstudy(*args: str, env: dict, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dagstudy.cli", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_mlflow_down_mid_study_then_sync(tmp_path, mlflow_server):
    name = "outage"
    run_dir = tmp_path / "runs"
    env = {k: v for k, v in os.environ.items()
           if k not in ("DAGSTUDY_OPTUNA_STORAGE", "RAY_ADDRESS", "DAGSTUDY_HOME")}
    env["MLFLOW_TRACKING_URI"] = mlflow_server.uri
    url = f"sqlite:///{run_dir / 'optuna.db'}"
    driver = subprocess.Popen(
        [sys.executable, "-m", "dagstudy.cli", "run", str(study_file(tmp_path, name)),
         "--run-dir", str(run_dir), "--num-cpus", "2"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 150
        while True:  # stop MLflow once a trial is complete and others are still to come
            assert driver.poll() is None, driver.communicate()
            assert time.monotonic() < deadline, "no trial completed in time"
            if (run_dir / "optuna.db").exists():
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    try:
                        df = trials(name, storage=url)
                    except KeyError:
                        df = None
                if df is not None and (df.state == "COMPLETE").sum() >= 1:
                    break
            time.sleep(0.3)
        mlflow_server.stop()
        out, err = driver.communicate(timeout=240)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert driver.returncode == 0, err[-3000:]
    assert "TrackingWarning" in err and "dagstudy sync outage" in err

    study = optuna.load_study(study_name=name, storage=url)
    finished = [t for t in study.trials if t.state.is_finished()]
    assert len(finished) == 6 and all(t.state == TrialState.COMPLETE for t in finished)
    spool = Spool(run_dir / "spool" / name)
    assert len(spool) >= 2  # at least one trial record and the finish of the study

    left_down = dagstudy("sync", name, "--run-dir", str(run_dir), env=env)
    assert left_down.returncode == 1 and "still wait" in left_down.stderr

    mlflow_server.start()
    synced = dagstudy("sync", name, "--run-dir", str(run_dir), env=env)
    assert synced.returncode == 0, synced.stderr[-3000:]
    assert len(spool) == 0

    def snapshot() -> dict:
        client = MlflowClient(mlflow_server.uri)
        experiment = client.get_experiment_by_name(name)
        runs = [r for r in client.search_runs([experiment.experiment_id], max_results=1000)
                if r.data.tags.get("dagstudy.role") != "seed"]  # per-seed runs nest deeper
        (parent,) = [r for r in runs if r.data.tags.get("dagstudy.role") == "study"]
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")
                    == parent.info.run_id]
        assert len(children) == len(runs) - 1
        history = {r.info.run_id: len(client.get_metric_history(r.info.run_id, "val_accuracy"))
                   for r in children}
        return {"parent": parent, "children": children, "history": history}

    got = snapshot()
    assert got["parent"].info.status == "FINISHED"
    assert got["parent"].data.metrics["best_objective"] == pytest.approx(study.best_value)
    by_trial = {int(r.data.tags["dagstudy.trial"]): r for r in got["children"]}
    assert sorted(by_trial) == sorted(t.number for t in finished)  # one run per trial
    study = optuna.load_study(study_name=name, storage=url)
    ids = trials(name, storage=url).set_index("number").mlflow_run_id
    for trial in finished:
        run = by_trial[trial.number]
        assert run.info.status == "FINISHED"
        assert run.data.metrics["objective"] == pytest.approx(trial.value)
        assert run.data.metrics["final_val_accuracy_mean"] == pytest.approx(
            trial.user_attrs["mean"])
        assert got["history"][run.info.run_id] == 6  # every epoch
        assert ids[trial.number] == run.info.run_id  # the query layer links every run
    assert any("mlflow_run_id" not in t.user_attrs or t.user_attrs["mlflow_run_id"] is None
               for t in finished), "no trial was launched during the outage"

    again = dagstudy("sync", name, "--run-dir", str(run_dir), env=env)
    assert again.returncode == 0
    assert snapshot()["history"] == got["history"]  # idempotent: nothing logged twice


def record(number: int, epochs: int = 3) -> TrialRecord:
    rows = [{"epoch": e, "train_loss": [1.0 / e, 1.1 / e], "val_loss": [1.2 / e, 1.3 / e],
             "val_accuracy": [0.5 + 0.1 * e, 0.4 + 0.1 * e], "dead_fraction": [0.0, 0.1],
             "dead_by_block": [[0.0, 0.0], [0.1, 0.1]]} for e in range(1, epochs + 1)]
    return TrialRecord(number=number, state="COMPLETE",
                       config={"topology": "dag", "optimizer": "adam", "revival": "none",
                               "lr": 0.01},
                       params={"lr": 0.01}, seeds=[0, 1], rows=rows, result=None,
                       objective=0.75, reason=None, report_seconds=1.5)


def test_tracker_spools_while_failing_and_flushes_when_back(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    created = []
    tracker = Tracker(uri, "spooled", artifact_location=(tmp_path / "art").as_uri(),
                      spool=Spool(tmp_path / "spool"), retry_seconds=0.0,
                      on_run_created=lambda n, r: created.append((n, r)))
    assert created and created[0][0] is None  # the parent run
    first = tracker.start_trial(0, record(0).config, record(0).params)
    assert first is not None

    def down(*args, **kwargs):
        raise ConnectionError("tracking server went away")

    monkeypatch.setattr(MlflowClient, "log_batch", down)
    with pytest.warns(TrackingWarning, match="spooled under") as caught:
        tracker.end_trial(first, record(0))
        assert tracker.start_trial(1, record(1).config, {}) is None
        tracker.end_trial(None, record(1))
    assert len([w for w in caught if issubclass(w.category, TrackingWarning)]) == 1  # one outage
    assert [s.number for s in tracker.spool.trials()] == [0, 1]
    assert json.loads(tracker.spool.trials()[0].path.read_text())["run_id"] == first

    monkeypatch.undo()  # MLflow is back: the next record uploads the spool first
    tracker.end_trial(None, record(2))
    assert len(tracker.spool) == 0
    client = MlflowClient(uri)
    runs = client.search_runs([tracker.experiment_id], "tags.`dagstudy.role` = 'trial'")
    assert sorted(int(r.data.tags["dagstudy.trial"]) for r in runs) == [0, 1, 2]
    assert {n for n, _ in created[1:]} == {1, 2}  # created after the fact, linked
    for run in runs:
        assert len(client.get_metric_history(run.info.run_id, "val_accuracy")) == 3
        assert run.data.metrics["objective"] == 0.75
        assert run.info.status == "FINISHED"


def test_finish_while_down_is_spooled_and_synced(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(study_name="ending", storage=storage, direction="maximize")
    study.add_trial(optuna.trial.create_trial(value=0.8, params={}, distributions={}))
    tracker = Tracker(uri, "ending", spool=Spool(tmp_path / "spool"), retry_seconds=0.0)

    def down(*args, **kwargs):
        raise ConnectionError("tracking server went away")

    monkeypatch.setattr(MlflowClient, "set_terminated", down)
    with pytest.warns(TrackingWarning, match="dagstudy sync ending"):
        assert tracker.finish(study, None) == 1
    assert tracker.spool.finish_status() == "FINISHED"
    monkeypatch.undo()
    assert tracker.sync(study, None) == 0
    assert tracker.spool.finish_status() is None
    parent = MlflowClient(uri).get_run(tracker.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["best_objective"] == 0.8


def test_trial_run_is_tagged_with_every_idea_its_configuration_uses(tmp_path):
    """The ``dagstudy.ideas`` tag comes from the idea registry: OPT-JITTER and GRAD-FLOOR are
    named when a trial uses jitter and a gradient floor, beside its topology's idea."""
    from dagstudy.config import TrainConfig

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri, "ideas-tag", artifact_location=(tmp_path / "art").as_uri())
    config = TrainConfig(topology="layered", jitter_spread=0.1, grad_floor=0.01,
                         grad_floor_hysteresis=True).model_dump(mode="json")
    run_id = tracker.start_trial(0, config, {"lr": 0.001})
    tags = MlflowClient(uri).get_run(run_id).data.tags
    assert tags["dagstudy.ideas"].split(",") == ["OPT-JITTER", "GRAD-FLOOR"]
    plain = TrainConfig(topology="dag").model_dump(mode="json")
    tags = MlflowClient(uri).get_run(tracker.start_trial(1, plain, {})).data.tags
    assert tags["dagstudy.ideas"].split(",") == ["DAG-DENSE"]
