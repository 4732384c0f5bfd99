"""tensorflow-datasets sources through `tfds.data_source` (random access; works without TensorFlow).

`tfds.data_source` needs a copy prepared in the `array_record` format, e.g. on a machine with internet:
`tfds build mnist --file_format=array_record --data_dir=DIR`, then copy DIR. It is always called with
`download=False` and `try_gcs=False`, so it never touches the network.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import tqdm

from lnjax.data.dataset import DataNotFoundError, Dataset, check_split

TFDS_DATASETS = ("mnist", "cifar10")


def default_tfds_data_dir() -> Path:
    """`$TFDS_DATA_DIR`, else `~/tensorflow_datasets` (the tfds default)."""
    return Path(os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")).expanduser()


def read_tfds_arrays(
    name: str, split: str, data_dir: str | os.PathLike | None = None
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Reads a whole split of an image-classification dataset from a prepared tfds copy.

    Args:
      name: a tfds name with `image` and `label` features ('mnist', 'cifar10', ...).
      split: a tfds split ('train', 'test', 'train[:10%]', ...).
      data_dir: the tfds data directory; None means `default_tfds_data_dir()`.

    Returns:
      (images uint8 [N, H, W, C], labels int64 [N], info) where info records name, version, data_dir.

    Raises:
      DataNotFoundError: no readable (array_record) copy of the dataset under `data_dir`.
    """
    import tensorflow_datasets as tfds  # lazy: importing tfds is slow and logs

    data_dir = Path(data_dir).expanduser() if data_dir is not None else default_tfds_data_dir()
    try:
        source: Any = tfds.data_source(  # a random-access source (its stubs say a tree of them)
            name, split=split, data_dir=os.fspath(data_dir), download=False, try_gcs=False
        )
    except Exception as e:  # tfds raises NotImplementedError, AssertionError, ... for a missing copy
        raise DataNotFoundError(
            f"tensorflow-datasets could not open {name!r} split {split!r} under {data_dir} "
            f"({type(e).__name__}: {e}). `tfds.data_source` needs a copy in the array_record format: "
            f"on a machine with internet run `tfds build {name} --file_format=array_record "
            f"--data_dir={data_dir}` and copy the directory here."
        ) from e
    n = len(source)
    # One record at a time: `__getitems__` would batch, but `tfds.testing.mock_data` does not support it.
    examples = (source[i] for i in range(n))
    images, labels = [], []
    for ex in tqdm.tqdm(examples, total=n, desc=f"tfds {name}/{split}", disable=None, leave=False):
        images.append(np.asarray(ex["image"], dtype=np.uint8))
        labels.append(np.asarray(ex["label"], dtype=np.int64))
    info = source.dataset_info
    provenance = {
        "source": "tensorflow-datasets",
        "name": name,
        "split": split,
        "version": str(info.version),
        "data_dir": os.fspath(data_dir),
        "tfds_version": tfds.__version__,
    }
    if n == 0:
        raise DataNotFoundError(f"tfds {name!r} split {split!r} under {data_dir} is empty")
    return np.stack(images), np.stack(labels), provenance


def load_tfds(name: str, split: str, data_dir: str | os.PathLike | None = None) -> Dataset:
    """Loads 'mnist' or 'cifar10' from a prepared tfds copy as a `Dataset`.

    Args:
      name: 'mnist' or 'cifar10'.
      split: 'train' or 'test'.
      data_dir: the tfds data directory; None means `default_tfds_data_dir()`.

    Returns:
      Dataset(x float32 [N, H, W, C] = uint8 / 255, y int32 [N]); meta holds the provenance.
    """
    if name not in TFDS_DATASETS:
        raise ValueError(f"load_tfds supports {TFDS_DATASETS}, not {name!r}")
    check_split(split)
    images, labels, provenance = read_tfds_arrays(name, split, data_dir)
    x = images.astype(np.float32) / 255.0
    return Dataset(x=x, y=labels.astype(np.int32), meta={"provenance": provenance})
