"""Throughput of many short trials: SQLite vs. PostgreSQL storage, 2 vs. 4 Ray workers.

Run: ``python benchmarks/scale.py [--trials N] [--quick] [--storage sqlite,postgres]
[--workers 2,4] [--epochs E] [--baseline REV]``. Prints markdown tables (progress goes to
stderr); the last lines read ``driver ms per trial: N (sqlite)`` (and ``(postgres)``), at the
first worker count.

``--baseline REV`` runs the same configurations with the library of git revision ``REV`` too
(extracted with ``git archive`` to a temporary directory; its own ``benchmarks/scale.py`` in a
subprocess), each right before the current code's run of the same configuration, and prints
before/after ratios: before and after in one run, at one machine load.

Every configuration (storage x workers) runs one study of ``--trials`` short trials (200; 40
with ``--quick``) through ``run_study``: the space of ``studies/smoke.yaml`` (digits, depth
1-3, width 8/16, adam/sgd), ``--epochs`` epochs (2), 1 seed, random sampler, no pruner, so a
trial trains for a fraction of a second and the system around it shows. Ray is a fresh local
instance per configuration with ``num_cpus`` = workers; every trial takes 1 CPU and at most
``workers`` trials run at once. With more workers than cores (4 on a 2-core machine) the
workers, the driver and the databases share the cores: the output says so.

Storage:

- ``sqlite``: a fresh temporary run directory: Optuna on SQLite (``optuna.db``, WAL) and MLflow
  on a local SQLite store (``mlflow.db``, artifacts beside it), the default of
  ``storage_for``; MLflow runs in the driver process.
- ``postgres``: the local stack (``infra/local/up.sh --no-ray``, started once in a temporary
  ``DAGSTUDY_HOME`` on free ports, removed with ``down.sh --purge`` at the end): Optuna on
  PostgreSQL, MLflow through its tracking server (backed by the same PostgreSQL, artifacts
  proxied to the server's local directory).

Measured per configuration (timers wrap library methods in this process only; the library is
unchanged):

- ``loop s``: the driver's trial loop (``TrialLoop.run``: first ``ask`` to the last trial's MLflow
  logging); trials/min = trials / loop. ``fixed s``: the rest of ``run_study`` (creating the
  study and the MLflow experiment, parameter importances and the summary plots at the end).
  Starting Ray is outside both; worker processes start inside the loop (the first trial on
  each imports torch and loads the data).
- driver storage %: time in Optuna storage methods (``RDBStorage`` / ``_CachedStorage``: ask,
  suggest, user attributes, tell, ``get_trials``) on the driver, outside tracking, / loop.
- worker report %: the workers' per-epoch ``trial.report`` + ``should_prune`` time (the
  worker's ``report_seconds``) summed over trials / (workers x loop). A worker's
  ``load_study`` per trial is not in it (the worker has no timer there).
- worker train %: the workers' training time (``train()`` wall time minus the reports) summed
  / (workers x loop): how busy the workers were kept.
- tracking %: time in ``Tracker`` methods on the driver's thread (``start_trial``,
  ``end_trial``, ``finish``; ``end_trial`` writes the record to the local spool and queues its
  upload for the tracker's background thread, whose MLflow calls are not counted) / loop; "of
  which plots" is per-trial figures rendered on the driver's thread (the workers render them
  now: about 0).
- driver ms per trial: the loop's time outside ``ray.wait`` (the driver waiting for workers)
  / trials: everything the driver thread does per trial (ask, sampling, launching, tell,
  tracking, bookkeeping). Timers count calls on the driver's (main) thread only.

Configurations run one after the other, grouped by worker count (sqlite then postgres at 2
workers, then at 4), so each PostgreSQL / SQLite ratio compares neighbours in time; the load
average before each is printed. On a shared machine the ratios hold up better than the absolute
numbers. MLflow's "View run ... at" line per run is turned off
(``MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT``) in this process.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import inspect
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass
from pathlib import Path

import optuna
import ray
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dagstudy.study import loop as loop_module  # noqa: E402
from dagstudy.study.driver import run_study  # noqa: E402
from dagstudy.study.loader import parse_spec  # noqa: E402
from dagstudy.tracking import tracker as tracking  # noqa: E402
from dagstudy.tracking import trial_runs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
UP, DOWN = ROOT / "infra" / "local" / "up.sh", ROOT / "infra" / "local" / "down.sh"
STACK_VARS = ("DAGSTUDY_OPTUNA_STORAGE", "MLFLOW_TRACKING_URI", "RAY_ADDRESS", "PGPASSWORD")
TRACKER_METHODS = ("start_trial", "end_trial", "fail_run", "finish")  # those that exist
PLOTS = ("trial_figures",)  # trial_runs' fallback render (the workers render figures)


def log(msg: str) -> None:
    print(f"  [{time.strftime('%X')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# timers


class Timers:
    """Seconds per category, summed over calls of wrapped callables while ``on``.

    ``storage`` and ``tracking`` exclude each other: a storage call made inside a tracker call
    (``finish`` reads the trials) counts as tracking. ``plots`` is a part of ``tracking``.
    """

    def __init__(self) -> None:
        self.on = False
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.report_seconds: list[float] = []
        self.train_seconds: list[float] = []
        self._outer: str | None = None
        self._undo: list[Callable[[], None]] = []

    def _add(self, category: str, seconds: float) -> None:
        if self.on:
            self.seconds[category] += seconds
            self.calls[category] += 1

    def wrap(self, owner: object, name: str, category: str, exclusive: bool = True) -> None:
        original = getattr(owner, name)
        had_own = name in vars(owner)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            if threading.current_thread() is not threading.main_thread():
                return original(*args, **kwargs)  # the tracker's background thread
            if exclusive and self._outer is not None:  # inside a timed call: counted there
                return original(*args, **kwargs)
            if exclusive:
                self._outer = category
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self._add(category, time.perf_counter() - start)
                if exclusive:
                    self._outer = None

        setattr(owner, name, timed)
        self._undo.append(lambda: setattr(owner, name, original) if had_own
                          else delattr(owner, name))

    def wrap_storage(self, cls: type) -> None:
        """Every public method of an Optuna storage class."""
        for name, _ in inspect.getmembers(cls, inspect.isfunction):
            if not name.startswith("_"):
                self.wrap(cls, name, "storage")

    def undo(self) -> None:
        while self._undo:
            self._undo.pop()()

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()
        self.report_seconds.clear()
        self.train_seconds.clear()


def storage_classes() -> list[type]:
    """Optuna's ``_CachedStorage`` (what a study holds), ``RDBStorage`` and its subclasses (such
    as ``dagstudy.storage.RetryingRDBStorage`` for PostgreSQL)."""
    with suppress(ImportError):
        importlib.import_module("dagstudy.storage")
    found, todo = [], [optuna.storages.RDBStorage]
    while todo:
        cls = todo.pop(0)
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return [optuna.storages._CachedStorage, *found]


@contextmanager
def instrumented(timers: Timers) -> Iterator[dict[str, float]]:
    """Wrap the driver's storage, tracking and loop; yields the loop's start/end times."""
    span: dict[str, float] = {}
    for cls in storage_classes():
        timers.wrap_storage(cls)
    for name in TRACKER_METHODS:
        if hasattr(tracking.Tracker, name):
            timers.wrap(tracking.Tracker, name, "tracking")
    for name in PLOTS:  # module globals, looked up by trial_runs at call time
        timers.wrap(trial_runs, name, "plots", exclusive=False)
    timers.wrap(loop_module.ray, "wait", "wait", exclusive=False)

    end_trial = tracking.Tracker.end_trial

    def end_trial_recording(self, run_id, record, *args, **kwargs):
        timers.report_seconds.append(record.report_seconds or 0.0)
        if record.result is not None:
            timers.train_seconds.append(record.result["wall_seconds"]
                                        - (record.report_seconds or 0.0))
        return end_trial(self, run_id, record, *args, **kwargs)

    tracking.Tracker.end_trial = end_trial_recording
    timers._undo.append(lambda: setattr(tracking.Tracker, "end_trial", end_trial))

    loop = loop_module.TrialLoop.run

    def run(self):
        span["start"] = time.perf_counter()
        timers.on = True
        try:
            return loop(self)
        finally:
            timers.on = False
            span["end"] = time.perf_counter()

    loop_module.TrialLoop.run = run
    timers._undo.append(lambda: setattr(loop_module.TrialLoop, "run", loop))
    try:
        yield span
    finally:
        timers.undo()


# ---------------------------------------------------------------------------------------------
# the local PostgreSQL + MLflow stack


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stack_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in STACK_VARS}
    env.update(DAGSTUDY_HOME=str(home),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    return env


@contextmanager
def local_stack() -> Iterator[dict[str, str]]:
    """``up.sh --no-ray`` in a fresh DAGSTUDY_HOME on free ports; yields its stack.env."""
    # Under /tmp and 0755: as root, PostgreSQL runs as 'postgres', which must reach its data.
    home = Path(tempfile.mkdtemp(prefix="dagstudy-scale-stack-", dir="/tmp"))
    home.chmod(0o755)
    try:
        log(f"starting PostgreSQL + MLflow (infra/local/up.sh --no-ray) in {home}")
        start = time.perf_counter()
        up = subprocess.run(["bash", str(UP), "--no-ray", "--pg-port", str(free_port()),
                             "--mlflow-port", str(free_port())], env=stack_env(home),
                            capture_output=True, text=True, timeout=300)
        if up.returncode != 0:
            raise RuntimeError(f"infra/local/up.sh failed:\n{up.stderr[-3000:]}")
        log(f"stack up in {time.perf_counter() - start:.0f} s")
        lines = (home / "stack.env").read_text().splitlines()
        yield dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))
    finally:
        log("stopping the stack (infra/local/down.sh --purge)")
        subprocess.run(["bash", str(DOWN), "--purge"], env=stack_env(home), timeout=180,
                       capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# one configuration


@dataclass
class Result:
    storage: str
    workers: int
    trials: int
    complete: int
    loop_s: float
    fixed_s: float
    storage_s: float
    tracking_s: float
    plots_s: float
    report_s: float
    train_s: float
    wait_s: float
    load: float

    @property
    def driver_ms(self) -> float:
        """The driver thread's time per trial outside ``ray.wait``, ms."""
        return self.ms(self.loop_s - self.wait_s)

    @property
    def per_min(self) -> float:
        return self.trials / self.loop_s * 60

    def share(self, seconds: float, per_worker: bool = False) -> float:
        return seconds / (self.loop_s * (self.workers if per_worker else 1))

    def ms(self, seconds: float) -> float:
        return seconds / self.trials * 1000


def study_dict(name: str, args, workers: int, storage: dict[str, str]) -> dict:
    data = yaml.safe_load((ROOT / "studies" / "smoke.yaml").read_text())
    data.update(name=name, epochs=args.epochs, seeds=1, budget={"trials": args.trials},
                sampler={"name": "random", "seed": 0}, pruner={"name": "none"},
                resources={"cpus": 1}, max_concurrent=workers, device="cpu", storage=storage)
    return data


def run_config(kind: str, workers: int, args, stack: dict[str, str] | None,
               timers: Timers) -> Result:
    tag = time.strftime("%Y%m%d%H%M%S")
    name = f"scale_{kind}_{workers}w_{tag}"
    run_dir = Path(tempfile.mkdtemp(prefix=f"dagstudy-scale-{kind}-"))
    if kind == "postgres":
        assert stack is not None
        storage = {"optuna": stack["DAGSTUDY_OPTUNA_STORAGE"],
                   "mlflow": stack["MLFLOW_TRACKING_URI"]}
    else:
        storage = {"optuna": f"sqlite:///{run_dir / 'optuna.db'}",
                   "mlflow": f"sqlite:///{run_dir / 'mlflow.db'}"}
    spec = parse_spec(study_dict(name, args, workers, storage))
    load = os.getloadavg()[0]
    log(f"{kind}, {workers} workers, {args.trials} trials (load average {load:.1f})")
    timers.reset()
    ray.init(address="local", num_cpus=workers, include_dashboard=False, log_to_driver=False,
             logging_level="WARNING", object_store_memory=256 * 1024**2)
    try:
        with instrumented(timers) as span:
            start = time.perf_counter()
            study = run_study(spec, run_dir=run_dir)
            total = time.perf_counter() - start
    finally:
        ray.shutdown()
        shutil.rmtree(run_dir, ignore_errors=True)
    states = [t.state for t in study.get_trials(deepcopy=False)]
    complete = states.count(optuna.trial.TrialState.COMPLETE)
    loop = span["end"] - span["start"]
    result = Result(kind, workers, len(states), complete, loop, total - loop,
                    timers.seconds["storage"], timers.seconds["tracking"],
                    timers.seconds["plots"], sum(timers.report_seconds),
                    sum(timers.train_seconds), timers.seconds["wait"], load)
    log(f"  {result.trials} trials ({complete} complete) in {loop:.0f} s: "
        f"{result.per_min:.0f}/min")
    return result


# ---------------------------------------------------------------------------------------------
# the baseline revision


@dataclass
class Baseline:
    """One configuration run with the library of ``--baseline REV``: trials/min and the
    driver's storage + tracking ms per trial (that revision's timers; its ``ray.wait`` was not
    timed, so this leaves out its sampling and bookkeeping: a lower bound of its driver time)."""

    per_min: float
    driver_ms: float
    load: float


@contextmanager
def baseline_tree(rev: str | None) -> Iterator[Path | None]:
    """``git archive REV`` extracted to a temporary directory (None without ``--baseline``)."""
    if rev is None:
        yield None
        return
    tmp = Path(tempfile.mkdtemp(prefix="dagstudy-scale-baseline-"))
    try:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True)
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_baseline(tree: Path, kind: str, workers: int, args) -> Baseline:
    """The baseline revision's ``benchmarks/scale.py`` on one configuration, parsed."""
    load = os.getloadavg()[0]
    log(f"baseline {args.baseline}: {kind}, {workers} workers (load average {load:.1f})")
    env = {**os.environ, "PYTHONPATH": str(tree)}
    # cwd: Ray puts the driver's working directory on its workers' sys.path, so from this
    # repository the workers would import this tree's dagstudy, not the baseline's
    done = subprocess.run([sys.executable, str(tree / "benchmarks" / "scale.py"),
                           "--trials", str(args.trials), "--epochs", str(args.epochs),
                           "--storage", kind, "--workers", str(workers)],
                          env=env, cwd=tree, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"baseline run failed:\n{done.stderr[-3000:]}")
    complete = f"{args.trials} trials ({args.trials} complete)"
    if complete not in done.stderr:
        raise RuntimeError(f"baseline run: not every trial completed:\n{done.stderr[-3000:]}")
    lines = done.stdout.splitlines()
    row = next(line for line in lines if line.startswith(f"| {kind} | {workers}"))
    per_trial = next(line for line in lines if line.strip().startswith(f"{kind} ")
                     and f"{workers} workers:" in line)
    numbers = per_trial.split(":", 1)[1].replace("(", " ").replace(")", " ").split()
    storage_ms, tracking_ms = float(numbers[0]), float(numbers[3])
    result = Baseline(float(row.split("|")[6]), storage_ms + tracking_ms, load)
    log(f"  baseline: {result.per_min:.0f}/min")
    return result


# ---------------------------------------------------------------------------------------------
# output


def print_baseline(results: list[Result], baselines: dict[tuple[str, int], Baseline],
                   rev: str) -> None:
    print(f"\nbefore ({rev}) / after (this tree), each pair run back to back:")
    print("\n| storage | workers | trials/min before | after | ratio | driver ms/trial before "
          "(storage + tracking) | after | load before / after |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|")
    for r in results:
        b = baselines[(r.storage, r.workers)]
        ratio = (f"{r.per_min / b.per_min:.2f}x" if r.complete == r.trials
                 else f"- ({r.trials - r.complete} trials did not complete)")
        print(f"| {r.storage} | {r.workers} | {b.per_min:.0f} | {r.per_min:.0f} | {ratio} | "
              f"{b.driver_ms:.0f} | {r.driver_ms:.0f} | {b.load:.1f} / {r.load:.1f} |")


def print_tables(results: list[Result], cores: int) -> None:
    print("\n| storage | workers | trials | loop s | fixed s | trials/min | driver ms/trial "
          "| driver storage % | worker report % | worker train % | tracking % (plots) | load |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for r in results:
        over = "*" if r.workers > cores else ""
        print(f"| {r.storage} | {r.workers}{over} | {r.trials} | {r.loop_s:.0f} | "
              f"{r.fixed_s:.0f} | {r.per_min:.0f} | {r.driver_ms:.0f} | "
              f"{r.share(r.storage_s):.1%} | "
              f"{r.share(r.report_s, True):.1%} | {r.share(r.train_s, True):.1%} | "
              f"{r.share(r.tracking_s):.1%} ({r.share(r.plots_s):.1%}) | {r.load:.1f} |")
    print("\nper trial, ms: driver storage, worker report, worker train, tracking (plots)")
    for r in results:
        print(f"  {r.storage:8} {r.workers} workers: {r.ms(r.storage_s):6.1f} "
              f"{r.ms(r.report_s):6.1f} {r.ms(r.train_s):6.1f} {r.ms(r.tracking_s):6.1f} "
              f"({r.ms(r.plots_s):.1f})")
    print("driver busy (storage + tracking, % of the loop; near 100%: the driver, not the "
          "workers, sets the pace): " + ", ".join(
              f"{r.storage} {r.workers}w {r.share(r.storage_s + r.tracking_s):.0%}"
              for r in results))
    by = {(r.storage, r.workers): r for r in results}
    lines = []
    for w in sorted({r.workers for r in results}):
        pg, lite = by.get(("postgres", w)), by.get(("sqlite", w))
        if pg and lite:
            lines.append(f"  postgres / sqlite at {w} workers: trials/min "
                         f"{pg.per_min / lite.per_min:.2f}x; per trial: driver storage "
                         f"{pg.storage_s / pg.trials / (lite.storage_s / lite.trials):.2f}x, "
                         f"worker report "
                         f"{pg.report_s / pg.trials / (lite.report_s / lite.trials):.2f}x, "
                         f"tracking "
                         f"{pg.tracking_s / pg.trials / (lite.tracking_s / lite.trials):.2f}x")
    workers = sorted({r.workers for r in results})
    for kind in ("sqlite", "postgres"):
        for lo, hi in zip(workers, workers[1:]):
            a, b = by.get((kind, lo)), by.get((kind, hi))
            if a and b:
                lines.append(f"  {kind}: {hi} / {lo} workers: trials/min "
                             f"{b.per_min / a.per_min:.2f}x")
    if lines:
        print("\nratios\n" + "\n".join(lines))
    if any(r.workers > cores for r in results):
        print(f"\n* more workers than the {cores} cores this process may use: the workers, the "
              f"driver and the databases share the CPUs (oversubscribed).")
    if any(r.complete < r.trials for r in results):
        print("\nsome trials did not complete: see 'complete' per configuration above")
    print(f"\nload average after: {os.getloadavg()[0]:.1f}; {cores} cores; "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    first = min(r.workers for r in results)
    for r in results:
        if r.workers == first:
            print(f"driver ms per trial: {r.driver_ms:.0f} ({r.storage})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=None, help="per configuration (200)")
    parser.add_argument("--quick", action="store_true", help="40 trials per configuration")
    parser.add_argument("--storage", default="sqlite,postgres", help="sqlite,postgres")
    parser.add_argument("--workers", default="2,4", help="Ray workers (CPUs), e.g. 2,4")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--baseline", default=None, metavar="REV",
                        help="also run git revision REV's library, side by side")
    args = parser.parse_args()
    args.trials = args.trials or (40 if args.quick else 200)
    kinds = [k.strip() for k in args.storage.split(",") if k.strip()]
    if set(kinds) - {"sqlite", "postgres"}:
        parser.error("--storage takes sqlite and/or postgres")
    workers = [int(w) for w in args.workers.split(",")]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    os.environ["RAY_AUTH_MODE"] = "disabled"
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"  # no "View run" per trial
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"{args.trials} trials per configuration: smoke.yaml space, digits, {args.epochs} "
          f"epoch(s), 1 seed, random sampler, no pruner; {cores} cores")

    results: list[Result] = []
    baselines: dict[tuple[str, int], Baseline] = {}
    timers = Timers()
    with (baseline_tree(args.baseline) as tree,
          local_stack() if "postgres" in kinds else nullcontext() as stack):
        saved = os.environ.get("PGPASSWORD")
        if stack is not None:  # libpq in the driver and in the Ray workers reads it
            os.environ["PGPASSWORD"] = stack["PGPASSWORD"]
        try:
            for w in workers:
                for kind in kinds:
                    if tree is not None:
                        baselines[(kind, w)] = run_baseline(tree, kind, w, args)
                    results.append(run_config(kind, w, args, stack, timers))
        finally:
            if stack is not None:
                if saved is None:
                    os.environ.pop("PGPASSWORD", None)
                else:
                    os.environ["PGPASSWORD"] = saved
    if baselines:
        print_baseline(results, baselines, args.baseline)
    print_tables(results, cores or 1)


if __name__ == "__main__":
    main()
