"""Faults a study must survive.

Without a server: the retry logic of ``dagstudy.study.rdb.RetryingRDBStorage`` (fake lost
connections on the first calls, a fake clock). For real, on 127.0.0.1: a Ray worker node
removed while it runs a trial (``ray.cluster_utils.Cluster``), PostgreSQL stopped and started
again under a running study (``infra/local/up.sh``), drivers opening an empty PostgreSQL
database at once, and two studies run at once on one storage (SQLite, and PostgreSQL)."""

import contextlib
import copy
import os
import pickle
import shutil
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import optuna
import pytest
import ray
import sqlalchemy
import yaml
from local_stack_util import start_stack
from mlflow.tracking import MlflowClient
from optuna.exceptions import StorageInternalError, UpdateFinishedTrialError
from optuna.storages import RDBStorage

import dagstudy.study.rdb
from dagstudy.study.driver import run_study
from dagstudy.study.loader import parse_spec
from dagstudy.study.loop import counted
from dagstudy.study.rdb import (
    SCHEMA_ATTEMPTS,
    RetryingRDBStorage,
    StorageRetryWarning,
    is_connection_loss,
    retry_seconds_from_env,
)
from dagstudy.study.storage import open_storage
from dagstudy.urls import redact_url

ROOT = Path(__file__).resolve().parents[1]
SMOKE = yaml.safe_load((ROOT / "studies" / "smoke.yaml").read_text())
TrialState = optuna.trial.TrialState
LIVE = (TrialState.RUNNING, TrialState.WAITING)

pytestmark = pytest.mark.slow


def _postgres_missing() -> str:
    """Why infra/local/up.sh cannot run PostgreSQL here ("" if it can)."""
    if not (shutil.which("initdb") and shutil.which("pg_ctl")) and not list(
            Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        return "PostgreSQL (initdb / pg_ctl) is not installed"
    if shutil.which("openssl") is None:
        return "openssl is not installed"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "as root, up.sh runs PostgreSQL as 'postgres' through runuser"
    return ""


needs_postgres = pytest.mark.skipif(bool(_postgres_missing()), reason=_postgres_missing())


def study_data(name: str, **changes) -> dict:
    data = copy.deepcopy(SMOKE)
    data.update(name=name, **changes)
    return data


def slow_trials(name: str, trials: int, epochs: int, **changes) -> dict:
    """A study whose trials all complete and take about ``epochs / 20`` seconds each."""
    settings = dict(epochs=epochs, budget={"trials": trials},
                    search={"lr": {"low": 1e-3, "high": 3e-2, "log": True}},
                    base={"topology": "dag", "depth": 4, "width": 64},
                    sampler={"name": "random", "seed": 0}, pruner={"name": "none"},
                    max_concurrent=2)
    return study_data(name, **{**settings, **changes})


def wait_until(condition, timeout: float, what: str, poll: float = 0.2):
    """``condition()``'s first truthy value, polled until ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(poll)


def in_thread(target) -> tuple[threading.Thread, dict]:
    """``target()`` in a started thread; its result or exception lands in the returned dict."""
    box: dict = {}

    def run():
        try:
            box["result"] = target()
        except BaseException as e:  # handed to the test thread
            box["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, box


def joined(thread: threading.Thread, box: dict, timeout: float):
    thread.join(timeout)
    assert not thread.is_alive(), "still running"
    if "error" in box:
        raise box["error"]
    return box["result"]


def by_state(storage: RDBStorage, name: str) -> dict:
    """``{state: [trial, ...]}`` of a study, read through ``storage`` (this process's own)."""
    if name not in optuna.get_all_study_names(storage):
        return {}
    found: dict = {}
    for t in optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False):
        found.setdefault(t.state, []).append(t)
    return found


def assert_finished_budget(study: optuna.Study, budget: int) -> None:
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers))
    assert counted(study) == budget
    assert not [t.number for t in study.trials if t.state in LIVE]


# --- the retry logic, without a server ---------------------------------------------------------

class FakeClock:
    """``time`` for ``dagstudy.study.rdb``: ``sleep`` advances ``monotonic`` and is recorded."""

    def __init__(self):
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    strftime = staticmethod(time.strftime)


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(dagstudy.study.rdb, "time", fake)
    return fake


def lost_connection() -> StorageInternalError:
    """What Optuna raises when the server goes away under a session."""
    cause = sqlalchemy.exc.OperationalError(
        "SELECT 1", {}, Exception("server closed the connection unexpectedly"))
    error = StorageInternalError("An exception is raised during the commit.")
    error.__cause__ = cause
    return error


def fail_first(monkeypatch, target, name: str, errors: list) -> list:
    """``target.name`` raises ``errors`` (an ``Exception`` each, or ``lost_connection``) on its
    first calls, then behaves; returns the list of calls made."""
    real = getattr(target, name)
    calls: list = []

    def fake(*args, **kwargs):
        calls.append(args)
        if len(calls) <= len(errors):
            error = errors[len(calls) - 1]
            raise error() if callable(error) else error
        return real(*args, **kwargs)

    monkeypatch.setattr(target, name, fake)
    return calls


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'optuna.db'}"


def test_lost_connections_are_retried_with_backoff(sqlite_url, clock, monkeypatch, caplog):
    storage = RetryingRDBStorage(sqlite_url, retry_seconds=30)
    study = optuna.create_study(study_name="s", storage=storage)
    study.enqueue_trial({"x": 1.0})
    calls = fail_first(monkeypatch, RDBStorage, "_get_trials", [lost_connection] * 5)
    with pytest.warns(StorageRetryWarning) as record:
        trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.WAITING]
    assert len(calls) == 6
    assert clock.sleeps == [0.5, 1.0, 2.0, 4.0, 5.0]
    assert len([w for w in record if w.category is StorageRetryWarning]) == 1  # once per outage
    assert "retrying for up to 30 s" in str(record[0].message)
    assert "reachable again after 12.5 s" in caplog.text


def test_retrying_stops_after_retry_seconds_of_outage(sqlite_url, clock, monkeypatch):
    storage = RetryingRDBStorage(sqlite_url, retry_seconds=10)
    study_id = storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], "s")
    with pytest.MonkeyPatch.context() as outage:
        calls = fail_first(outage, RDBStorage, "get_study_name_from_id", [lost_connection] * 99)
        with pytest.warns(StorageRetryWarning), pytest.raises(StorageInternalError):
            storage.get_study_name_from_id(study_id)
        assert clock.sleeps == [0.5, 1.0, 2.0, 4.0, 2.5]  # 10 s in all
        with pytest.raises(StorageInternalError):  # the outage goes on: no more waiting
            storage.get_study_name_from_id(study_id)
        assert len(clock.sleeps) == 5 and len(calls) == 7
    assert storage.get_study_name_from_id(study_id) == "s"  # the server is back
    fail_first(monkeypatch, RDBStorage, "get_study_name_from_id", [lost_connection])
    with pytest.warns(StorageRetryWarning):  # a new outage, a new warning
        assert storage.get_study_name_from_id(study_id) == "s"
    assert clock.sleeps[5:] == [0.5]


@pytest.mark.parametrize("error", [
    sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("connection refused")),
    sqlalchemy.exc.InterfaceError("SELECT 1", {}, Exception("connection already closed")),
    sqlalchemy.exc.DBAPIError("SELECT 1", {}, Exception("gone"), connection_invalidated=True),
    sqlalchemy.exc.OperationalError(  # the statement's parameters do not matter
        "INSERT", {"value": "data_dir does not exist"}, Exception("server closed the connection")),
    lost_connection(),
    sqlalchemy.exc.PendingRollbackError(  # the next statement of a session whose connection died
        "Can't reconnect until invalid transaction is rolled back.  Please rollback() fully "
        "before proceeding"),
])
def test_connection_losses(error):
    assert is_connection_loss(error)


@pytest.mark.parametrize("error", [
    sqlalchemy.exc.IntegrityError("INSERT", {}, Exception("duplicate key")),
    sqlalchemy.exc.OperationalError(None, None, Exception(
        'connection to server at "127.0.0.1", port 5432 failed: FATAL:  password '
        'authentication failed for user "dagstudy"')),
    sqlalchemy.exc.OperationalError(None, None, Exception("fe_sendauth: no password supplied")),
    sqlalchemy.exc.OperationalError(None, None, Exception('FATAL:  database "x" does not exist')),
    sqlalchemy.exc.DBAPIError("SELECT 1", {}, Exception("bad"), connection_invalidated=False),
    sqlalchemy.exc.PendingRollbackError("This Session's transaction has been rolled back due to "
                                        "a previous exception during flush."),
    StorageInternalError("no cause"),
    UpdateFinishedTrialError("finished"),
    KeyError("no such trial"),
])
def test_other_errors_are_not_retried(error, sqlite_url, clock, monkeypatch):
    assert not is_connection_loss(error)
    storage = RetryingRDBStorage(sqlite_url, retry_seconds=30)
    calls = fail_first(monkeypatch, RDBStorage, "get_all_studies", [error])
    with pytest.raises(type(error)):
        storage.get_all_studies()
    assert len(calls) == 1 and clock.sleeps == []


def test_ask_and_tell_ride_out_an_outage(sqlite_url, clock, monkeypatch):
    storage = RetryingRDBStorage(sqlite_url, retry_seconds=30)
    study = optuna.create_study(study_name="s", storage=storage)  # optuna's _CachedStorage
    created = fail_first(monkeypatch, RDBStorage, "_create_new_trial", [lost_connection] * 2)
    told = fail_first(monkeypatch, RDBStorage, "set_trial_state_values", [lost_connection] * 2)
    with pytest.warns(StorageRetryWarning):
        trial = study.ask()
        study.tell(trial, 1.5)
    assert len(created) == 3 and len(told) == 3
    assert [(t.state, t.value) for t in study.trials] == [(TrialState.COMPLETE, 1.5)]


def commits_then_loses(monkeypatch, values: list[float]) -> None:
    """``set_trial_state_values`` commits ``values`` on its first call, then loses the
    connection before the acknowledgement."""
    real = RDBStorage.set_trial_state_values
    calls: list = []

    def fake(self, trial_id, state, values_asked=None):
        calls.append(trial_id)
        if len(calls) == 1:
            real(self, trial_id, state, values)
            raise lost_connection()
        return real(self, trial_id, state, values_asked)

    monkeypatch.setattr(RDBStorage, "set_trial_state_values", fake)


def test_tell_committed_before_the_connection_was_lost(sqlite_url, clock, monkeypatch):
    study = optuna.create_study(study_name="s",
                                storage=RetryingRDBStorage(sqlite_url, retry_seconds=30))
    trial = study.ask()
    commits_then_loses(monkeypatch, [2.0])
    with pytest.warns(StorageRetryWarning):
        study.tell(trial, 2.0)  # the retry finds it COMPLETE with 2.0: done, not an error
    assert [(t.state, t.value) for t in study.trials] == [(TrialState.COMPLETE, 2.0)]

    other = study.ask()
    commits_then_loses(monkeypatch, [3.0])
    with pytest.warns(StorageRetryWarning), pytest.raises(UpdateFinishedTrialError):
        study.tell(other, 4.0)  # finished with another value: not this call's write


def test_constructor_waits_for_the_server(sqlite_url, clock, monkeypatch):
    from optuna.storages._rdb.storage import _VersionManager

    fail_first(monkeypatch, _VersionManager, "check_table_schema_compatibility",
               [lost_connection] * 2)
    with pytest.warns(StorageRetryWarning):
        storage = RetryingRDBStorage(sqlite_url, retry_seconds=30)
    assert clock.sleeps == [0.5, 1.0]
    assert storage.get_all_studies() == []


@pytest.mark.parametrize("raced", [
    sqlalchemy.exc.IntegrityError("INSERT", {}, Exception("UNIQUE constraint failed")),
    sqlalchemy.exc.ProgrammingError("CREATE", {}, Exception('relation "studies" already exists')),
])
def test_constructor_starts_over_after_a_schema_race(raced, sqlite_url, clock, monkeypatch):
    from optuna.storages._rdb.models import BaseModel

    with pytest.MonkeyPatch.context() as races:
        calls = fail_first(races, BaseModel.metadata, "create_all", [raced] * 2)
        assert RetryingRDBStorage(sqlite_url, retry_seconds=30).get_all_studies() == []
    assert len(calls) == 3 and len(clock.sleeps) == 2
    assert all(0 <= pause <= 0.5 for pause in clock.sleeps)
    fail_first(monkeypatch, BaseModel.metadata, "create_all", [raced] * SCHEMA_ATTEMPTS)
    with pytest.raises(type(raced)):
        RetryingRDBStorage(sqlite_url, retry_seconds=30)
    assert len(clock.sleeps) == 2 + SCHEMA_ATTEMPTS - 1


@pytest.mark.parametrize("value, expected", [(None, 120.0), ("", 120.0), ("7.5", 7.5),
                                             ("0", 0.0)])
def test_retry_seconds_from_env(value, expected, monkeypatch):
    if value is None:
        monkeypatch.delenv("DAGSTUDY_STORAGE_RETRY_SECONDS", raising=False)
    else:
        monkeypatch.setenv("DAGSTUDY_STORAGE_RETRY_SECONDS", value)
    assert retry_seconds_from_env() == expected


@pytest.mark.parametrize("value", ["two minutes", "-1", "nan", "inf"])
def test_retry_seconds_from_env_rejects(value, monkeypatch):
    monkeypatch.setenv("DAGSTUDY_STORAGE_RETRY_SECONDS", value)
    with pytest.raises(ValueError, match="DAGSTUDY_STORAGE_RETRY_SECONDS"):
        retry_seconds_from_env()


def test_zero_retry_seconds_fails_at_once(sqlite_url, clock, monkeypatch):
    storage = RetryingRDBStorage(sqlite_url, retry_seconds=0)
    fail_first(monkeypatch, RDBStorage, "get_all_studies", [lost_connection])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(StorageInternalError):
            storage.get_all_studies()
    assert clock.sleeps == []


def test_redact():
    assert (redact_url("postgresql+psycopg2://dagstudy:s3cr%40t@127.0.0.1:5432/optuna")
            == "postgresql+psycopg2://dagstudy:***@127.0.0.1:5432/optuna")
    assert (redact_url("postgresql+psycopg2://dagstudy@127.0.0.1:5432/optuna")
            == "postgresql+psycopg2://dagstudy@127.0.0.1:5432/optuna")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_open_storage_retries_then_raises_without_the_password(monkeypatch):
    monkeypatch.setenv("DAGSTUDY_STORAGE_RETRY_SECONDS", "1")
    url = f"postgresql+psycopg2://dagstudy:hunter2@127.0.0.1:{closed_port()}/optuna"
    start = time.monotonic()
    with pytest.warns(StorageRetryWarning) as record, pytest.raises(
            sqlalchemy.exc.OperationalError, match="Connection refused"):
        open_storage(url)  # the constructor creates the schema: it needs the server
    assert 1.0 <= time.monotonic() - start < 10
    message = str(record[0].message)
    assert "dagstudy:***@127.0.0.1" in message and "hunter2" not in message


def test_open_storage_on_sqlite_retries_no_lost_connection(sqlite_url, monkeypatch):
    monkeypatch.setenv("DAGSTUDY_STORAGE_RETRY_SECONDS", "not read for SQLite")
    storage = open_storage(sqlite_url)
    assert isinstance(storage, RetryingRDBStorage) and storage.retry_seconds == 0
    with storage.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_pickles(sqlite_url, clock, monkeypatch):
    original = RetryingRDBStorage(sqlite_url, retry_seconds=3)
    original._outage_start = clock.now  # pickled during an outage
    fail_first(monkeypatch, RDBStorage, "__setstate__", [lost_connection])
    with pytest.warns(StorageRetryWarning):
        storage = pickle.loads(pickle.dumps(original))
    assert isinstance(storage, RetryingRDBStorage) and storage.retry_seconds == 3
    assert storage._outage_start is None and clock.sleeps == [0.5]
    assert storage.get_all_studies() == []


# --- Ray on 127.0.0.1 --------------------------------------------------------------------------

# --- PostgreSQL through infra/local/up.sh ------------------------------------------------------

@pytest.fixture(scope="module")
def stack():
    """PostgreSQL + MLflow (infra/local/up.sh --no-ray) for the module."""
    yield from start_stack()


def pg_ctl(home: Path, *args: str) -> None:
    """``pg_ctl -D HOME/postgres -w ARGS`` as up.sh and down.sh run it ('postgres' when root)."""
    binary = shutil.which("pg_ctl") or sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))[-1]
    as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    subprocess.run([*as_pg, str(binary), "-D", str(home / "postgres"), "-w", *args], check=True,
                   capture_output=True, timeout=60)


@contextlib.contextmanager
def postgres_stopped(stack: dict):
    """PostgreSQL stopped (``-m fast``: clients are disconnected at once) for the block, then
    started again as up.sh starts it (same port, data and password)."""
    home = stack["home"]
    pg_ctl(home, "-m", "fast", "stop")
    try:
        yield
    finally:
        options = (f"-c listen_addresses=127.0.0.1 -p {stack['ports']['pg']} "
                   f"-c unix_socket_directories={home / 'postgres'}")
        pg_ctl(home, "-l", str(home / "postgres" / "server.log"), "-o", options, "start")


@needs_postgres
def test_postgres_restart_mid_study(loopback_ray, stack, tmp_path, monkeypatch, recwarn):
    env = stack["env"]
    for var in ("DAGSTUDY_OPTUNA_STORAGE", "MLFLOW_TRACKING_URI", "PGPASSWORD"):
        monkeypatch.setenv(var, env[var])  # before Ray starts: its workers need PGPASSWORD
    url = env["DAGSTUDY_OPTUNA_STORAGE"]
    poller = RDBStorage(url)
    spec = parse_spec(slow_trials("pg_restart", trials=4, epochs=60))
    thread, box = in_thread(lambda: run_study(spec, run_dir=tmp_path, num_cpus=2))

    def mid_study():
        states = by_state(poller, "pg_restart")
        running = [t for t in states.get(TrialState.RUNNING, []) if t.intermediate_values]
        return states.get(TrialState.COMPLETE) and running and states

    before = wait_until(mid_study, 240, "a COMPLETE trial and a reporting trial", poll=0.5)
    poller.engine.dispose()
    reader = open_storage(url)  # connected before the outage: its pooled connection dies
    with postgres_stopped(stack):
        down_at = time.monotonic()
        query, query_box = in_thread(reader.get_all_studies)
        opening, opening_box = in_thread(lambda: open_storage(url).get_all_studies())
        time.sleep(5)
        assert query.is_alive() and opening.is_alive()  # waiting for the server, not failed
    outage = time.monotonic() - down_at
    assert "pg_restart" in [s.study_name for s in joined(query, query_box, 30)]
    assert "pg_restart" in [s.study_name for s in joined(opening, opening_box, 30)]
    study = joined(thread, box, 180)

    assert_finished_budget(study, 4)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4  # no trial lost
    for t in before[TrialState.COMPLETE]:
        assert study.trials[t.number].value == t.value
    for t in before[TrialState.RUNNING]:
        assert sorted(study.trials[t.number].intermediate_values) == list(
            range(1, spec.epochs + 1))
    retry_warnings = [str(w.message) for w in recwarn if w.category is StorageRetryWarning]
    assert retry_warnings and outage >= 5
    assert not [m for m in retry_warnings if env["PGPASSWORD"] in m]


def opened_at_once(url: str, processes: int = 3) -> list:
    """``open_storage(url).get_all_studies()`` in threads started together (a driver each)."""
    barrier = threading.Barrier(processes)

    def open_storage_now():
        barrier.wait()
        storage = open_storage(url)
        try:
            return storage.get_all_studies()
        finally:
            storage.engine.dispose()

    return [joined(thread, box, 60) for thread, box in
            [in_thread(open_storage_now) for _ in range(processes)]]


def test_drivers_starting_at_once_on_an_empty_sqlite_database(tmp_path):
    """Plain ``RDBStorage``s opened at once on a new SQLite file race in creating the schema
    (most raise "table ... already exists" or an ``IntegrityError`` on alembic_version)."""
    for attempt in range(3):
        assert opened_at_once(f"sqlite:///{tmp_path / f'race{attempt}.db'}") == [[], [], []]


@needs_postgres
def test_drivers_starting_at_once_on_an_empty_postgres_database(stack, monkeypatch):
    """As on SQLite; PostgreSQL's race raises ``IntegrityError`` (``pg_type_typname_nsp_index``)."""
    monkeypatch.setenv("PGPASSWORD", stack["env"]["PGPASSWORD"])
    server = stack["env"]["DAGSTUDY_OPTUNA_STORAGE"].rsplit("/", 1)[0]
    admin = sqlalchemy.create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
    try:
        for _ in range(3):
            with admin.connect() as conn:
                conn.exec_driver_sql("DROP DATABASE IF EXISTS race")
                conn.exec_driver_sql("CREATE DATABASE race")
            assert opened_at_once(f"{server}/race") == [[], [], []]
    finally:
        admin.dispose()


# --- two studies at once on one storage --------------------------------------------------------

@contextlib.contextmanager
def local_ray():
    """One local Ray of 2 CPUs on 127.0.0.1 for drivers in other processes; yields its GCS
    address. Its workers get this process's environment as it is now (``PGPASSWORD``
    included), as the workers of ``up.sh``'s Ray head do."""
    ctx = ray.init(address="local", num_cpus=2, _node_ip_address="127.0.0.1",
                   include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    try:
        yield ctx.address_info["gcs_address"]
    finally:
        ray.shutdown()


PAIR_TRIALS = 4


def run_pair(tmp_path: Path, env: dict[str, str], address: str, names: dict[str, int]) -> None:
    """``dagstudy run`` of one study per ``name: width`` at once, each in its own process;
    both must exit 0 within 150 s."""
    procs = {}
    for name, width in names.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(slow_trials(
            name, trials=PAIR_TRIALS, epochs=12,
            search={"width": [width], "lr": [1e-3, 1e-2, 3e-2]})))
        with (tmp_path / f"{name}.log").open("w") as log:
            procs[name] = subprocess.Popen(
                [sys.executable, "-m", "dagstudy.cli", "run", str(path), "--run-dir",
                 str(tmp_path / "runs"), "--address", address],
                env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    deadline = time.monotonic() + 150
    try:
        for proc in procs.values():
            proc.wait(timeout=max(deadline - time.monotonic(), 1))
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for name, proc in procs.items():
        assert proc.returncode == 0, (tmp_path / f"{name}.log").read_text()[-3000:]


def assert_separate(url: str, mlflow_uri: str, names: dict[str, int]) -> None:
    """Each study: its budget of trials, all from its own space, logged to its own
    experiment; and the two ran at the same time."""
    spans = {}
    client = MlflowClient(mlflow_uri)
    for name, width in names.items():
        study = optuna.load_study(study_name=name, storage=url)
        assert_finished_budget(study, PAIR_TRIALS)
        assert len(study.trials) == PAIR_TRIALS
        for t in study.trials:
            assert t.params["width"] == width and t.user_attrs["config"]["width"] == width
        experiment = client.get_experiment_by_name(name)
        runs = [r for r in client.search_runs([experiment.experiment_id], max_results=1000)
                if r.data.tags.get("dagstudy.role") != "seed"]  # per-seed runs nest deeper
        parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
        assert len(parents) == 1
        children = {r.info.run_id: r for r in runs
                    if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id}
        assert len(children) == len(runs) - 1 == PAIR_TRIALS
        assert {t.user_attrs["mlflow_run_id"] for t in study.trials} == set(children)
        for run in children.values():
            assert run.data.tags["dagstudy.study"] == name
            assert run.data.params["width"] == str(width)
        spans[name] = (min(t.datetime_start for t in study.trials),
                       max(t.datetime_complete for t in study.trials))
    (a_start, a_end), (b_start, b_end) = spans.values()
    assert a_start < b_end and b_start < a_end, spans  # they overlapped in time


@needs_postgres
def test_two_studies_at_once_on_postgres(loopback_ray, stack, tmp_path, monkeypatch):
    names = {"pg_pair_narrow": 8, "pg_pair_wide": 16}
    env = stack["env"]
    for var in ("DAGSTUDY_OPTUNA_STORAGE", "MLFLOW_TRACKING_URI", "PGPASSWORD"):
        monkeypatch.setenv(var, env[var])
    with local_ray() as address:
        run_pair(tmp_path, dict(os.environ), address, names)
    assert not (tmp_path / "runs" / "optuna.db").exists()
    assert_separate(env["DAGSTUDY_OPTUNA_STORAGE"], env["MLFLOW_TRACKING_URI"], names)
