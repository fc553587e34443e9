"""Datasets as tensors on the device, with deterministic per-seed splits.

Two steps, and the trainer relies on exactly these contracts: ``load_raw`` (``sources``: a named
dataset on the host, a ``RawDataset``) then ``make_splits`` (``splits``: per-seed
train/val/test indices and train-only standardisation, a ``SplitData`` on the device). MNIST's
IDX files, checksums and download live in ``mnist``; a researcher's own files (npz, csv,
parquet, IDX directories) in ``files``; ``sources.LOADERS`` is the one table of dataset kinds.
Every failure is a ``DataError``.
"""

from dagstudy.data.files import from_arrays
from dagstudy.data.mnist import (
    FASHION_MNIST_MD5,
    IDX_IMAGES_MAGIC,
    IDX_LABELS_MAGIC,
    MNIST_MIRRORS,
    MNIST_SHA256,
    MNIST_TEST,
    MNIST_TRAIN,
    default_data_dir,
    default_mnist_dir,
    load_mnist,
    read_idx,
)
from dagstudy.data.raw import DataError, RawDataset
from dagstudy.data.sources import (
    DATASETS,
    LOADERS,
    SKLEARN_SETS,
    DataRequest,
    DatasetKind,
    SyntheticSpec,
    dataset_forms,
    load_raw,
    make_synthetic,
    parse_dataset,
)
from dagstudy.data.splits import STD_FLOOR, SplitData, make_splits

__all__ = [
    "DATASETS", "FASHION_MNIST_MD5", "IDX_IMAGES_MAGIC", "IDX_LABELS_MAGIC", "LOADERS",
    "MNIST_MIRRORS", "MNIST_SHA256", "MNIST_TEST", "MNIST_TRAIN", "SKLEARN_SETS", "STD_FLOOR",
    "DataError", "DataRequest", "DatasetKind", "RawDataset", "SplitData", "SyntheticSpec",
    "dataset_forms", "default_data_dir", "default_mnist_dir", "from_arrays", "load_mnist",
    "load_raw", "make_splits", "make_synthetic", "parse_dataset", "read_idx",
]
