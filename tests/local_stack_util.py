"""Real servers for the tests: free ports, and infra/local/up.sh's stack (PostgreSQL + MLflow on
127.0.0.1) in a fresh directory, taken down with down.sh --purge."""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UP = ROOT / "infra" / "local" / "up.sh"
DOWN = ROOT / "infra" / "local" / "down.sh"
VENV_BIN = Path(sys.executable).parent


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
                        "PGPASSWORD", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                        "MLFLOW_TRACKING_TOKEN", "MLFLOW_FLASK_SERVER_SECRET_KEY")
           and not k.startswith("MLFLOW_AUTH_")}
    env.update(DAGSTUDY_HOME=str(home), PATH=f"{VENV_BIN}{os.pathsep}{env['PATH']}")
    return env


def mlflow_healthy(uri: str) -> bool:
    try:
        return urllib.request.urlopen(f"{uri}/health", timeout=5).status == 200
    except OSError:
        return False


def start_stack(*flags: str, extra_env: dict[str, str] | None = None):
    """up.sh --no-ray FLAGS in a fresh directory; down.sh --purge and removal afterwards."""
    # Not under pytest's 0700 basetemp: as root, PostgreSQL runs as 'postgres', which must be
    # able to reach its data directory.
    home = Path(tempfile.mkdtemp(prefix="dagstudy-stack-"))
    home.chmod(0o755)
    ports = {"pg": free_port(), "mlflow": free_port()}
    args = ["bash", str(UP), "--no-ray", "--pg-port", str(ports["pg"]),
            "--mlflow-port", str(ports["mlflow"]), *flags]
    try:
        start = time.perf_counter()
        first = subprocess.run(args, env={**script_env(home), **(extra_env or {})},
                               capture_output=True, text=True, timeout=150)
        assert first.returncode == 0, first.stderr
        yield {"home": home, "ports": ports, "args": args, "first": first,
               "up_s": time.perf_counter() - start, "env": read_env(home / "stack.env")}
    finally:
        subprocess.run(["bash", str(DOWN), "--purge"], env=script_env(home), timeout=120,
                       capture_output=True)
        shutil.rmtree(home, ignore_errors=True)
