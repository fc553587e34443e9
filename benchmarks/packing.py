"""Packed trials vs one trial per task: trials per minute of one study, side by side.

Run: ``python benchmarks/packing.py [--trials 64] [--pack 8] [--epochs 5] [--repeats 1]
[--quick]``. The last line reads ``packed speed-up: N.NNx`` (packed trials/min over unpacked,
the median over repeats).

Each arm runs the same study through ``run_study`` on a fresh local Ray (``num_cpus=2``, 2
workers of 1 CPU, ``max_concurrent: 2``) in a fresh temporary run directory (SQLite Optuna,
local MLflow): digits, a DAG of depth 2 and width 32 (every trial the same shape), SGD with
``lr`` (log-uniform 1e-3..0.3) and momentum (0..0.95) sampled by a seeded random sampler, 2
seeds, ``--epochs`` epochs, no pruner. The unpacked arm has ``packing: {max: 1}``, the packed
arm ``packing: {max: --pack}``; both sample the same configurations (same sampler seed; the
random sampler does not look at results). Arms alternate (unpacked, packed, unpacked, ...) so
the ratio compares neighbours in time; the load average before each is printed, and the
spread of the ratio over repeats. ``--quick``: 24 trials, 3 epochs, one repeat (under 3 min
on 2 cores).

Wall time per arm is ``run_study``'s (creating the study and experiment, the trial loop, the
summary plots at the end); Ray's start is outside it.

Where the CPU goes (Linux, from ``/proc``): each arm's CPU seconds per trial in this process
(the driver: ask, tell, the MLflow runs on its background thread), in Ray's worker processes
(``ray::...``: training, figures, Optuna reports; the feed actor too) and in Ray's own
processes (raylet, GCS, agents). On 2 busy cores trials/min follow total CPU per trial, so
these say what packing can shrink (the training share) and what it cannot (each trial's
Optuna trial, MLflow runs and figures). ``bound if packed training cost nothing``: unpacked
CPU per trial over packed CPU per trial less the packed trainer's time per trial (measured
alone, below), the most any faster packed trainer could give with this bookkeeping. Another
Ray on the machine would be counted too: run it alone.

First, the trainer alone, in this process on one torch thread: ``--pack`` configurations of
the study's shape trained one after the other (``train``) vs as one pack (``train_packed``),
the training part's ceiling for the study's ratio (every trial also costs its Optuna reports,
its figures and its MLflow run, which packing does not shrink).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

import ray  # noqa: E402
import torch  # noqa: E402

from dagstudy.config import TrainConfig  # noqa: E402
from dagstudy.study.driver import run_study  # noqa: E402
from dagstudy.study.loader import parse_spec  # noqa: E402
from dagstudy.trainer import load_data, train, train_packed  # noqa: E402

BASE = {"topology": "dag", "depth": 2, "width": 32, "probe_size": 128}
SEEDS = [0, 1]


def study(name: str, trials: int, epochs: int, pack: int) -> dict:
    return {
        "name": name, "dataset": "digits", "seeds": len(SEEDS), "epochs": epochs,
        "objective": {"metric": "val_accuracy", "direction": "maximize"},
        "budget": {"trials": trials},
        "search": {"lr": {"low": 1e-3, "high": 0.3, "log": True},
                   "optimizer": {"sgd": {"momentum": {"low": 0.0, "high": 0.95}}}},
        "base": BASE,
        "sampler": {"name": "random", "seed": 0}, "pruner": {"name": "none"},
        "resources": {"cpus": 1}, "max_concurrent": 2, "packing": {"max": pack},
    }


ROLES = ("driver", "workers", "ray")


def cpu_seconds() -> dict[int, tuple[str, float]]:
    """Per process: its role (``ROLES``: this process, a Ray worker or actor, Ray's own
    processes) and its CPU seconds so far (user + system, all threads); other processes are
    left out. Empty where there is no ``/proc``."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    out = {}
    for pid in filter(str.isdigit, os.listdir("/proc") if os.path.isdir("/proc") else []):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:  # the process ended meanwhile
            continue
        if int(pid) == os.getpid():
            role = "driver"
        elif cmdline.startswith("ray::"):
            role = "workers"
        elif f"{os.sep}ray{os.sep}" in cmdline:
            role = "ray"
        else:
            continue
        out[int(pid)] = (role, (int(stat[11]) + int(stat[12])) / tick)  # utime + stime
    return out


def cpu_used(before: dict[int, tuple[str, float]],
             after: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds per role between two ``cpu_seconds`` snapshots (new processes from 0)."""
    used = dict.fromkeys(ROLES, 0.0)
    for pid, (role, seconds) in after.items():
        used[role] += seconds - before.get(pid, (role, 0.0))[1]
    return used


def run_arm(trials: int, epochs: int, pack: int) -> tuple[float, dict[str, float]]:
    """Trials per minute of one study with packs of up to ``pack`` trials, and its CPU seconds
    per trial by role (``cpu_used``)."""
    with tempfile.TemporaryDirectory(prefix="dagstudy-packing-") as run_dir:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            before, start = cpu_seconds(), time.perf_counter()
            done = run_study(parse_spec(study(f"pack{pack}", trials, epochs, pack)),
                             run_dir=run_dir)
            seconds, used = time.perf_counter() - start, cpu_used(before, cpu_seconds())
        finally:
            ray.shutdown()
    states = {t.state.name for t in done.trials}
    if states != {"COMPLETE"}:
        raise SystemExit(f"pack {pack}: trials ended {states}, not all COMPLETE")
    return trials / seconds * 60, {role: used[role] / trials for role in ROLES}


def trainer_ratio(pack: int, epochs: int) -> tuple[float, float]:
    """Seconds to train ``pack`` configurations one by one, and as one pack."""
    torch.set_num_threads(1)
    configs = [TrainConfig(dataset="digits", epochs=epochs, optimizer="sgd", lr=0.01 * (k + 1),
                           optimizer_params={"momentum": 0.9 * k / pack}, **BASE)
               for k in range(pack)]
    data = load_data(configs[0], SEEDS, torch.device("cpu"))
    train(configs[0], SEEDS, data, "cpu")  # warm up
    start = time.perf_counter()
    for config in configs:
        train(config, SEEDS, data, "cpu")
    alone = time.perf_counter() - start
    start = time.perf_counter()
    train_packed(configs, SEEDS, data, "cpu")
    return alone, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--pack", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.trials, args.epochs, args.repeats = 24, 3, 1
    print(f"{args.trials} trials (digits, DAG depth 2 width 32, 2 seeds, {args.epochs} epochs, "
          f"SGD lr and momentum sampled), 2 workers on {os.cpu_count()} cores; "
          f"packs of {args.pack} vs 1\n")
    alone, packed_trainer = trainer_ratio(args.pack, args.epochs)
    print(f"trainer only (one thread): {args.pack} configurations one by one {alone:.2f} s, "
          f"as one pack {packed_trainer:.2f} s: {alone / packed_trainer:.2f}x\n")
    print("| repeat | load avg before | unpacked trials/min | packed trials/min | ratio | "
          "CPU s per trial, unpacked: driver / workers / Ray | packed: driver / workers / Ray |")
    print("|---|---|---|---|---|---|---|")
    ratios, bounds = [], []
    for r in range(1, args.repeats + 1):
        load = os.getloadavg()[0]
        unpacked, cpu_unpacked = run_arm(args.trials, args.epochs, 1)
        packed, cpu_packed = run_arm(args.trials, args.epochs, args.pack)
        ratios.append(packed / unpacked)
        total_unpacked, total_packed = sum(cpu_unpacked.values()), sum(cpu_packed.values())
        if total_packed > 0:
            bounds.append(total_unpacked / (total_packed - packed_trainer / args.pack))
        print(f"| {r} | {load:.2f} | {unpacked:.1f} | {packed:.1f} | {ratios[-1]:.2f}x | "
              f"{' / '.join(f'{cpu_unpacked[k]:.3f}' for k in ROLES)} | "
              f"{' / '.join(f'{cpu_packed[k]:.3f}' for k in ROLES)} |", flush=True)
    if len(ratios) > 1:
        print(f"\nratio spread over repeats: {min(ratios):.2f}x .. {max(ratios):.2f}x")
    if bounds:
        print(f"\nbound if packed training cost nothing: {statistics.median(bounds):.2f}x "
              f"(training alone {alone / args.pack:.3f} s, packed "
              f"{packed_trainer / args.pack:.3f} s per trial)")
    print(f"\npacked speed-up: {statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    main()
