"""Named datasets loaded onto the host: ``load_raw(name, data_dir=None, *, synthetic=None)``.

``name`` is one of ``DATASETS``. The result (``RawDataset``) holds host (numpy) arrays: ``x``
float32 ``[N, d]`` (image pixels scaled to [0, 1]), ``y`` int64 ``[N]`` in ``0..n_classes-1``,
and ``test_index`` (int64 row numbers of a fixed test set, or None).

- ``digits``: scikit-learn's bundled 8x8 digits (no download): N=1797, d=64, 10 classes,
  pixel intensities 0..16 divided by 16.
- ``mnist``: the IDX files in ``data_dir`` (``dagstudy.data.mnist``).
- ``synthetic``: noisy sparse parity drawn from a ``SyntheticSpec`` (``synthetic=``).

``data_dir`` is used by ``mnist`` only and ``synthetic`` by ``synthetic`` only; each is ignored
otherwise. Every failure is a ``DataError`` naming the file or option, never a silently wrong
array.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from dagstudy.data.mnist import load_mnist
from dagstudy.data.raw import DataError, RawDataset


class SyntheticSpec(BaseModel):
    """Noisy sparse parity in ``d`` dimensions.

    Each row draws ``d`` fair bits ``b``; its features are ``2b - 1`` (so +-1) plus Gaussian
    noise of standard deviation ``noise``, and its label is the number of set bits among the
    first ``order`` coordinates, modulo ``n_classes`` (for two classes: the XOR of ``order``
    bits). The other ``d - order`` coordinates are distractors. For ``order >= 2`` no single
    coordinate or linear function carries signal, and the task gets harder as ``order`` grows
    (deep networks express high-order parity with far fewer units than shallow ones).
    Deterministic given ``seed``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    n_samples: int = Field(2000, ge=2, description="rows generated")
    d: int = Field(16, ge=1, description="input features")
    n_classes: int = Field(2, ge=2, description="classes; at most order + 1")
    order: int = Field(4, ge=1, description="relevant coordinates; at most d")
    noise: float = Field(0.25, ge=0.0, description="std of the Gaussian added to +-1 features")
    seed: int = Field(0, ge=0, description="numpy Generator seed")

    @model_validator(mode="after")
    def _check_sizes(self) -> SyntheticSpec:
        if self.order > self.d:
            raise ValueError(f"order={self.order} exceeds d={self.d}")
        if self.n_classes > self.order + 1:
            raise ValueError(f"n_classes={self.n_classes} exceeds order + 1 = {self.order + 1}")
        return self


def load_raw(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    synthetic: SyntheticSpec | Mapping[str, Any] | None = None,
) -> RawDataset:
    """Load dataset ``name`` (one of ``DATASETS``) onto the host; see the module docstring."""
    if name not in LOADERS:
        raise DataError(f"dataset={name!r} is not one of {DATASETS}")
    return LOADERS[name](data_dir, synthetic)


def _load_digits(data_dir: Any = None, synthetic: Any = None) -> RawDataset:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return RawDataset(x=(x / 16.0).astype(np.float32), y=y.astype(np.int64), n_classes=10)


def _synthetic_spec(synthetic: SyntheticSpec | Mapping[str, Any] | None) -> SyntheticSpec:
    if synthetic is None:
        return SyntheticSpec()
    if isinstance(synthetic, SyntheticSpec):
        return synthetic
    try:
        return SyntheticSpec.model_validate(synthetic)
    except ValidationError as exc:
        first = exc.errors()[0]
        option = ".".join(["synthetic", *(str(part) for part in first["loc"])])
        raise DataError(f"{option}: {first['msg']}") from exc


def _load_mnist(data_dir: str | os.PathLike[str] | None, synthetic: Any = None) -> RawDataset:
    return load_mnist(data_dir)


def _load_synthetic(data_dir: Any, synthetic: SyntheticSpec | Mapping[str, Any] | None
                    ) -> RawDataset:
    return make_synthetic(_synthetic_spec(synthetic))


def make_synthetic(spec: SyntheticSpec) -> RawDataset:
    """Generate the noisy sparse-parity task that ``spec`` describes (float32 features)."""
    rng = np.random.default_rng(spec.seed)
    bits = rng.integers(0, 2, size=(spec.n_samples, spec.d))
    x = 2.0 * bits - 1.0 + spec.noise * rng.standard_normal((spec.n_samples, spec.d))
    y = bits[:, : spec.order].sum(axis=1) % spec.n_classes
    return RawDataset(x=x.astype(np.float32), y=y.astype(np.int64), n_classes=spec.n_classes)


LOADERS: dict[str, Callable[[Any, Any], RawDataset]] = {
    "digits": _load_digits,
    "mnist": _load_mnist,
    "synthetic": _load_synthetic,
}
"""Every named dataset: ``loader(data_dir, synthetic) -> RawDataset``. Adding a dataset is a
loader function and one line here."""
DATASETS = tuple(LOADERS)
