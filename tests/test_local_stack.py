"""infra/local/up.sh and down.sh for real: PostgreSQL + MLflow on 127.0.0.1 in a temporary
DAGSTUDY_HOME (free ports), idempotence, a small study through them from a subprocess, reads
from other processes, loopback-only binding, and where the password is (and is not).

A second stack (``auth_stack``) runs MLflow with ``--mlflow-auth`` (its basic-auth app): the REST
API answers only the generated admin password, foreign Host headers are refused, the mode is
remembered, and a tiny study logs through it with MLFLOW_TRACKING_USERNAME / _PASSWORD."""

import base64
import copy
import importlib.util
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from local_stack_util import (
    ROOT,
    mlflow_healthy,
    reachable,
    read_env,
    script_env,
    start_stack,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (shutil.which("initdb") and shutil.which("pg_ctl"))
        and not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")),
        reason="PostgreSQL (initdb / pg_ctl) is not installed",
    ),
    pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed"),
    pytest.mark.skipif(
        os.geteuid() == 0 and shutil.which("runuser") is None,
        reason="as root, up.sh runs PostgreSQL as 'postgres' through runuser",
    ),
]


@pytest.fixture(scope="module")
def stack():
    """PostgreSQL + MLflow without auth."""
    yield from start_stack()


def test_up_starts_postgres_and_mlflow_and_is_idempotent(stack):
    env, ports = stack["env"], stack["ports"]
    assert env["DAGSTUDY_OPTUNA_STORAGE"] == (
        f"postgresql+psycopg2://dagstudy@127.0.0.1:{ports['pg']}/optuna")
    assert env["MLFLOW_TRACKING_URI"] == f"http://127.0.0.1:{ports['mlflow']}"
    assert "RAY_ADDRESS" not in env  # --no-ray
    for line in ("DAGSTUDY_OPTUNA_STORAGE", "MLFLOW_TRACKING_URI", "PGPASSWORD"):
        assert f"export {line}=" in stack["first"].stdout
    pids = (stack["home"] / "stack" / "mlflow.pid").read_text()

    second = subprocess.run(stack["args"], env=script_env(stack["home"]), capture_output=True,
                            text=True, timeout=60)
    assert second.returncode == 0, second.stderr
    assert "already running" in second.stderr
    assert (stack["home"] / "stack" / "mlflow.pid").read_text() == pids  # not restarted
    assert read_env(stack["home"] / "stack.env") == env  # same password, same URLs
    assert mlflow_healthy(env["MLFLOW_TRACKING_URI"])
    import psycopg2  # both databases answer with the generated password

    for db in ("optuna", "mlflow"):
        with psycopg2.connect(host="127.0.0.1", port=ports["pg"], user="dagstudy", dbname=db,
                              password=env["PGPASSWORD"]) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
            assert cur.fetchone() == (1,)
    with pytest.raises(psycopg2.OperationalError):  # and only with it
        psycopg2.connect(host="127.0.0.1", port=ports["pg"], user="dagstudy", dbname="optuna",
                         password="wrong-password").close()


def run_small_study(stack: dict, tmp_path: Path, name: str, trials: int,
                    epochs: int) -> tuple[Path, dict[str, str], subprocess.CompletedProcess]:
    """studies/smoke.yaml cut down to `trials` trials of one seed, run as `dagstudy run` in a
    subprocess with the stack's environment (stack.env): its run dir, environment, process."""
    data = copy.deepcopy(yaml.safe_load((ROOT / "studies" / "smoke.yaml").read_text()))
    data.update(name=name, epochs=epochs, budget={"trials": trials}, seeds=1)
    data["sampler"]["n_startup_trials"] = min(2, trials)
    data["pruner"] = {"name": "none"}  # every trial completes: one child run each
    study_file = tmp_path / f"{name}.yaml"
    study_file.write_text(yaml.safe_dump(data))
    env = {**script_env(stack["home"]), **stack["env"]}
    run_dir = tmp_path / "runs"

    run = subprocess.run([sys.executable, "-m", "dagstudy.cli", "run", str(study_file),
                          "--run-dir", str(run_dir), "--num-cpus", "2"],
                         env=env, capture_output=True, text=True, timeout=150, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    return run_dir, env, run


def assert_one_parent_and_trial_runs(client, study: str, numbers: list[int]):
    """The study's experiment holds one parent run and one child run per trial number in
    ``numbers``; returns the parent run."""
    experiment = client.get_experiment_by_name(study)
    assert experiment is not None
    runs = [r for r in client.search_runs([experiment.experiment_id], max_results=1000)
            if r.data.tags.get("dagstudy.role") != "seed"]  # per-seed runs nest deeper
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1
    children = [r for r in runs
                if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert sorted(int(r.data.tags["dagstudy.trial"]) for r in children) == numbers
    return parents[0]


def test_study_through_the_stack(stack, tmp_path):
    run_dir, env, _ = run_small_study(stack, tmp_path, "stack_smoke", trials=4, epochs=2)
    assert not (run_dir / "optuna.db").exists()  # PostgreSQL, not the SQLite fallback
    assert not (run_dir / "mlflow.db").exists()

    # best_configs from another process, against the PostgreSQL URL.
    code = (
        "import json, sys, optuna\n"
        "from dagstudy import best_configs\n"
        "url = sys.argv[1]\n"
        "df = best_configs('stack_smoke', k=1, storage=url)\n"
        "s = optuna.load_study(study_name='stack_smoke', storage=url)\n"
        "print(json.dumps({'best': int(df.number[0]), 'objective': float(df.objective[0]),\n"
        "                  'optuna_best': s.best_trial.number, 'value': s.best_value,\n"
        "                  'n': len(s.trials)}))\n"
    )
    query = subprocess.run([sys.executable, "-c", code, stack["env"]["DAGSTUDY_OPTUNA_STORAGE"]],
                           env=env, capture_output=True, text=True, timeout=60)
    assert query.returncode == 0, query.stderr[-3000:]
    got = json.loads(query.stdout.strip().splitlines()[-1])
    assert got["n"] == 4
    assert got["best"] == got["optuna_best"]
    assert got["objective"] == pytest.approx(got["value"])

    # MLflow through the server: a parent run and one child run per trial.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(stack["env"]["MLFLOW_TRACKING_URI"])
    assert_one_parent_and_trial_runs(client, "stack_smoke", [0, 1, 2, 3])


def non_loopback_address() -> str | None:
    """An IPv4 address of this machine other than 127.0.0.0/8, if there is one."""
    try:
        out = subprocess.run(["hostname", "-I"], capture_output=True, text=True,
                             timeout=5).stdout.split()
    except (OSError, subprocess.SubprocessError):
        out = []
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # no packet is sent: only picks the outgoing address
            out.append(s.getsockname()[0])
    except OSError:
        pass
    for addr in out:
        if "." in addr and not addr.startswith("127.") and addr != "0.0.0.0":
            return addr
    return None


def test_ports_bind_loopback_only(stack):
    addr = non_loopback_address()
    if addr is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    for name, port in stack["ports"].items():
        assert reachable("127.0.0.1", port), name
        assert not reachable(addr, port), f"{name} port {port} answers on {addr}"


def test_password_file_private_and_not_on_command_lines(stack):
    home = stack["home"]
    password = stack["env"]["PGPASSWORD"]
    assert len(password) >= 32
    for path in (home / "stack" / "postgres_password", home / "stack.env"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert (home / "stack" / "postgres_password").read_text().strip() == password
    ps = subprocess.run(["ps", "-eww", "-o", "pid,args", "--no-headers"], capture_output=True,
                        text=True, timeout=10).stdout
    ours = [line for line in ps.splitlines() if str(home) in line]
    assert any("postgres" in line for line in ours) and any("mlflow" in line for line in ours)
    assert password not in ps
    for path in (home / "stack" / "mlflow.log", home / "postgres" / "server.log"):
        if path.exists():
            assert password not in path.read_text(errors="replace"), path


# ------------------------------------------------------------ MLflow basic auth (--mlflow-auth)

SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"  # a GET route of the REST API


@pytest.fixture(scope="module")
def auth_stack():
    """PostgreSQL + MLflow with its basic-auth app (one stack for every auth test)."""
    if importlib.util.find_spec("flask_wtf") is None:
        pytest.skip('MLflow\'s basic-auth app needs Flask-WTF: pip install "mlflow[auth]"')
    # An MLFLOW_AUTH_ADMIN_PASSWORD left in the shell would override the generated password
    # in basic_auth.ini; up.sh removes it from the server's environment.
    yield from start_stack("--mlflow-auth", extra_env={
        "MLFLOW_AUTH_ADMIN_PASSWORD": "inherited-from-the-shell-0123456789"})


def http_status(url: str, user: str | None = None, password: str | None = None,
                host: str | None = None) -> int:
    """The HTTP status of a GET, with basic-auth credentials and a Host header if given."""
    request = urllib.request.Request(url)
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    if host is not None:
        request.add_header("Host", host)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


def test_auth_stack_answers_only_the_generated_admin_password(auth_stack):
    env, home, port = auth_stack["env"], auth_stack["home"], auth_stack["ports"]["mlflow"]
    uri = env["MLFLOW_TRACKING_URI"]
    assert uri == f"http://127.0.0.1:{port}"
    password = (home / "stack" / "mlflow_admin_password").read_text().strip()
    assert len(password) >= 32 and password != "password1234"
    assert env["MLFLOW_TRACKING_USERNAME"] == "admin"
    assert env["MLFLOW_TRACKING_PASSWORD"] == password
    out = auth_stack["first"].stdout  # the exports read the password from its file
    assert "export MLFLOW_TRACKING_USERNAME='admin'" in out
    assert (f"export MLFLOW_TRACKING_PASSWORD=\"$(cat '{home}/stack/mlflow_admin_password')\""
            in out)
    assert password not in out
    for name in ("mlflow_admin_password", "mlflow_flask_secret_key", "basic_auth.ini"):
        assert stat.S_IMODE((home / "stack" / name).stat().st_mode) == 0o600, name
    assert stat.S_IMODE((home / "stack").stat().st_mode) == 0o700

    assert http_status(f"{uri}/health") == 200  # health stays open
    assert http_status(f"{uri}{SEARCH}") == 401  # no credentials
    assert http_status(f"{uri}{SEARCH}", "admin", "password1234") == 401  # MLflow's old default
    assert http_status(f"{uri}{SEARCH}", "admin", password[:-1] + "x") == 401
    assert http_status(f"{uri}{SEARCH}", "admin", "inherited-from-the-shell-0123456789") == 401
    assert http_status(f"{uri}{SEARCH}", "admin", password) == 200
    # --allowed-hosts: a foreign Host header is refused even with valid credentials
    assert http_status(f"{uri}{SEARCH}", "admin", password, host=f"evil.example:{port}") == 403
    assert http_status(f"{uri}{SEARCH}", "admin", password, host=f"localhost:{port}") == 200

    import psycopg2  # the user store is its own database

    with psycopg2.connect(host="127.0.0.1", port=auth_stack["ports"]["pg"], user="dagstudy",
                          dbname="mlflow_auth", password=env["PGPASSWORD"]) as conn, \
            conn.cursor() as cur:
        cur.execute("SELECT username, is_admin FROM users")
        assert cur.fetchall() == [("admin", True)]


def test_auth_mode_is_remembered_and_idempotent(auth_stack):
    home = auth_stack["home"]
    pid = (home / "stack" / "mlflow.pid").read_text()
    # without --mlflow-auth: auth stays on, nothing restarts, the same password
    args = [a for a in auth_stack["args"] if a != "--mlflow-auth"]
    second = subprocess.run(args, env=script_env(home), capture_output=True, text=True,
                            timeout=60)
    assert second.returncode == 0, second.stderr
    assert "keeping it on" in second.stderr
    assert "MLflow already running" in second.stderr and "auth: basic-auth" in second.stderr
    assert (home / "stack" / "mlflow.pid").read_text() == pid
    assert read_env(home / "stack.env") == auth_stack["env"]
    assert "export MLFLOW_TRACKING_PASSWORD=" in second.stdout


def test_auth_requested_on_a_running_server_without_auth_is_an_error(stack):
    """up.sh --mlflow-auth never restarts (or silently keeps) a server without auth."""
    home = stack["home"]
    pid = (home / "stack" / "mlflow.pid").read_text()
    env_before = (home / "stack.env").read_text()
    run = subprocess.run([*stack["args"], "--mlflow-auth"], env=script_env(home),
                         capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    assert "runs with auth 'none', not 'basic-auth'" in run.stderr
    assert "down.sh" in run.stderr
    assert run.stdout == ""  # no exports
    # nothing changed: no secrets generated (which would turn auth on for the next run)
    assert not (home / "stack" / "mlflow_admin_password").exists()
    assert (home / "stack" / "mlflow.pid").read_text() == pid
    assert (home / "stack.env").read_text() == env_before
    assert http_status(f"{stack['env']['MLFLOW_TRACKING_URI']}{SEARCH}") == 200


def test_study_through_the_auth_stack(auth_stack, tmp_path, monkeypatch):
    run_dir, _, run = run_small_study(auth_stack, tmp_path, "auth_smoke", trials=2, epochs=1)
    assert not (run_dir / "mlflow.db").exists()
    # dagstudy spools records instead of failing when MLflow refuses them: it must not have
    assert "TrackingWarning" not in run.stderr, run.stderr[-3000:]

    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(auth_stack["env"]["MLFLOW_TRACKING_URI"])
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(MlflowException):  # the client too is refused without credentials
        client.get_experiment_by_name("auth_smoke")
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.setenv(name, auth_stack["env"][name])
    parent = assert_one_parent_and_trial_runs(client, "auth_smoke", [0, 1])
    # artifacts went through the authenticated server into its --artifacts-destination
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert "study.json" in artifacts
    assert list((auth_stack["home"] / "mlflow-artifacts").rglob("study.json"))


def test_study_without_credentials_stops_before_any_work(auth_stack, tmp_path, monkeypatch):
    """Wrong or missing MLflow credentials are bad input, not an outage to spool through."""
    data = copy.deepcopy(yaml.safe_load((ROOT / "studies" / "smoke.yaml").read_text()))
    data["name"] = "no_credentials"
    study_file = tmp_path / "no_credentials.yaml"
    study_file.write_text(yaml.safe_dump(data))
    env = {**script_env(auth_stack["home"]), **auth_stack["env"]}
    for wrong in (None, "wrong-password"):
        env.pop("MLFLOW_TRACKING_PASSWORD", None)
        if wrong:
            env["MLFLOW_TRACKING_PASSWORD"] = wrong
        run = subprocess.run([sys.executable, "-m", "dagstudy.cli", "run", str(study_file),
                              "--run-dir", str(tmp_path / "runs")],
                             env=env, capture_output=True, text=True, timeout=120)
        assert run.returncode == 2, run.stderr[-3000:]
        assert "refused the credentials (HTTP 401)" in run.stderr
        assert "MLFLOW_TRACKING_PASSWORD" in run.stderr
        assert "Ray" not in run.stderr  # stopped before Ray started
    import optuna

    url = auth_stack["env"]["DAGSTUDY_OPTUNA_STORAGE"]
    monkeypatch.setenv("PGPASSWORD", auth_stack["env"]["PGPASSWORD"])
    assert "no_credentials" not in optuna.get_all_study_names(url)  # no study was created


def test_auth_secrets_not_on_command_lines_or_in_logs(auth_stack):
    home = auth_stack["home"]
    secrets = {
        "admin password": (home / "stack" / "mlflow_admin_password").read_text().strip(),
        "flask secret key": (home / "stack" / "mlflow_flask_secret_key").read_text().strip(),
        "postgres password": auth_stack["env"]["PGPASSWORD"],
    }
    ps = subprocess.run(["ps", "-eww", "-o", "pid,args", "--no-headers"], capture_output=True,
                        text=True, timeout=10).stdout
    servers = [line for line in ps.splitlines() if str(home) in line and "mlflow" in line]
    assert servers and all("--app-name basic-auth" in line and "--allowed-hosts" in line
                           for line in servers)
    logs = [home / "stack" / "mlflow.log", home / "postgres" / "server.log",
            home / "stack" / "initdb.log"]
    for what, secret in secrets.items():
        assert secret not in ps, what
        for path in logs:
            if path.exists():
                assert secret not in path.read_text(errors="replace"), (what, path)
    # they reach the server through its environment instead
    pid = (home / "stack" / "mlflow.pid").read_text().strip()
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        pytest.skip("cannot read the server's environment")
    names = {item.split(b"=", 1)[0].decode() for item in environ if item}
    assert {"MLFLOW_AUTH_CONFIG_PATH", "MLFLOW_FLASK_SERVER_SECRET_KEY"} <= names
    assert "MLFLOW_AUTH_ADMIN_PASSWORD" not in names  # set in up.sh's environment (fixture)


def test_auth_stack_binds_loopback_only(auth_stack):
    addr = non_loopback_address()
    if addr is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    for name, port in auth_stack["ports"].items():
        assert reachable("127.0.0.1", port), name
        assert not reachable(addr, port), f"{name} port {port} answers on {addr}"
