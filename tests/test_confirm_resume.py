"""A confirmation killed mid-run resumes from its arm journal (``confirmation/journal.py``):
finished arms are not trained again, crashed ones are, and the verdicts equal an uninterrupted
run's."""

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from dagstudy.config import TrainConfig
from dagstudy.confirmation.journal import ArmJournal, code_fingerprint, journaled
from dagstudy.confirmation.plan import ArmJob
from dagstudy.trainer import TrialResult

ROOT = Path(__file__).resolve().parents[1]


def job(lr: float) -> ArmJob:
    return ArmJob("OPT-JITTER", f"arm-{lr}", TrainConfig(dataset="digits", lr=lr), (0, 1))


class CountingRunner:
    """Yields a made-up finished result per job (a crashed one for ``crash``), recording which
    jobs it trained."""

    def __init__(self, crash: set[str] = frozenset()):
        self.trained: list[str] = []
        self.crash = crash

    def __call__(self, jobs, on_start=None, **streams):
        for j in jobs:
            self.trained.append(j.arm)
            if j.arm in self.crash:
                result = TrialResult.crashed(j.config, list(j.seeds), "worker died").to_dict()
            else:
                result = {"device": "cpu", "seeds": list(j.seeds), "value": j.config.lr}
            yield j, result


def run_all(runner, jobs):
    return dict((j.arm, r) for j, r in runner(jobs))


def test_a_resumed_runner_reuses_finished_arms_and_trains_crashed_and_new_ones(tmp_path):
    journal = ArmJournal(tmp_path / "c.arms.jsonl", "code-a")
    a, b, c = job(0.1), job(0.2), job(0.3)
    first = CountingRunner(crash={c.arm})
    got = run_all(journaled(first, journal, resume=False), [a, b, c])
    assert first.trained == [a.arm, b.arm, c.arm]
    assert len(journal.path.read_text().splitlines()) == 2  # the crashed result is not kept

    reused = []
    second = CountingRunner()
    again = run_all(journaled(second, journal, resume=True, on_reused=reused.append),
                    [a, b, c, job(0.4)])
    assert second.trained == [c.arm, "arm-0.4"]  # only what did not finish
    assert reused == [2]
    assert again[a.arm] == got[a.arm] and again[b.arm] == got[b.arm]

    fresh = CountingRunner()  # without --resume everything trains; nothing is deleted
    run_all(journaled(fresh, journal, resume=False), [a, b])
    assert fresh.trained == [a.arm, b.arm]
    assert len(journal.path.read_text().splitlines()) == 6

    other_code = CountingRunner()
    run_all(journaled(other_code, ArmJournal(journal.path, "code-b"), resume=True), [a, b])
    assert other_code.trained == [a.arm, b.arm]


def test_a_line_torn_by_a_kill_is_skipped_with_a_warning(tmp_path):
    journal = ArmJournal(tmp_path / "c.arms.jsonl", "code-a")
    a, b = job(0.1), job(0.2)
    run_all(journaled(CountingRunner(), journal, resume=False), [a, b])
    with open(journal.path, "a") as f:
        f.write('{"key": "half a line')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert set(journal.finished()) == {a.key, b.key}
    assert any("1 torn line" in str(w.message) for w in caught)


def test_the_fingerprint_follows_the_device_request():
    assert code_fingerprint("cpu") == code_fingerprint("cpu")
    assert code_fingerprint("cpu") != code_fingerprint("cuda:0")


def untimed(results: dict) -> dict:
    """Per idea and arm, the result without its wall-clock times (``wall_seconds``, the
    ``seconds`` curve): every metric, per seed and per epoch."""
    return {idea: {arm: {**{k: v for k, v in r.items() if k != "wall_seconds"},
                         "curves": {k: v for k, v in r["curves"].items() if k != "seconds"}}
                   for arm, r in arms.items()} for idea, arms in results.items()}


def confirm(file: Path, run_dir: Path, out: Path, *extra: str, **kw):
    return subprocess.Popen(
        [sys.executable, "-m", "dagstudy.cli", "confirm", str(file), "--local", "--device",
         "cpu", "--run-dir", str(run_dir), "--out", str(out), "--force", *extra],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={k: v for k, v in os.environ.items() if k not in ("DAGSTUDY_HOME", "RAY_ADDRESS")},
        **kw)


@pytest.mark.slow
def test_a_confirmation_killed_mid_run_resumes_to_the_uninterrupted_verdicts(tmp_path):
    base = {"dataset": "digits", "depth": 2, "width": 16, "epochs": 12, "optimizer": "sgd",
            "lr": 0.05}
    file = tmp_path / "c.yaml"
    file.write_text(json.dumps({
        "name": "killed", "seeds": 4, "n_resamples": 500, "base": base,
        "ideas": {"OPT-JITTER": {"treatment": {"lr": 0.06}},  # six distinct arms
                  "DAG-DENSE": {"control": {"topology": "layered"},
                                "treatment": {"topology": "dag", "lr": 0.04}},
                  "OPT-FULLBATCH": {"control": {"lr": 0.1}, "treatment": {"lr": 0.2}}}}))
    arms = 6
    journal = tmp_path / "runs" / "confirm" / "killed.arms.jsonl"

    run = confirm(file, tmp_path / "runs", tmp_path / "killed")
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and run.poll() is None:
        if journal.exists() and len(journal.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    assert run.poll() is None, "the confirmation ended before it could be killed"
    run.send_signal(signal.SIGKILL)
    run.communicate()
    kept = len(journal.read_text().splitlines())
    assert 2 <= kept < arms

    resumed = confirm(file, tmp_path / "runs", tmp_path / "resumed", "--resume")
    whole = confirm(file, tmp_path / "whole", tmp_path / "whole-out")
    for proc in (resumed, whole):
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        if proc is resumed:
            assert f"--resume: {kept} arm(s) reused" in err
            trained = [line for line in err.splitlines() if line.startswith("[")]
    assert len(trained) == arms  # every arm reported once, reused ones marked
    assert sum(line.endswith("(reused)") for line in trained) == kept
    # reused arms come first and give no ETA: it rests on the arms trained here
    assert all("eta -]" in line for line in trained[:kept]), trained
    assert all("eta -]" not in line for line in trained[kept:]), trained
    assert len(journal.read_text().splitlines()) == arms  # the rest trained once each
    got, want = (json.loads((tmp_path / d / "confirmation.json").read_text())
                 for d in ("resumed", "whole-out"))
    assert untimed(got["results"]) == untimed(want["results"])
    assert got["verdicts"] == want["verdicts"]
