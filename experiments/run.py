r"""The experiment runner: the only place flags are defined.

  python -m experiments.run --flagfile=experiments/flagfiles/quickstart.flags
  python -m experiments.run --config=experiments/configs/train.py:dmnist_linf --workdir=runs/x \
      --config.train.steps=500

The config's `experiment` field picks the experiment module; its `run(config, workdir)` returns a
summary printed as the last line of stdout (one JSON object). Bad input (unknown flag file, preset
or experiment, invalid values, missing or damaged data or checkpoints, unusable workdir) prints one
line naming the problem and the fix, exits with code 2 and writes nothing. A diverging training run
also exits with 2 (its last finite checkpoint kept). Ctrl-C exits with 130 after the experiment
saved what it could, printing how to resume.
"""

from __future__ import annotations

import importlib
import logging as std_logging
import sys

import ml_collections.config_flags as config_flags
from absl import app, flags, logging

from experiments.common import Interrupted, UsageError, use_compile_cache
from lnjax.io import to_json

EXPERIMENTS = {
    "train": "experiments.train",
    "verify": "experiments.verify",
    "attack": "experiments.attack",
    "attack_curve": "experiments.attack_curve",
    "neighborhood": "experiments.neighborhood",
    "boundary": "experiments.boundary",
    "panel": "experiments.panel",
    "vnncomp": "experiments.vnncomp",
}


def fail(message: str, code: int = 2) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def _one_line(error: Exception) -> str:
    """The first and last lines of an error message (config-file errors embed a traceback)."""
    text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    lines = [line.strip(" '\"\\") for line in text.replace("\\n", "\n").splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    return lines[0] if len(lines) == 1 else f"{lines[0]} {lines[-1]}"


_HINT = "(see `python -m experiments.run --helpfull`; flag files live in experiments/flagfiles/)"

try:  # the config flag reads flag files while it is being defined
    _CONFIG = config_flags.DEFINE_config_file(
        "config",
        None,
        "An experiments/configs/*.py file and preset, e.g. experiments/configs/train.py:quickstart.",
    )
except flags.Error as e:
    fail(f"{_one_line(e)} {_HINT}")
_WORKDIR = flags.DEFINE_string("workdir", None, "The run's directory (default: runs/<config.name>).")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show progress bars (on stderr).")
_COMPILE_CACHE = flags.DEFINE_string(
    "compile_cache",
    ".cache/jax",
    "JAX's persistent compilation cache: a folder shared by reruns and Ray actors ('' = none).",
)


def parse_flags(argv: list[str]) -> list[str]:
    """absl parsing with one-line errors and exit code 2 (instead of a usage dump)."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        fail(f"{_one_line(e)} {_HINT}")
    except (ValueError, AttributeError, KeyError, OSError, ImportError, SyntaxError) as e:
        fail(f"bad --config: {_one_line(e)}")
    return []  # unreachable


def _quiet_orbax(record) -> bool:
    """Orbax logs every checkpoint step at INFO; keep its warnings and errors only."""
    return "/orbax/" not in record.pathname or record.levelno >= std_logging.WARNING


def main(argv: list[str]) -> None:
    logging.get_absl_logger().addFilter(_quiet_orbax)
    if len(argv) > 1:
        fail(f"unexpected arguments {argv[1:]}; pass settings as --flag=value")
    config = _CONFIG.value
    if config is None:
        fail("no experiment given; pass --flagfile=experiments/flagfiles/NAME.flags or --config=FILE:PRESET")
    try:
        kind = config.get("experiment")
    except OSError as e:  # the config file failed to load (ml_collections defers the error)
        fail(f"bad --config: {_one_line(e)}")
    if kind not in EXPERIMENTS:
        fail(f"unknown experiment {kind!r} in the config; expected one of {sorted(EXPERIMENTS)}")
    module = importlib.import_module(EXPERIMENTS[kind])
    workdir = _WORKDIR.value or f"runs/{config.name}"
    try:
        use_compile_cache(_COMPILE_CACHE.value)
        summary = module.run(config, workdir, progress=_PROGRESS.value)
    except UsageError as e:
        fail(str(e))
    except Interrupted as e:
        fail(str(e), code=130)
    except KeyboardInterrupt:
        fail("interrupted; rerun the same command to resume (finished work in the workdir is kept)", code=130)
    print(to_json(summary), flush=True)  # strict JSON: a NaN metric prints as null


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
