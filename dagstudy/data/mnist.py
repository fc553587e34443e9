"""MNIST (and Fashion-MNIST) from their four IDX files (``.gz`` or raw), verified by published
checksums, downloaded when missing.

``load_mnist(data_dir)`` reads the directory (default ``default_mnist_dir()``). With all four
files, ``x`` is train (60,000) then test (10,000) rows and ``test_index`` marks the official
10,000 test rows; a directory holding only the ``t10k`` pair loads those 10,000 rows with
``test_index=None``. Pixels 0..255 divided by 255, d=784. Missing files are downloaded into the
directory from ``MNIST_MIRRORS`` and checked against ``MNIST_SHA256`` (a ``SHA256SUMS`` file in
the directory is checked too). Every failure (missing directory, wrong checksum, truncated or
malformed file, offline with files missing) is a ``DataError`` naming the file.
``load_mnist(data_dir, name="fashion-mnist")`` does the same for Fashion-MNIST (same layout and
file names, its own mirrors and the MD5 digests its authors publish).
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
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from dagstudy.data.raw import DataError, RawDataset

log = logging.getLogger(__name__)


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

FASHION_MNIST_MIRRORS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
)
FASHION_MNIST_MD5 = {  # as published in zalandoresearch/fashion-mnist's README
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
IDX_SETS = ("mnist", "fashion-mnist")
"""The downloadable IDX datasets ``load_mnist`` knows by name."""

IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dims: [n, rows, cols]
IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dim: [n]

_MNIST_SIDE = 28  # pixels per image side
_MNIST_CLASSES = 10
_DOWNLOAD_TIMEOUT_S = 60.0
_CHUNK_BYTES = 1 << 20
_SHA256_LINE = re.compile(r"([0-9a-fA-F]{64})\s+\*?(\S.*)")


def default_data_dir(name: str) -> Path:
    """Cache of dataset ``name``: ``$DAGSTUDY_HOME/data/NAME`` if set, else
    ``~/.cache/dagstudy/NAME``."""
    home = os.environ.get("DAGSTUDY_HOME")
    return Path(home) / "data" / name if home else Path.home() / ".cache" / "dagstudy" / name


def default_mnist_dir() -> Path:
    """MNIST cache: ``$DAGSTUDY_HOME/data/mnist`` if set, else ``~/.cache/dagstudy/mnist``."""
    return default_data_dir("mnist")


def _published(name: str) -> tuple[tuple[str, ...], dict[str, tuple[str, str]]]:
    """Mirrors and ``{file: (hash algorithm, hex digest)}`` of IDX set ``name`` (read at call
    time, so the tables can be replaced)."""
    if name == "mnist":
        return MNIST_MIRRORS, {f: ("sha256", d) for f, d in MNIST_SHA256.items()}
    if name == "fashion-mnist":
        return FASHION_MNIST_MIRRORS, {f: ("md5", d) for f, d in FASHION_MNIST_MD5.items()}
    raise DataError(f"dataset={name!r} is not one of {IDX_SETS}")


def load_mnist(data_dir: str | os.PathLike[str] | None = None, name: str = "mnist") -> RawDataset:
    """Load IDX set ``name`` (``IDX_SETS``) from ``data_dir`` (default ``default_data_dir(name)``),
    downloading missing files.

    A given ``data_dir`` must exist. A directory holding the ``t10k`` pair and no train file is a
    test-only set and is read as is; otherwise each missing file is downloaded (as ``.gz``).
    Every ``.gz`` is checked against its published digest (``MNIST_SHA256``,
    ``FASHION_MNIST_MD5``), and any file listed in the directory's ``SHA256SUMS`` against that.
    """
    mirrors, published = _published(name)
    directory = default_data_dir(name) if data_dir is None else Path(data_dir)
    if data_dir is not None and not directory.is_dir():
        raise DataError(f"{directory}: {name} directory does not exist")
    sums = _read_sha256sums(directory)
    found = {stem: _find_idx(directory, stem) for stem in MNIST_TRAIN + MNIST_TEST}
    test_only = all(found[s] for s in MNIST_TEST) and not any(found[s] for s in MNIST_TRAIN)
    pairs = (MNIST_TEST,) if test_only else (MNIST_TRAIN, MNIST_TEST)
    checksums: dict[str, str] = {}
    xs, ys = [], []
    for images_stem, labels_stem in pairs:
        images = found[images_stem] or _download(f"{images_stem}.gz", directory, mirrors, published)
        labels = found[labels_stem] or _download(f"{labels_stem}.gz", directory, mirrors, published)
        x, y = _load_mnist_pair(images, labels, (published, sums), checksums)
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


_Published = Mapping[str, tuple[str, str]]


def _load_mnist_pair(
    images_path: Path,
    labels_path: Path,
    sums: tuple[_Published, Mapping[str, str]],
    checksums: dict[str, str],
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


def _read_verified(
    path: Path, sums: tuple[_Published, Mapping[str, str]], checksums: dict[str, str]
) -> bytes:
    """Decompressed contents of ``path`` after checking every digest known for it (the published
    one, then the directory's ``SHA256SUMS``); records its SHA-256 in ``checksums``."""
    blob = _read_bytes(path)
    published, listed = sums
    expected = [("published", *published[path.name])] if path.name in published else []
    if path.name in listed:
        expected.append(("SHA256SUMS", "sha256", listed[path.name]))
    for source, algorithm, want in expected:
        digest = hashlib.new(algorithm, blob).hexdigest()
        if digest != want:
            raise DataError(f"{path}: {_label(algorithm)} {digest} does not match the {source} "
                            f"{want}")
    if expected:
        checksums[path.name] = hashlib.sha256(blob).hexdigest()
    return _decompress(path, blob)


def _label(algorithm: str) -> str:
    return "SHA-256" if algorithm == "sha256" else algorithm.upper()


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


def _download(name: str, directory: Path, mirrors: tuple[str, ...], published: _Published
              ) -> Path:
    """Fetch ``name`` from the first of ``mirrors`` that serves it with its published digest."""
    dest = directory / name
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{dest}: missing, and cannot create {directory} ({exc})") from exc
    failures = []
    for mirror in mirrors:
        url = mirror + name
        log.info("downloading %s -> %s", url, dest)
        try:
            return _fetch_atomic(url, dest, *published[name])
        except (OSError, http.client.HTTPException, DataError) as exc:
            failures.append(f"{url}: {exc}")
    raise DataError(f"{dest}: missing and no mirror served it ({'; '.join(failures)})")


def _fetch_atomic(url: str, dest: Path, algorithm: str, want: str) -> Path:
    """Stream ``url`` into a temp file beside ``dest``, verify, then rename; no partial files."""
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        digest = hashlib.new(algorithm)
        with os.fdopen(fd, "wb") as out:
            with urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response:
                while chunk := response.read(_CHUNK_BYTES):
                    digest.update(chunk)
                    out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != want:
            raise DataError(
                f"downloaded {_label(algorithm)} {digest.hexdigest()}, expected {want}")
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest


# --------------------------------------------------------------------------- splitting
