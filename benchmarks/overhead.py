"""Per-trial overhead of the full system (Optuna + Ray + MLflow) over bare ``train()`` calls.

The same trials run twice: first as a study through ``run_study`` (one trial at a time, a
local Ray, SQLite Optuna and MLflow in a temporary run directory), then as bare ``train()``
calls in this process on the configurations the study ran (data loaded once, the same torch
thread count). Printed, per trial (means):

- inside the system run, so immune to load drifting on a shared machine: pure training
  (``train()``'s wall time in the worker minus its per-epoch Optuna reports), the reports and
  pruner calls, and everything else between ``ask`` and ``tell`` (Ray scheduling, reopening
  the study, result transfer, ``tell``); the first trial is shown apart (a fresh Ray worker
  imports torch and loads the data once);
- the driver's cadence, (last tell - first ask) / trials, which adds the driver loop and any
  MLflow logging not hidden behind the next trial;
- bare ``train()`` in this process, measured after the system run;
- the fixed start-up per study (Ray, Optuna + MLflow databases, end-of-study plots).

    python benchmarks/overhead.py                         # 20 trials of about 10 s
    python benchmarks/overhead.py --trials 5 --epochs 10  # a quick look
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import optuna
import ray
import torch
from mlflow.tracking import MlflowClient

from dagstudy.config import TrainConfig
from dagstudy.study.cluster import connect_ray
from dagstudy.study.driver import run_study
from dagstudy.study.loader import parse_spec
from dagstudy.study.storage import storage_for
from dagstudy.trainer import load_data, train


def study(args) -> dict:
    return {
        "name": "overhead", "dataset": "digits", "seeds": args.seeds, "epochs": args.epochs,
        "budget": {"trials": args.trials},
        "search": {"lr": {"low": 1e-3, "high": 1e-2, "log": True}},
        "base": {"topology": "dag", "depth": args.depth, "width": args.width,
                 "batch_size": 32},
        "sampler": {"name": "random", "seed": 0}, "pruner": {"name": "none"},
        "resources": {"cpus": args.cpus}, "max_concurrent": 1, "device": "cpu",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--cpus", type=int, default=1, help="per trial; also torch threads")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = parse_spec(study(args))

    with tempfile.TemporaryDirectory() as run_dir:
        t0 = time.perf_counter()
        connect_ray(num_cpus=args.cpus)
        t_ray = time.perf_counter() - t0
        t1 = time.perf_counter()
        result = run_study(spec, run_dir=run_dir)
        t_study = time.perf_counter() - t1
        ray.shutdown()
        client = MlflowClient(storage_for(spec, run_dir).mlflow)
        runs = client.search_runs([client.get_experiment_by_name(spec.name).experiment_id])
        metrics = {int(r.data.tags["dagstudy.trial"]): r.data.metrics for r in runs
                   if "dagstudy.trial" in r.data.tags}
    done = result.trials
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in done), "a trial failed"
    total = [t.duration.total_seconds() for t in done]
    reports = [metrics[t.number]["trial_report_seconds"] for t in done]
    training = [metrics[t.number]["trial_wall_seconds"] - r for t, r in zip(done, reports)]
    other = [tot - tr - r for tot, tr, r in zip(total, training, reports)]
    span = (max(t.datetime_complete for t in done)
            - min(t.datetime_start for t in done)).total_seconds()

    torch.set_num_threads(args.cpus)
    configs = [TrainConfig(**t.user_attrs["config"]) for t in done]
    data = load_data(configs[0], spec.seed_list, torch.device("cpu"))
    bare = []
    for config in configs:
        start = time.perf_counter()
        train(config, spec.seed_list, data, "cpu")
        bare.append(time.perf_counter() - start)

    mean = statistics.mean
    print(f"{len(done)} trials: {args.seeds} seeds x {args.epochs} epochs, digits, dag depth "
          f"{args.depth} width {args.width}, {args.cpus} CPU(s) per trial, one at a time")
    print(f"fixed start-up per study: Ray {t_ray:.1f} s; Optuna + MLflow setup and "
          f"end-of-study plots {t_study - span:.1f} s")
    print("per trial, inside the system run         trial 1   trials 2+")
    for label, values in (("training (train() minus reports)", training),
                          ("Optuna reports + pruner, per epoch", reports),
                          ("Ray, reopen study, transfer, tell", other)):
        print(f"  {label:38} {values[0]:7.2f} s  {mean(values[1:]):7.2f} s")
    overhead = [r + o for r, o in zip(reports, other)]
    ratio = mean(overhead[1:]) / mean(training[1:])
    print(f"  {'overhead / training':38} {overhead[0] / training[0]:7.1%}  {ratio:9.1%}")
    cadence = span / len(done)
    print(f"driver cadence per trial {cadence:.2f} s = training {mean(training):.2f} s "
          f"+ {cadence - mean(training):.2f} s ({(cadence - mean(training)) / mean(training):.1%})"
          f", all trials")
    print(f"bare train() per trial {mean(bare):.2f} s (system trial ask->tell {mean(total):.2f} "
          f"s: {mean(total) / mean(bare) - 1:+.1%}; measured minutes apart, so load drift "
          f"counts)")


if __name__ == "__main__":
    main()
