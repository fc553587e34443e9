"""The trainer: ``train(config, seeds, data, device, on_epoch) -> TrialResult``, and
``train_packed`` for several configurations in one population (``dagstudy.packing``).

A pure function of its arguments: it knows nothing of Ray, Optuna or MLflow. One call trains a
population of ``len(seeds)`` independently initialised networks at once (seed ``s`` decides its
initial weights, its data order and, through ``data``, its split), so the result of seed ``s``
does not depend on which other seeds share the call.

Per epoch (= one pass over each seed's training split) it records, per seed: full training loss,
validation loss and accuracy, test accuracy, gradient reach, dead fraction per block, duplicate
pairs, and whatever the optimizer variant and revival policy report. A seed whose training loss
becomes non-finite or exceeds ``config.divergence_loss`` (or that its optimizer fails) is ended
with a recorded reason: its weights are zeroed and its metrics from then on are those of the
zeroed network (one constant prediction: chance-level loss and accuracy, what a broken run earns,
never a dropped value that would flatter it in a paired comparison); the other seeds go on.

Optimizer ideas that work with every variant (``dagstudy/optim``): ``jitter_spread`` goes to the
``Problem`` (OPT-JITTER), ``grad_floor`` to the model's backward (GRAD-FLOOR; the curve
``stuck_fraction`` counts weights below ``stuck_threshold`` in every run), and the OPT-STOP
rule (``StopRule``) records ``last_layer_grad_ratio`` and ``overfit_flag`` every epoch and, per
seed, the first epoch each fired (``stop_rule_epoch``, ``overfit_epoch``). With ``stop_on_ratio``
a seed stops at its rule's epoch (``stop_epoch``; otherwise ``stop_epoch`` is the last epoch) and
training ends once every live seed has stopped; a stopped seed trains on with the population
meanwhile (seeds are independent) but its ``final`` metrics are those of its ``stop_epoch``, and
it can no longer be ended as diverged.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from dagstudy import diagnostics, packing
from dagstudy.config import TrainConfig
from dagstudy.data.sources import load_raw
from dagstudy.data.splits import SplitData, make_splits
from dagstudy.losses import LOSSES
from dagstudy.model.dagnet import DagNet
from dagstudy.model.grad_floor import GradFloor
from dagstudy.model.topology import build_topology, hops_to_inputs
from dagstudy.optim import VARIANTS
from dagstudy.optim.stopping import StopRule
from dagstudy.problem import Problem
from dagstudy.revival import POLICIES

EpochCallback = Callable[[dict[str, Any]], None]
PackEpochCallback = Callable[[dict[int, dict[str, Any]]], Iterable[int]]
FINAL_METRICS = ("train_loss", "val_loss", "val_accuracy", "test_accuracy")


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device: {device!r} but CUDA is not available (allowed: auto, cpu)")
    try:
        return torch.device(device)
    except RuntimeError:
        raise ValueError(f"device: unknown {device!r} (allowed: auto, cpu, cuda[:N])") from None


def load_data(config: TrainConfig, seeds: list[int], device: torch.device) -> SplitData:
    """The config's dataset, split per seed and moved to ``device`` once."""
    raw = load_raw(config.dataset, config.data_dir, synthetic=config.synthetic,
                   label_column=config.label_column)
    return make_splits(
        raw, seeds, device, val_fraction=config.val_fraction,
        test_fraction=config.test_fraction, split=config.split,
    )


def build_model(config: TrainConfig, d_in: int, n_classes: int, seeds: list[int],
                members: list[TrainConfig] | None = None) -> DagNet:
    """The population of ``config`` on ``seeds``; with ``members`` (a pack), ``seeds`` repeats
    once per member and each seed row takes its member's initialisation scalars."""
    topo = build_topology(
        config.topology, d_in, config.width, config.depth, seeds,
        fanin=config.fanin, wiring=config.fanin_wiring, readout=config.readout,
    )
    floor = None
    if config.grad_floor > 0:
        floor = GradFloor(config.grad_floor, config.grad_floor_hysteresis)
    init = {f: packing.per_seed(members, len(seeds) // len(members), f) if members
            else getattr(config, f) for f in packing.MODEL_FIELDS}
    return DagNet(topo, n_classes, seeds, **init, duplicates=config.init_duplicates,
                  grad_floor=floor)


def _nan_to_none(x: float) -> float | None:
    return None if math.isnan(x) or math.isinf(x) else x


def _per_seed(t: torch.Tensor) -> list:
    return [[_nan_to_none(v) for v in row] if isinstance(row, list) else _nan_to_none(row)
            for row in t.detach().double().cpu().tolist()]


@dataclass
class TrialResult:
    """What one population training returns. Per-seed lists follow ``seeds`` order.

    ``final[m]``: last-epoch value of metric ``m`` per seed; ``curves[m]``: per epoch, per seed
    (``curves["dead_by_block"]``, ``curves["activation_rank_by_block"]`` are per epoch, per
    seed, per block); ``status[i]`` is ``"ok"`` or ``"diverged"`` with ``reasons[i]`` saying
    why and when (``"failed"``: the run crashed, ``TrialResult.crashed``).
    """

    config: dict[str, Any]
    seeds: list[int]
    device: str
    final: dict[str, list[float | None]]
    curves: dict[str, list[list]]
    status: list[str]
    reasons: list[str | None]
    epochs: int
    wall_seconds: float
    params: int
    flops_per_example: int
    best_val_epoch: list[int] = field(default_factory=list)
    mean_hops: list[float] = field(default_factory=list)  # fewest hops node -> inputs, mean
    stop_epoch: list[int] = field(default_factory=list)  # epochs each seed trained (its final)
    stop_rule_epoch: list[int | None] = field(default_factory=list)  # OPT-STOP rule first held
    overfit_epoch: list[int | None] = field(default_factory=list)  # first overfit flag

    def summary(self, metric: str) -> dict[str, Any]:
        vals = self.final[metric]
        finite = [v for v in vals if v is not None]
        mean = sum(finite) / len(finite) if finite else None
        std = None
        if len(finite) > 1:
            std = math.sqrt(sum((v - mean) ** 2 for v in finite) / (len(finite) - 1))
        return {"mean": mean, "std": std, "per_seed": vals}

    @property
    def failed(self) -> bool:
        return any(s != "ok" for s in self.status)

    @classmethod
    def crashed(cls, config: TrainConfig, seeds: list[int], reason: str) -> TrialResult:
        """The result of a run that raised before it returned: every seed ``"failed"`` with
        ``reason``, no metric values (what a confirmation records for an arm that crashed)."""
        return cls(config=config.model_dump(mode="json"), seeds=list(seeds), device="",
                   final={m: [None] * len(seeds) for m in FINAL_METRICS}, curves={},
                   status=["failed"] * len(seeds), reasons=[reason] * len(seeds), epochs=0,
                   wall_seconds=0.0, params=0, flops_per_example=0)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {m: self.summary(m) for m in self.final}
        out.update(
            seeds=self.seeds, status=self.status, reasons=self.reasons, epochs=self.epochs,
            wall_seconds=self.wall_seconds, params=self.params,
            flops_per_example=self.flops_per_example, best_val_epoch=self.best_val_epoch,
            mean_hops=self.mean_hops, stop_epoch=self.stop_epoch,
            stop_rule_epoch=self.stop_rule_epoch, overfit_epoch=self.overfit_epoch,
            device=self.device, config=self.config, curves=self.curves,
        )
        return out


@torch.no_grad()
def evaluate(model: DagNet, data: SplitData, idx: torch.Tensor, loss_fn, chunk: int):
    """Mean loss ``[S]`` and accuracy ``[S]`` over the index set ``idx [S, n]``."""
    n = idx.shape[1]
    loss = torch.zeros(model.n_seeds, device=idx.device)
    correct = torch.zeros(model.n_seeds, device=idx.device)
    for start in range(0, n, chunk):
        part = idx[:, start : start + chunk]
        logits = model(data.inputs(part))
        y = data.targets(part)
        loss += loss_fn(logits, y) * (part.shape[1] / n)
        correct += (logits.argmax(-1) == y).float().sum(1)
    return loss, correct / n


class _Recorder:
    """Accumulates per-epoch, per-seed values into JSON-ready curves."""

    def __init__(self):
        self.curves: dict[str, list[list]] = {}

    def add(self, epoch_metrics: dict[str, torch.Tensor]) -> dict[str, Any]:
        row: dict[str, Any] = {}
        for name, value in epoch_metrics.items():
            row[name] = _per_seed(value)
            self.curves.setdefault(name, []).append(row[name])
        return row


def _end_seeds(model: DagNet, variant, problem: Problem, ended: torch.Tensor) -> None:
    """Zero the weights and optimizer state of ended seeds so they stay finite and constant."""
    with torch.no_grad():
        for p in problem.params:
            where = ended.view(-1, *[1] * (p.dim() - 1)).expand_as(p)
            p.masked_fill_(where, 0.0)
            variant.reset_state(p, where)


def _diagnose(model: DagNet, problem: Problem, config: TrainConfig) -> dict[str, torch.Tensor]:
    """This pass's per-seed diagnostics (``diagnostics.py``)."""
    reach, block_norms, hidden = diagnostics.gradient_reach(model, problem, config.probe_size)
    dead_by_block = diagnostics.dead_by_block(problem.activity_max, config.depth)
    return {
        "activation_rank_by_block": diagnostics.activation_rank(model, hidden),
        "stuck_fraction": diagnostics.stuck_fraction(model, config.stuck_threshold),
        "grad_reach": reach, "grad_norm_by_block": block_norms,
        "dead_fraction": dead_by_block.mean(1), "dead_by_block": dead_by_block,
        "duplicate_pairs": diagnostics.duplicate_pairs(model),
    }


def train(
    config: TrainConfig,
    seeds: list[int],
    data: SplitData,
    device: torch.device | str,
    on_epoch: EpochCallback | None = None,
) -> TrialResult:
    """Train ``len(seeds)`` networks of ``config`` on ``data`` (split for the same seeds).

    ``on_epoch(row)`` is called after every epoch with ``row["epoch"]`` and each metric's
    per-seed list; it may raise (e.g. to prune), which ends the call.
    """
    def each(rows: dict[int, dict[str, Any]]) -> list[int]:
        if on_epoch is not None:
            on_epoch(rows[0])
        return []

    return train_packed([config], seeds, data, device, each)[0]


def train_packed(
    configs: list[TrainConfig],
    seeds: list[int],
    data: SplitData,
    device: torch.device | str,
    on_epoch: PackEpochCallback | None = None,
) -> list[TrialResult]:
    """Train configurations that may share a pack (``packing.check_pack``) as one population
    of ``len(configs) * len(seeds)`` networks, member ``k`` being ``configs[k]`` on ``seeds``
    (``data`` split for ``seeds``); one ``TrialResult`` per member, each what ``train`` returns
    for it alone.

    ``on_epoch(rows)`` is called after every epoch with ``{k: row}`` for the members still
    training and returns the members to end now (pruned): their weights stop changing and their
    result ends at this epoch.
    """
    packing.check_pack(configs)
    device = torch.device(device)
    if data.n_seeds != len(seeds):
        raise ValueError(f"data was split for {data.n_seeds} seeds, but {len(seeds)} seeds given")
    start = time.perf_counter()
    config, K, n = configs[0], len(configs), len(seeds)
    data = data.tiled(K)
    model = build_model(config, data.d_in, data.n_classes, seeds * K, configs).to(device)
    loss_fn = LOSSES[config.loss]
    problem = Problem(model, data, loss_fn, config.batch_size, chunk_size=config.chunk_size,
                      jitter_spread=config.jitter_spread)
    members = [(c.lr, c.optimizer_hp()) for c in configs for _ in seeds]
    variant = VARIANTS[config.optimizer](problem.params, config.lr, config.optimizer_hp(),
                                         members)
    policy = POLICIES[config.revival](config.revival_hp())
    S = K * n
    status, reasons = ["ok"] * S, [None] * S
    recorders = [_Recorder() for _ in configs]
    slices = [slice(k * n, (k + 1) * n) for k in range(K)]  # member k's seed rows
    training = dict(enumerate(slices))  # members not ended
    ended_at: dict[int, int] = {}
    best_val = torch.full((S,), -1.0)
    best_epoch = [0] * S
    stop = StopRule(S, config.stop_ratio, config.stop_patience, config.overfit_gap)
    epoch = 0
    for epoch in range(1, config.epochs + 1):
        problem.start_pass()
        pass_stats = variant.run_pass(problem)
        train_loss = problem.full_loss()
        done = [config.stop_on_ratio and e is not None for e in stop.rule_epoch]
        _mark_diverged(problem, train_loss, config.divergence_loss, epoch, status, reasons,
                       skip=done)
        if not bool(problem.alive.all()):
            _end_seeds(model, variant, problem, ~problem.alive)
            train_loss = torch.where(problem.alive, train_loss, problem.full_loss())

        metrics = {"train_loss": train_loss}
        val_loss, val_acc = evaluate(model, data, data.val_idx, loss_fn, config.chunk_size)
        _, test_acc = evaluate(model, data, data.test_idx, loss_fn, config.chunk_size)
        metrics.update(val_loss=val_loss, val_accuracy=val_acc, test_accuracy=test_acc)
        metrics.update(stop.after_pass(
            epoch, problem.readout_grad.flatten(1).norm(dim=1), train_loss, val_loss))
        metrics.update(_diagnose(model, problem, config))
        metrics.update(pass_stats)
        dead = (problem.activity_max <= 0) & problem.alive[:, None]
        metrics.update(policy.after_pass(model, dead, variant, problem, epoch))
        metrics["seconds"] = torch.full((S,), time.perf_counter() - start)

        improved = val_acc.cpu() > best_val
        best_val = torch.where(improved, val_acc.cpu(), best_val)
        best_epoch = [epoch if imp else b for imp, b in zip(improved.tolist(), best_epoch)]
        rows = {}
        for k, sl in training.items():
            rows[k] = recorders[k].add({m: v[sl] for m, v in metrics.items()})
            rows[k]["epoch"] = epoch
        for k in on_epoch(rows) if on_epoch is not None else []:
            ended_at[k] = epoch
            problem.alive[training.pop(k)] = False
        if not bool(problem.alive.any()):
            break
        live = [i for sl in training.values() for i in range(S)[sl] if status[i] == "ok"]
        if config.stop_on_ratio and all(stop.rule_epoch[i] is not None for i in live):
            break

    common = dict(device=str(device), wall_seconds=time.perf_counter() - start,
                  params=model.param_count(), flops_per_example=model.flops_per_example(),
                  mean_hops=[float(hops_to_inputs(model.topo, i).mean()) for i in range(n)])
    return [_member_result(c, seeds, recorders[k].curves, ended_at.get(k, epoch), slices[k],
                           status, reasons, best_epoch, stop, common)
            for k, c in enumerate(configs)]


def _member_result(config: TrainConfig, seeds: list[int], curves: dict[str, list[list]],
                   last: int, sl: slice, status: list[str], reasons: list[str | None],
                   best_epoch: list[int], stop: StopRule, common: dict[str, Any]) -> TrialResult:
    """Member ``sl`` of a population as a ``TrialResult``, trained for ``last`` epochs."""
    status, reasons, rule = status[sl], reasons[sl], stop.rule_epoch[sl]
    stopped = [last] * len(seeds)
    if config.stop_on_ratio:
        stopped = [e if e is not None and st == "ok" else last for e, st in zip(rule, status)]
    final = {m: [curves[m][e - 1][i] for i, e in enumerate(stopped)] for m in FINAL_METRICS}
    return TrialResult(
        config=config.model_dump(), seeds=list(seeds), final=final, curves=curves,
        status=status, reasons=reasons, epochs=last, best_val_epoch=best_epoch[sl],
        stop_epoch=stopped, stop_rule_epoch=rule, overfit_epoch=stop.overfit_epoch[sl],
        **common)


def _mark_diverged(
    problem: Problem, train_loss, limit: float, epoch: int, status, reasons, skip: list[bool]
) -> None:
    """End seeds whose loss is non-finite or above ``limit``, or that the optimizer failed.

    ``skip[i]``: seed ``i`` has already stopped (OPT-STOP); what happens to it later is ignored.
    """
    for i, loss in enumerate(train_loss.tolist()):
        if status[i] != "ok" or skip[i]:
            continue
        reason = problem.failures.get(i)
        if reason is not None:
            reason = f"{reason} at epoch {epoch}"
        elif not math.isfinite(loss):
            reason = f"non-finite training loss ({loss}) at epoch {epoch}"
        elif loss > limit:
            reason = f"training loss {loss:.3g} > divergence_loss {limit:g} at epoch {epoch}"
        if reason is not None:
            status[i], reasons[i] = "diverged", reason
            problem.alive[i] = False
