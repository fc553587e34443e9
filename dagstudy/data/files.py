"""A researcher's own data from files: ``.npz``, ``.csv``, ``.parquet`` and IDX directories.

Each loader returns a ``RawDataset`` built by ``from_arrays``, which is the one place that checks
what every source must satisfy, before any training: ``x`` numeric and finite, ``y`` one label
per row, at least two classes. Labels of any type (numbers, strings) are encoded as ``0..K-1``
in sorted order (numerically when every label is a number). Features are kept as they are
(images scaled to [0, 1]); standardisation happens later, on each seed's training rows only
(``splits.make_splits``). Every failure is a ``DataError`` naming the file and the problem.

- ``.npz``: arrays ``x`` ``[N, ...]`` and ``y`` ``[N]``, optionally ``x_test`` and ``y_test``
  (a fixed test set); arrays beyond 2-D are flattened per row. Pickled arrays are refused.
- ``.csv``: a header row naming the columns, then one row per example; every column but the
  label column must be numeric. ``label_column`` names the label column (default: the last).
- ``.parquet``: the same, read with pyarrow; feature columns must be integer, float or boolean.
- IDX directory (MNIST layout, e.g. Fashion-MNIST or KMNIST unpacked locally): files
  ``PREFIX-images-idx3-ubyte[.gz]`` with ``PREFIX-labels-idx1-ubyte[.gz]``; a prefix ending in
  ``train`` is the training pair and one ending in ``t10k`` or ``test`` the fixed test pair (a
  directory with a single pair uses it all). Pixels are divided by 255.
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import numpy as np

from dagstudy.data.mnist import IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, read_idx
from dagstudy.data.raw import DataError, RawDataset

_IDX_IMAGES = re.compile(r"(?P<prefix>.+)-images-idx3-ubyte(?:\.gz)?")
_TRAIN_SUFFIXES = ("train",)
_TEST_SUFFIXES = ("t10k", "test")


def from_arrays(
    source: str,
    x: np.ndarray,
    y: np.ndarray,
    x_test: np.ndarray | None = None,
    y_test: np.ndarray | None = None,
) -> RawDataset:
    """A checked ``RawDataset`` from host arrays; ``source`` names the file in every error.

    With ``x_test``/``y_test`` the test rows are appended after the training rows and marked by
    ``test_index``. Labels of both parts are encoded together.
    """
    if (x_test is None) != (y_test is None):
        raise DataError(f"{source}: x_test and y_test must be given together")
    parts = [("x", "y", x, y)] + ([] if x_test is None else [("x_test", "y_test", x_test, y_test)])
    features = [_features(source, xn, yn, xa, ya) for xn, yn, xa, ya in parts]
    if len(features) == 2 and features[0].shape[1] != features[1].shape[1]:
        raise DataError(f"{source}: x has {features[0].shape[1]} features but x_test "
                        f"{features[1].shape[1]}")
    labels = np.concatenate([np.asarray(ya).reshape(-1) for *_, ya in parts])
    codes, n_classes = _encode_labels(source, labels)
    n_train = len(features[0])
    test_index = None if x_test is None else np.arange(n_train, len(codes), dtype=np.int64)
    return RawDataset(x=np.concatenate(features).astype(np.float32), y=codes,
                      n_classes=n_classes, test_index=test_index, source=source)


def _features(source: str, x_name: str, y_name: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``x`` as float64 ``[N, d]`` after the shape, type and finiteness checks."""
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim < 2:
        raise DataError(f"{source}: {x_name} must be [rows, features], got shape {x.shape}")
    if y.ndim != 1:
        raise DataError(f"{source}: {y_name} must be one label per row, got shape {y.shape}")
    if len(x) != len(y):
        raise DataError(f"{source}: {x_name} has {len(x)} rows but {y_name} has {len(y)}")
    if len(x) == 0:
        raise DataError(f"{source}: {x_name} has no rows")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise DataError(f"{source}: {x_name} is not numeric (dtype {x.dtype})")
    flat = x.reshape(len(x), -1).astype(np.float64)
    bad = ~np.isfinite(flat)
    if bad.any():
        row, col = (int(i[0]) for i in np.nonzero(bad))
        raise DataError(f"{source}: {x_name} holds {int(bad.sum())} NaN or infinite values "
                        f"(first at row {row}, feature {col})")
    return flat


def _encode_labels(source: str, labels: np.ndarray) -> tuple[np.ndarray, int]:
    """``(codes int64 [N] in 0..K-1, K)``; labels sorted numerically when all are numbers."""
    if labels.dtype.kind in "fc" and not np.all(np.isfinite(labels)):
        raise DataError(f"{source}: labels hold NaN or infinite values")
    numeric = _as_numbers(labels)
    classes, codes = np.unique(labels if numeric is None else numeric, return_inverse=True)
    if len(classes) < 2:
        raise DataError(f"{source}: labels hold {len(classes)} class(es); at least 2 are needed")
    return codes.astype(np.int64), len(classes)


def _as_numbers(labels: np.ndarray) -> np.ndarray | None:
    """``labels`` as float64 if every one is a number (``"3"`` counts), else None."""
    if labels.dtype.kind in "biuf":
        return labels.astype(np.float64)
    try:
        values = np.asarray([float(v) for v in labels.tolist()])
    except (TypeError, ValueError):
        return None
    return values if np.all(np.isfinite(values)) else None


# --------------------------------------------------------------------------- formats


def load_npz(path: Path) -> RawDataset:
    """Arrays ``x``, ``y`` (and optionally ``x_test``, ``y_test``) of a ``.npz`` file."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except ValueError as exc:  # object arrays need pickle, which is refused
        raise DataError(f"{path}: cannot read without pickle ({exc})") from exc
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from exc
    missing = [name for name in ("x", "y") if name not in arrays]
    if missing:
        raise DataError(f"{path}: missing array(s) {', '.join(missing)} (has: "
                        f"{', '.join(sorted(arrays)) or 'none'}; needs x, y, optional x_test, "
                        "y_test)")
    return from_arrays(str(path), arrays["x"], arrays["y"], arrays.get("x_test"),
                       arrays.get("y_test"))


def _label_index(path: Path, header: list[str], label_column: str | None) -> int:
    if label_column is None:
        return len(header) - 1
    if label_column not in header:
        raise DataError(f"{path}: label_column={label_column!r} is not a column (columns: "
                        f"{', '.join(header)})")
    return header.index(label_column)


def load_csv(path: Path, label_column: str | None = None) -> RawDataset:
    """A ``.csv`` with a header row; every column but ``label_column`` (default last) numeric."""
    try:
        with path.open(newline="") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read as CSV ({exc})") from exc
    if len(rows) < 2 or len(rows[0]) < 2:
        raise DataError(f"{path}: needs a header row and at least one data row of 2+ columns")
    header = [name.strip() for name in rows[0]]
    label = _label_index(path, header, label_column)
    body = rows[1:]
    for line_no, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise DataError(f"{path}:{line_no}: {len(row)} fields, the header has {len(header)}")
    x = np.empty((len(body), len(header) - 1))
    feature_columns = [i for i in range(len(header)) if i != label]
    for j, col in enumerate(feature_columns):
        for line_no, row in enumerate(body, start=2):
            x[line_no - 2, j] = _number(path, line_no, header[col], row[col])
    y = np.asarray([row[label].strip() for row in body])
    if np.any(y == ""):
        raise DataError(f"{path}: label column {header[label]!r} has empty cells")
    return from_arrays(str(path), x, y)


def _number(path: Path, line_no: int, column: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DataError(f"{path}:{line_no}: column {column!r} is not numeric ({text!r})") from None
    if not math.isfinite(value):
        raise DataError(f"{path}:{line_no}: column {column!r} is NaN or infinite ({text!r})")
    return value


def load_parquet(path: Path, label_column: str | None = None) -> RawDataset:
    """A ``.parquet`` file: numeric feature columns and ``label_column`` (default last)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{path}: cannot read as Parquet ({exc})") from exc
    header = table.column_names
    if len(header) < 2 or table.num_rows == 0:
        raise DataError(f"{path}: needs at least 2 columns and one row")
    label = _label_index(path, header, label_column)
    columns = []
    for i, name in enumerate(header):
        if i == label:
            continue
        kind = table.schema.field(name).type
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind)
                or pa.types.is_boolean(kind)):
            raise DataError(f"{path}: column {name!r} is not numeric ({kind})")
        column = table.column(name)
        if column.null_count:
            raise DataError(f"{path}: column {name!r} has {column.null_count} missing values")
        columns.append(column.to_numpy().astype(np.float64))
    labels = table.column(header[label])
    if labels.null_count:
        raise DataError(f"{path}: label column {header[label]!r} has missing values")
    return from_arrays(str(path), np.stack(columns, axis=1), np.asarray(labels.to_pylist()))


def load_idx_dir(directory: Path) -> RawDataset:
    """The IDX image/label pairs of ``directory`` (see the module docstring)."""
    if not directory.is_dir():
        raise DataError(f"{directory}: IDX directory does not exist")
    pairs: dict[str, tuple[Path, Path]] = {}
    for images in sorted(directory.iterdir()):
        match = _IDX_IMAGES.fullmatch(images.name)
        if match is None or match["prefix"] in pairs:
            continue
        prefix = match["prefix"]
        labels = [directory / f"{prefix}-labels-idx1-ubyte{s}" for s in (".gz", "")]
        found = [p for p in labels if p.is_file()]
        if not found:
            raise DataError(f"{images}: no labels file {labels[1].name}[.gz] beside it")
        pairs[prefix] = (images, found[0])
    if not pairs:
        raise DataError(f"{directory}: no *-images-idx3-ubyte[.gz] file")
    train = [p for p in pairs if p.endswith(_TRAIN_SUFFIXES)]
    test = [p for p in pairs if p.endswith(_TEST_SUFFIXES)]
    if len(pairs) > 1 and (len(train) != 1 or len(test) != 1 or len(pairs) != 2):
        raise DataError(f"{directory}: IDX pairs {sorted(pairs)} are not one train and one "
                        "t10k/test pair")
    order = [train[0], test[0]] if len(pairs) == 2 else list(pairs)
    loaded = [_idx_pair(*pairs[prefix]) for prefix in order]
    shapes = {x.shape[1:] for x, _ in loaded}
    if len(shapes) > 1:
        raise DataError(f"{directory}: train and test images differ in shape {sorted(shapes)}")
    x_test, y_test = loaded[1] if len(loaded) == 2 else (None, None)
    return from_arrays(str(directory), *loaded[0], x_test, y_test)


def _idx_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(images_path, IDX_IMAGES_MAGIC)
    labels = read_idx(labels_path, IDX_LABELS_MAGIC)
    if len(images) != len(labels):
        raise DataError(f"{images_path} holds {len(images)} images but {labels_path} "
                        f"{len(labels)} labels")
    return images.astype(np.float32) / np.float32(255.0), labels.astype(np.int64)
