"""How much memory one training run needs, estimated from its configuration before it starts.

``estimate(config, n_seeds, n_rows, d_in, n_classes) -> MemoryEstimate`` in bytes, from sizes
alone (nothing is allocated, so an absurd configuration is cheap to refuse):

- weights: every block's dense incoming weight ``[S, w, columns it reads]`` (masked topologies
  store it dense too), biases and the readout, float32, times (1 + 1 gradient + optimizer
  state: 2 moments for Adam and the full-batch variants, 1 momentum for SGD), plus a byte per
  entry of a fan-in mask;
- activations: the prefix buffer ``[S, rows, d + depth * w]`` of the largest batch or
  evaluation chunk, its gradient and the ReLU activity mask;
- data: the features and labels on the device and each seed's split indices.

It is an estimate (the allocator's overheads, torch's workspace and Python are not counted):
the measured growth of peak RSS during training (digits, CPU, 8-16 seeds of dag and layered
nets, Adam and SGD, 1.1-1.6 GiB) was within 20% of it. Studies
compare it with ``resources.memory_gb``, ``dagstudy train`` with the memory available.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dagstudy.config import TrainConfig

FLOAT = 4
INDEX = 8
STATE_COPIES = {"sgd": 1, "adam": 2}
"""Optimizer-state tensors per weight; variants not listed keep 2 (moments, momentum + L)."""
GIB = 1024**3


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes of one population's training run, by part."""

    weights: int
    activations: int
    data: int

    @property
    def total(self) -> int:
        return self.weights + self.activations + self.data

    def describe(self) -> str:
        return (f"{self.total / GIB:.2f} GiB (weights and optimizer state "
                f"{self.weights / GIB:.2f}, activations {self.activations / GIB:.2f}, data "
                f"{self.data / GIB:.2f})")


def _weights_per_seed(config: TrainConfig, d_in: int, n_classes: int) -> tuple[int, int]:
    """(weight entries, readout inputs) of one network."""
    w, depth = config.width, config.depth
    dense_reads = config.topology in ("dag", "fanin")
    reads = [d_in + k * w if dense_reads else (d_in if k == 0 else w) for k in range(depth)]
    readout_all = config.readout == "all" or (config.readout == "auto" and dense_reads)
    n_read = depth * w if readout_all else w
    entries = sum(w * r for r in reads) + depth * w + n_classes * (n_read + 1)
    return entries, sum(w * r for r in reads)


def estimate(config: TrainConfig, n_seeds: int, n_rows: int, d_in: int,
             n_classes: int) -> MemoryEstimate:
    """The memory one ``train(config, seeds, ...)`` of ``n_seeds`` seeds on a dataset of
    ``n_rows`` rows of ``d_in`` features needs (see the module docstring)."""
    entries, hidden_entries = _weights_per_seed(config, d_in, n_classes)
    copies = 2 + STATE_COPIES.get(config.optimizer, 2)
    masks = hidden_entries if config.topology == "fanin" else 0
    weights = n_seeds * (entries * FLOAT * copies + masks)
    rows = max(config.batch_size, min(config.chunk_size, n_rows))
    columns = d_in + config.depth * config.width
    activations = n_seeds * rows * columns * (2 * FLOAT + 1)
    data = n_rows * (d_in * FLOAT + INDEX) + n_seeds * n_rows * INDEX
    return MemoryEstimate(weights, activations, data)


class MemoryBudgetError(ValueError):
    """A configuration's estimated memory exceeds the budget; the message gives both."""


def available_bytes() -> int:
    """Memory this machine can give a new run now, in bytes: Linux's ``MemAvailable``
    (``/proc/meminfo``), else the free physical pages."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check(config: TrainConfig, n_seeds: int, n_rows: int, d_in: int, n_classes: int,
          budget_bytes: int, budget_name: str) -> MemoryEstimate:
    """The estimate, or ``MemoryBudgetError`` when it exceeds ``budget_bytes`` (named
    ``budget_name`` in the message, e.g. ``resources.memory_gb``)."""
    need = estimate(config, n_seeds, n_rows, d_in, n_classes)
    if need.total > budget_bytes:
        raise MemoryBudgetError(
            f"memory: {n_seeds} seeds of depth {config.depth} x width {config.width} "
            f"({config.topology}) need an estimated {need.describe()}; {budget_name} allows "
            f"{budget_bytes / GIB:.2f} GiB")
    return need
