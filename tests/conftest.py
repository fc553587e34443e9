"""Every MLflow server a test starts (directly, through ``infra/local/up.sh`` or ``dagstudy ui``)
runs without MLflow's GenAI job runner, as ``dagstudy ui`` and the stacks start it: two Huey
processes fewer per server (see ``dagstudy.cli.browse.JOBS_OFF``). ``no_ray_env``: a test that
starts its own local Ray and stores, with no stack settings from the environment."""

import os

import pytest
import ray

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
