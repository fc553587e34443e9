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
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import ray

from dagstudy.study.feed import STREAM_SECONDS, FeedReader, open_feed
from dagstudy.study.rdb import error_line
from dagstudy.study.spec import Resources
from dagstudy.study.worker import train_job
from dagstudy.trainer import TrialResult

_train_job_task = ray.remote(train_job)

PACKAGE_DIR = str(Path(__file__).resolve().parents[1])
"""This ``dagstudy`` package's directory: what a cluster's workers and a Ray job are given."""


def ray_runner(
    resources: Resources | None = None, device: str = "auto"
) -> Callable[..., Iterable[tuple[Any, dict[str, Any]]]]:
    """A confirmation ``Runner`` over Ray tasks: every job launched at once (``on_start(job)``
    just before each), each result yielded as it finishes. With ``on_epochs(job, rows,
    epoch_ms)`` the tasks' per-epoch rows arrive live through an ``EpochFeed``, read every
    ``STREAM_SECONDS`` while jobs run (``FeedReader``). A job whose task raised, or whose
    worker died twice, yields a ``TrialResult.crashed`` result with the reason. Connect Ray
    first (``connect_ray``)."""
    res = resources or Resources()

    def run(jobs: list, on_start: Callable[[Any], None] | None = None,
            on_epochs: Callable[[Any, list, list[int]], None] | None = None
            ) -> Iterable[tuple[Any, dict[str, Any]]]:
        opts = dict(num_cpus=res.cpus, num_gpus=res.gpu, max_retries=1)
        feed = open_feed() if on_epochs is not None else None
        reader = FeedReader(feed, STREAM_SECONDS) if feed is not None else None
        refs = {}
        for index, job in enumerate(jobs):
            if on_start is not None:
                on_start(job)
            refs[_train_job_task.options(**opts).remote(
                job.config.model_dump(), list(job.seeds), device, max(1, int(res.cpus)),
                feed, index)] = job
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1,
                                timeout=STREAM_SECONDS if feed is not None else None)
            if reader is not None:
                for index, (rows, epoch_ms) in reader.poll().items():
                    on_epochs(jobs[index], rows, epoch_ms)
            if not ready:
                continue
            job = refs.pop(ready[0])
            try:
                result = ray.get(ready[0])
            except ray.exceptions.RayTaskError as e:
                result = _crashed(job, f"task raised {error_line(e.cause or e)}")
            except ray.exceptions.RayError as e:
                result = _crashed(job, f"worker died (retried once): {error_line(e)}")
            yield job, result

    return run


def _crashed(job: Any, reason: str) -> dict[str, Any]:
    return TrialResult.crashed(job.config, list(job.seeds), reason).to_dict()


SHIPPED_ENV = ("DAGSTUDY_STORAGE_RETRY_SECONDS",)
"""Driver settings the workers of a joined cluster get too. Secrets are not shipped (a Ray
``runtime_env`` is visible in its dashboard): each node's Ray needs ``PGPASSWORD`` (or a
``PGPASSFILE``) in the environment it was started with."""


LOCAL_SYSTEM_CONFIG = {"task_oom_retries": 1}
"""A local Ray's settings: a task its memory monitor kills is re-run once, as a task whose worker
died is (``max_retries=1``), never without limit (Ray's default). Clusters set
``RAY_task_oom_retries=1`` in each node's environment (``infra/``)."""


def _start_local_ray(num_cpus: int | None, **kwargs: Any) -> None:
    """A new single-machine Ray whose every listening socket is on 127.0.0.1, with no dashboard.

    Ray binds its servers (GCS, raylet, workers, agents, metrics exporters) to the node IP it
    picks, and picks the machine's outward address whenever its cluster mode is on (Linux's
    default). Its single-machine mode keeps the node on loopback; Ray reads that mode from
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` in each process it starts, and from a constant this
    process imported already, so both are set for the duration of the start. A start that
    times out is tried again once (``START_ATTEMPTS``).
    """
    from ray._private import ray_constants

    saved_env = os.environ.get(LOOPBACK_ENV)
    saved_flag = ray_constants.ENABLE_RAY_CLUSTER
    os.environ[LOOPBACK_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                ray.init(address="local", num_cpus=num_cpus or os.cpu_count(),
                         include_dashboard=False, _node_ip_address="127.0.0.1",
                         _system_config=LOCAL_SYSTEM_CONFIG, **kwargs)
                return
            except Exception as e:  # Ray waits a fixed 30 s for its raylet to register
                if attempt == START_ATTEMPTS or "timed out during startup" not in str(e):
                    raise
                ray.shutdown()
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(LOOPBACK_ENV, None)
        else:
            os.environ[LOOPBACK_ENV] = saved_env


LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"

START_ATTEMPTS = 2
"""Starts of a local Ray tried when the first "timed out during startup": Ray gives its raylet a
fixed 30 s to register with the GCS, which a machine whose cores are all busy can miss."""


def connect_ray(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Connect to Ray unless connected already: ``address`` (or ``RAY_ADDRESS``, as inside a
    Ray job) joins a cluster and ships this ``dagstudy`` package to its workers (inside a Ray job,
    ``DAGSTUDY_RAY_ADDRESS``, set by ``submit(..., ray_address=)``, comes first); otherwise a
    new local instance starts on 127.0.0.1 only (never silently an unrelated ``ray start``
    one) with ``num_cpus`` (default: this machine's). Returns True when this call started or
    joined Ray (the caller then calls ``ray.shutdown()``)."""
    if ray.is_initialized():
        return False
    quiet = dict(log_to_driver=False, logging_level="WARNING")
    job_address = os.environ.get(JOB_RAY_ADDRESS)  # inside a job: its runtime env applies
    if address:
        env = {k: os.environ[k] for k in SHIPPED_ENV if k in os.environ}
        ray.init(address=address, runtime_env={"py_modules": [PACKAGE_DIR], "env_vars": env},
                 **quiet)
    elif job_address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=job_address, **quiet)
    else:
        _start_local_ray(num_cpus, **quiet)
    return True


def check_fits(resources: Resources) -> None:
    """Raise ``ClusterTooSmall`` when no alive node of the connected Ray has ``resources.cpus``
    CPUs and ``resources.gpu`` GPUs (a task asking more would wait forever)."""
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    fits = [n for n in nodes
            if n.get("CPU", 0) >= resources.cpus and n.get("GPU", 0) >= resources.gpu]
    if not fits:
        largest = max(nodes, key=lambda n: (n.get("CPU", 0), n.get("GPU", 0)), default={})
        raise ClusterTooSmall(
            f"resources: a trial asks {resources.cpus:g} CPUs and {resources.gpu:g} GPUs, but "
            f"the largest node of this Ray has {largest.get('CPU', 0):g} CPUs and "
            f"{largest.get('GPU', 0):g} GPUs ({len(nodes)} nodes)")


class ClusterTooSmall(ValueError):
    """The study asks more per trial than any node of the cluster has."""


JOB_RAY_ADDRESS = "DAGSTUDY_RAY_ADDRESS"
"""The GCS address a submitted job's driver joins, when the submitter gave one: Ray's job
supervisor sets ``RAY_ADDRESS=auto``, which finds *a* Ray on the head's machine (the one whose
address file or process it sees first), not necessarily the one that runs the job when a
machine runs several."""


def job_submission(study_file: str | os.PathLike, workdir: Path, *,
                   run_dir: str | None = None, trials: int | None = None,
                   ray_address: str | None = None) -> dict[str, Any]:
    """``JobSubmissionClient.submit_job`` arguments that run ``study_file`` on a cluster.

    The study file is copied into ``workdir`` (the job's ``working_dir``) and the ``dagstudy``
    package travels as a ``py_modules`` entry; the cluster's Python must have the
    dependencies. The job's driver runs ``python -m dagstudy.cli run`` on the head node and
    joins the cluster through ``RAY_ADDRESS``; storage resolves there, from the study's
    ``storage`` section or the head node's environment or ``run_dir``. ``ray_address``
    (the cluster's GCS address) makes the driver join exactly that Ray (``JOB_RAY_ADDRESS``).
    """
    source = Path(study_file)
    shutil.copy(source, workdir / source.name)
    entrypoint = f"python -m dagstudy.cli run {source.name}"
    if run_dir:
        entrypoint += f" --run-dir {run_dir}"
    if trials:
        entrypoint += f" --trials {trials}"
    package = PACKAGE_DIR
    runtime_env: dict[str, Any] = {"working_dir": str(workdir), "py_modules": [package]}
    if ray_address:
        runtime_env["env_vars"] = {JOB_RAY_ADDRESS: ray_address}
    return {"entrypoint": entrypoint, "runtime_env": runtime_env,
            "metadata": {"dagstudy_study": source.stem}}


def submit(study_file: str | os.PathLike, address: str, *, run_dir: str | None = None,
           trials: int | None = None, ray_address: str | None = None) -> str:
    """Submit ``study_file`` as a Ray job to the cluster whose dashboard is ``address``
    (``http://HEAD:8265``); returns the job id. See ``job_submission``. Ray's "no available
    agent" answer (the head's job agent still starting) is retried for up to
    ``SUBMIT_RETRY_SECONDS``."""
    from ray.job_submission import JobSubmissionClient

    with tempfile.TemporaryDirectory() as tmp:
        kwargs = job_submission(study_file, Path(tmp), run_dir=run_dir, trials=trials,
                                ray_address=ray_address)
        client = JobSubmissionClient(address)
        deadline = time.monotonic() + SUBMIT_RETRY_SECONDS
        while True:
            try:
                return client.submit_job(**kwargs)
            except RuntimeError as e:
                if "No available agent" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(2)


SUBMIT_RETRY_SECONDS = 60.0
