"""A whole dataset on the host before splitting (``RawDataset``), and ``DataError``: every data
failure is one, a ``ValueError`` with a one-line message naming the file or option."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class DataError(ValueError):
    """A dataset could not be loaded or split; the one-line message names the file or option."""


@dataclass(frozen=True, eq=False)
class RawDataset:
    """A whole dataset on the host, before splitting.

    ``x`` float32 ``[N, d]``; ``y`` int64 ``[N]`` in ``0..n_classes-1``; ``test_index`` int64
    row numbers of a fixed test set, or None; ``checksums`` maps each source file whose SHA-256
    was verified to that digest (empty when nothing was checked); ``source`` names where it came
    from (a file or dataset reference) for error messages.
    """

    x: np.ndarray
    y: np.ndarray
    n_classes: int
    test_index: np.ndarray | None = None
    checksums: dict[str, str] = field(default_factory=dict)
    source: str = ""

    def __post_init__(self) -> None:
        if self.x.ndim != 2 or self.y.shape != (self.x.shape[0],):
            raise DataError(f"RawDataset: x {self.x.shape} and y {self.y.shape} do not match")
