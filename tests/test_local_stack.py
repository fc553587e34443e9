"""infra/local/up.sh and down.sh for real: PostgreSQL + MLflow on 127.0.0.1 in a temporary
DAGSTUDY_HOME (free ports), idempotence, a small study through them from a subprocess, reads
from other processes, loopback-only binding, and where the password is (and is not)."""

import copy
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
UP = ROOT / "infra" / "local" / "up.sh"
DOWN = ROOT / "infra" / "local" / "down.sh"
VENV_BIN = Path(sys.executable).parent

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def reachable(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
        return True
    except OSError:
        return False


def read_env(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines()
             if line and not line.startswith("#"))
    return {k: v for k, v in pairs}


def script_env(home: Path) -> dict[str, str]:
    """This environment without the stack's variables, the venv first on PATH."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("DAGSTUDY_OPTUNA_STORAGE", "MLFLOW_TRACKING_URI", "RAY_ADDRESS",
                        "PGPASSWORD")}
    env.update(DAGSTUDY_HOME=str(home), PATH=f"{VENV_BIN}{os.pathsep}{env['PATH']}")
    return env


def mlflow_healthy(uri: str) -> bool:
    try:
        return urllib.request.urlopen(f"{uri}/health", timeout=5).status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def stack():
    """up.sh --no-ray in a fresh directory; down.sh --purge and removal afterwards."""
    # Not under pytest's 0700 basetemp: as root, PostgreSQL runs as 'postgres', which must be
    # able to reach its data directory.
    home = Path(tempfile.mkdtemp(prefix="dagstudy-stack-"))
    home.chmod(0o755)
    ports = {"pg": free_port(), "mlflow": free_port()}
    args = ["bash", str(UP), "--no-ray", "--pg-port", str(ports["pg"]),
            "--mlflow-port", str(ports["mlflow"])]
    try:
        start = time.perf_counter()
        first = subprocess.run(args, env=script_env(home), capture_output=True, text=True,
                               timeout=150)
        assert first.returncode == 0, first.stderr
        yield {"home": home, "ports": ports, "args": args, "first": first,
               "up_s": time.perf_counter() - start, "env": read_env(home / "stack.env")}
    finally:
        subprocess.run(["bash", str(DOWN), "--purge"], env=script_env(home), timeout=120,
                       capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


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


def test_study_through_the_stack(stack, tmp_path):
    data = yaml.safe_load((ROOT / "studies" / "smoke.yaml").read_text())
    data = copy.deepcopy(data)
    data.update(name="stack_smoke", epochs=2, budget={"trials": 4}, seeds=1)
    data["sampler"]["n_startup_trials"] = 2
    data["pruner"] = {"name": "none"}  # every trial completes: one child run each
    study_file = tmp_path / "stack_smoke.yaml"
    study_file.write_text(yaml.safe_dump(data))
    env = {**script_env(stack["home"]), **stack["env"]}
    run_dir = tmp_path / "runs"

    run = subprocess.run([sys.executable, "-m", "dagstudy.cli", "run", str(study_file),
                          "--run-dir", str(run_dir), "--num-cpus", "2"],
                         env=env, capture_output=True, text=True, timeout=150, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
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
    experiment = client.get_experiment_by_name("stack_smoke")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1
    children = [r for r in runs
                if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert sorted(int(r.data.tags["dagstudy.trial"]) for r in children) == [0, 1, 2, 3]


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
