"""Loaders: a dataset name and split -> a `Dataset` in host memory."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from lnjax.data.dataset import DataNotFoundError, Dataset, check_split
from lnjax.data.double_mnist import ARRAY_KEYS, double_mnist_path, read_double_mnist_file
from lnjax.data.mnist import MNIST_FILE, load_mnist_arrays
from lnjax.data.tfds_source import load_tfds

DATASETS = ("double_mnist", "mnist", "cifar10")


def load_mnist(data_dir: str | os.PathLike, split: str) -> Dataset:
    """MNIST from `data_dir/mnist.npz` (made by `python -m data_prep.mnist`).

    Returns:
      Dataset(x float32 [N, 28, 28, 1] = uint8 / 255, y int32 [N]); meta holds the file's provenance.

    Raises:
      DataNotFoundError: the file is missing.
      DataFileError: the file is unreadable or its arrays are not MNIST's (see `load_mnist_arrays`).
    """
    check_split(split)
    contents = load_mnist_arrays(data_dir)
    x = contents[f"x_{split}"].astype(np.float32)[..., None] / 255.0
    y = contents[f"y_{split}"].astype(np.int32)
    return Dataset(x=x, y=y, meta={"provenance": contents["provenance"], "mnist_sha256": contents["sha256"]})


def load_double_mnist(data_dir: str | os.PathLike, split: str, limit: int | None = None) -> Dataset:
    """DOUBLE-MNIST from `data_dir/double_mnist_{split}.npz` (made by `python -m data_prep.double_mnist`).

    Args:
      data_dir: the data directory.
      split: 'train' or 'test'.
      limit: keep only the first `limit` examples.

    Returns:
      Dataset(x float32 [N, 64, 64, 1] = uint8 / 255, y float32 [N, 10] multi-hot, meta) where meta has
      'digits' uint8 [N, 2], 'offsets' int16 [N, 2, 2], 'masks' bool [N, 2, 28, 28], 'boxes' int16
      [N, 2, 4], 'source_index' int32 [N, 2] (see `lnjax.data.double_mnist`) and 'metadata' (a dict).

    Raises:
      DataNotFoundError: the file is missing.
      DataFileError: the file is truncated, empty, corrupt or of the wrong shape (the message says
        what was expected and how to rebuild it).
    """
    check_split(split)
    path = double_mnist_path(data_dir, split)
    if not path.is_file():
        raise DataNotFoundError(
            f"{path} does not exist. Make it with `python -m data_prep.double_mnist --data_dir={data_dir}` "
            "(or `make data`)."
        )
    contents = read_double_mnist_file(path, split)
    stop = None if limit is None else int(limit)
    arrays = {k: contents[k][:stop] for k in ARRAY_KEYS}
    x = arrays.pop("images").astype(np.float32)[..., None] / 255.0
    y = arrays.pop("labels").astype(np.float32)
    return Dataset(x=x, y=y, meta={**arrays, "metadata": contents["metadata"]})


def load_dataset(
    name: str,
    split: str,
    data_dir: str | os.PathLike,
    *,
    limit: int | None = None,
    tfds_data_dir: str | os.PathLike | None = None,
) -> Dataset:
    """Loads a dataset by name.

    Args:
      name: 'double_mnist' (offline npz), 'mnist' (offline npz if present, else tensorflow-datasets) or
        'cifar10' (tensorflow-datasets only).
      split: 'train' or 'test'.
      data_dir: the directory `make data` fills.
      limit: keep only the first `limit` examples.
      tfds_data_dir: the tfds data directory; None means `$TFDS_DATA_DIR` or `~/tensorflow_datasets`.

    Returns:
      A `Dataset` (see the per-dataset loaders).

    Raises:
      ValueError: an unknown name or split.
      DataNotFoundError: no source holds the dataset; the message says how to make it.
    """
    check_split(split)
    if name == "double_mnist":
        return load_double_mnist(data_dir, split, limit=limit)
    if name == "mnist":
        if (Path(data_dir) / MNIST_FILE).is_file():
            dataset = load_mnist(data_dir, split)
        else:
            try:
                dataset = load_tfds("mnist", split, tfds_data_dir)
            except DataNotFoundError as e:
                raise DataNotFoundError(
                    f"MNIST not found: {Path(data_dir) / MNIST_FILE} does not exist (make it with "
                    f"`python -m data_prep.mnist --data_dir={data_dir}` or `make data`), and {e}"
                ) from e
    elif name == "cifar10":
        dataset = load_tfds("cifar10", split, tfds_data_dir)
    else:
        raise ValueError(f"unknown dataset {name!r}; expected one of {DATASETS}")
    if limit is not None:
        dataset = Dataset(x=dataset.x[:limit], y=dataset.y[:limit], meta=dataset.meta)
    return dataset
