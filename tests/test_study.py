"""Studies end to end on one local Ray (2 CPUs, with its dashboard for Ray jobs) shared by the
module: run, pruning, failures, a worker crash, tracking failures, kill -9 + resume with queries
from this process while a study runs, and a Ray job submission."""

import copy
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import mlflow
import optuna
import pytest
import ray
import yaml
from mlflow.tracking import MlflowClient
from ray.util.state import list_tasks

from dagstudy.cli.browse import ui_command
from dagstudy.config import TrainConfig
from dagstudy.confirmation.plan import ArmJob
from dagstudy.ideas import ideas_touched
from dagstudy.study.cluster import job_submission, ray_runner, submit
from dagstudy.study.driver import run_study
from dagstudy.study.loader import load_spec, parse_spec
from dagstudy.study.loop import counted
from dagstudy.study.progress import Status, format_status
from dagstudy.study.query import best_configs, trials
from dagstudy.study.samplers import make_pruner
from dagstudy.study.storage import storage_for
from dagstudy.study.worker import _report
from dagstudy.tracking.client import TrackingWarning
from dagstudy.trainer import load_data, train

ROOT = Path(__file__).resolve().parents[1]
SMOKE = yaml.safe_load((ROOT / "studies" / "smoke.yaml").read_text())
TrialState = optuna.trial.TrialState
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)

pytestmark = pytest.mark.slow


def study_data(name: str, **changes) -> dict:
    data = copy.deepcopy(SMOKE)
    data.update(name=name, **changes)
    return data


def _free_agent_port(mp: pytest.MonkeyPatch) -> None:
    """Give the next local Ray's dashboard agent (which takes job submissions) a free port:
    ``ray.init`` has no argument for it and always asks for 52365, which another Ray on this
    machine (a parallel test worker's) may hold, leaving this one with no agent to submit to.
    ``ray start`` has ``--dashboard-agent-listen-port`` for the same reason."""
    from local_stack_util import free_port

    make = ray._private.parameter.RayParams
    mp.setattr(ray._private.parameter, "RayParams", lambda *args, **kwargs: make(
        *args, **{"dashboard_agent_listen_port": free_port(), **kwargs}))


@pytest.fixture(scope="module")
def cluster():
    """A local Ray for the module; the venv first on PATH so Ray jobs find its ``python``.

    Its own temp dir, so its session files and address file never mix with another Ray's on
    this machine (a parallel test worker's); a short path, as Ray's socket paths must fit in
    107 characters. Its job is submitted with its GCS address (``submit(ray_address=)``)."""
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    with pytest.MonkeyPatch.context() as mp:
        for var in ("DAGSTUDY_OPTUNA_STORAGE", "MLFLOW_TRACKING_URI", "DAGSTUDY_HOME",
                    "RAY_ADDRESS"):
            mp.delenv(var, raising=False)
        mp.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
        _free_agent_port(mp)
        ctx = ray.init(address="local", num_cpus=2, include_dashboard=True,
                       dashboard_host="127.0.0.1", dashboard_port=0, log_to_driver=False,
                       logging_level="WARNING", _temp_dir=temp_dir)
        yield {"gcs": ctx.address_info["gcs_address"], "dashboard": f"http://{ctx.dashboard_url}"}
        ray.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """One run directory (one Optuna and one MLflow database) for every study of the module."""
    return tmp_path_factory.mktemp("runs")


def child_runs(storage, study: str) -> tuple[object, list]:
    """The study's parent run and its child runs, found with ``mlflow.search_runs``."""
    mlflow.set_tracking_uri(storage.mlflow)
    try:
        runs = mlflow.search_runs(experiment_names=[study], output_format="list")
        runs = [r for r in runs if r.data.tags.get("dagstudy.role") != "seed"]  # one level down
    finally:
        mlflow.set_tracking_uri(None)  # it also set MLFLOW_TRACKING_URI for this process
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == len(runs) - 1
    return parent, children


def test_smoke_end_to_end(cluster, run_dir):
    spec = load_spec(ROOT / "studies" / "smoke.yaml")
    start = time.perf_counter()
    study = run_study(spec, run_dir=run_dir)
    assert time.perf_counter() - start < 120
    assert [t.state in FINISHED for t in study.trials] == [True] * spec.budget.trials
    assert any(t.state == TrialState.COMPLETE for t in study.trials)

    storage = storage_for(spec, run_dir)
    parent, children = child_runs(storage, "smoke")
    assert sorted(int(r.data.tags["dagstudy.trial"]) for r in children) == list(range(10))
    client = MlflowClient(storage.mlflow)
    for run in children:
        trial = study.trials[int(run.data.tags["dagstudy.trial"])]
        assert run.info.run_id == trial.user_attrs["mlflow_run_id"]
        assert run.data.tags["dagstudy.state"] == trial.state.name
        assert run.data.tags["dagstudy.study"] == "smoke"
        expected_ideas = {"dag": "DAG-DENSE", "fanin": "DAG-FANIN"}.get(trial.params["topology"])
        tagged = run.data.tags["dagstudy.ideas"]
        assert tagged == ",".join(ideas_touched(trial.user_attrs["config"]))  # the registry's
        assert expected_ideas is None or expected_ideas in tagged.split(",")
        epochs = len(trial.intermediate_values)
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")]
        assert steps == list(range(1, epochs + 1))
        assert "test_accuracy" not in run.data.metrics  # never per epoch, only final_*
        assert not any("/seed_" in m for m in run.data.metrics)  # seeds are child runs
        assert not any(k.startswith("synthetic") or v == "None" for k, v in run.data.params.items())
        seeds = client.search_runs([run.info.experiment_id], filter_string=(
            f"tags.`mlflow.parentRunId` = '{run.info.run_id}'"))
        assert sorted(int(r.data.params["seed"]) for r in seeds) == spec.seed_list
        assert {r.data.tags["dagstudy.config_hash"] for r in seeds} == {
            run.data.tags["dagstudy.config_hash"]}
        for seed_run in seeds:
            history = client.get_metric_history(seed_run.info.run_id, "train_loss")
            assert [m.step for m in history] == list(range(1, epochs + 1))
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"learning_curves.png", "dead_fraction.png", "config.json",
                "results.json"} <= artifacts
        if trial.state == TrialState.COMPLETE:
            assert run.info.status == "FINISHED" and epochs == spec.epochs
            assert run.data.metrics["objective"] == pytest.approx(trial.value)
    assert {"optimization_history.png", "param_importances.png", "study.json"} <= {
        a.path for a in client.list_artifacts(parent.info.run_id)}

    best = best_configs("smoke", storage=storage.optuna)
    assert best.number[0] == study.best_trial.number
    assert best.objective[0] == study.best_value
    assert best.mlflow_run_id[0] == study.best_trial.user_attrs["mlflow_run_id"]
    TrainConfig(**best.config[0])


def test_median_pruner_prunes_absurd_learning_rate(cluster, run_dir):
    data = study_data(
        "pruning", epochs=5, budget={"trials": 6}, max_concurrent=1,
        search={"lr": [1.0e-2, 1.0e-7]}, base={"topology": "dag", "depth": 2, "width": 16},
        sampler={"name": "random", "seed": 2},  # draws good, good, good, absurd, good, good
        pruner={"name": "median", "n_startup_trials": 2, "n_warmup_steps": 0})
    study = run_study(parse_spec(data), run_dir=run_dir)
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert pruned, [(t.state, t.params) for t in study.trials]
    assert all(t.params["lr"] == 1e-7 for t in pruned)
    assert all(max(t.intermediate_values) < 5 for t in pruned)
    assert all("pruned by the median pruner" in t.user_attrs["failure_reason"] for t in pruned)


def test_diverging_trial_fails_and_study_finishes(cluster, run_dir):
    data = study_data(
        "diverging", epochs=3, budget={"trials": 4}, search={"lr": [1.0e-2, 1.0e4]},
        base={"optimizer": "sgd", "depth": 2, "width": 16, "divergence_loss": 10.0},
        sampler={"name": "random", "seed": 0}, pruner={"name": "none"})
    spec = parse_spec(data)
    study = run_study(spec, run_dir=run_dir)
    assert len(study.trials) == 4 and all(t.state in FINISHED for t in study.trials)
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert failed and all(t.params["lr"] == 1e4 for t in failed)
    assert all(t.state == TrialState.COMPLETE for t in study.trials if t.params["lr"] == 1e-2)
    for t in failed:
        reason = t.user_attrs["failure_reason"]
        assert reason.startswith("seed 0: ")
        assert "non-finite" in reason or "> divergence_loss" in reason
    _, children = child_runs(storage_for(spec, run_dir), "diverging")
    failed_runs = [r for r in children if r.info.status == "FAILED"]
    assert len(failed_runs) == len(failed)
    assert all(r.data.tags["failure_reason"].startswith("seed 0: ") for r in failed_runs)


def test_raising_trials_fail_with_reason(cluster, run_dir, tmp_path):
    data = study_data("raising", budget={"trials": 2}, search={"lr": [1.0e-2]},
                      base={"data_dir": str(tmp_path / "missing")}, dataset="mnist")
    study = run_study(parse_spec(data), run_dir=run_dir)
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 2
    assert all(t.user_attrs["failure_reason"].startswith("DataError: ") for t in study.trials)


def test_tracking_failures_never_fail_trials(cluster, run_dir, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("artifact store is full")

    monkeypatch.setattr(MlflowClient, "log_artifacts", broken)
    data = study_data("untracked", budget={"trials": 2}, search={"lr": [1.0e-2]})
    with pytest.warns(TrackingWarning, match="artifact store is full"):
        study = run_study(parse_spec(data), run_dir=run_dir)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2, [
        (t.state, t.user_attrs.get("failure_reason")) for t in study.trials]


def test_worker_crash_is_retried_once(cluster, run_dir):
    data = study_data("crash", epochs=40, budget={"trials": 1}, search={"lr": [1.0e-3]},
                      base={"topology": "dag", "depth": 4, "width": 64},
                      pruner={"name": "none"})
    spec = parse_spec(data)
    box = {}
    driver = threading.Thread(target=lambda: box.update(study=run_study(spec, run_dir=run_dir)))
    driver.start()
    url = storage_for(spec, run_dir).optuna
    pid = None
    deadline = time.monotonic() + 60
    while pid is None and time.monotonic() < deadline:
        time.sleep(0.2)
        df = trials("crash", storage=url) if _exists("crash", url) else None
        if df is None or df.empty:
            continue
        running = list_tasks(address=cluster["dashboard"], filters=[("state", "=", "RUNNING")],
                             detail=True)
        tasks = [t for t in running if "train_pack" in t.name]
        trial = optuna.load_study(study_name="crash", storage=url).trials[0]
        if tasks and trial.intermediate_values:
            pid = tasks[0].worker_pid
    assert pid, "the trial never started"
    os.kill(pid, signal.SIGKILL)
    driver.join(timeout=120)
    assert not driver.is_alive()
    (trial,) = box["study"].trials
    assert trial.state == TrialState.COMPLETE, trial.user_attrs
    assert sorted(trial.intermediate_values) == list(range(1, 41))


def _exists(name: str, url: str) -> bool:
    return name in optuna.get_all_study_names(url)


def test_kill_driver_then_resume(cluster, run_dir, tmp_path):
    name = "resumable"
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(study_data(
        name, epochs=5, budget={"trials": 8}, search={"lr": {"low": 1e-3, "high": 3e-2}},
        base={"topology": "dag", "depth": 3, "width": 32}, pruner={"name": "none"},
        sampler={"name": "random", "seed": 0})))
    url = storage_for(parse_spec(yaml.safe_load(path.read_text())), run_dir).optuna
    cmd = [sys.executable, "-m", "dagstudy.cli"]
    where = ["--run-dir", str(run_dir), "--address", cluster["gcs"]]
    log_path = tmp_path / "run.log"
    complete_counts = []

    def poll():  # a second process (this one) queries the study while it runs
        df = trials(name, storage=url)
        complete_counts.append(int((df.state == "COMPLETE").sum()))
        return df

    with log_path.open("w") as log:
        driver = subprocess.Popen([*cmd, "run", str(path), *where], stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + 150
            while True:
                assert driver.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, "no trial completed in time"
                if _exists(name, url):
                    df = poll()
                    if complete_counts[-1] >= 2 and (df.state == "RUNNING").any():
                        break
                time.sleep(0.3)
        finally:
            driver.kill()  # SIGKILL: no cleanup at all
            driver.wait()
        done = df[df.state == "COMPLETE"]
        assert done.objective.notna().all() and done.val_accuracy_mean.notna().all()
        stale = trials(name, storage=url).query("state == 'RUNNING'").number.tolist()
        assert stale

        resumed = subprocess.Popen([*cmd, "resume", name, *where], stdout=log, stderr=log)
        try:
            while resumed.poll() is None:
                assert time.monotonic() < deadline + 150, "resume did not finish in time"
                poll()
                time.sleep(0.3)
        finally:
            if resumed.poll() is None:
                resumed.kill()
            resumed.wait()
    assert resumed.returncode == 0, log_path.read_text()
    poll()
    assert complete_counts == sorted(complete_counts)  # COMPLETE never decreased

    study = optuna.load_study(study_name=name, storage=url)
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers))
    assert counted(study) == 8
    assert not [t for t in study.trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    for number in stale:
        old = study.trials[number]
        assert old.state == TrialState.FAIL and old.user_attrs["failure_reason"] == "driver died"
        (rerun,) = [t for t in study.trials if t.user_attrs.get("requeued_from") == number]
        assert rerun.params == old.params and rerun.state == TrialState.COMPLETE

    _, children = child_runs(storage_for(None, run_dir), name)
    tags = [r.data.tags["dagstudy.trial"] for r in children]
    assert len(tags) == len(set(tags)) == len(study.trials)
    for run in children:
        if int(run.data.tags["dagstudy.trial"]) in stale:
            assert run.info.status == "FAILED"
            assert run.data.tags["failure_reason"] == "driver died"


class Reports:
    def __init__(self):
        self.values = {}

    def report(self, value, step):
        self.values[step] = value


@pytest.mark.parametrize("pruner, expected", [
    ("median", {2: 0.75}),                                      # epoch: mean over seeds
    ("wilcoxon", {2: 0.7, 3: 0.8}),                             # (epoch-1)*S + seed index
])
def test_epoch_reports(pruner, expected):
    spec = parse_spec(study_data("reports", pruner={"name": pruner}))
    trial = Reports()
    _report(trial, {"epoch": 2, "val_accuracy": [0.7, 0.8]}, spec.objective,
            spec.pruner.name == "wilcoxon")
    assert trial.values == pytest.approx(expected)
    assert type(make_pruner(spec.pruner, spec.epochs)).__name__.lower().startswith(pruner)


def test_progress_line():
    line = format_status(Status("smoke", 3, 1, 1, 2, 10, 0.95, 4, 75.0, 90.0))
    assert line == ("[smoke] 5/10 done: 3 complete, 1 pruned, 1 failed; 2 running; "
                    "best 0.95 (#4); elapsed 0:01:15, ETA 0:01:30")


def test_ui_command_binds_localhost(tmp_path):
    command = ui_command(storage_for(None, tmp_path), port=5055)
    assert command[1:4] == ["-m", "mlflow", "ui"]
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert command[command.index("--backend-store-uri") + 1] == f"sqlite:///{tmp_path}/mlflow.db"
    assert command[command.index("--port") + 1] == "5055"
    assert command[command.index("--workers") + 1] == "1"  # MLflow's default 4 take ~2.6 GB


def test_job_submission_runtime_env(tmp_path):
    kwargs = job_submission(ROOT / "studies" / "smoke.yaml", tmp_path, run_dir="/data/runs",
                            trials=3)
    assert kwargs["entrypoint"] == ("python -m dagstudy.cli run smoke.yaml "
                                    "--run-dir /data/runs --trials 3")
    env = kwargs["runtime_env"]
    assert env["working_dir"] == str(tmp_path) and (tmp_path / "smoke.yaml").exists()
    (package,) = env["py_modules"]
    assert Path(package) == ROOT / "dagstudy" and (Path(package) / "study" / "driver.py").exists()


def test_submit_to_local_cluster(cluster, run_dir, tmp_path):
    from ray.job_submission import JobStatus, JobSubmissionClient

    path = tmp_path / "submitted.yaml"
    path.write_text(yaml.safe_dump(study_data("submitted", epochs=1, budget={"trials": 2},
                                              search={"lr": [1.0e-2]})))
    # This machine may run another Ray (a parallel test worker's): name the job's cluster.
    job_id = submit(path, cluster["dashboard"], run_dir=str(run_dir), ray_address=cluster["gcs"])
    client = JobSubmissionClient(cluster["dashboard"])
    deadline = time.monotonic() + 180
    while (status := client.get_job_status(job_id)) not in {
            JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
        assert time.monotonic() < deadline, client.get_job_logs(job_id)
        time.sleep(1)
    logs = client.get_job_logs(job_id)
    assert status == JobStatus.SUCCEEDED, logs
    assert "study submitted: 2 complete" in logs
    study = optuna.load_study(study_name="submitted", storage=storage_for(None, run_dir).optuna)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2


def test_ray_runner_runs_confirm_jobs(cluster):
    config = TrainConfig(dataset="digits", depth=1, width=8, epochs=1, probe_size=64)
    jobs = [ArmJob("DAG-DENSE", arm, config.model_copy(update={"topology": topo}), (0, 1))
            for arm, topo in (("control", "layered"), ("treatment", "dag"))]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        results = dict((job.arm, result) for job, result in ray_runner()(jobs))
    assert set(results) == {"control", "treatment"}
    assert results["treatment"]["config"]["topology"] == "dag"
    assert results["control"]["seeds"] == [0, 1]


def test_ray_runner_streams_epochs_before_the_result(cluster, monkeypatch):
    """A confirmation's arms: per-epoch rows reach ``on_epochs`` while the arm trains, stamped
    with the same times as the result's ``epoch_ms``."""
    from dagstudy.study import cluster as cluster_module

    monkeypatch.setattr(cluster_module, "STREAM_SECONDS", 0.2)
    config = TrainConfig(dataset="digits", depth=3, width=16, epochs=60, batch_size=16,
                         probe_size=64)
    events: list[tuple[str, object]] = []
    jobs = [ArmJob("DAG-DENSE", "treatment", config, (0,))]
    for _job, result in ray_runner()(jobs, on_epochs=lambda job, rows, ms: events.append(
            ("epochs", ([r["epoch"] for r in rows], ms)))):
        events.append(("result", result))
    assert events[0][0] == "epochs" and events[-1][0] == "result"
    streamed = [e for kind, (epochs, ms) in events[:-1] for e in zip(epochs, ms)]
    result = events[-1][1]
    assert len(result["epoch_ms"]) == 60
    assert streamed == list(zip(range(1, len(streamed) + 1), result["epoch_ms"]))


def test_trial_curves_are_live_in_mlflow(cluster, run_dir, monkeypatch):
    """A trial's per-epoch rows reach its MLflow run while it trains (handed to the tracker
    before Optuna finished the trial), and the final upload logs the same points once."""
    from dagstudy.study import feed
    from dagstudy.tracking.tracker import Tracker

    monkeypatch.setattr(feed, "STREAM_SECONDS", 0.2)
    calls = []
    log_epochs = Tracker._log_epochs

    def spy(self, number, rows, epoch_ms):
        calls.append((number, self._run_ids.get(number), time.time()))
        log_epochs(self, number, rows, epoch_ms)

    monkeypatch.setattr(Tracker, "_log_epochs", spy)
    base = {**SMOKE["base"], "topology": "dag", "depth": 3, "width": 16, "batch_size": 16}
    spec = parse_spec(study_data("live", epochs=60, seeds=1, budget={"trials": 1},
                                 search={"lr": [1.0e-2]}, base=base))
    study = run_study(spec, run_dir=run_dir)
    (trial,) = study.trials
    assert trial.state == TrialState.COMPLETE
    run_id = trial.user_attrs["mlflow_run_id"]
    assert calls and all(number == 0 and rid == run_id for number, rid, _ in calls)
    assert calls[0][2] < trial.datetime_complete.timestamp()  # live: before the trial ended
    client = MlflowClient(storage_for(spec, run_dir).mlflow)
    history = client.get_metric_history(run_id, "val_accuracy")
    assert sorted(m.step for m in history) == list(range(1, 61))  # streamed + final: no dupes
    history.sort(key=lambda m: m.step)
    assert client.get_run(run_id).info.start_time <= history[0].timestamp
    assert all(a.timestamp <= b.timestamp for a, b in zip(history, history[1:]))


def test_run_json_prints_a_summary(cluster, run_dir, tmp_path, capsys):
    """``dagstudy run --json``: stdout is one JSON summary; progress stays on stderr."""
    import json

    from dagstudy.cli import main

    path = tmp_path / "jsoned.yaml"
    path.write_text(yaml.safe_dump(study_data("jsoned", epochs=1, budget={"trials": 2},
                                              search={"lr": [1.0e-2]})))
    assert main(["run", str(path), "--run-dir", str(run_dir), "--json"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["study"] == "jsoned" and summary["complete"] == 2
    assert summary["best"]["params"] == {"lr": 1.0e-2}
    assert summary["mlflow_runs_url"].startswith("http://127.0.0.1:5000/#/experiments/")
    assert "starting Ray" in captured.err and "first trial running" in captured.err


def test_packed_study_tells_each_trial_its_own_result_and_prunes_members_alone(cluster, run_dir):
    """8 trials in packs of 4 (one task each) with a pruner that stops the absurd rates: every
    complete trial's value is what its configuration earns trained alone, pruned ones stopped
    early, and each trial has its own MLflow run."""
    data = study_data(
        "packed", epochs=4, budget={"trials": 8}, max_concurrent=1, packing={"max": 4},
        search={"lr": {"low": 1e-7, "high": 0.3, "log": True},
                "optimizer": {"sgd": {"momentum": {"low": 0.0, "high": 0.95}}}},
        base={"topology": "dag", "depth": 2, "width": 16},
        sampler={"name": "random", "seed": 5},
        pruner={"name": "median", "n_startup_trials": 2, "n_warmup_steps": 1})
    spec = parse_spec(data)
    study = run_study(spec, run_dir=run_dir)
    assert len(study.trials) == 8 and all(t.state in FINISHED for t in study.trials)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert complete
    seeds = spec.seed_list
    for t in complete:
        config = TrainConfig(**t.user_attrs["config"])
        alone = train(config, seeds, load_data(config, seeds, "cpu"), "cpu")
        assert t.value == pytest.approx(spec.objective.score(alone.final[spec.objective.metric]),
                                        abs=1e-5), t.number
    for t in study.trials:
        if t.state == TrialState.PRUNED:
            assert max(t.intermediate_values) < 4
    _, children = child_runs(storage_for(spec, run_dir), "packed")
    assert len(children) == 8
