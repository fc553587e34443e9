"""Every MLflow server a test starts (directly, through ``infra/local/up.sh`` or ``dagstudy ui``)
runs without MLflow's GenAI job runner, as ``dagstudy ui`` and the stacks start it: two Huey
processes fewer per server (see ``dagstudy.cli.browse.JOBS_OFF``). Fixtures shared by several
test files: ``no_ray_env`` (a test that starts its own local Ray and stores, with no stack
settings from the environment), ``loopback_ray`` and ``cluster`` (Ray clusters on 127.0.0.1)."""

import os

import pytest
import ray
from local_stack_util import VENV_BIN
from ray.cluster_utils import Cluster

from dagstudy.cli.browse import JOBS_OFF

os.environ.setdefault(*JOBS_OFF)


@pytest.fixture
def no_ray_env(monkeypatch):
    """No stack settings in the environment and no Ray connection, before and after."""
    for var in ("DAGSTUDY_OPTUNA_STORAGE", "MLFLOW_TRACKING_URI", "DAGSTUDY_HOME", "RAY_ADDRESS"):
        monkeypatch.delenv(var, raising=False)
    if ray.is_initialized():
        ray.shutdown()
    yield
    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture
def loopback_ray(monkeypatch):
    """Ray settings for clusters bound to 127.0.0.1, here and in child processes.

    Ray turns ``127.0.0.1`` in an address into this machine's outward IP, which a node bound
    to 127.0.0.1 does not answer; its single-machine mode (clusters "disabled" as on macOS)
    keeps loopback addresses as they are."""
    assert not ray.is_initialized()
    for var in ("DAGSTUDY_OPTUNA_STORAGE", "MLFLOW_TRACKING_URI", "DAGSTUDY_HOME", "RAY_ADDRESS",
                "PGPASSWORD"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    monkeypatch.setattr(ray._private.ray_constants, "ENABLE_RAY_CLUSTER", False)
    monkeypatch.setenv("PATH", f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}")
    yield
    if ray.is_initialized():  # a failed test left its driver connected
        ray.shutdown()


@pytest.fixture
def cluster(loopback_ray):
    """A head node without CPUs (and its dashboard) and two worker nodes of one CPU each."""
    loopback = {"node_ip_address": "127.0.0.1"}
    nodes = Cluster(initialize_head=True, head_node_args={
        **loopback, "num_cpus": 0, "include_dashboard": True, "dashboard_host": "127.0.0.1",
        "dashboard_port": 0})
    try:
        workers = [nodes.add_node(num_cpus=1, **loopback) for _ in range(2)]
        nodes.wait_for_nodes()
        yield nodes, workers
    finally:
        ray.shutdown()
        nodes.shutdown()
