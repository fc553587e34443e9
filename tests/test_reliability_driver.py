"""One driver per study, one-line errors, a failing confirmation arm (the second half of
``test_reliability``: split for the CI's two test workers, which take a file each).

Each case was a failure of a new user's run; each is reproduced here with real processes:
``dagstudy`` subprocesses, a real local Ray, SQLite stores under ``tmp_path``.
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
import sqlalchemy
from test_reliability import ROOT, dagstudy, one_line_error, tiny, write

from dagstudy.confirmation.loader import load_spec as load_confirmation
from dagstudy.confirmation.plan import local_runner
from dagstudy.confirmation.run import confirm
from dagstudy.study.cluster import connect_ray, ray_runner
from dagstudy.study.lease import LeaseHeld, LeaseLost, acquire, release, renew
from dagstudy.study.progress import Status, format_status
from dagstudy.study.storage import storage_for

TrialState = optuna.trial.TrialState

# --- 5. one driver per study -----------------------------------------------------------------

def test_the_lease_refuses_a_second_driver_and_passes_on_when_stale(tmp_path):
    study = optuna.create_study(study_name="leased",
                                storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    first = acquire(study, stale_seconds=30)
    with pytest.raises(LeaseHeld, match=r"being run by another driver \(.*:\d+, since "):
        acquire(study, stale_seconds=30)
    first = renew(study, first)
    time.sleep(0.3)
    second = acquire(study, stale_seconds=0.2)  # first has been silent too long: taken over
    with pytest.raises(LeaseLost, match="took over"):
        renew(study, first)
    release(study, first)  # not its lease any more: nothing happens
    with pytest.raises(LeaseHeld):
        acquire(study, stale_seconds=30)
    release(study, second)
    release(study, acquire(study, stale_seconds=30))


@pytest.mark.slow
def test_resume_while_the_driver_runs_is_refused_and_loses_nothing(tmp_path, no_ray_env):
    study = write(tmp_path, tiny("busy", epochs=12, budget={"trials": 4},
                                 base={"topology": "dag", "depth": 4, "width": 64}))
    run_dir = str(tmp_path / "runs")
    first = subprocess.Popen([sys.executable, "-m", "dagstudy.cli", "run", str(study),
                              "--run-dir", run_dir, "--num-cpus", "1"], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = storage_for(None, run_dir).optuna
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:  # the driver may still be creating the schema (SQLite raises, it does not wait)
            names = optuna.get_all_study_names(url) if Path(run_dir, "optuna.db").exists() else []
            if "busy" in names and optuna.load_study(study_name="busy",
                                                     storage=url).user_attrs.get("dagstudy.driver"):
                break
        except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError):
            pass
        time.sleep(0.5)
    second = dagstudy("resume", "busy", "--run-dir", run_dir)
    one_line_error(second, "being run by another driver", "since")
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-3000:]
    done = optuna.load_study(study_name="busy", storage=url)
    assert [t.state for t in done.trials] == [TrialState.COMPLETE] * 4
    assert done.user_attrs.get("dagstudy.driver") is None  # released


@pytest.mark.slow
def test_two_runs_of_one_new_study_end_in_one_clean_refusal(tmp_path, no_ray_env):
    study = write(tmp_path, tiny("twice", budget={"trials": 2}))
    args = [sys.executable, "-m", "dagstudy.cli", "run", str(study), "--run-dir",
            str(tmp_path / "runs"), "--num-cpus", "1"]
    procs = [subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)]
    time.sleep(0.1)
    procs.append(subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True))
    results = [(p.wait(300), p.stderr.read()) for p in procs]
    assert sorted(code for code, _ in results) == [0, 2], results
    refusal = next(err for code, err in results if code == 2)
    errors = [line for line in refusal.splitlines() if "error" in line]
    assert "Traceback" not in refusal and len(errors) == 1, refusal
    assert "twice" in errors[0]


# --- 6 and 7. one-line errors ----------------------------------------------------------------

@pytest.mark.parametrize(("changes", "needles"), [
    ({"name": "x" * 5000}, ["name:", "1 to 100 characters"]),
    ({"name": ".."}, ["name:", "not a usable name"]),
    ({"search": {"lr": {"low": 1e-3, "high": float("inf")}}}, ["search.lr.range.high",
                                                                "finite"]),
    ({"storage": {"optuna": "nosuchdb://x"}}, ["storage.optuna", "nosuchdb",
                                               "NoSuchModuleError"]),
])
def test_bad_study_inputs_are_one_line_errors(tmp_path, changes, needles, no_ray_env):
    proc = dagstudy("run", str(write(tmp_path, {**tiny("bad"), **changes})), "--run-dir",
                    str(tmp_path / "runs"), "--num-cpus", "1")
    one_line_error(proc, *needles)


@pytest.mark.parametrize("command", ["run", "resume", "best"])
def test_a_corrupt_optuna_database_is_a_one_line_error(tmp_path, command, no_ray_env):
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "optuna.db").write_bytes(b"SQLite format 3\0" + os.urandom(3000))
    target = str(write(tmp_path, tiny("corrupt"))) if command != "best" else "corrupt"
    extra = ["--num-cpus", "1"] if command != "best" else []
    proc = dagstudy(command, target, "--run-dir", str(runs), *extra)
    one_line_error(proc, "storage.optuna: cannot open", "optuna.db")


@pytest.mark.parametrize("command", [["resume", "smoke"], ["ui"], ["best", "smoke"]])
def test_commands_that_read_a_store_never_create_one(tmp_path, command):
    missing = tmp_path / "nowhere"
    proc = dagstudy(*command, "--run-dir", str(missing))
    one_line_error(proc, "--run-dir", "does not exist")
    assert not missing.exists()


def test_progress_never_counts_past_the_budget():
    line = format_status(Status("s", complete=8, pruned=1, failed=1, running=0, target=10,
                                best=0.9, best_number=3, elapsed=5.0, eta=0.0, requeued=2))
    assert line.startswith("[s] 10/10 done: 8 complete, 1 pruned, 1 failed (+2 re-queued);")


def test_train_rejects_infinite_values_and_a_network_larger_than_memory():
    proc = dagstudy("train", "--lr", "inf", "--quiet")
    assert proc.returncode == 2 and "--lr" in proc.stderr and "finite" in proc.stderr
    proc = dagstudy("train", "--width", "65536", "--depth", "256", "--quiet")
    one_line_error(proc, "--width / --depth / --seeds", "GiB")


@pytest.mark.slow
def test_ctrl_c_in_train_ends_without_a_traceback():
    proc = subprocess.Popen([sys.executable, "-m", "dagstudy.cli", "train", "--epochs", "400",
                             "--seeds", "2"], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    first = proc.stderr.readline()  # the first epoch's progress line: training has started
    assert first.startswith("epoch"), first
    proc.send_signal(signal.SIGINT)
    err = proc.stderr.read()
    assert proc.wait(60) == 130
    assert "Traceback" not in err and "interrupted" in err


@pytest.mark.slow
def test_sigterm_requeues_running_trials_and_exits_143(tmp_path, no_ray_env):
    study = write(tmp_path, tiny("term", epochs=200, budget={"trials": 3},
                                 base={"topology": "dag", "depth": 4, "width": 64}))
    run_dir = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "dagstudy.cli", "run", str(study),
                             "--run-dir", str(run_dir), "--num-cpus", "1"], cwd=ROOT,
                            stderr=subprocess.PIPE, text=True)
    url = storage_for(None, run_dir).optuna
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if (run_dir / "optuna.db").exists() and "term" in optuna.get_all_study_names(url):
            trials = optuna.load_study(study_name="term", storage=url).trials
            if any(t.intermediate_values for t in trials):
                break
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    err = proc.stderr.read()
    assert proc.wait(120) == 143, err[-3000:]
    assert "Stack trace" not in err and "Traceback" not in err, err[-3000:]
    trials = optuna.load_study(study_name="term", storage=url).trials
    assert trials[0].state == TrialState.FAIL
    assert trials[0].user_attrs["failure_reason"] == "interrupted"
    assert trials[-1].state == TrialState.WAITING  # its params, queued for `resume`


# --- 8. a confirmation arm that raises is recorded, the confirmation goes on --------------------

def failing_arm_file(tmp_path: Path) -> Path:
    """A confirmation whose OPT-JITTER treatment reads a data file that exists when the file is
    loaded (every dataset is checked then) and is gone when that arm trains."""
    import numpy as np

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "gone.npz", x=rng.normal(size=(200, 5)), y=np.arange(200) % 2)
    return write(tmp_path, {
        "name": "crash", "seeds": 3, "n_resamples": 200,
        "base": {"dataset": "digits", "topology": "layered", "depth": 1, "width": 8,
                 "epochs": 2, "probe_size": 64},
        "ideas": {
            "DAG-DENSE": {"treatment": {"topology": "dag"}},
            "OPT-JITTER": {"control": {"dataset": str(tmp_path / "gone.npz")},
                           "treatment": {"dataset": str(tmp_path / "gone.npz"),
                                         "jitter_spread": 0.1}},
        }}, "crash.yaml")


@pytest.mark.parametrize("runner", ["local", "ray"])
def test_an_arm_that_raises_is_recorded_and_the_confirmation_goes_on(tmp_path, runner,
                                                                     no_ray_env):
    spec = load_confirmation(failing_arm_file(tmp_path))
    if runner == "ray":
        connect_ray(num_cpus=2)
    inner = local_runner("cpu") if runner == "local" else ray_runner()

    def deleting_runner(jobs, on_start=None):  # after confirm's own data check, before training
        (tmp_path / "gone.npz").unlink(missing_ok=True)
        yield from inner(jobs, on_start)

    outcome = confirm(spec, deleting_runner)
    verdicts = {v.name: v for v in outcome.verdicts}
    assert verdicts["DAG-DENSE"].seeds == 3  # the other idea decided as usual
    broken = verdicts["OPT-JITTER"]
    assert broken.verdict == "inconclusive"
    assert "an arm failed on seeds 0, 1, 2" in broken.reason
    treatment = outcome.results["OPT-JITTER"]["treatment"]
    assert treatment["status"] == ["failed"] * 3
    assert "DataError" in treatment["reasons"][0] and "gone.npz" in treatment["reasons"][0]


def test_a_fresh_lease_of_a_dead_local_driver_is_taken_over_at_once(tmp_path):
    """A driver killed with SIGKILL leaves a fresh heartbeat; its process is gone, so
    ``resume`` on the same host need not wait for the lease to go stale."""
    import socket
    from dataclasses import asdict

    from dagstudy.study.lease import LEASE_ATTR, Lease

    study = optuna.create_study(study_name="orphan",
                                storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    study.set_user_attr(LEASE_ATTR, asdict(Lease(f"{socket.gethostname()}:{dead.pid}", "t0",
                                                 "earlier", time.time())))
    release(study, acquire(study, stale_seconds=600))
    study.set_user_attr(LEASE_ATTR, asdict(Lease(f"{socket.gethostname()}:{os.getpid()}", "t1",
                                                 "earlier", time.time())))
    with pytest.raises(LeaseHeld):  # a live owner on this host keeps it
        acquire(study, stale_seconds=600)
