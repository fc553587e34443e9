"""Bring-your-own data: every dataset kind loads from a file the test writes and trains; every
kind of bad data is refused with a one-line DataError naming the file and the problem."""

from __future__ import annotations

import gzip
import struct
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from dagstudy.config import TrainConfig, format_errors
from dagstudy.data.raw import DataError
from dagstudy.data.sources import LOADERS, dataset_forms, load_raw, parse_dataset
from dagstudy.data.splits import make_splits
from dagstudy.trainer import load_data, train

CPU = torch.device("cpu")


def blobs(n: int = 90, d: int = 5, classes: int = 3, seed: int = 0):
    """Separable Gaussian blobs: ``x`` float ``[n, d]``, ``y`` in 0..classes-1."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.normal(size=(n, d)) + 4.0 * np.eye(classes, d)[y]
    return x, y


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    path.write_text("\n".join(",".join(str(v) for v in row) for row in [header, *rows]) + "\n")
    return path


def write_idx(path: Path, array: np.ndarray) -> None:
    array = np.ascontiguousarray(array, dtype=np.uint8)
    blob = struct.pack(f">I{array.ndim}I", 0x0800 | array.ndim, *array.shape) + array.tobytes()
    path.write_bytes(gzip.compress(blob) if path.suffix == ".gz" else blob)


def idx_dir(root: Path, prefixes=("train", "t10k"), n=(60, 30)) -> Path:
    """Small 6x6 'images' whose label is the bright row, as an IDX directory."""
    root.mkdir()
    for i, (prefix, rows) in enumerate(zip(prefixes, n)):
        rng = np.random.default_rng(i)
        labels = np.arange(rows) % 3
        images = rng.integers(0, 60, (rows, 6, 6))
        images[np.arange(rows), labels] = 250
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{prefix}-labels-idx1-ubyte", labels)
    return root


def trains(dataset: str, **options) -> float:
    """Mean test accuracy of a tiny two-seed run on ``dataset`` (a real training)."""
    config = TrainConfig(dataset=dataset, depth=2, width=16, epochs=8, batch_size=16,
                         lr=0.01, **options)
    data = load_data(config, [0, 1], CPU)
    return train(config, [0, 1], data, CPU).summary("test_accuracy")["mean"]


def one_line_naming(exc: pytest.ExceptionInfo, *parts: str) -> None:
    message = str(exc.value)
    assert "\n" not in message
    for part in parts:
        assert part in message, (part, message)


# --------------------------------------------------------------------------- each kind loads


def test_npz_loads_and_trains(tmp_path):
    x, y = blobs()
    np.savez(tmp_path / "blobs.npz", x=x, y=y + 7)  # labels need not start at 0
    raw = load_raw(str(tmp_path / "blobs.npz"))
    assert raw.x.shape == (90, 5) and raw.n_classes == 3 and raw.test_index is None
    assert np.array_equal(raw.y, y)
    assert trains(str(tmp_path / "blobs.npz")) > 0.8


def test_npz_with_a_fixed_test_set(tmp_path):
    x, y = blobs(120)
    np.savez(tmp_path / "d.npz", x=x[:90].reshape(90, 5, 1), y=y[:90], x_test=x[90:],
             y_test=y[90:])
    raw = load_raw(str(tmp_path / "d.npz"))
    assert np.array_equal(raw.test_index, np.arange(90, 120))
    split = make_splits(raw, [0, 1], CPU)
    assert split.test_idx.tolist() == [list(range(90, 120))] * 2


def test_csv_loads_and_trains_with_string_labels(tmp_path):
    x, y = blobs()
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    path = write_csv(tmp_path / "t.csv", ["a", "b", "c", "d", "e", "species"],
                     [[*row, name] for row, name in zip(x.round(4), names)])
    raw = load_raw(str(path))
    assert raw.n_classes == 3 and np.array_equal(raw.y, y)
    assert np.allclose(raw.x, x, atol=1e-4)
    assert trains(str(path)) > 0.8


def test_csv_label_column_elsewhere_than_last(tmp_path):
    x, y = blobs()
    path = write_csv(tmp_path / "t.csv", ["label", "a", "b", "c", "d", "e"],
                     [[label, *row] for row, label in zip(x.round(4), y)])
    raw = load_raw(str(path), label_column="label")
    assert np.array_equal(raw.y, y) and np.allclose(raw.x, x, atol=1e-4)
    assert trains(str(path), label_column="label") > 0.8
    # Without it the last feature would be taken as the label: a different, wrong task.
    assert not np.array_equal(load_raw(str(path)).y, y)


def test_parquet_loads(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    x, y = blobs()
    columns = {f"f{i}": x[:, i] for i in range(5)} | {"target": [f"c{v}" for v in y]}
    pq.write_table(pa.table(columns), tmp_path / "t.parquet")
    raw = load_raw(str(tmp_path / "t.parquet"))
    assert np.array_equal(raw.y, y) and np.allclose(raw.x, x.astype(np.float32))
    pq.write_table(pa.table({"target": y, **{f"f{i}": x[:, i] for i in range(5)}}),
                   tmp_path / "first.parquet")
    assert np.array_equal(load_raw(str(tmp_path / "first.parquet"), label_column="target").y, y)


def test_idx_directory_loads_with_its_fixed_test_set_and_trains(tmp_path):
    root = idx_dir(tmp_path / "fashion")
    raw = load_raw(str(root))
    assert raw.x.shape == (90, 36) and raw.x.max() <= 1.0 and raw.n_classes == 3
    assert np.array_equal(raw.test_index, np.arange(60, 90))
    assert trains(str(root)) > 0.8


def test_idx_directory_with_one_pair_uses_it_all(tmp_path):
    root = idx_dir(tmp_path / "only", prefixes=("t10k",), n=(60,))
    raw = load_raw(str(root))
    assert raw.x.shape == (60, 36) and raw.test_index is None


def test_sklearn_bundled_sets_load_without_download():
    shapes = {name: load_raw(f"sklearn:{name}").x.shape for name in ("iris", "wine")}
    assert shapes == {"iris": (150, 4), "wine": (178, 13)}
    assert load_raw("sklearn:breast_cancer").n_classes == 2


def test_openml_offline_is_a_clear_error(tmp_path, monkeypatch):
    import sklearn.datasets._openml as openml

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(openml, "urlopen", offline)
    with pytest.raises(DataError, match="unreachable") as exc:
        load_raw("openml:iris", tmp_path / "cache")
    one_line_naming(exc, "openml:iris", str(tmp_path / "cache"))


# --------------------------------------------------------------------------- bad data


BAD_NPZ = [
    ({"x": np.ones((10, 2))}, "missing array(s) y"),
    ({"x": np.ones((10, 2)), "y": np.arange(9) % 2}, "x has 10 rows but y has 9"),
    ({"x": np.array([["a", "b"]] * 10), "y": np.arange(10) % 2}, "not numeric"),
    ({"x": np.where(np.eye(10, 2) > 0, np.nan, 1.0), "y": np.arange(10) % 2}, "NaN"),
    ({"x": np.ones((10, 2)), "y": np.zeros(10)}, "at least 2 are needed"),
    ({"x": np.ones((10, 2)), "y": np.arange(10) % 2, "x_test": np.ones((3, 2))},
     "x_test and y_test must be given together"),
]


@pytest.mark.parametrize(("arrays", "problem"), BAD_NPZ)
def test_bad_npz_is_refused_naming_file_and_problem(tmp_path, arrays, problem):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError) as exc:
        load_raw(str(path))
    one_line_naming(exc, str(path), problem)


BAD_CSV = [
    ([["1", "2", "a"], ["x", "3", "b"]], {}, "column 'f1' is not numeric ('x')"),
    ([["1", "2", "a"], ["nan", "3", "b"]], {}, "column 'f1' is NaN"),
    ([["1", "", "a"], ["2", "3", "b"]], {}, "column 'f2' is not numeric"),
    ([["1", "2", "a"], ["2", "3", "b"]], {"label_column": "y"}, "label_column='y' is not a "
     "column"),
    ([["1", "2", "a"], ["2", "3", "a"]], {}, "at least 2 are needed"),
    ([["1", "2", "a"], ["2", "3"]], {}, "2 fields, the header has 3"),
]


@pytest.mark.parametrize(("rows", "options", "problem"), BAD_CSV)
def test_bad_csv_is_refused_naming_file_and_problem(tmp_path, rows, options, problem):
    path = write_csv(tmp_path / "bad.csv", ["f1", "f2", "label"], rows)
    with pytest.raises(DataError) as exc:
        load_raw(str(path), **options)
    one_line_naming(exc, str(path), problem)


def test_a_class_too_small_for_the_split_is_refused_before_training(tmp_path):
    x, y = blobs(60)
    y[:4] = 3  # class 3: 4 rows, but val_fraction 0.1 needs 10 per class
    np.savez(tmp_path / "small.npz", x=x, y=y)
    config = TrainConfig(dataset=str(tmp_path / "small.npz"))
    with pytest.raises(DataError) as exc:
        load_data(config, [0], CPU)
    one_line_naming(exc, "small.npz", "class 3 has 4 rows", "val_fraction=0.1 needs at least 10")


def test_idx_directory_problems_are_named(tmp_path):
    root = idx_dir(tmp_path / "idx")
    (root / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError) as exc:
        load_raw(str(root))
    one_line_naming(exc, "t10k-images-idx3-ubyte.gz", "no labels file")
    with pytest.raises(DataError, match="no \\*-images"):
        load_raw(str(tmp_path))


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DataError) as exc:
        load_raw(str(tmp_path / "absent.csv"))
    one_line_naming(exc, "absent.csv")


# --------------------------------------------------------------------------- references


@pytest.mark.parametrize(("ref", "kind"), [
    ("digits", "digits"), ("fashion-mnist", "fashion-mnist"), ("sklearn:wine", "sklearn"),
    ("openml:61", "openml"), ("data/x.NPZ", ".npz"), ("t.csv", ".csv"), ("a.parquet", ".parquet"),
    ("../shared/data/mnist-t10k", "idx"), ("./kmnist", "idx"),
])
def test_every_reference_form_resolves_to_its_kind(ref, kind):
    assert parse_dataset(ref)[0] == kind
    assert kind in LOADERS


@pytest.mark.parametrize(("ref", "problem"), [
    ("cifar", "not a dataset name"), ("sklearn:mnist", "unknown sklearn set 'mnist'"),
    ("openml:", "needs a name after the colon"),
])
def test_bad_references_are_refused_by_the_config(ref, problem):
    with pytest.raises(ValueError) as exc:
        TrainConfig(dataset=ref)
    message = format_errors(exc.value)
    assert message.startswith("dataset: ") and problem in message
    assert "sklearn:NAME" in dataset_forms()
