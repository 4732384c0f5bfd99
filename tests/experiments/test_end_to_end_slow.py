"""Slow end-to-end checks on the real data (`make test-slow`, after `make data`)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lnjax import data
from lnjax.data import mnist

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "data"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real_data():
    if not (DATA / "double_mnist_test.npz").is_file():
        pytest.fail("real DOUBLE-MNIST is missing: run `make data` first (make test-slow does)")
    return DATA


def test_real_mnist_matches_the_known_checksum(real_data):
    arrays = mnist.load_mnist_arrays(real_data)
    assert arrays["sha256"] == mnist.MNIST_SHA256
    test = data.load_double_mnist(real_data, "test")
    assert test.x.shape == (10000, 64, 64, 1) and np.all(test.y.sum(1) == 2)


def test_short_real_training_learns_double_mnist(real_data, tmp_path):
    """600 steps of the quickstart CNN on real DOUBLE-MNIST via the CLI, evaluated on 2,000 test images."""
    out = subprocess.run(
        [
            sys.executable, "-m", "experiments.run", "--flagfile=experiments/flagfiles/quickstart.flags",
            f"--workdir={tmp_path / 'w'}", f"--config.data.data_dir={real_data}", "--config.train.steps=600",
            "--config.data.test_limit=2000", "--noprogress",
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=1800, env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["top2_exact"] >= 0.5 and summary["per_label"] >= 0.9, summary
