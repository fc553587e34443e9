"""Training-step cost of the DAG network (``dagstudy.model.dagnet``) vs. simpler implementations.

Run: ``python benchmarks/dag_step.py [--device auto|cpu|cuda] [--repeats N] [--quick]``.
Prints markdown tables (progress goes to stderr).

What is measured (float32, on one device: CUDA when present unless ``--device cpu``; CPU with
``torch.set_num_threads`` = the cores this process may use):

1. Forward + backward (no optimizer step) of a ``dag`` topology (every block reads the inputs and
   every earlier block, readout reads every hidden node): batch 256, d_in 784, width 64,
   10 classes, cross-entropy, depth 4 / 16 / 32, for
   - ``DagNet`` with one seed (S=1): the ``PrefixStack`` custom autograd Function;
   - naive: plain autograd, ``torch.cat`` of the inputs and all prior block outputs before each
     block (``F.linear`` + ReLU), same weights (loss and gradients checked against DagNet);
   - per-node loop (depth 4 only): every hidden node is one ``addmv`` (one small matmul per
     node) + ReLU, one ``torch.cat`` per block, readout one matmul; two parameter layouts: a
     weight vector and bias per node, or one ``[w, fan]`` matrix per block sliced per node;
   - reference: the same matmuls (forward, weight gradients, input-column gradients, readout)
     as plain ``torch.mm`` into preallocated buffers, no autograd: what these skinny shapes allow;
   - the square GEMM (2048^3 on CPU, 8192^3 on CUDA), in the same round-robin as the above.
2. FLOPs of one DAG step: forward ``2 * (connections + readout weights) * B``; backward twice that
   (weight gradients and input-column gradients; ``PrefixStack`` computes the latter for the
   input columns too), so 3x forward. Achieved GFLOP/s = FLOPs / time; fraction = that / the
   square-GEMM rate measured in the same round-robin.
3. Population: ``DagNet`` with S=8 seeds on input ``[8, B, d]`` vs. 8 sequential ``DagNet``s with
   S=1, each seed its own batch, at d_in 784 / width 64 / batch 256 (depth 4, 16) and at a
   digits-sized net (d_in 64, width 32, depth 4, batch 64); forward + backward, and forward +
   backward + ``torch.optim.Adam`` step (lr 1e-3, torch defaults, as ``dagstudy.optim.adam``
   builds it: one optimizer over the population vs. one per sequential net). Every step starts
   with ``zero_grad`` (set to None), as training does.

How: each callable is warmed up (3 calls). A group's callables are then timed in ``repeats``
rounds (9; 3 with ``--quick``; a group stops early, after at least 3 rounds, once it has run
18 s, 2 s with ``--quick``). A round is ``k`` sweeps that call every callable of the group once
(order rotated; ``k`` sized so a round takes ~0.3 s, 0.1 s with ``--quick``, 3..50) and gives
each callable the median of its ``k`` calls; a callable's time is the lowest of its medians.
CUDA is synchronised after every call. Interleaving call by call exposes all callables of a
group to the same load from other processes, so the ratios hold up better than the absolute
times, which drift by tens of percent between runs on shared machines. The last line gives the
in-run spread ((max - min) / min of each callable's medians) and the load average.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dagstudy.losses import cross_entropy  # noqa: E402
from dagstudy.model.dagnet import DagNet  # noqa: E402
from dagstudy.model.topology import build_topology  # noqa: E402

BATCH, D_IN, WIDTH, CLASSES = 256, 784, 64, 10
DEPTHS = (4, 16, 32)
POP_SEEDS = 8
POP_SIZES = (  # (label, d_in, width, depth, batch)
    ("784/64/256, depth 4", D_IN, WIDTH, 4, BATCH),
    ("784/64/256, depth 16", D_IN, WIDTH, 16, BATCH),
    ("digits 64/32/64, depth 4", 64, 32, 4, 64),
)
GOAL_GEMM_FRACTION, GOAL_LOOP_SPEEDUP, GOAL_POP_SPEEDUP = 0.8, 15.0, 3.0


# ---------------------------------------------------------------------------------------------
# timing


class Bench:
    """Interleaved timer. A group stops early (after at least 3 rounds) once it has run for
    ``group_budget_s``, so a loaded machine stretches the run less."""

    def __init__(self, device: torch.device, repeats: int, target_s: float, group_budget_s: float):
        self.device, self.repeats, self.target_s = device, repeats, target_s
        self.group_budget_s = group_budget_s
        self.spreads: list[float] = []
        self.rounds: list[int] = []

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _once(self, fn: Callable[[], object]) -> float:
        t0 = time.perf_counter()
        fn()
        self.sync()
        return time.perf_counter() - t0

    def run(self, fns: dict[str, Callable[[], object]]) -> dict[str, float]:
        """Lowest of (up to) ``repeats`` medians per callable (seconds).

        One median = ``k`` sweeps that call every callable once (order rotated per sweep), so
        the callables of a group share the same stretch of machine load call by call.
        """
        print(f"  [{time.strftime('%X')}] timing {', '.join(fns)}", file=sys.stderr)
        est = 0.0
        for fn in fns.values():
            for _ in range(2):
                fn()
            self.sync()
            est += self._once(fn)
        k = max(3, min(50, round(self.target_s / max(est, 1e-6))))
        names = list(fns)
        medians: dict[str, list[float]] = {name: [] for name in names}
        gc.collect()
        gc.disable()
        t0 = time.perf_counter()
        try:
            for r in range(self.repeats):
                if r >= min(3, self.repeats) and time.perf_counter() - t0 > self.group_budget_s:
                    break
                times: dict[str, list[float]] = {name: [] for name in names}
                for sweep in range(k):
                    shift = (r * k + sweep) % len(names)
                    for name in names[shift:] + names[:shift]:
                        times[name].append(self._once(fns[name]))
                for name in names:
                    medians[name].append(statistics.median(times[name]))
        finally:
            gc.enable()
        self.rounds.append(min(len(m) for m in medians.values()))
        for m in medians.values():
            self.spreads.append((max(m) - min(m)) / min(m))
        return {name: min(m) for name, m in medians.items()}


# ---------------------------------------------------------------------------------------------
# implementations


def make_dag(d_in: int, width: int, depth: int, seeds: list[int], device) -> DagNet:
    topo = build_topology("dag", d_in, width, depth, seeds)
    return DagNet(topo, CLASSES, seeds).to(device)


class NaiveDag(nn.Module):
    """Plain autograd: ``torch.cat`` of the inputs and every prior block output for each block."""

    def __init__(self, dag: DagNet):
        super().__init__()
        self.weights = nn.ParameterList(nn.Parameter(W[0].detach().clone()) for W in dag.weights)
        self.biases = nn.ParameterList(nn.Parameter(b[0].detach().clone()) for b in dag.biases)
        self.out_weight = nn.Parameter(dag.out_weight[0].detach().clone())
        self.out_bias = nn.Parameter(dag.out_bias[0].detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [x]
        for W, b in zip(self.weights, self.biases):
            outs.append(torch.relu(F.linear(torch.cat(outs, 1), W, b)))
        return F.linear(torch.cat(outs[1:], 1), self.out_weight, self.out_bias)


class PerNodeDag(nn.Module):
    """One ``addmv`` per hidden node, one ``torch.cat`` per block.

    ``own_params``: every node has its own weight-vector and bias parameters (the fast way);
    otherwise each block keeps one ``[w, fan]`` matrix and node ``j`` slices row ``j`` (each
    slice's backward writes a zero-filled full-size gradient).
    """

    def __init__(self, dag: DagNet, own_params: bool = True):
        super().__init__()
        self.own_params = own_params
        self.weights, self.biases = nn.ParameterList(), nn.ParameterList()
        for W, b in zip(dag.weights, dag.biases):
            W, b = W[0].detach().clone(), b[0].detach().clone()
            if own_params:
                self.weights.extend(nn.Parameter(r) for r in W)
                self.biases.extend(nn.Parameter(v.reshape(1)) for v in b)
            else:
                self.weights.append(nn.Parameter(W))
                self.biases.append(nn.Parameter(b))
        self.depth, self.width = dag.topo.depth, dag.topo.width
        self.out_weight = nn.Parameter(dag.out_weight[0].detach().clone())
        self.out_bias = nn.Parameter(dag.out_bias[0].detach().clone())

    def node(self, k: int, j: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.own_params:
            i = k * self.width + j
            return self.weights[i], self.biases[i]
        return self.weights[k][j], self.biases[k][j]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [x]
        for k in range(self.depth):
            inp = torch.cat(outs, 1)
            nodes = []
            for j in range(self.width):
                w, b = self.node(k, j)
                nodes.append(torch.relu(torch.addmv(b, inp, w)))
            outs.append(torch.stack(nodes, 1))
        return F.linear(torch.cat(outs[1:], 1), self.out_weight, self.out_bias)


def gemm_chain(dag: DagNet, x: torch.Tensor) -> Callable[[], None]:
    """The DAG step's matmuls, fwd and bwd, as ``torch.mm`` into preallocated buffers."""
    topo, B = dag.topo, x.shape[0]
    Ws = [0.5 * W[0].detach() for W in dag.weights]  # no ReLU here: keep the values bounded
    Wt = [W.t().contiguous() for W in Ws]
    Wo = dag.out_weight[0].detach().clone()
    Wo_t = Wo.t().contiguous()
    buf = x.new_zeros(B, topo.n_columns)
    buf[:, : topo.d_in] = x
    g = torch.zeros_like(buf)
    gW = [torch.empty_like(W) for W in Ws]
    gWo, logits = torch.empty_like(Wo), x.new_empty(B, Wo.shape[0])
    gz = x.new_full((B, topo.width), 1e-3)
    glog = x.new_full(logits.shape, 1e-3)
    lo_r = topo.readout_lo

    def step() -> None:
        for k, blk in enumerate(topo.blocks):
            torch.mm(buf[:, blk.lo : blk.hi], Wt[k], out=buf[:, blk.hi : blk.hi + topo.width])
        torch.mm(buf[:, lo_r:], Wo_t, out=logits)
        torch.mm(glog.t(), buf[:, lo_r:], out=gWo)
        g[:, lo_r:].addmm_(glog, Wo)
        for k in reversed(range(topo.depth)):
            blk = topo.blocks[k]
            torch.mm(gz.t(), buf[:, blk.lo : blk.hi], out=gW[k])
            g[:, blk.lo : blk.hi].addmm_(gz, Ws[k])

    return step


def gemm_fn(n: int, device) -> Callable[[], None]:
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    c = torch.empty(n, n, device=device)
    return lambda: torch.mm(a, b, out=c)


def step_fn(model: nn.Module, forward, opt: torch.optim.Optimizer | None = None):
    """zero_grad, loss, backward (and ``opt.step()``)."""

    def step() -> None:
        model.zero_grad(set_to_none=True)
        forward().backward()
        if opt is not None:
            opt.step()

    return step


def dag_flops(dag: DagNet, batch: int) -> int:
    """fwd + bwd FLOPs of one seed's step: backward = 2x forward."""
    return 3 * dag.flops_per_example() * batch


# ---------------------------------------------------------------------------------------------
# sections


def check_equal(dag: DagNet, naive: NaiveDag, others: list[nn.Module], x, y) -> None:
    """All implementations compute the same loss; naive also the first-block weight gradient."""
    dag.zero_grad(set_to_none=True)
    ld = cross_entropy(dag(x.unsqueeze(0)), y.unsqueeze(0)).sum()
    ld.backward()
    for m in [naive, *others]:
        m.zero_grad(set_to_none=True)
        lm = F.cross_entropy(m(x), y)
        lm.backward()
        torch.testing.assert_close(lm, ld, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(naive.weights[0].grad, dag.weights[0].grad[0], rtol=1e-3, atol=1e-5)
    dag.zero_grad(set_to_none=True)


def bench_depths(bench: Bench, device, gemm_n: int) -> dict[int, dict[str, float]]:
    out = {}
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, D_IN, generator=gen).to(device)
    y = torch.randint(0, CLASSES, (BATCH,), generator=gen).to(device)
    x1, y1 = x.unsqueeze(0), y.unsqueeze(0)
    for depth in DEPTHS:
        dag = make_dag(D_IN, WIDTH, depth, [0], device)
        naive = NaiveDag(dag)
        loops = [PerNodeDag(dag), PerNodeDag(dag, own_params=False)] if depth == 4 else []
        check_equal(dag, naive, loops, x, y)
        fns = {
            "dag": step_fn(dag, lambda d=dag: cross_entropy(d(x1), y1).sum()),
            "naive": step_fn(naive, lambda m=naive: F.cross_entropy(m(x), y)),
            "chain": gemm_chain(dag, x),
            "gemm": gemm_fn(gemm_n, device),
        }
        for key, m in zip(("loop", "loop_sliced"), loops):
            fns[key] = step_fn(m, lambda m=m: F.cross_entropy(m(x), y))
        t = bench.run(fns)
        t["flops"] = dag_flops(dag, BATCH)
        t["gemm_rate"] = 2 * gemm_n**3 / t["gemm"]
        out[depth] = t
        print(f"  depth {depth}: done ({bench.rounds[-1]} rounds)", file=sys.stderr)
    return out


def population_fns(d_in: int, width: int, depth: int, batch: int, device) -> dict:
    """S=8 population and 8 sequential S=1 nets, each without and with an Adam step."""
    seeds = list(range(POP_SEEDS))
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(POP_SEEDS, batch, d_in, generator=gen).to(device)
    y = torch.randint(0, CLASSES, (POP_SEEDS, batch), generator=gen).to(device)
    pop = make_dag(d_in, width, depth, seeds, device)
    pop_opt = torch.optim.Adam(pop.parameters(), lr=1e-3)
    seq = [make_dag(d_in, width, depth, [s], device) for s in seeds]
    seq_opts = [torch.optim.Adam(m.parameters(), lr=1e-3) for m in seq]

    def pop_loss():
        return cross_entropy(pop(x), y).sum()

    def seq_loss(i: int):
        return lambda: cross_entropy(seq[i](x[i : i + 1]), y[i : i + 1]).sum()

    seq_steps = [step_fn(seq[i], seq_loss(i)) for i in seeds]
    seq_steps_adam = [step_fn(seq[i], seq_loss(i), seq_opts[i]) for i in seeds]
    return {
        "pop": step_fn(pop, pop_loss),
        "seq": lambda: [f() for f in seq_steps],
        "pop_adam": step_fn(pop, pop_loss, pop_opt),
        "seq_adam": lambda: [f() for f in seq_steps_adam],
    }


def bench_population(bench: Bench, device) -> dict[str, dict[str, float]]:
    out = {}
    for label, d_in, width, depth, batch in POP_SIZES:
        out[label] = bench.run(population_fns(d_in, width, depth, batch, device))
        print(f"  population {label}: done ({bench.rounds[-1]} rounds)", file=sys.stderr)
    return out


# ---------------------------------------------------------------------------------------------
# report


def ms(t: float) -> str:
    return f"{t * 1e3:.3g} ms" if t < 1 else f"{t:.3g} s"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def load_note(load0: float | None) -> str:
    """1-minute load average at start and end (this run adds ~its threads) vs. the cores."""
    if load0 is None:
        return ""
    load1, cores = os.getloadavg()[0], torch.get_num_threads()
    note = f" Load average (1 min) {load0:.1f} at start, {load1:.1f} at end, on {cores} cores."
    if load0 > cores - 0.5 or load1 > cores + 1.5:
        note += " **Other processes competed for the cores: absolute times are unreliable.**"
    return note


def report(device, depths, pops, bench: Bench, gemm_n: int, elapsed: float, load0) -> None:
    repeats, spreads = min(bench.rounds), bench.spreads
    threads = torch.get_num_threads() if device.type == "cpu" else "-"
    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {threads} threads"
    print(f"# dag_step ({dev}, torch {torch.__version__}, float32)\n")
    print(
        f"Forward + backward, no optimizer step: batch {BATCH}, d_in {D_IN}, width {WIDTH}, "
        f"{CLASSES} classes, cross-entropy, `dag` topology. Lowest of {repeats}+ medians, "
        "callables interleaved call by call per depth.\n"
    )
    cols = [f"depth {d}" for d in depths]
    rows = [
        ["DagNet (PrefixStack), S=1"] + [ms(t["dag"]) for t in depths.values()],
        ["naive: `torch.cat` per block"] + [ms(t["naive"]) for t in depths.values()],
        ["per-node loop, own params per node"]
        + [ms(t["loop"]) if "loop" in t else "-" for t in depths.values()],
        ["per-node loop, rows sliced from block matrix"]
        + [ms(t["loop_sliced"]) if "loop" in t else "-" for t in depths.values()],
        ["same matmuls, plain `mm`, no autograd"] + [ms(t["chain"]) for t in depths.values()],
        [f"square GEMM {gemm_n}^3"] + [ms(t["gemm"]) for t in depths.values()],
    ]
    print(table(["time"] + cols, rows) + "\n")

    def rate(t, key):
        return t["flops"] / t[key] / 1e9

    rows = [
        ["naive / DAG (DAG speed-up)"] + [f"{t['naive'] / t['dag']:.2f}x" for t in depths.values()],
        ["per-node loop (own params) / DAG"]
        + [f"{t['loop'] / t['dag']:.1f}x" if "loop" in t else "-" for t in depths.values()],
        ["per-node loop (sliced rows) / DAG"]
        + [f"{t['loop_sliced'] / t['dag']:.1f}x" if "loop" in t else "-" for t in depths.values()],
        ["DAG step GFLOP (fwd + bwd = 3x fwd)"]
        + [f"{t['flops'] / 1e9:.3g}" for t in depths.values()],
        ["square GEMM GFLOP/s"] + [f"{t['gemm_rate'] / 1e9:.0f}" for t in depths.values()],
        ["DAG GFLOP/s"] + [f"{rate(t, 'dag'):.0f}" for t in depths.values()],
        ["**DAG fraction of GEMM rate**"]
        + [f"**{rate(t, 'dag') * 1e9 / t['gemm_rate']:.2f}**" for t in depths.values()],
        ["naive fraction of GEMM rate"]
        + [f"{rate(t, 'naive') * 1e9 / t['gemm_rate']:.2f}" for t in depths.values()],
        ["plain-`mm` fraction (ceiling of these shapes)"]
        + [f"{rate(t, 'chain') * 1e9 / t['gemm_rate']:.2f}" for t in depths.values()],
    ]
    print(table(["ratio / rate"] + cols, rows) + "\n")

    print(
        f"Population: one DagNet with S={POP_SEEDS} seeds vs. {POP_SEEDS} sequential S=1 DagNets "
        "(each seed its own batch). Adam = `torch.optim.Adam(lr=1e-3)` with torch defaults, one "
        "per population / one per sequential net; zero_grad every step.\n"
    )
    rows = []
    for label, t in pops.items():
        rows.append([
            label,
            ms(t["seq"]), ms(t["pop"]), f"{t['seq'] / t['pop']:.2f}x",
            ms(t["seq_adam"]), ms(t["pop_adam"]), f"**{t['seq_adam'] / t['pop_adam']:.2f}x**",
        ])
    print(table([
        "size (d_in/width/batch)", f"fwd+bwd: {POP_SEEDS} x S=1", f"S={POP_SEEDS}", "speed-up",
        f"+Adam: {POP_SEEDS} x S=1", f"S={POP_SEEDS}", "speed-up",
    ], rows) + "\n")

    d32 = depths.get(32)
    d4 = depths.get(4)
    digits = pops[POP_SIZES[-1][0]]
    goals = []
    if d32:
        frac = d32["flops"] / d32["dag"] / d32["gemm_rate"]
        goals.append([f">= {GOAL_GEMM_FRACTION} of GEMM rate at depth 32", f"{frac:.2f}",
                      "yes" if frac >= GOAL_GEMM_FRACTION else "no"])
    if d4 and "loop" in d4:
        sp = d4["loop"] / d4["dag"]
        goals.append([f">= {GOAL_LOOP_SPEEDUP:g}x faster than per-node loop (depth 4)",
                      f"{sp:.1f}x", "yes" if sp >= GOAL_LOOP_SPEEDUP else "no"])
    sp = digits["seq_adam"] / digits["pop_adam"]
    where = "" if device.type == "cpu" else f" (goal is for CPU; this ran on {device.type})"
    goals.append([f"population >= {GOAL_POP_SPEEDUP:g}x sequential, digits size, with Adam",
                  f"{sp:.2f}x{where}", "yes" if sp >= GOAL_POP_SPEEDUP else "no"])
    print(table(["goal", "measured", "met"], goals) + "\n")
    print(
        f"In-run noise: spread of the {repeats}+ medians per callable, (max - min) / min: "
        f"median {statistics.median(spreads):.0%}, max {max(spreads):.0%}. "
        f"Total run time {elapsed:.0f} s." + load_note(load0)
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--repeats", type=int, default=None, help="medians per callable (default 9)")
    p.add_argument("--quick", action="store_true", help="fewer, shorter repeats (< 30 s on CPU)")
    args = p.parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(cores or 1)
    repeats = args.repeats or (3 if args.quick else 9)
    bench = Bench(
        device, repeats, target_s=0.1 if args.quick else 0.3,
        group_budget_s=2.0 if args.quick else 18.0,
    )
    gemm_n = 8192 if device.type == "cuda" else 2048
    t0 = time.perf_counter()
    load0 = os.getloadavg()[0] if device.type == "cpu" and hasattr(os, "getloadavg") else None
    depths = bench_depths(bench, device, gemm_n)
    pops = bench_population(bench, device)
    report(device, depths, pops, bench, gemm_n, time.perf_counter() - t0, load0)


if __name__ == "__main__":
    main()
