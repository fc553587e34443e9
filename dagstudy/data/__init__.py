"""Datasets as tensors on the device, with deterministic per-seed splits.

Two steps, and the trainer relies on exactly these contracts: ``load_raw`` (``sources``: a named
dataset on the host, a ``RawDataset``) then ``make_splits`` (``splits``: per-seed
train/val/test indices and train-only standardisation, a ``SplitData`` on the device). MNIST's
IDX files, checksums and download live in ``mnist``. Every failure is a ``DataError``.
"""

from dagstudy.data.mnist import (
    IDX_IMAGES_MAGIC,
    IDX_LABELS_MAGIC,
    MNIST_MIRRORS,
    MNIST_SHA256,
    MNIST_TEST,
    MNIST_TRAIN,
    default_mnist_dir,
    load_mnist,
    read_idx,
)
from dagstudy.data.raw import DataError, RawDataset
from dagstudy.data.sources import DATASETS, SyntheticSpec, load_raw, make_synthetic
from dagstudy.data.splits import STD_FLOOR, SplitData, make_splits

__all__ = [
    "DATASETS", "IDX_IMAGES_MAGIC", "IDX_LABELS_MAGIC", "MNIST_MIRRORS", "MNIST_SHA256",
    "MNIST_TEST", "MNIST_TRAIN", "STD_FLOOR", "DataError", "RawDataset", "SplitData",
    "SyntheticSpec", "default_mnist_dir", "load_mnist", "load_raw", "make_splits",
    "make_synthetic", "read_idx",
]
