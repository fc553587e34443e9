"""Per-trial overhead of the full system (Optuna + Ray + MLflow) over bare ``train()`` calls.

The same trials run twice: first as a study through ``run_study`` (one trial at a time, each
task given every CPU, a local Ray, SQLite Optuna and MLflow in a temporary run directory),
then as bare ``train()`` calls in this process on the configurations the study ran (data loaded
once, the same torch thread count). Printed:

- fixed start-up of the system (Optuna + MLflow databases, Ray start), paid once per study;
- per trial: bare time, system time (Optuna's trial duration: ask -> tell, which includes Ray
  scheduling, the worker's storage and pruning calls and returning the result) and the
  driver's wall time per trial between the first launch and the study's end (adds MLflow
  logging and the driver loop), with the overhead's ratio to the bare trial time, both with
  and without the first trial (a fresh Ray worker imports torch and loads the data once).

    python benchmarks/overhead.py                     # 20 trials of about 10 s on 2 CPUs
    python benchmarks/overhead.py --trials 5 --epochs 4   # a quick look
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import optuna
import ray
import torch

from dagstudy.config import TrainConfig
from dagstudy.execute import connect_ray, run_study
from dagstudy.spec import parse_spec
from dagstudy.train import load_data, train


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
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--cpus", type=int, default=os.cpu_count())
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
    done = result.trials
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in done), "a trial failed"
    first_start = min(t.datetime_start for t in done)
    last_end = max(t.datetime_complete for t in done)
    startup = t_study - (last_end - first_start).total_seconds()
    system = [t.duration.total_seconds() for t in done]
    driver = (t_study - startup) / len(done)

    torch.set_num_threads(args.cpus)
    configs = [TrainConfig(**t.user_attrs["config"]) for t in done]
    data = load_data(configs[0], spec.seed_list, torch.device("cpu"))
    bare = []
    for config in configs:
        start = time.perf_counter()
        train(config, spec.seed_list, data, "cpu")
        bare.append(time.perf_counter() - start)

    def line(label: str, sys_times: list[float], bare_times: list[float]) -> None:
        b, s = statistics.mean(bare_times), statistics.mean(sys_times)
        print(f"{label:34} bare {b:6.2f} s  system {s:6.2f} s  overhead {s - b:+6.3f} s "
              f"({(s - b) / b:+.1%})")

    print(f"{len(done)} trials: {args.seeds} seeds x {args.epochs} epochs, digits, dag depth "
          f"{args.depth} width {args.width}, {args.cpus} CPUs, one trial at a time")
    print(f"fixed start-up: Ray {t_ray:.1f} s, study + MLflow setup and finish "
          f"{startup:.1f} s (once per study)")
    line("per trial (Optuna duration), all", system, bare)
    line("per trial (Optuna duration), 2nd+", system[1:], bare[1:])
    b_all = statistics.mean(bare)
    print(f"{'per trial (driver wall), all':34} bare {b_all:6.2f} s  system {driver:6.2f} s  "
          f"overhead {driver - b_all:+6.3f} s ({(driver - b_all) / b_all:+.1%})")
    total_system = t_ray + t_study
    print(f"totals: system {total_system:.1f} s, bare {sum(bare):.1f} s "
          f"(+{(total_system - sum(bare)) / sum(bare):.1%} including start-up)")


if __name__ == "__main__":
    main()
