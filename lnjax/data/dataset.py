"""The in-memory dataset form every loader returns, and the error for missing data."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

SPLITS = ("train", "test")


class Dataset(NamedTuple):
    """A whole split in host memory.

    Attributes:
      x: float32 [N, H, W, C] in [0, 1].
      y: int32 [N] class indices for single-label data, or float32 [N, K] multi-hot for multi-label data.
      meta: optional extra per-example arrays (leading axis N) and metadata; for DOUBLE-MNIST the digit
        geometry (see `lnjax.data.load_double_mnist`).
    """

    x: np.ndarray
    y: np.ndarray
    meta: dict[str, Any] | None = None

    @property
    def multi_label(self) -> bool:
        return self.y.ndim == 2

    @property
    def num_classes(self) -> int:
        return int(self.y.shape[1]) if self.multi_label else int(self.y.max()) + 1

    @property
    def num_examples(self) -> int:
        return int(self.x.shape[0])


def take(dataset: Dataset, index: Any) -> Dataset:
    """Selects examples (an int array, a slice or a bool mask over N) from x, y and the per-example meta.

    Meta entries that are arrays with a leading axis of length N are indexed; the others are kept as is.
    """
    n = dataset.x.shape[0]
    meta = None
    if dataset.meta is not None:
        meta = {
            k: (v[index] if isinstance(v, np.ndarray) and v.ndim >= 1 and v.shape[0] == n else v)
            for k, v in dataset.meta.items()
        }
    return Dataset(x=dataset.x[index], y=dataset.y[index], meta=meta)


class DataError(Exception):
    """A dataset cannot be used; the message names the file, what is wrong and how to make it."""


class DataNotFoundError(DataError, FileNotFoundError):
    """A dataset file or source is missing; the message says what is missing and how to make it."""


class DataFileError(DataError, ValueError):
    """A dataset file exists but is unusable: truncated, empty, corrupt, or arrays of the wrong
    shape or dtype. The message names the file, what was expected and how to rebuild it."""


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
