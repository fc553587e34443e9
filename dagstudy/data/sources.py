"""Datasets loaded onto the host: ``load_raw(dataset, data_dir=None, *, synthetic=None,
label_column=None)``.

``dataset`` is a *dataset reference*, resolved by ``parse_dataset`` to one kind of ``LOADERS``
(the one table of what dagstudy can read; ``dataset_forms()`` lists them for errors and docs):

- named sets: ``digits`` (scikit-learn's bundled 8x8 digits: N=1797, d=64, 10 classes, pixels
  0..16 divided by 16), ``mnist`` and ``fashion-mnist`` (the IDX files in ``data_dir``,
  downloaded with checksums when missing: ``dagstudy.data.mnist``), ``synthetic`` (noisy sparse
  parity from a ``SyntheticSpec``, ``synthetic=``);
- ``sklearn:NAME``: scikit-learn's bundled ``iris``, ``wine``, ``breast_cancer``, ``digits``
  (no download; features as scikit-learn gives them);
- ``openml:NAME_OR_ID``: scikit-learn's ``fetch_openml`` (first active version of a name, or a
  numeric data id), cached under ``data_dir`` (default ``$DAGSTUDY_HOME/data/openml`` or
  ``~/.cache/dagstudy/openml``); offline without a cached copy it is a ``DataError``;
- a path: a ``.npz``, ``.csv`` or ``.parquet`` file, or a directory of IDX files
  (``dagstudy.data.files``; ``label_column`` names a table's label column, default the last).

The result (``RawDataset``) holds host (numpy) arrays: ``x`` float32 ``[N, d]``, ``y`` int64
``[N]`` in ``0..n_classes-1`` and ``test_index`` (int64 row numbers of a fixed test set, or
None). Every failure is a ``DataError`` naming the file or option, never a silently wrong array.
"""

from __future__ import annotations

import os
import urllib.error
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from dagstudy.data.files import from_arrays, load_csv, load_idx_dir, load_npz, load_parquet
from dagstudy.data.mnist import default_data_dir, load_mnist
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


@dataclass(frozen=True)
class DataRequest:
    """What a loader gets: the reference's argument (``NAME`` of ``sklearn:NAME``, the path of a
    file) and the options that apply to it."""

    argument: str
    data_dir: str | os.PathLike[str] | None = None
    synthetic: SyntheticSpec | Mapping[str, Any] | None = None
    label_column: str | None = None


def load_raw(
    dataset: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    synthetic: SyntheticSpec | Mapping[str, Any] | None = None,
    label_column: str | None = None,
) -> RawDataset:
    """Load the dataset ``dataset`` refers to onto the host; see the module docstring."""
    kind, argument = parse_dataset(dataset)
    raw = LOADERS[kind].load(DataRequest(argument, data_dir, synthetic, label_column))
    return raw if raw.source else replace(raw, source=dataset)


def parse_dataset(dataset: str) -> tuple[str, str]:
    """``(kind of LOADERS, argument)`` for a dataset reference; a ``DataError`` names the
    allowed forms when it is none of them. Checks the form only (files are read at load)."""
    kind = LOADERS.get(dataset)
    if kind is not None and kind.form == "name":
        return dataset, dataset
    head, colon, tail = dataset.partition(":")
    kind = LOADERS.get(head)
    if colon and kind is not None and kind.form == "prefix":
        if not tail:
            raise DataError(f"dataset={dataset!r}: {head}: needs a name after the colon")
        if kind.names and tail not in kind.names:
            raise DataError(f"dataset={dataset!r}: unknown {head} set {tail!r} (allowed: "
                            f"{', '.join(kind.names)})")
        return head, tail
    suffix = Path(dataset).suffix.lower()
    if suffix in LOADERS and LOADERS[suffix].form == "suffix":
        return suffix, str(Path(dataset).expanduser())
    if _looks_like_path(dataset):
        if Path(dataset).expanduser().is_file():
            raise DataError(f"dataset={dataset!r}: unknown file type {suffix or '(none)'} "
                            f"(allowed: {dataset_forms()})")
        return "idx", str(Path(dataset).expanduser())
    raise DataError(f"dataset={dataset!r}: not a dataset name, prefix or path (allowed: "
                    f"{dataset_forms()})")


def _looks_like_path(dataset: str) -> bool:
    return "/" in dataset or os.sep in dataset or dataset.startswith((".", "~")) or Path(
        dataset).is_dir()


def dataset_forms() -> str:
    """Every accepted form of a dataset reference, comma-separated, as errors show them."""
    return ", ".join(kind.usage or name for name, kind in LOADERS.items())


def _load_digits(request: DataRequest) -> RawDataset:
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


def _load_synthetic(request: DataRequest) -> RawDataset:
    return make_synthetic(_synthetic_spec(request.synthetic))


def make_synthetic(spec: SyntheticSpec) -> RawDataset:
    """Generate the noisy sparse-parity task that ``spec`` describes (float32 features)."""
    rng = np.random.default_rng(spec.seed)
    bits = rng.integers(0, 2, size=(spec.n_samples, spec.d))
    x = 2.0 * bits - 1.0 + spec.noise * rng.standard_normal((spec.n_samples, spec.d))
    y = bits[:, : spec.order].sum(axis=1) % spec.n_classes
    return RawDataset(x=x.astype(np.float32), y=y.astype(np.int64), n_classes=spec.n_classes)


SKLEARN_SETS = ("iris", "wine", "breast_cancer", "digits")
"""scikit-learn's bundled classification sets that ``sklearn:NAME`` loads (no download)."""


def _load_sklearn(request: DataRequest) -> RawDataset:
    import sklearn.datasets

    x, y = getattr(sklearn.datasets, f"load_{request.argument}")(return_X_y=True)
    return from_arrays(f"sklearn:{request.argument}", x, y)


def _load_openml(request: DataRequest) -> RawDataset:
    """``fetch_openml`` by name (its first active version) or numeric data id, cached."""
    from sklearn.datasets import fetch_openml

    ref = request.argument
    cache = Path(request.data_dir) if request.data_dir else default_data_dir("openml")
    which = {"data_id": int(ref)} if ref.isdigit() else {"name": ref, "version": 1}
    try:
        x, y = fetch_openml(**which, as_frame=False, parser="liac-arff", data_home=str(cache),
                            return_X_y=True, n_retries=1, delay=0.1)
    except (urllib.error.URLError, OSError) as exc:
        raise DataError(f"openml:{ref}: not in the cache {cache} and OpenML is unreachable "
                        f"(offline? {exc})") from exc
    except ValueError as exc:  # unknown name or id, or a dataset it cannot return as arrays
        raise DataError(f"openml:{ref}: {exc}") from exc
    return from_arrays(f"openml:{ref}", np.asarray(x), np.asarray(y))


class DatasetKind(NamedTuple):
    """One row of ``LOADERS``: how a reference names it (``form``: the exact ``name``, a
    ``prefix:ARG``, a file ``suffix`` or a ``directory``), its loader, the allowed ARGs of a
    prefix (empty: any), and the usage shown in errors."""

    form: Literal["name", "prefix", "suffix", "directory"]
    load: Callable[[DataRequest], RawDataset]
    names: tuple[str, ...] = ()
    usage: str = ""


LOADERS: dict[str, DatasetKind] = {
    "digits": DatasetKind("name", _load_digits),
    "mnist": DatasetKind("name", lambda r: load_mnist(r.data_dir, "mnist")),
    "fashion-mnist": DatasetKind("name", lambda r: load_mnist(r.data_dir, "fashion-mnist")),
    "synthetic": DatasetKind("name", _load_synthetic),
    "sklearn": DatasetKind("prefix", _load_sklearn, SKLEARN_SETS, "sklearn:NAME"),
    "openml": DatasetKind("prefix", _load_openml, (), "openml:NAME_OR_ID"),
    ".npz": DatasetKind("suffix", lambda r: load_npz(Path(r.argument)), (), "FILE.npz"),
    ".csv": DatasetKind("suffix", lambda r: load_csv(Path(r.argument), r.label_column), (),
                        "FILE.csv"),
    ".parquet": DatasetKind("suffix", lambda r: load_parquet(Path(r.argument), r.label_column),
                            (), "FILE.parquet"),
    "idx": DatasetKind("directory", lambda r: load_idx_dir(Path(r.argument)), (),
                       "DIR (IDX files)"),
}
"""Every kind of dataset dagstudy reads (see the module docstring); adding one is a loader
function and one line here."""
DATASETS = tuple(name for name, kind in LOADERS.items() if kind.form == "name")
"""The datasets named by a bare word."""
