"""DOUBLE-MNIST: two different MNIST digits side by side on a 64×64 canvas, with their geometry.

Layout (after the public generator shaohua0116/MultiDigitMNIST): the black 64×64 canvas is split into two
32-pixel halves; digit j (0 = left, 1 = right) is a 28×28 MNIST image pasted at x = 32·j + U{0..3} and
y = U{0..35}. The halves are disjoint and 3 + 28 = 31 < 32, so the patches never overlap. The two digits
have different classes: left class ~ U{0..9}, right class = (left + U{1..9}) mod 10, so every ordered pair
of distinct classes is equally likely. Each digit's image is drawn uniformly, with replacement, among the
MNIST images of its class (train images for the train split, test images for the test split). A pixel is
the max of the two pastes.

Randomness: `np.random.default_rng([seed, split_id])` (train 0, test 1), so each split depends only on the
seed, its own size and the MNIST file, and the same arguments give byte-identical files.

Per file (`double_mnist_{split}.npz`, N examples):
  images uint8 [N, 64, 64]; labels uint8 [N, 10] multi-hot (two ones); digits uint8 [N, 2] (left, right
  class); offsets int16 [N, 2, 2] ((y, x) of each 28×28 patch); masks bool [N, 2, 28, 28] (each digit's ink,
  pixel > 0, within its patch); boxes int16 [N, 2, 4] ((y0, x0, y1, x1) of each digit's tight ink box on
  the canvas, end-exclusive; an empty digit gets the empty box at its offset); source_index int32 [N, 2]
  (MNIST indices); metadata (JSON); sha256 (`npz.arrays_sha256` of the arrays).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from absl import logging

from lnjax.data import npz
from lnjax.data.dataset import DataFileError
from lnjax.data.mnist import PrepareResult, load_mnist_arrays

GENERATOR_VERSION = 1
CANVAS = 64
HALF = 32
DIGIT = 28
X_JITTER = 4  # x = half start + 0..3
Y_RANGE = 36  # y = 0..35
NUM_CLASSES = 10
SPLIT_IDS = {"train": 0, "test": 1}
ARRAY_KEYS = ("images", "labels", "digits", "offsets", "masks", "boxes", "source_index")
_CHUNK = 4096  # examples per vectorised paste (bounds the size of the index arrays)

assert X_JITTER - 1 + DIGIT <= HALF, "a jittered digit must stay inside its half"
assert Y_RANGE - 1 + DIGIT <= CANVAS, "a digit must stay inside the canvas"


PREPARE_COMMAND = "python -m data_prep.double_mnist --data_dir={data_dir}  (or `make data`)"
# name -> (dtype, shape after the leading N): what a DOUBLE-MNIST file must hold.
EXPECTED = {
    "images": (np.uint8, (CANVAS, CANVAS)),
    "labels": (np.uint8, (NUM_CLASSES,)),
    "digits": (np.uint8, (2,)),
    "offsets": (np.int16, (2, 2)),
    "masks": (np.bool_, (2, DIGIT, DIGIT)),
    "boxes": (np.int16, (2, 4)),
    "source_index": (np.int32, (2,)),
}


def double_mnist_path(data_dir: str | os.PathLike, split: str) -> Path:
    return Path(data_dir) / f"double_mnist_{split}.npz"


def _describe_expected() -> str:
    return ", ".join(
        f"{k} {np.dtype(t).name} [N, {', '.join(map(str, shape))}]" for k, (t, shape) in EXPECTED.items()
    )


def read_double_mnist_file(path: str | os.PathLike, split: str) -> dict[str, Any]:
    """The checked contents of a DOUBLE-MNIST split file (every array of `EXPECTED`, 'metadata' as a
    dict, 'sha256').

    Raises:
      FileNotFoundError: no such file.
      DataFileError: the file is unreadable (truncated, zero bytes, corrupt), lacks an array, holds
        arrays of another shape or dtype (e.g. 28×28 MNIST images), no examples, another split, or
        arrays that do not match their stored checksum. The message names the file, what was
        expected and the command that rebuilds it.
    """
    path = Path(path)
    rebuild = f"rebuild it with `{PREPARE_COMMAND.format(data_dir=path.parent)}`"
    try:
        contents = npz.load_npz(path)
    except ValueError as e:
        raise DataFileError(f"{e}; {rebuild}") from e

    def bad(what: str) -> DataFileError:
        return DataFileError(
            f"{path} is not a DOUBLE-MNIST {split} file: {what} (expected {_describe_expected()}, "
            f"metadata and sha256); {rebuild}"
        )

    missing = [k for k in (*EXPECTED, "metadata", "sha256") if k not in contents]
    if missing:
        raise bad(f"no {', '.join(missing)}" + (" (the archive is empty)" if not contents else ""))
    n = contents["images"].shape[0] if contents["images"].ndim else 0
    for key, (dtype, shape) in EXPECTED.items():
        a = contents[key]
        if a.dtype != dtype or a.shape != (n, *shape):
            raise bad(f"{key} is {a.dtype.name} {list(a.shape)}")
    if n == 0:
        raise bad("it holds no examples")
    try:
        metadata = npz.read_json_array(contents["metadata"])
        stored = str(contents["sha256"][()])
    except (ValueError, IndexError, TypeError) as e:
        raise bad(f"unreadable metadata or sha256 ({e})") from e
    if not isinstance(metadata, dict) or metadata.get("split") != split:
        got = metadata.get("split") if isinstance(metadata, dict) else metadata
        raise bad(f"its metadata says split {got!r}")
    if npz.arrays_sha256({k: contents[k] for k in ARRAY_KEYS}) != stored:
        raise bad("the arrays do not match their stored sha256 (the file was modified or damaged)")
    return {**{k: contents[k] for k in ARRAY_KEYS}, "metadata": metadata, "sha256": stored}


def generate_double_mnist(
    mnist_images: np.ndarray, mnist_labels: np.ndarray, *, n: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Composes `n` DOUBLE-MNIST examples (vectorised).

    Args:
      mnist_images: uint8 [M, 28, 28].
      mnist_labels: int [M] in 0..9; every class must occur.
      n: the number of examples.
      rng: the random generator (consumed).

    Returns:
      The arrays listed in the module docstring (without metadata and checksum).
    """
    mnist_images = np.asarray(mnist_images)
    mnist_labels = np.asarray(mnist_labels).astype(np.int64)
    if mnist_images.dtype != np.uint8 or mnist_images.shape[1:] != (DIGIT, DIGIT):
        raise ValueError(
            f"mnist_images must be uint8 [M, 28, 28], got {mnist_images.dtype} {mnist_images.shape}"
        )
    counts = np.bincount(mnist_labels, minlength=NUM_CLASSES)
    if counts.shape[0] != NUM_CLASSES or (counts == 0).any():
        raise ValueError(
            f"every class 0..9 needs at least one MNIST image; counts per class: {counts.tolist()}"
        )
    by_class = np.argsort(mnist_labels, kind="stable")  # indices grouped by class, class c at starts[c]..
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])

    left = rng.integers(0, NUM_CLASSES, size=n)
    right = (left + rng.integers(1, NUM_CLASSES, size=n)) % NUM_CLASSES
    digits = np.stack([left, right], axis=1)  # [n, 2]
    source_index = by_class[starts[digits] + rng.integers(0, counts[digits])]  # [n, 2]
    oy = rng.integers(0, Y_RANGE, size=(n, 2))
    ox = rng.integers(0, X_JITTER, size=(n, 2)) + np.array([0, HALF])
    offsets = np.stack([oy, ox], axis=-1)  # [n, 2, 2]

    patches = mnist_images[source_index]  # [n, 2, 28, 28]
    masks = patches > 0
    images = np.zeros((n, CANVAS, CANVAS), np.uint8)
    r = np.arange(DIGIT)
    for lo in range(0, n, _CHUNK):
        hi = min(lo + _CHUNK, n)
        rows_n = np.arange(lo, hi)[:, None, None]
        for j in range(2):
            rows = oy[lo:hi, j, None, None] + r[None, :, None]  # [c, 28, 1]
            cols = ox[lo:hi, j, None, None] + r[None, None, :]  # [c, 1, 28]
            images[rows_n, rows, cols] = np.maximum(images[rows_n, rows, cols], patches[lo:hi, j])

    row0, row1 = _ink_extent(np.asarray(masks.any(axis=3)))  # rows with ink, within the patch: [n, 2] each
    col0, col1 = _ink_extent(np.asarray(masks.any(axis=2)))
    boxes = np.stack([oy + row0, ox + col0, oy + row1, ox + col1], axis=-1)  # [n, 2, 4] (y0, x0, y1, x1)
    labels = np.zeros((n, NUM_CLASSES), np.uint8)
    np.put_along_axis(labels, digits, 1, axis=1)
    return {
        "images": images,
        "labels": labels,
        "digits": digits.astype(np.uint8),
        "offsets": offsets.astype(np.int16),
        "masks": masks,
        "boxes": boxes.astype(np.int16),
        "source_index": source_index.astype(np.int32),
    }


def _ink_extent(any_ink: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[..., 28] bool -> (first, end) indices of the True entries; (0, 0) when there are none."""
    has = any_ink.any(axis=-1)
    first = np.where(has, np.argmax(any_ink, axis=-1), 0)
    end = np.where(has, any_ink.shape[-1] - np.argmax(any_ink[..., ::-1], axis=-1), 0)
    return first, end


def ink_mask(masks: np.ndarray, offsets: np.ndarray, which: int, *, canvas_size: int = CANVAS) -> np.ndarray:
    """One digit's ink on the canvas, for one image.

    Args:
      masks: bool [2, 28, 28], the image's `masks`.
      offsets: int [2, 2], the image's `offsets` ((y, x) per digit).
      which: 0 (left digit) or 1 (right digit).
      canvas_size: the canvas side.

    Returns:
      bool [canvas_size, canvas_size].
    """
    out = np.zeros((canvas_size, canvas_size), bool)
    y, x = (int(v) for v in offsets[which])
    h, w = masks.shape[-2:]
    out[y : y + h, x : x + w] = masks[which]
    return out


def box_mask(boxes: np.ndarray, which: int, *, canvas_size: int = CANVAS) -> np.ndarray:
    """One digit's tight ink bounding box on the canvas, for one image.

    Args:
      boxes: int [2, 4], the image's `boxes` ((y0, x0, y1, x1) end-exclusive per digit).
      which: 0 (left digit) or 1 (right digit).
      canvas_size: the canvas side.

    Returns:
      bool [canvas_size, canvas_size], True inside the box.
    """
    out = np.zeros((canvas_size, canvas_size), bool)
    y0, x0, y1, x1 = (int(v) for v in boxes[which])
    out[y0:y1, x0:x1] = True
    return out


def _metadata(split: str, n: int, seed: int, mnist_sha256: str) -> dict[str, Any]:
    return {
        "generator": "lnjax.data.double_mnist",
        "generator_version": GENERATOR_VERSION,
        "split": split,
        "n": n,
        "seed": seed,
        "rng": f"numpy default_rng([seed, {SPLIT_IDS[split]}])",
        "mnist_split": split,
        "mnist_sha256": mnist_sha256,
        "canvas": CANVAS,
        "digit": DIGIT,
        "x": f"half start + 0..{X_JITTER - 1}",
        "y": f"0..{Y_RANGE - 1}",
        "classes": "two different classes, left ~ U{0..9}, right = (left + U{1..9}) mod 10",
    }


def _is_current(path: Path, metadata: dict[str, Any]) -> bool:
    """True when `path` holds exactly the requested dataset (same metadata, arrays match their checksum)."""
    if not path.is_file():
        return False
    try:
        return read_double_mnist_file(path, metadata["split"])["metadata"] == metadata
    except (OSError, DataFileError) as e:
        logging.warning("%s is not a valid DOUBLE-MNIST file (%s)", path, e)
        return False


def prepare_double_mnist(
    data_dir: str | os.PathLike,
    *,
    n_train: int = 60000,
    n_test: int = 10000,
    seed: int = 0,
    force: bool = False,
) -> dict[str, PrepareResult]:
    """Writes `data_dir/double_mnist_{train,test}.npz` from `data_dir/mnist.npz`.

    A split whose file already holds the same arguments (seed, size, MNIST checksum, generator version)
    and matches its checksum is left alone; otherwise it is regenerated.

    Args:
      data_dir: holds `mnist.npz` (see `lnjax.data.mnist.prepare_mnist`) and receives the files.
      n_train: train examples (composed from MNIST train).
      n_test: test examples (composed from MNIST test).
      seed: the random seed.
      force: regenerate even if up to date.

    Returns:
      split -> PrepareResult.

    Raises:
      DataNotFoundError: `mnist.npz` is missing or invalid.
    """
    mnist = load_mnist_arrays(data_dir)
    results = {}
    for split, n in (("train", n_train), ("test", n_test)):
        start = time.perf_counter()
        path = double_mnist_path(data_dir, split)
        metadata = _metadata(split, int(n), int(seed), mnist["sha256"])
        if not force and _is_current(path, metadata):
            logging.info("%s already prepared (n=%d, seed=%d)", path, n, seed)
            results[split] = PrepareResult(path, "already prepared", "mnist.npz", time.perf_counter() - start)
            continue
        rng = np.random.default_rng([int(seed), SPLIT_IDS[split]])
        arrays = generate_double_mnist(mnist[f"x_{split}"], mnist[f"y_{split}"], n=int(n), rng=rng)
        generated = time.perf_counter() - start
        npz.save_npz_deterministic(
            path,
            {**arrays, "metadata": npz.json_array(metadata), "sha256": np.array(npz.arrays_sha256(arrays))},
        )
        seconds = time.perf_counter() - start
        logging.info(
            "Wrote %s (n=%d, seed=%d): generated in %.1f s, total %.1f s", path, n, seed, generated, seconds
        )
        results[split] = PrepareResult(path, "prepared", "mnist.npz", seconds)
    return results
