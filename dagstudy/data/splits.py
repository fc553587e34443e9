"""Per-seed splits of a ``RawDataset``, on the device.

``make_splits(raw, seeds, device, *, val_fraction=0.1, test_fraction=0.2, split="per-seed")``
    ``split="per-seed"``: seed ``s`` draws its own train/val/test partition with
    ``numpy.random.default_rng(s)``; ``split="fixed"``: every seed uses the partition of
    ``seeds[0]``. If ``raw.test_index`` is set, the test rows are always those and only train/val
    are drawn. Sizes are identical across seeds so they stack into ``[S, n]`` index tensors.
    Standardisation statistics (per-feature mean and population std) come from each seed's TRAIN
    rows only; a feature whose train std is below ``STD_FLOOR`` (constant) gets std 1.

``SplitData`` (every tensor on ``device``)
    ``x [N, d]`` float32 raw features (moved once), ``y [N]`` int64,
    ``train_idx [S, n_train]``, ``val_idx [S, n_val]``, ``test_idx [S, n_test]`` (int64),
    ``mean [S, 1, d]``, ``std [S, 1, d]``; ``n_classes``; properties ``d_in`` and ``n_seeds``;
    ``inputs(idx [S, B]) -> [S, B, d]`` standardised with each seed's own statistics;
    ``targets(idx [S, B]) -> [S, B]`` int64.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import torch

from dagstudy.data.raw import DataError, RawDataset

STD_FLOOR = 1e-6
"""Train std below this marks a constant feature, which is then divided by 1 instead."""


@dataclass(frozen=True, eq=False)
class SplitData:
    """Features, labels, per-seed split indices and train statistics, all on one device.

    Shapes: ``S`` seeds, ``N`` rows, ``d`` features, ``B`` rows per batch.
    """

    x: torch.Tensor  # [N, d] float32, raw (unstandardised)
    y: torch.Tensor  # [N] int64
    train_idx: torch.Tensor  # [S, n_train] int64
    val_idx: torch.Tensor  # [S, n_val] int64
    test_idx: torch.Tensor  # [S, n_test] int64
    mean: torch.Tensor  # [S, 1, d] float32, per-seed train mean
    std: torch.Tensor  # [S, 1, d] float32, per-seed train std (constant features: 1)
    n_classes: int

    @property
    def d_in(self) -> int:
        """Number of input features ``d``."""
        return self.x.shape[1]

    @property
    def n_seeds(self) -> int:
        """Number of seeds ``S``."""
        return self.train_idx.shape[0]

    def tiled(self, times: int) -> SplitData:
        """These splits repeated ``times`` along the seed dim (packed trials: every member of a
        pack trains on the same seeds); ``self`` when ``times`` is 1."""
        if times == 1:
            return self

        def rep(t: torch.Tensor) -> torch.Tensor:
            return t.repeat(times, *[1] * (t.dim() - 1))
        return replace(self, train_idx=rep(self.train_idx), val_idx=rep(self.val_idx),
                       test_idx=rep(self.test_idx), mean=rep(self.mean), std=rep(self.std))

    def inputs(self, idx: torch.Tensor) -> torch.Tensor:
        """Rows ``idx [S, B]`` as ``[S, B, d]`` features standardised per seed."""
        if idx.shape[0] != self.n_seeds:  # would broadcast one seed's rows over all statistics
            raise ValueError(f"idx has {idx.shape[0]} rows of indices for {self.n_seeds} seeds")
        return (self.x[idx] - self.mean) / self.std

    def targets(self, idx: torch.Tensor) -> torch.Tensor:
        """Labels of rows ``idx [S, B]`` as ``[S, B]`` int64."""
        return self.y[idx]


# --------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class _Partition:
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


_Draw = Callable[[np.random.Generator], _Partition]


def make_splits(
    raw: RawDataset,
    seeds: Sequence[int],
    device: torch.device | str,
    *,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    split: Literal["per-seed", "fixed"] = "per-seed",
) -> SplitData:
    """Partition ``raw`` once per seed and move everything to ``device``; see the module doc.

    Fractions are of the rows being drawn: all ``N`` rows, or the ``N - len(test_index)``
    non-test rows when ``raw.test_index`` is set (``test_fraction`` is then unused). Split sizes
    are ``round(fraction * rows)``, train takes the rest; each must hold at least one row.
    """
    if not seeds:
        raise DataError("seeds: at least one seed is needed")
    if split not in ("per-seed", "fixed"):
        raise DataError(f"split={split!r} is not 'per-seed' or 'fixed'")
    for option, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 < value < 1.0:
            raise DataError(f"{option}={value} is not in (0, 1)")
    if raw.test_index is None:
        draw = _random_partition(len(raw.y), val_fraction, test_fraction)
        _check_class_sizes(raw, raw.y, {"val_fraction": val_fraction,
                                        "test_fraction": test_fraction,
                                        "train": 1.0 - val_fraction - test_fraction})
    else:
        draw = _partition_around(len(raw.y), raw.test_index, val_fraction)
        pool = np.setdiff1d(np.arange(len(raw.y)), raw.test_index)
        _check_class_sizes(raw, raw.y[pool], {"val_fraction": val_fraction,
                                              "train": 1.0 - val_fraction})
    drawn_seeds = [seeds[0]] if split == "fixed" else list(seeds)
    parts = [draw(np.random.default_rng(seed)) for seed in drawn_seeds]

    def stack(rows: list[np.ndarray]) -> torch.Tensor:
        return torch.as_tensor(np.stack(rows), dtype=torch.int64, device=device)

    x = torch.as_tensor(raw.x, dtype=torch.float32, device=device)
    train_idx = stack([p.train for p in parts])
    mean, std = _train_statistics(x, train_idx)
    repeat = len(seeds) // len(parts)  # "fixed": one partition shared by every seed
    return SplitData(
        x=x,
        y=torch.as_tensor(raw.y, dtype=torch.int64, device=device),
        train_idx=train_idx.repeat(repeat, 1),
        val_idx=stack([p.val for p in parts]).repeat(repeat, 1),
        test_idx=stack([p.test for p in parts]).repeat(repeat, 1),
        mean=mean.repeat(repeat, 1, 1),
        std=std.repeat(repeat, 1, 1),
        n_classes=raw.n_classes,
    )


def _check_class_sizes(raw: RawDataset, labels: np.ndarray, fractions: dict[str, float]) -> None:
    """Every class must have enough drawn rows that each split expects at least one of them:
    ``rows >= ceil(1 / smallest fraction)`` (10 rows per class at ``val_fraction=0.1``)."""
    option, smallest = min(fractions.items(), key=lambda item: item[1])
    needed = math.ceil(1.0 / smallest - 1e-9)
    counts = np.bincount(labels, minlength=raw.n_classes)
    small = np.flatnonzero((counts > 0) & (counts < needed))
    if small.size:
        where = f"{raw.source}: " if raw.source else ""
        raise DataError(
            f"{where}class {int(small[0])} has {int(counts[small[0]])} rows to split; "
            f"{option}={smallest:g} needs at least {needed} per class "
            f"({small.size} class(es) short)")


def _split_size(option: str, fraction: float, n_rows: int) -> int:
    size = round(fraction * n_rows)
    if size < 1:
        raise DataError(f"{option}={fraction} leaves no row out of {n_rows} in its split")
    return size


def _random_partition(n_rows: int, val_fraction: float, test_fraction: float) -> _Draw:
    """A function of a Generator drawing test, then val, then train rows from all rows."""
    if val_fraction + test_fraction >= 1.0:
        raise DataError(f"val_fraction + test_fraction = {val_fraction + test_fraction} is not < 1")
    n_test = _split_size("test_fraction", test_fraction, n_rows)
    n_val = _split_size("val_fraction", val_fraction, n_rows)
    if n_rows - n_test - n_val < 1:
        raise DataError(f"val_fraction + test_fraction leave no training row out of {n_rows}")

    def draw(rng: np.random.Generator) -> _Partition:
        perm = rng.permutation(n_rows)
        return _Partition(
            train=perm[n_test + n_val :], val=perm[n_test : n_test + n_val], test=perm[:n_test]
        )

    return draw


def _partition_around(n_rows: int, test_index: np.ndarray, val_fraction: float) -> _Draw:
    """A function of a Generator drawing val, then train rows from the rows not in test_index."""
    test = np.asarray(test_index, dtype=np.int64)
    if test.ndim != 1 or test.size == 0 or test.min() < 0 or test.max() >= n_rows:
        raise DataError(f"test_index must be a non-empty 1-D array of rows in 0..{n_rows - 1}")
    if np.unique(test).size != test.size:
        raise DataError("test_index has repeated rows")
    pool = np.setdiff1d(np.arange(n_rows), test)
    n_val = _split_size("val_fraction", val_fraction, pool.size)
    if pool.size - n_val < 1:
        raise DataError(f"val_fraction={val_fraction} leaves no training row out of {pool.size}")

    def draw(rng: np.random.Generator) -> _Partition:
        perm = rng.permutation(pool)
        return _Partition(train=perm[n_val:], val=perm[:n_val], test=test)

    return draw


def _train_statistics(
    x: torch.Tensor, train_idx: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-seed mean and population std ``[S, 1, d]`` of the train rows (constant -> std 1).

    Loops over seeds: a batched ``x[train_idx]`` would hold S copies of the train set at once.
    """
    stats = [torch.std_mean(x[rows], dim=0, correction=0) for rows in train_idx]
    std = torch.stack([s for s, _ in stats]).unsqueeze(1)
    mean = torch.stack([m for _, m in stats]).unsqueeze(1)
    return mean, torch.where(std < STD_FLOOR, torch.ones_like(std), std)
