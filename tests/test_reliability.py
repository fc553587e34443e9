"""A local study on loopback, bounded resources, study files, resume (one driver per study,
one-line errors and failing arms are in ``test_reliability_driver``).

Each case was a failure of a new user's run (a traceback, a hang, a listening socket on every
interface, a replayed sampler, a finished trial thrown away); each is reproduced here with real
processes: ``dagstudy`` subprocesses, a real local Ray, SQLite stores under ``tmp_path``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

from dagstudy.study.driver import run_study
from dagstudy.study.loader import parse_spec
from dagstudy.study.storage import storage_for

ROOT = Path(__file__).resolve().parents[1]
TrialState = optuna.trial.TrialState


def tiny(name: str, **changes) -> dict:
    """A study of short trials (digits, one small layered net, 1 seed, 2 epochs)."""
    data = {"name": name, "dataset": "digits", "seeds": 1, "epochs": 2,
            "budget": {"trials": 3}, "search": {"lr": {"low": 1e-3, "high": 1e-1, "log": True}},
            "base": {"topology": "layered", "depth": 1, "width": 8, "probe_size": 64},
            "sampler": {"name": "random", "seed": 0}, "pruner": {"name": "none"},
            "resources": {"cpus": 1}, "max_concurrent": 1}
    data.update(changes)
    return data


def write(tmp_path: Path, data: dict, name: str = "study.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def dagstudy(*args: str, timeout: float = 240, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dagstudy.cli", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, **kwargs)


def one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 2 with one stderr line (no traceback) containing every needle."""
    lines = [line for line in proc.stderr.splitlines() if "dagstudy" in line and "error" in line]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(lines) == 1 and len(lines[0]) < 600, proc.stderr[-2000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# --- 1. a local Ray listens on 127.0.0.1 only -------------------------------------------------

def listening(pids: set[int]) -> list[tuple[int, str]]:
    """``(pid, address:port)`` of every TCP socket in LISTEN state that a process of ``pids``
    holds, read from /proc (the OS's socket table)."""
    inodes: dict[str, int] = {}
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes[target[8:-1]] = pid
        except OSError:  # the process ended meanwhile
            continue
    found = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inodes:  # 0A: LISTEN
                host, port = cols[1].split(":")
                found.append((inodes[cols[9]], f"{_address(host, width)}:{int(port, 16)}"))
    return found


def _address(hex_host: str, width: int) -> str:
    raw = bytes.fromhex(hex_host)
    if width == 8:
        return ".".join(str(b) for b in raw[::-1])
    words = [raw[i:i + 4][::-1] for i in range(0, 16, 4)]
    full = b"".join(words)
    if full[:12] == b"\0" * 10 + b"\xff\xff":
        return ".".join(str(b) for b in full[12:])  # IPv4-mapped
    return ":".join(full[i:i + 2].hex() for i in range(0, 16, 2))


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def is_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0]
    return host.startswith("127.") or host == "0000:0000:0000:0000:0000:0000:0000:0001"


@pytest.mark.slow
def test_a_local_study_listens_on_loopback_only_and_leaves_nothing_behind(tmp_path, no_ray_env):
    """A driver that starts a local Ray, runs a trial, prints its process tree's listening
    sockets, and is then killed with SIGKILL: nothing it started listens on a non-loopback
    address, and Ray's processes are gone within two minutes of its death (its agents see at
    once that their raylet died, then try for 60 s to report that to the dead GCS)."""
    script = (
        "import os, sys, time, ray\n"
        "from dagstudy.study.cluster import connect_ray\n"
        "connect_ray(num_cpus=1)\n"
        "ray.get(ray.remote(lambda: 1).remote())\n"
        "print('ready', flush=True)\n"
        "time.sleep(600)\n")
    driver = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                              cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert driver.stdout.readline().strip() == "ready"
        time.sleep(3)  # agents and exporters start after the first task
        tree = descendants(driver.pid) | {driver.pid}
        sockets = listening(tree)
        assert len(sockets) >= 3  # GCS, raylet, the driver's core worker at least
        assert [s for s in sockets if not is_loopback(s[1])] == []
    finally:
        driver.kill()
        driver.wait(30)
    deadline = time.monotonic() + 120
    while listening(tree) and time.monotonic() < deadline:
        time.sleep(1)
    assert listening(tree) == []


# --- 2. resources: memory estimated before training, requests the cluster cannot hold ----------

def test_a_population_too_large_for_memory_is_refused_before_any_work(tmp_path, no_ray_env):
    study = write(tmp_path, tiny("huge", seeds=100000, base={"topology": "dag", "depth": 8,
                                                             "width": 512}))
    start = time.monotonic()
    proc = dagstudy("run", str(study), "--run-dir", str(tmp_path / "runs"), timeout=120)
    one_line_error(proc, "memory:", "100000 seeds", "GiB")
    assert time.monotonic() - start < 60
    assert not (tmp_path / "runs" / "optuna.db").exists() or "huge" not in (
        optuna.get_all_study_names(storage_for(None, tmp_path / "runs").optuna))


@pytest.mark.slow
def test_sampled_configurations_over_the_memory_budget_fail_as_trials(tmp_path, no_ray_env):
    """``resources.memory_gb`` small: the wide end of the width range fails with its estimate
    as the reason, the narrow end completes; nothing is OOM-killed or retried."""
    spec = parse_spec(tiny("budget", budget={"trials": 4}, search={"width": [8, 4096]},
                           seeds=4, resources={"cpus": 1, "memory_gb": 0.05},
                           sampler={"name": "random", "seed": 9}))  # draws both widths
    study = run_study(spec, run_dir=tmp_path, num_cpus=2)
    by_width = {}
    for t in study.trials:
        by_width.setdefault(t.params["width"], set()).add(
            (t.state, (t.user_attrs.get("failure_reason") or "")[:7]))
    assert by_width.get(4096) == {(TrialState.FAIL, "memory:")}
    assert by_width.get(8) == {(TrialState.COMPLETE, "")}


def test_a_trial_larger_than_any_node_is_refused(tmp_path, no_ray_env):
    study = write(tmp_path, tiny("greedy", resources={"cpus": 64}))
    proc = dagstudy("run", str(study), "--run-dir", str(tmp_path), "--num-cpus", "2")
    one_line_error(proc, "resources:", "64 CPUs", "largest node", "2 CPUs")


# --- 3. study files: aliases, size, duplicate keys -------------------------------------------

def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path):
    lines = ["name: bomb", "a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    start = time.monotonic()
    proc = dagstudy("run", str(path), "--run-dir", str(tmp_path), timeout=60)
    one_line_error(proc, "aliases expand it to", "nodes")
    assert time.monotonic() - start < 30
    proc = dagstudy("confirm", str(path), "--local", "--run-dir", str(tmp_path), timeout=60)
    one_line_error(proc, "aliases expand it to")


@pytest.mark.parametrize("command", ["run", "confirm"])
def test_a_duplicate_key_is_refused_naming_it(tmp_path, command):
    text = (ROOT / "studies" / ("smoke.yaml" if command == "run" else "corollaries.yaml"))
    path = tmp_path / "dup.yaml"
    path.write_text(text.read_text() + "\nseeds: 7\n")
    extra = ["--local"] if command == "confirm" else []
    proc = dagstudy(command, str(path), *extra, "--run-dir", str(tmp_path), timeout=60)
    one_line_error(proc, "duplicate key 'seeds'", "line")


def test_a_huge_file_gets_a_short_error(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("name: big\nbase:\n" + "".join(f"  k{i}: {i}\n" for i in range(700_000)))
    proc = dagstudy("run", str(path), "--run-dir", str(tmp_path), timeout=60)
    one_line_error(proc, "bytes; a study or confirmation file is at most")


# --- 4. resume draws new configurations ------------------------------------------------------

@pytest.mark.slow
def test_resume_does_not_replay_the_seeded_sampler(tmp_path, no_ray_env):
    spec = parse_spec(tiny("replay", budget={"trials": 3},
                           search={"lr": {"low": 1e-3, "high": 1e-1, "log": True},
                                   "width": {"low": 4, "high": 64}}))
    run_study(spec, run_dir=tmp_path, num_cpus=2)
    study = run_study(spec, run_dir=tmp_path, num_cpus=2, resume=True, trials=6)
    params = [tuple(sorted(t.params.items())) for t in study.trials
              if t.state == TrialState.COMPLETE]
    assert len(params) == 6 and len(set(params)) == 6
