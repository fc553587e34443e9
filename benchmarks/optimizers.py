"""Optimizer variants (``dagstudy.optim``) vs. tuned minibatch SGD and Adam: passes and wall time
to reach a target training loss on digits.

Run: ``python benchmarks/optimizers.py [--seeds N] [--target LOSS] [--max-passes K] [--quick]``.
Prints a markdown table.

What is measured: digits, ``dag`` topology, depth 4, width 32, cross-entropy, batch 64 (the
trainer's defaults), seeds ``0..N-1`` trained as one population (each seed its own split, init
and data order; the same seeds for every arm). After every pass, each seed's mean training loss
over its whole training split (``Problem.full_loss``, not timed); a seed reaches the target at
the first pass where it is ``<= target``. Per arm: mean (sd) of the passes to target over seeds
(``k/N reached``; a seed that never reaches it counts as ``max_passes`` in the mean, so the mean
is a lower bound then); the wall time of one optimizer pass (``run_pass`` only: the Lipschitz
variants' backtracking evaluations count, per-pass metrics do not), as the median over the arm's
passes, because these machines are shared and other jobs' bursts inflate single passes (a
warm-up run first takes the first-call costs); the wall time to target, estimated as mean passes
to target times that median; test accuracy at the pass each seed reached the target; and, for
the Lipschitz variants, evaluations of ``f`` per pass (``backtracks``, mean).

Baselines are tuned on the same seeds (which favours them): SGD over ``lr`` with and without
momentum 0.9, Adam over ``lr``; the best grid point (fewest mean passes, then least time) is
shown with its setting. The Lipschitz variants run at their defaults plus the controls and
options of their ideas (OPT-LAYERSCALE, restart schemes, momentum reset). CPU, ``torch`` threads
= the cores this process may use; timings on shared machines drift: compare within one run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dagstudy.config import TrainConfig  # noqa: E402
from dagstudy.losses import LOSSES  # noqa: E402
from dagstudy.optim import VARIANTS  # noqa: E402
from dagstudy.problem import Problem  # noqa: E402
from dagstudy.trainer import build_model, evaluate, load_data  # noqa: E402

NET = dict(dataset="digits", topology="dag", depth=4, width=32)


@dataclass
class Arm:
    name: str
    optimizer: str
    lr: float = 1.0  # ignored by the Lipschitz variants
    params: dict = field(default_factory=dict)

    def label(self) -> str:
        lr = f"lr={self.lr:g} " if self.optimizer in ("sgd", "adam") else ""
        return f"{lr}{json.dumps(self.params) if self.params else ''}".strip() or "defaults"


@dataclass
class Outcome:
    arm: Arm
    passes: list[int | None]  # per seed: first pass at or below the target
    accuracy: list[float | None]  # test accuracy at that pass
    seconds_per_pass: float  # median over the arm's passes
    evals_per_pass: float | None

    def score(self, max_passes: int) -> tuple[float, float]:
        return (mean_passes(self.passes, max_passes), self.seconds_per_pass)


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def mean_passes(passes: list[int | None], max_passes: int) -> float:
    return mean([p if p is not None else max_passes for p in passes])


def measure(arm: Arm, data, seeds: list[int], target: float, max_passes: int) -> Outcome:
    config = TrainConfig(**NET, optimizer=arm.optimizer, lr=arm.lr, optimizer_params=arm.params)
    loss_fn = LOSSES[config.loss]
    model = build_model(config, data.d_in, data.n_classes, seeds)
    problem = Problem(model, data, loss_fn, config.batch_size, chunk_size=config.chunk_size)
    variant = VARIANTS[arm.optimizer](problem.params, arm.lr, config.optimizer_hp())
    S = len(seeds)
    passes: list[int | None] = [None] * S
    accuracy: list[float | None] = [None] * S
    times, evals = [], []
    for k in range(1, max_passes + 1):
        problem.start_pass()
        start = time.perf_counter()
        stats = variant.run_pass(problem)
        times.append(time.perf_counter() - start)
        if "backtracks" in stats:
            evals.append(float(stats["backtracks"].mean()))
        loss = problem.full_loss()
        reached = [i for i in range(S) if passes[i] is None and float(loss[i]) <= target]
        if reached:
            _, acc = evaluate(model, data, data.test_idx, loss_fn, config.chunk_size)
            for i in reached:
                passes[i], accuracy[i] = k, float(acc[i])
        if all(p is not None for p in passes):
            break
    return Outcome(arm, passes, accuracy, statistics.median(times), mean(evals) if evals else None)


def tuned(name: str, arms: list[Arm], data, seeds, target, max_passes) -> Outcome:
    outcomes = [measure(a, data, seeds, target, max_passes) for a in arms]
    for o in outcomes:
        print(f"  tuning {name}: {o.arm.label():36} mean passes "
              f"{mean_passes(o.passes, max_passes):6.1f}", file=sys.stderr, flush=True)
    best = min(outcomes, key=lambda o: o.score(max_passes))
    best.arm.name = f"{name} (tuned)"
    return best


def fmt(x: float | None, spec: str) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def table(outcomes: list[Outcome], n_seeds: int, max_passes: int) -> str:
    lines = [
        "| optimizer | settings | passes to target, mean (sd) | reached | s to target (est.) "
        "| s / pass (median) | f evals / pass | test acc at target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        done = [p for p in o.passes if p is not None]
        sd = statistics.stdev(done) if len(done) > 1 else None
        passes = f"{mean_passes(o.passes, max_passes):.1f}" + (f" ({sd:.1f})" if sd else "")
        if len(done) < n_seeds:
            passes = ">= " + passes
        lines.append(
            f"| {o.arm.name} | {o.arm.label()} | {passes} | {len(done)}/{n_seeds} | "
            f"{mean_passes(o.passes, max_passes) * o.seconds_per_pass:.2f} | "
            f"{o.seconds_per_pass:.3f} | {fmt(o.evals_per_pass, '.2f')} | "
            f"{fmt(mean([a for a in o.accuracy if a is not None]), '.3f')} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--target", type=float, default=0.05, help="mean training loss")
    parser.add_argument("--max-passes", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="2 seeds, 40 passes, small grids")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.max_passes = 2, 40
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    seeds = list(range(args.seeds))
    data = load_data(TrainConfig(**NET), seeds, torch.device("cpu"))
    run = dict(data=data, seeds=seeds, target=args.target, max_passes=args.max_passes)

    sgd_grid = [Arm("sgd", "sgd", lr) for lr in (0.03, 0.1, 0.3, 1.0)]
    sgd_grid += [Arm("sgd", "sgd", lr, {"momentum": 0.9}) for lr in (0.01, 0.03, 0.1, 0.3)]
    adam_grid = [Arm("adam", "adam", lr) for lr in (1e-3, 3e-3, 1e-2, 3e-2)]
    if args.quick:
        sgd_grid, adam_grid = sgd_grid[1:2] + sgd_grid[5:6], adam_grid[:2]
    arms = [
        Arm("fullbatch-ista", "fullbatch-ista"),
        Arm("fullbatch-ista", "fullbatch-ista", params={"depth_scale": True}),
        Arm("fista", "fista"),
        Arm("fista", "fista", params={"restart": "none"}),
        Arm("fista", "fista", params={"restart": "gradient-neuron"}),
        Arm("lipschitz-minibatch", "lipschitz-minibatch"),
        Arm("lipschitz-minibatch", "lipschitz-minibatch", params={"reset_momentum": True}),
    ]
    for warm in (sgd_grid[0], adam_grid[0], arms[0]):  # first-call costs, not timed
        measure(warm, data, seeds, target=-1.0, max_passes=2)
    outcomes = [tuned("sgd", sgd_grid, **run), tuned("adam", adam_grid, **run)]
    for arm in arms:
        outcomes.append(measure(arm, **run))
        print(f"  measured {arm.name} {arm.label()}", file=sys.stderr, flush=True)
    print(f"Digits, dag depth 4 width 32, batch 64, CE; target train loss {args.target:g}; "
          f"seeds 0..{args.seeds - 1}; at most {args.max_passes} passes; "
          f"{torch.get_num_threads()} CPU threads.\n")
    print(table(outcomes, args.seeds, args.max_passes))


if __name__ == "__main__":
    main()
