"""Fault soak: one study of 30 short trials on a multi-node Ray cluster while a trial's worker
process is killed, a worker node is removed, and the driver is killed (SIGKILL) and resumed.

At the end every trial number is unique, the budget is met exactly, nothing is left running or
waiting, and every COMPLETE trial has its MLflow run with its final and per-epoch metrics.
Bounded: under 3 minutes on 2 cores (each stage waits for progress with a deadline).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from test_faults import LIVE, wait_until

from dagstudy.study.loop import counted
from dagstudy.study.storage import storage_for
from dagstudy.tracking.records import trial_run_id

ROOT = Path(__file__).resolve().parents[1]
TrialState = optuna.trial.TrialState
BUDGET, EPOCHS = 30, 8


def soak_study() -> dict:
    return {"name": "soak", "dataset": "digits", "seeds": 1, "epochs": EPOCHS,
            "budget": {"trials": BUDGET},
            "search": {"lr": {"low": 1e-3, "high": 3e-2, "log": True}, "width": [8, 16]},
            "base": {"topology": "layered", "depth": 2, "probe_size": 64},
            "sampler": {"name": "random", "seed": 0}, "pruner": {"name": "none"},
            "resources": {"cpus": 1}, "max_concurrent": 2}


def trial_workers() -> list[int]:
    """Pids of Ray worker processes executing a trial now (Ray titles them by their task)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if cmdline.read_bytes().startswith(b"ray::train_pack"):
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return found


def complete(url: str) -> int:
    if "soak" not in optuna.get_all_study_names(url):
        return 0
    study = optuna.load_study(study_name="soak", storage=url)
    return sum(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False))


@pytest.mark.slow
def test_soak_worker_node_and_driver_faults_lose_no_trial(cluster, tmp_path, monkeypatch):
    nodes, workers = cluster
    monkeypatch.setenv("DAGSTUDY_LEASE_STALE_SECONDS", "3")
    path = tmp_path / "soak.yaml"
    path.write_text(yaml.safe_dump(soak_study()))
    run_dir = tmp_path / "runs"
    url = storage_for(None, run_dir).optuna
    command = [sys.executable, "-m", "dagstudy.cli", "{verb}", "{target}", "--run-dir",
               str(run_dir), "--address", nodes.address]

    def driver(verb: str, target: str) -> subprocess.Popen:
        args = [a.format(verb=verb, target=target) for a in command]
        return subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)

    start = time.monotonic()
    first = driver("run", str(path))
    faults = []
    wait_until(lambda: complete(url) >= 4 and trial_workers(), 90, "4 trials and a busy worker")
    os.kill(trial_workers()[0], signal.SIGKILL)
    faults.append("trial worker process killed")
    wait_until(lambda: complete(url) >= 10, 90, "10 complete trials")
    nodes.remove_node(workers[0], allow_graceful=False)
    workers[0] = nodes.add_node(num_cpus=1, node_ip_address="127.0.0.1")
    faults.append("worker node removed (and a fresh one added)")
    wait_until(lambda: complete(url) >= 16, 90, "16 complete trials")
    first.kill()
    first.wait(30)
    faults.append("driver killed (SIGKILL)")
    time.sleep(3.5)  # its lease goes stale
    resumed = driver("resume", "soak")
    out, err = resumed.communicate(timeout=150)
    assert resumed.returncode == 0, err[-3000:]
    assert time.monotonic() - start < 180

    study = optuna.load_study(study_name="soak", storage=url)
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers))
    assert counted(study) == BUDGET
    assert not [t.number for t in study.trials if t.state in LIVE]
    storage = storage_for(None, run_dir)
    client = MlflowClient(storage.mlflow)
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(done) >= BUDGET - 3  # the killed trials were re-queued and ran again
    for t in done:
        run = client.get_run(trial_run_id(study, t))
        assert run.info.status == "FINISHED"
        assert run.data.metrics["objective"] == pytest.approx(t.value)
        history = client.get_metric_history(run.info.run_id, "val_accuracy")
        assert sorted(m.step for m in history) == list(range(1, EPOCHS + 1))
    lost = BUDGET - counted(study)
    print(f"soak: {len(faults)} faults injected ({'; '.join(faults)}); trials lost: {lost}")
