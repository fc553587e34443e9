"""Ray: connect to a local instance or a cluster, run confirmation arms as tasks, submit a study
as a Ray job.

A local Ray (``connect_ray()`` with no address) runs on this machine only; a cluster is joined
with an address (or ``RAY_ADDRESS``, as inside a Ray job), and this ``dagstudy`` package is
shipped to its workers.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import ray

from dagstudy.study.spec import Resources
from dagstudy.study.worker import train_job

_train_job_task = ray.remote(train_job)

PACKAGE_DIR = str(Path(__file__).resolve().parents[1])
"""This ``dagstudy`` package's directory: what a cluster's workers and a Ray job are given."""


def ray_runner(
    resources: Resources | None = None, device: str = "auto"
) -> Callable[[list], Iterable[tuple[Any, dict[str, Any]]]]:
    """A ``confirm.Runner`` over Ray tasks: every job launched at once (``on_start(job)`` just
    before each), each result yielded as it finishes. Connect Ray first (``connect_ray``)."""
    res = resources or Resources()

    def run(jobs: list, on_start: Callable[[Any], None] | None = None
            ) -> Iterable[tuple[Any, dict[str, Any]]]:
        opts = dict(num_cpus=res.cpus, num_gpus=res.gpu, max_retries=1)
        refs = {}
        for job in jobs:
            if on_start is not None:
                on_start(job)
            refs[_train_job_task.options(**opts).remote(
                job.config.model_dump(), list(job.seeds), device, max(1, int(res.cpus)))] = job
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1)
            yield refs.pop(ready[0]), ray.get(ready[0])

    return run


SHIPPED_ENV = ("DAGSTUDY_STORAGE_RETRY_SECONDS",)
"""Driver settings the workers of a joined cluster get too. Secrets are not shipped (a Ray
``runtime_env`` is visible in its dashboard): each node's Ray needs ``PGPASSWORD`` (or a
``PGPASSFILE``) in the environment it was started with."""


def connect_ray(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Connect to Ray unless connected already: ``address`` (or ``RAY_ADDRESS``, as inside a
    Ray job) joins a cluster and ships this ``dagstudy`` package to its workers; otherwise a
    new local instance starts (never silently an unrelated ``ray start`` one) with
    ``num_cpus`` (default: this machine's). Returns True when this call started or joined Ray
    (the caller then calls ``ray.shutdown()``)."""
    if ray.is_initialized():
        return False
    quiet = dict(log_to_driver=False, logging_level="WARNING")
    if address:
        package = PACKAGE_DIR
        env = {k: os.environ[k] for k in SHIPPED_ENV if k in os.environ}
        ray.init(address=address, runtime_env={"py_modules": [package], "env_vars": env},
                 **quiet)
    elif os.environ.get("RAY_ADDRESS"):
        ray.init(**quiet)
    else:
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False,
                 **quiet)
    return True


def job_submission(study_file: str | os.PathLike, workdir: Path, *,
                   run_dir: str | None = None, trials: int | None = None) -> dict[str, Any]:
    """``JobSubmissionClient.submit_job`` arguments that run ``study_file`` on a cluster.

    The study file is copied into ``workdir`` (the job's ``working_dir``) and the ``dagstudy``
    package travels as a ``py_modules`` entry; the cluster's Python must have the
    dependencies. The job's driver runs ``python -m dagstudy.cli run`` on the head node and
    joins the cluster through ``RAY_ADDRESS``; storage resolves there, from the study's
    ``storage`` section or the head node's environment or ``run_dir``.
    """
    source = Path(study_file)
    shutil.copy(source, workdir / source.name)
    entrypoint = f"python -m dagstudy.cli run {source.name}"
    if run_dir:
        entrypoint += f" --run-dir {run_dir}"
    if trials:
        entrypoint += f" --trials {trials}"
    package = PACKAGE_DIR
    return {"entrypoint": entrypoint,
            "runtime_env": {"working_dir": str(workdir), "py_modules": [package]},
            "metadata": {"dagstudy_study": source.stem}}


def submit(study_file: str | os.PathLike, address: str, *, run_dir: str | None = None,
           trials: int | None = None) -> str:
    """Submit ``study_file`` as a Ray job to the cluster whose dashboard is ``address``
    (``http://HEAD:8265``); returns the job id. See ``job_submission``."""
    from ray.job_submission import JobSubmissionClient

    with tempfile.TemporaryDirectory() as tmp:
        kwargs = job_submission(study_file, Path(tmp), run_dir=run_dir, trials=trials)
        return JobSubmissionClient(address).submit_job(**kwargs)
