"""Optuna's gRPC storage proxy in front of the RDB: ``dagstudy storage-proxy`` in a real process
on 127.0.0.1 serving a SQLite database, and a study of several workers run by ``dagstudy run``
with ``storage.optuna: grpc://127.0.0.1:PORT``: the driver (lease, ask/tell) and every worker
(per-epoch reports, pruning) reach Optuna only through the proxy."""

import copy
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from local_stack_util import free_port

from dagstudy.study.storage import StorageError, grpc_address, open_storage, open_study_storage

ROOT = Path(__file__).resolve().parents[1]
TrialState = optuna.trial.TrialState


@pytest.fixture
def proxy(tmp_path):
    """A running ``dagstudy storage-proxy`` on a fresh SQLite database: (grpc URL, RDB URL)."""
    rdb_url, port = f"sqlite:///{tmp_path / 'optuna.db'}", free_port()
    log = (tmp_path / "proxy.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "dagstudy.cli", "storage-proxy", "--storage",
                             rdb_url, "--host", "127.0.0.1", "--port", str(port)],
                            stdout=log, stderr=log, start_new_session=True)
    try:
        url = f"grpc://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "proxy.log").read_text()
            try:
                open_storage(url)
                break
            except ConnectionError:
                assert time.monotonic() < deadline, "the proxy did not answer"
        yield url, rdb_url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


@pytest.mark.slow
def test_study_of_several_workers_through_the_grpc_proxy(tmp_path, proxy):
    url, rdb_url = proxy
    data = copy.deepcopy(yaml.safe_load((ROOT / "studies" / "smoke.yaml").read_text()))
    data.update(name="proxied", epochs=1, seeds=1, budget={"trials": 4}, max_concurrent=3,
                storage={"optuna": url, "mlflow": f"sqlite:///{tmp_path / 'mlflow.db'}"})
    path = tmp_path / "proxied.yaml"
    path.write_text(yaml.safe_dump(data))
    env = {k: v for k, v in os.environ.items()
           if k not in ("DAGSTUDY_OPTUNA_STORAGE", "RAY_ADDRESS", "DAGSTUDY_HOME")}
    run = subprocess.run([sys.executable, "-m", "dagstudy.cli", "run", str(path), "--run-dir",
                          str(tmp_path / "runs"), "--num-cpus", "3"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]

    def finished(storage) -> dict[int, tuple]:
        study = optuna.load_study(study_name="proxied", storage=storage)
        return {t.number: (t.state, t.value, t.user_attrs.get("mean"),
                           len(t.intermediate_values))
                for t in study.get_trials(deepcopy=False) if t.state.is_finished()}

    through_proxy, direct = finished(open_storage(url)), finished(rdb_url)
    assert len(direct) == 4 and through_proxy == direct  # the budget, seen both ways
    assert all(state in (TrialState.COMPLETE, TrialState.PRUNED)
               for state, *_ in direct.values())
    assert all(reports >= 1 for *_, reports in direct.values())  # workers reported epochs
    assert not (tmp_path / "runs" / "optuna.db").exists()  # nothing went around the proxy


def test_grpc_urls_are_checked_and_an_absent_proxy_is_one_line(monkeypatch):
    assert grpc_address("grpc://10.0.0.5:13000") == ("10.0.0.5", 13000)
    for bad in ("grpc://host", "grpc://:13000", "grpc://host:0", "grpc://host:port"):
        with pytest.raises(ValueError, match="grpc://HOST:PORT"):
            grpc_address(bad)
    port = free_port()  # nothing listens there
    monkeypatch.setattr("dagstudy.study.storage.GRPC_READY_SECONDS", 1.0)
    start = time.monotonic()
    with pytest.raises(StorageError, match=f"cannot open grpc://127.0.0.1:{port}"):
        open_study_storage(f"grpc://127.0.0.1:{port}")
    assert time.monotonic() - start < 10


def test_storage_proxy_refuses_bad_input_in_one_line():
    for args, field in ((["--storage", "grpc://127.0.0.1:1"], "--storage"),
                        (["--storage", "sqlite:///x.db", "--port", "0"], "--port")):
        done = subprocess.run([sys.executable, "-m", "dagstudy.cli", "storage-proxy", *args],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2
        assert done.stderr.count("\n") == 1 and field in done.stderr, done.stderr
