"""Faults on a Ray cluster on 127.0.0.1: a worker node removed mid-trial, two studies at once on
one SQLite run directory (the PostgreSQL twin and the helpers are in ``test_faults``; split
from it for the CI's two test workers, which take a file each)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import optuna
from ray.util.state import list_tasks
from test_faults import (
    assert_finished_budget,
    assert_separate,
    by_state,
    in_thread,
    joined,
    local_ray,
    run_pair,
    slow_trials,
    wait_until,
)

from dagstudy.study.driver import run_study
from dagstudy.study.loader import parse_spec
from dagstudy.study.storage import open_storage, storage_for

TrialState = optuna.trial.TrialState


def train_tasks(dashboard: str, **filters) -> list:
    return [t for t in list_tasks(address=dashboard, detail=True, raise_on_missing_output=False,
                                  filters=[(k, "=", v) for k, v in filters.items()])
            if t.name.endswith("train_pack")]


def executing_trial(pid: int) -> bool:
    """Whether Ray worker ``pid`` runs a trial now (not what the state API said a second ago):
    Ray titles a worker process by the task it executes."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::train_pack")
    except OSError:
        return False


def test_removed_worker_node_trials_run_again(cluster, tmp_path):
    nodes, workers = cluster
    dashboard = f"http://{nodes.webui_url}"
    spec = parse_spec(slow_trials("lost_node", trials=6, epochs=40))
    reader = open_storage(storage_for(spec, tmp_path).optuna)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SQLite on a "cluster": every node shares tmp_path
        thread, box = in_thread(lambda: run_study(spec, run_dir=tmp_path, address=nodes.address))

        def victim():  # a worker node running a trial far from its end, once one is COMPLETE
            states = by_state(reader, "lost_node")
            if not states.get(TrialState.COMPLETE) or any(
                    len(t.intermediate_values) > spec.epochs // 2
                    for t in states.get(TrialState.RUNNING, [])):
                return None
            ids = {w.node_id: w for w in workers}
            busy = [ids[t.node_id] for t in train_tasks(dashboard, state="RUNNING")
                    if t.node_id in ids and executing_trial(t.worker_pid)]
            return busy and (states, busy[0])

        before, node = wait_until(victim, 90, "a COMPLETE trial and a trial on a worker node")
        nodes.remove_node(node, allow_graceful=False)
        study = joined(thread, box, 120)

    assert_finished_budget(study, 6)
    trials = study.trials
    for t in before[TrialState.COMPLETE]:
        assert trials[t.number].state == TrialState.COMPLETE
        assert trials[t.number].value == t.value
    interrupted = [trials[t.number] for t in before.get(TrialState.RUNNING, [])]
    assert interrupted
    assert [(t.state, t.user_attrs.get("failure_reason")) for t in interrupted] == [
        (TrialState.COMPLETE, None)] * len(interrupted)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 6
    retried = [t for t in train_tasks(dashboard) if t.attempt_number > 0]
    assert retried and {t.state for t in retried} == {"FINISHED"}
    assert {t.node_id for t in retried} == {workers[1 - workers.index(node)].node_id}


def test_two_studies_at_once_on_sqlite(loopback_ray, tmp_path):
    names = {"pair_narrow": 8, "pair_wide": 16}
    storage = storage_for(None, tmp_path / "runs")
    # Both drivers create the fresh run directory's Optuna and MLflow databases at once.
    with local_ray() as address:
        run_pair(tmp_path, dict(os.environ), address, names)
    assert_separate(storage.optuna, storage.mlflow, names)
