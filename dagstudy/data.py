"""Datasets as tensors on the device, with deterministic per-seed splits.

Two steps, and the trainer relies on exactly these contracts:

``load_raw(name, data_dir=None, *, synthetic=None) -> RawDataset``
    ``name`` is one of ``DATASETS``. The result holds host (numpy) arrays: ``x`` float32
    ``[N, d]`` (image pixels scaled to [0, 1]), ``y`` int64 ``[N]`` in ``0..n_classes-1``, and
    ``test_index`` (int64 row numbers of a fixed test set, or None).

    - ``digits``: scikit-learn's bundled 8x8 digits (no download): N=1797, d=64, 10 classes,
      pixel intensities 0..16 divided by 16.
    - ``mnist``: the four IDX files (``.gz`` or raw) in ``data_dir`` (default
      ``default_mnist_dir()``). With all four, ``x`` is train (60,000) then test (10,000) rows
      and ``test_index`` marks the official 10,000 test rows. A directory holding only the
      ``t10k`` pair loads those 10,000 rows with ``test_index=None``. Pixels 0..255 divided by
      255, d=784. Missing files are downloaded into the directory (see ``MNIST_MIRRORS``).
    - ``synthetic``: noisy sparse parity drawn from a ``SyntheticSpec`` (``synthetic=``).

    ``data_dir`` is used by ``mnist`` only and ``synthetic`` by ``synthetic`` only; each is
    ignored otherwise. Every failure (missing directory, wrong checksum, truncated or malformed
    file, offline with files missing, bad option) is a ``DataError``, a ``ValueError`` with a
    one-line message naming the file or option, never a silently wrong array.

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

import gzip
import hashlib
import http.client
import logging
import math
import os
import re
import struct
import tempfile
import urllib.request
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

log = logging.getLogger(__name__)

DATASETS = ("digits", "mnist", "synthetic")

STD_FLOOR = 1e-6
"""Train std below this marks a constant feature, which is then divided by 1 instead."""

MNIST_TRAIN = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
MNIST_TEST = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

# SHA-256 of the published .gz archives, as listed (with sizes 9912422, 28881, 1648877 and 4542
# bytes) in tensorflow/datasets tensorflow_datasets/url_checksums/mnist.txt; the t10k values also
# match /work/shared/data/mnist-t10k/SHA256SUMS.
_PUBLISHED_SHA256SUMS = """
440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609  train-images-idx3-ubyte.gz
3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c  train-labels-idx1-ubyte.gz
8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6  t10k-images-idx3-ubyte.gz
f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6  t10k-labels-idx1-ubyte.gz
"""
MNIST_SHA256 = {
    name: digest
    for digest, name in (line.split() for line in _PUBLISHED_SHA256SUMS.strip().splitlines())
}

MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dims: [n, rows, cols]
IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dim: [n]

_MNIST_SIDE = 28  # pixels per image side
_MNIST_CLASSES = 10
_DOWNLOAD_TIMEOUT_S = 60.0
_CHUNK_BYTES = 1 << 20
_SHA256_LINE = re.compile(r"([0-9a-fA-F]{64})\s+\*?(\S.*)")


class DataError(ValueError):
    """A dataset could not be loaded or split; the one-line message names the file or option."""


@dataclass(frozen=True, eq=False)
class RawDataset:
    """A whole dataset on the host, before splitting.

    ``x`` float32 ``[N, d]``; ``y`` int64 ``[N]`` in ``0..n_classes-1``; ``test_index`` int64
    row numbers of a fixed test set, or None; ``checksums`` maps each source file whose SHA-256
    was verified to that digest (empty when nothing was checked).
    """

    x: np.ndarray
    y: np.ndarray
    n_classes: int
    test_index: np.ndarray | None = None
    checksums: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.x.ndim != 2 or self.y.shape != (self.x.shape[0],):
            raise DataError(f"RawDataset: x {self.x.shape} and y {self.y.shape} do not match")


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

    def inputs(self, idx: torch.Tensor) -> torch.Tensor:
        """Rows ``idx [S, B]`` as ``[S, B, d]`` features standardised per seed."""
        if idx.shape[0] != self.n_seeds:  # would broadcast one seed's rows over all statistics
            raise ValueError(f"idx has {idx.shape[0]} rows of indices for {self.n_seeds} seeds")
        return (self.x[idx] - self.mean) / self.std

    def targets(self, idx: torch.Tensor) -> torch.Tensor:
        """Labels of rows ``idx [S, B]`` as ``[S, B]`` int64."""
        return self.y[idx]


# --------------------------------------------------------------------------- loading


def load_raw(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    synthetic: SyntheticSpec | Mapping[str, Any] | None = None,
) -> RawDataset:
    """Load dataset ``name`` (one of ``DATASETS``) onto the host; see the module docstring."""
    if name == "digits":
        return _load_digits()
    if name == "mnist":
        return load_mnist(data_dir)
    if name == "synthetic":
        return make_synthetic(_synthetic_spec(synthetic))
    raise DataError(f"dataset={name!r} is not one of {DATASETS}")


def _load_digits() -> RawDataset:
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


def make_synthetic(spec: SyntheticSpec) -> RawDataset:
    """Generate the noisy sparse-parity task that ``spec`` describes (float32 features)."""
    rng = np.random.default_rng(spec.seed)
    bits = rng.integers(0, 2, size=(spec.n_samples, spec.d))
    x = 2.0 * bits - 1.0 + spec.noise * rng.standard_normal((spec.n_samples, spec.d))
    y = bits[:, : spec.order].sum(axis=1) % spec.n_classes
    return RawDataset(x=x.astype(np.float32), y=y.astype(np.int64), n_classes=spec.n_classes)


def default_mnist_dir() -> Path:
    """MNIST cache: ``$DAGSTUDY_HOME/data/mnist`` if set, else ``~/.cache/dagstudy/mnist``."""
    home = os.environ.get("DAGSTUDY_HOME")
    return Path(home) / "data" / "mnist" if home else Path.home() / ".cache" / "dagstudy" / "mnist"


def load_mnist(data_dir: str | os.PathLike[str] | None = None) -> RawDataset:
    """Load MNIST from ``data_dir`` (default ``default_mnist_dir()``), downloading missing files.

    A given ``data_dir`` must exist. A directory holding the ``t10k`` pair and no train file is a
    test-only set and is read as is; otherwise each missing file is downloaded (as ``.gz``).
    Every ``.gz`` is checked against ``MNIST_SHA256``, and any file listed in the directory's
    ``SHA256SUMS`` against that too.
    """
    directory = default_mnist_dir() if data_dir is None else Path(data_dir)
    if data_dir is not None and not directory.is_dir():
        raise DataError(f"{directory}: MNIST directory does not exist")
    sums = _read_sha256sums(directory)
    found = {stem: _find_idx(directory, stem) for stem in MNIST_TRAIN + MNIST_TEST}
    test_only = all(found[s] for s in MNIST_TEST) and not any(found[s] for s in MNIST_TRAIN)
    pairs = (MNIST_TEST,) if test_only else (MNIST_TRAIN, MNIST_TEST)
    checksums: dict[str, str] = {}
    xs, ys = [], []
    for images_stem, labels_stem in pairs:
        images = found[images_stem] or _download(f"{images_stem}.gz", directory)
        labels = found[labels_stem] or _download(f"{labels_stem}.gz", directory)
        x, y = _load_mnist_pair(images, labels, sums, checksums)
        xs.append(x)
        ys.append(y)
    n_rows = sum(len(x) for x in xs)
    test_index = None if test_only else np.arange(len(xs[0]), n_rows, dtype=np.int64)
    return RawDataset(
        x=np.concatenate(xs),
        y=np.concatenate(ys),
        n_classes=_MNIST_CLASSES,
        test_index=test_index,
        checksums=checksums,
    )


def _find_idx(directory: Path, stem: str) -> Path | None:
    """The ``.gz`` file of ``stem`` if present (it has a published checksum), else the raw one."""
    for path in (directory / f"{stem}.gz", directory / stem):
        if path.is_file():
            return path
    return None


def _load_mnist_pair(
    images_path: Path, labels_path: Path, sums: Mapping[str, str], checksums: dict[str, str]
) -> tuple[np.ndarray, np.ndarray]:
    """Verified ``x`` float32 ``[n, 784]`` in [0, 1] and ``y`` int64 ``[n]``; records digests."""
    images = _parse_idx(_read_verified(images_path, sums, checksums), IDX_IMAGES_MAGIC, images_path)
    labels = _parse_idx(_read_verified(labels_path, sums, checksums), IDX_LABELS_MAGIC, labels_path)
    if images.shape[1:] != (_MNIST_SIDE, _MNIST_SIDE):
        raise DataError(f"{images_path}: images are {images.shape[1:]}, expected 28x28")
    if len(images) != len(labels) or len(images) == 0:
        raise DataError(
            f"{images_path} holds {len(images)} images but {labels_path} {len(labels)} labels"
        )
    if labels.max() >= _MNIST_CLASSES:
        raise DataError(f"{labels_path}: label {labels.max()} is outside 0..9")
    x = images.reshape(len(images), -1).astype(np.float32) / np.float32(255.0)
    return x, labels.astype(np.int64)


def _read_verified(path: Path, sums: Mapping[str, str], checksums: dict[str, str]) -> bytes:
    """Decompressed contents of ``path`` after checking every SHA-256 known for it."""
    blob = _read_bytes(path)
    expected = [
        (source, table[path.name])
        for source, table in (("published", MNIST_SHA256), ("SHA256SUMS", sums))
        if path.name in table
    ]
    if expected:
        digest = hashlib.sha256(blob).hexdigest()
        for source, want in expected:
            if digest != want:
                raise DataError(f"{path}: SHA-256 {digest} does not match the {source} {want}")
        checksums[path.name] = digest
    return _decompress(path, blob)


def read_idx(path: str | os.PathLike[str], magic: int) -> np.ndarray:
    """Parse one IDX file (``.gz`` or raw, no checksum) as uint8 ``[n, ...dims]``.

    ``magic`` is ``IDX_IMAGES_MAGIC`` or ``IDX_LABELS_MAGIC``; anything else in the file's
    header, a wrong payload length or an unreadable file is a ``DataError`` naming ``path``.
    """
    path = Path(path)
    return _parse_idx(_decompress(path, _read_bytes(path)), magic, path)


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from exc


def _decompress(path: Path, blob: bytes) -> bytes:
    if path.suffix != ".gz":
        return blob
    try:
        return gzip.decompress(blob)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: not a complete gzip file ({exc})") from exc


def _parse_idx(data: bytes, magic: int, path: Path) -> np.ndarray:
    """IDX: big-endian magic (0x0000 0x08=uint8, n_dims), n_dims big-endian uint32 sizes, data."""
    n_dims = magic & 0xFF
    header = 4 + 4 * n_dims
    if len(data) < header:
        raise DataError(f"{path}: {len(data)} bytes is too short for an IDX header")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise DataError(f"{path}: IDX magic number 0x{found:08x}, expected 0x{magic:08x}")
    dims = struct.unpack(f">{n_dims}I", data[4:header])
    if len(data) - header != math.prod(dims):
        raise DataError(
            f"{path}: IDX payload is {len(data) - header} bytes but dims {dims} need "
            f"{math.prod(dims)} (truncated or padded)"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _read_sha256sums(directory: Path) -> dict[str, str]:
    """``{file name: digest}`` from ``directory/SHA256SUMS``, or empty if there is none."""
    path = directory / "SHA256SUMS"
    if not path.is_file():
        return {}
    return _parse_sha256sums(_read_bytes(path).decode(errors="replace"), str(path))


def _parse_sha256sums(text: str, source: str) -> dict[str, str]:
    """``{file name: lowercase hex digest}`` from ``sha256sum`` output; blank/# lines skipped."""
    sums = {}
    for line_no, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        match = _SHA256_LINE.fullmatch(line.strip())
        if match is None:
            raise DataError(f"{source}:{line_no}: not a '<sha256>  <file>' line")
        sums[match.group(2)] = match.group(1).lower()
    return sums


# --------------------------------------------------------------------------- downloading


def _download(name: str, directory: Path) -> Path:
    """Fetch ``name`` from the first mirror that serves it with its published SHA-256."""
    dest = directory / name
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{dest}: missing, and cannot create {directory} ({exc})") from exc
    failures = []
    for mirror in MNIST_MIRRORS:
        url = mirror + name
        log.info("downloading %s -> %s", url, dest)
        try:
            return _fetch_atomic(url, dest, MNIST_SHA256[name])
        except (OSError, http.client.HTTPException, DataError) as exc:
            failures.append(f"{url}: {exc}")
    raise DataError(f"{dest}: missing and no mirror served it ({'; '.join(failures)})")


def _fetch_atomic(url: str, dest: Path, sha256: str) -> Path:
    """Stream ``url`` into a temp file beside ``dest``, verify, then rename; no partial files."""
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            with urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response:
                while chunk := response.read(_CHUNK_BYTES):
                    digest.update(chunk)
                    out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != sha256:
            raise DataError(f"downloaded SHA-256 {digest.hexdigest()}, expected {sha256}")
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest


# --------------------------------------------------------------------------- splitting


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
    else:
        draw = _partition_around(len(raw.y), raw.test_index, val_fraction)
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
