"""What every experiment shares: usage errors, the workdir, resolved configs, logs.

A run owns a workdir: `config.json` (the resolved config), `metrics.json`, `checkpoints/`, `log.txt`,
`figures/`. Nothing is written before the config, the data and the library objects have been checked
and built, so a bad invocation leaves no trace. Re-running with the same config resumes; a different
config is refused in a workdir that holds results (results of two configs never mix) and accepted in
one that holds only config.json, log.txt and empty directories (a start that failed before producing
anything).
"""

from __future__ import annotations

import dataclasses
import json
import logging as std_logging
import os
from pathlib import Path
from typing import Any, TypeVar

from absl import logging
from ml_collections import ConfigDict

from lnjax.io import read_json, to_json, write_json_atomic


class UsageError(Exception):
    """A problem with the user's input; the runner prints the message in one line and exits with 2."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, after the experiment saved what it could; the runner prints the message (how to resume)
    in one line and exits with 130."""


_D = TypeVar("_D")


def config_dict_from(instance: Any) -> ConfigDict:
    """The fields of a (library config) dataclass instance as a ConfigDict block (nested ones too).

    The library dataclasses hold every default; `experiments/configs/*.py` build their blocks with
    this and presets override single fields, so a default is stated once.
    """
    if not dataclasses.is_dataclass(instance) or isinstance(instance, type):
        raise TypeError(f"expected a dataclass instance, got {type(instance).__name__}")
    return ConfigDict(
        {
            f.name: config_dict_from(v) if dataclasses.is_dataclass(v := getattr(instance, f.name)) else v
            for f in dataclasses.fields(instance)
        }
    )


def dataclass_from(config: ConfigDict, cls: type[_D], *, where: str = "") -> _D:
    """`cls(**config)`, with its validation errors as one-line UsageErrors.

    Args:
      config: a flat ConfigDict block whose keys are `cls`'s fields (all of them, or a subset: the
        rest keep their defaults).
      where: the block's dotted name in the experiment config (e.g. "train"), prefixed to the
        message so it names the flag to fix ("train.learning_rate = inf must be ...").

    Raises:
      UsageError: a key that is no field of `cls`, or `cls` rejected a value (ValueError/TypeError).
    """
    prefix = f"{where}." if where else ""
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values = config.to_dict()
    unknown = sorted(set(values) - fields)
    if unknown:
        names = ", ".join(prefix + k for k in unknown)
        raise UsageError(f"unknown config field(s) {names}; expected {prefix}<one of {sorted(fields)}>")
    try:
        return cls(**values)
    except (ValueError, TypeError) as e:
        raise UsageError(f"{prefix}{e}") from e


def to_dict(config: ConfigDict) -> dict[str, Any]:
    """The config as plain JSON-able values (round-tripped through JSON, so it compares with config.json)."""
    return json.loads(to_json(config.to_dict()))


EXECUTION_FIELDS = ("workers", "ray_address")  # how a run is executed, not what it computes


def results_config(config: ConfigDict) -> dict[str, Any]:
    """`to_dict(config)` without the execution fields: what config.json records and a resumed run
    must match (a run may resume with another worker count or cluster; the results are the same)."""
    return {k: v for k, v in to_dict(config).items() if k not in EXECUTION_FIELDS}


def _first_difference(a: Any, b: Any, prefix: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if a.get(key, "<missing>") != b.get(key, "<missing>"):
                return _first_difference(a.get(key, "<missing>"), b.get(key, "<missing>"), f"{prefix}{key}.")
    return f"{prefix.rstrip('.')}: {a!r} there, {b!r} now"


def unknown_keys(given: Any, known: Any, prefix: str = "") -> list[str]:
    """Dotted names of the config fields in `given` that `known` (the base config) lacks."""
    if not isinstance(given, dict) or not isinstance(known, dict):
        return []
    out = []
    for key, value in given.items():
        out += [prefix + key] if key not in known else unknown_keys(value, known[key], f"{prefix}{key}.")
    return out


def check_workdir(
    workdir: str | os.PathLike, resolved: dict[str, Any], growable: tuple[str, ...] = ()
) -> Path:
    """Checks that `workdir` can hold this run (writes nothing) and returns it as a Path.

    growable: top-level fields a resumed run may change (e.g. `images` where every image's record
    stands alone: a run extended from 10 to 30 images keeps the first 10 and adds 20); config.json
    then records the new value (`open_workdir`).

    Raises:
      UsageError: it is a file, is not writable, its config.json is unreadable, or it holds results
        of a run with a different config (other than in `growable`).
    """
    path = Path(workdir).expanduser()
    if path.exists() and not path.is_dir():
        raise UsageError(f"--workdir {path} exists and is not a directory; pass a directory path")
    if path.is_dir():
        if not os.access(path, os.R_OK | os.W_OK | os.X_OK):
            raise UsageError(
                f"--workdir {path} is not readable and writable; fix its permissions or pick another"
            )
        config_file = path / "config.json"
        if config_file.exists():
            try:
                old = read_json(config_file)
            except (OSError, ValueError) as e:
                if not holds_results(path):
                    return path  # a failed start's leftover: claimed again by open_workdir
                raise UsageError(
                    f"--workdir {path}: cannot read {config_file.name} ({e}); "
                    "delete the workdir or pick another"
                ) from e
            before, now = ({k: v for k, v in d.items() if k not in growable} for d in (old, resolved))
            if before != now and holds_results(path):
                raise UsageError(
                    f"--workdir {path} holds a run with a different config "
                    f"({_first_difference(before, now)}); pass a new --workdir or delete the old one"
                )
        return path
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"--workdir {path} cannot be created: {parent} is not a writable directory")
    return path


_CLAIM_ONLY = {"config.json", "log.txt"}


def holds_results(path: Path) -> bool:
    """Whether the workdir holds anything a run produced: an entry other than config.json, log.txt
    and empty directories (e.g. checkpoints/, history.jsonl, metrics.json, verdicts/*.json)."""
    for entry in path.iterdir():
        if entry.name in _CLAIM_ONLY and entry.is_file():
            continue
        if entry.is_dir() and not entry.is_symlink() and not any(not p.is_dir() for p in entry.rglob("*")):
            continue
        return True
    return False


_LOG_HANDLER: std_logging.Handler | None = None


def open_workdir(path: Path, resolved: dict[str, Any]) -> Path:
    """Creates the workdir, writes config.json and sends absl logs to log.txt as well (this workdir's
    log.txt only: the handler of a previously opened workdir in this process is closed)."""
    global _LOG_HANDLER
    path.mkdir(parents=True, exist_ok=True)
    (path / "figures").mkdir(exist_ok=True)
    write_json_atomic(path / "config.json", resolved)
    if _LOG_HANDLER is not None:
        logging.get_absl_logger().removeHandler(_LOG_HANDLER)
        _LOG_HANDLER.close()
    _LOG_HANDLER = std_logging.FileHandler(path / "log.txt")
    _LOG_HANDLER.setFormatter(std_logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    _LOG_HANDLER.addFilter(lambda r: "/orbax/" not in r.pathname or r.levelno >= std_logging.WARNING)
    logging.get_absl_logger().addHandler(_LOG_HANDLER)
    logging.info("workdir %s", path)
    return path


def require(condition: bool, message: str) -> None:
    """Raises UsageError(message) unless `condition`."""
    if not condition:
        raise UsageError(message)


def use_compile_cache(path: str) -> str | None:
    """Turns on JAX's persistent compilation cache in folder `path` ("" leaves it off); returns the
    absolute folder (or None).

    XLA compiles of ≥ 1 s (JAX's `jax_persistent_cache_min_compile_time_secs`) are stored there, keyed
    by the program, the XLA flags and the JAX version, and loaded by every later process that compiles
    the same program: a rerun, a resumed run, and each Ray actor (the folder reaches them through
    `experiments.parallel.actor_env`). Measured on the undefended 64×64 DOUBLE-MNIST CNN, one CPU core:
    the neighborhood actor's set-up (load, build, warm up the verifier) 68 s with an empty cache,
    10 s with a filled one. Must run before the first compilation of the process."""
    if not path:
        return None
    import jax

    folder = Path(path).expanduser().resolve()
    fix = "pass a writable folder, or --compile_cache='' for none"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--compile_cache={path!r}: cannot create the folder ({e.strerror}); {fix}") from e
    if not os.access(folder, os.W_OK):
        raise UsageError(f"--compile_cache={path!r}: the folder is not writable; {fix}")
    jax.config.update("jax_compilation_cache_dir", str(folder))
    return str(folder)
