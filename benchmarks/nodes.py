"""Does one driver keep every worker busy on a multi-node Ray cluster? Worker busy fraction at
trial lengths of about 0.5 s, 2 s and 10 s, on 4 virtual nodes.

Run: ``python benchmarks/nodes.py [--nodes 4] [--lengths 0.5,2,10] [--quick]``. Prints one
markdown row per trial length; the last line reads ``worker busy at 0.5 s trials: N%``.

The cluster is ``ray.cluster_utils.Cluster``: a head node with no CPUs (the driver's Ray
services only) and ``--nodes`` worker nodes of 1 CPU each, all on this machine, so every trial
is scheduled on a separate raylet as on a real cluster (object transfer between raylets, one
worker process per node). The study is ``studies/smoke.yaml``'s space narrowed to one shape
(digits, DAG depth 2, width 16, 1 seed, Adam with lr sampled, random sampler, no pruner), on
SQLite in a temporary run directory, ``max_concurrent`` = nodes; the epoch count per length is
calibrated first on the cluster (10 epochs timed in one task per node, all at once, one torch
thread each), so that the nodes' sharing of this machine's cores is in it. Trials per length:
``--trials`` (default 24 x nodes / length in s, at least 3 per node).

Measured (the timers of ``benchmarks/scale.py``, wrapping library methods in this process):

- trial s: the median training time per trial, as the workers report it (``wall_seconds``
  minus the Optuna reports), to compare with the target;
- busy %: the workers' training time summed / (nodes x the driver's loop time): 100% means no
  worker ever waited for the driver;
- driver ms/trial: the driver thread's time per trial outside ``ray.wait``.

With fewer cores than nodes (4 nodes on 2 cores), the driver, the databases and the nodes share
the cores, which lowers busy % for every length; the load average before each case is printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

import ray  # noqa: E402
import torch  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from benchmarks.scale import Timers, instrumented, log  # noqa: E402
from dagstudy.config import TrainConfig  # noqa: E402
from dagstudy.study.driver import run_study  # noqa: E402
from dagstudy.study.loader import parse_spec  # noqa: E402
from dagstudy.trainer import load_data, train  # noqa: E402

BASE = {"topology": "dag", "depth": 2, "width": 16, "probe_size": 128}


def _epoch_seconds(epochs: int) -> float:
    """Seconds per epoch of the benchmark's trial trained for ``epochs`` epochs, in the calling
    process on one torch thread (after a one-epoch warm-up)."""
    torch.set_num_threads(1)
    config = TrainConfig(dataset="digits", epochs=epochs, **BASE)
    data = load_data(config, [0], torch.device("cpu"))
    train(config.model_copy(update={"epochs": 1}), [0], data, "cpu")  # warm up
    return train(config, [0], data, "cpu").wall_seconds / epochs


def epoch_seconds(nodes: int) -> float:
    """Seconds of one epoch of the benchmark's trial on the cluster: the median over one Ray
    task per node, all at once (the nodes share this machine's cores as the trials will)."""
    task = ray.remote(num_cpus=1)(_epoch_seconds)
    return statistics.median(ray.get([task.remote(10) for _ in range(nodes)]))


def study(name: str, trials: int, epochs: int, nodes: int, run_dir: str) -> dict:
    return {
        "name": name, "dataset": "digits", "seeds": 1, "epochs": epochs,
        "objective": {"metric": "val_accuracy", "direction": "maximize"},
        "budget": {"trials": trials}, "search": {"lr": {"low": 1e-3, "high": 3e-2, "log": True}},
        "base": BASE, "sampler": {"name": "random", "seed": 0}, "pruner": {"name": "none"},
        "resources": {"cpus": 1}, "max_concurrent": nodes, "device": "cpu",
        "storage": {"optuna": f"sqlite:///{run_dir}/optuna.db",
                    "mlflow": f"sqlite:///{run_dir}/mlflow.db"},
    }


def run_case(cluster: Cluster, length: float, per_epoch: float, trials: int,
             nodes: int) -> dict:
    epochs = max(1, round(length / per_epoch))
    load = os.getloadavg()[0]
    log(f"~{length:g} s trials: {epochs} epochs, {trials} trials (load average {load:.1f})")
    timers = Timers()
    with tempfile.TemporaryDirectory(prefix="dagstudy-nodes-") as run_dir:
        ray.init(address=cluster.address, log_to_driver=False, logging_level="WARNING")
        try:
            with instrumented(timers) as span:
                run_study(parse_spec(study(f"nodes{length:g}", trials, epochs, nodes, run_dir)),
                          run_dir=run_dir)
        finally:
            ray.shutdown()
    loop = span["end"] - span["start"]
    return {"length": length, "epochs": epochs, "trials": trials, "load": load,
            "trial_s": statistics.median(timers.train_seconds),
            "busy": sum(timers.train_seconds) / (nodes * loop),
            "driver_ms": (loop - timers.seconds["wait"]) / trials * 1000,
            "per_min": trials / loop * 60}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--lengths", default="0.5,2,10")
    parser.add_argument("--trials", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="lengths 0.5 and 2 s only")
    args = parser.parse_args()
    lengths = [0.5, 2.0] if args.quick else [float(x) for x in args.lengths.split(",")]
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    for _ in range(args.nodes):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    rows = []
    try:
        ray.init(address=cluster.address, log_to_driver=False, logging_level="WARNING")
        try:
            per_epoch = epoch_seconds(args.nodes)
        finally:
            ray.shutdown()
        log(f"one epoch: {per_epoch * 1000:.0f} ms with every node training")
        for length in lengths:
            trials = args.trials or max(3 * args.nodes, round(24 * args.nodes / length))
            rows.append(run_case(cluster, length, per_epoch, trials, args.nodes))
    finally:
        cluster.shutdown()
    print(f"{args.nodes} virtual nodes of 1 CPU (ray.cluster_utils.Cluster) on "
          f"{os.cpu_count()} cores, SQLite, digits DAG depth 2 width 16, 1 seed\n")
    print("| target s | epochs | trials | trial s (median) | busy % | driver ms/trial | "
          "trials/min | load avg before |")
    print("|--:|--:|--:|--:|--:|--:|--:|--:|")
    for r in rows:
        print(f"| {r['length']:g} | {r['epochs']} | {r['trials']} | {r['trial_s']:.2f} | "
              f"{100 * r['busy']:.0f} | {r['driver_ms']:.0f} | {r['per_min']:.0f} | "
              f"{r['load']:.1f} |")
    print(f"\nworker busy at {rows[0]['length']:g} s trials: {100 * rows[0]['busy']:.0f}%")


if __name__ == "__main__":
    main()
