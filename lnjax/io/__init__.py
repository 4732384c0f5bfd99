"""Result files: atomic writes, strict JSON, append-only JSON lines.

Atomic: write to a temporary file in the same directory, fsync, rename. A reader (or a resumed run)
sees either the old file or the complete new one, never a half-written file, even if the process is
killed mid-write. The file gets the mode a plain `open(path, "w")` would give (0o666 minus the
umask, e.g. 0644), not mkstemp's owner-only 0600, so a shared `runs/` stays readable.

Strict JSON: every JSON text the project writes or prints goes through `to_json`, which maps
non-finite floats (NaN, ±inf: not JSON, rejected by strict parsers) to null.

Boxes from outside (`outward_float32`): float64 corners as the float32 box that contains them.

JSON lines (`append_jsonl` / `read_jsonl`): an append-only log (one object per line, flushed and
fsynced per record), so what was logged before a kill survives it; a torn last line is ignored.

Networks and properties from outside: `lnjax.io.onnx` (`load_onnx`, `save_onnx`) and
`lnjax.io.vnnlib` (`load_vnnlib`, `write_vnnlib`, ...), re-exported here lazily, so that the
result-file helpers above stay importable without jax, flax or onnx.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


def _read_umask() -> int:
    """The process umask, without changing it where /proc tells it (os.umask would, briefly)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The permission bits a newly created regular file gets: 0o666 & ~umask."""
    return 0o666 & ~_read_umask()


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Writes `data` to `path` atomically (the directory must exist), with the umask's file mode."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), file_mode())  # mkstemp makes 0600
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def finite_or_none(obj: Any) -> Any:
    """`obj` with numpy/jax values as plain Python ones and every non-finite float replaced by None.

    Dicts (keys as given), lists and tuples (as lists) are converted recursively.
    """
    if isinstance(obj, Mapping):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite_or_none(v) for v in obj]
    if isinstance(obj, bool | int | str) or obj is None:
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if hasattr(obj, "tolist"):  # numpy / jax arrays and scalars
        return finite_or_none(obj.tolist())
    if hasattr(obj, "item"):
        return finite_or_none(obj.item())
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def to_json(obj: Any, *, indent: int | None = None, sort_keys: bool = False) -> str:
    """Strict JSON text of `obj` (non-finite floats as null; see `finite_or_none`)."""
    return json.dumps(finite_or_none(obj), indent=indent, sort_keys=sort_keys, allow_nan=False)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Writes `obj` as indented, key-sorted, strict JSON to `path` atomically."""
    write_bytes_atomic(path, (to_json(obj, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: str | os.PathLike) -> Any:
    with open(path) as f:
        return json.load(f)


def append_jsonl(path: str | os.PathLike, record: Mapping[str, Any]) -> None:
    """Appends `record` as one strict-JSON line to `path` (created if missing) and fsyncs it.

    A torn last line (a process killed mid-append; `read_jsonl` ignores it) is cut off first: the new
    line would otherwise be glued to it, and the file would no longer read."""
    line = to_json(record, sort_keys=True)
    _drop_torn_tail(Path(path))
    with open(path, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def _drop_torn_tail(path: Path) -> None:
    """Truncates `path` after its last newline if it does not end with one (no-op otherwise)."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        f.truncate(f.read().rfind(b"\n") + 1)
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | os.PathLike) -> list[Any]:
    """The records of a JSON-lines file, in order ([] if it does not exist).

    A last line without its newline (the process was killed mid-append) is ignored; a malformed
    complete line raises ValueError naming the file and line.
    """
    path = Path(path)
    if not path.exists():
        return []
    complete = path.read_text().split("\n")[:-1]  # after the last "\n": "" or a torn append
    records = []
    for number, line in enumerate(complete, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{number} is not a JSON line ({e})") from e
    return records


def outward_float32(lower: Any, upper: Any) -> tuple[np.ndarray, np.ndarray]:
    """The box [lower, upper] in float32, rounded outward: each corner entry that float32 cannot hold
    exactly becomes the next float32 outside (lower down, upper up), so the float32 box contains the
    given one (a proof over it covers every point asked about); exact entries stay."""
    lower, upper = np.asarray(lower, np.float64), np.asarray(upper, np.float64)
    lo, hi = lower.astype(np.float32), upper.astype(np.float32)
    lo = np.where(lo.astype(np.float64) > lower, np.nextafter(lo, np.float32(-np.inf)), lo)
    hi = np.where(hi.astype(np.float64) < upper, np.nextafter(hi, np.float32(np.inf)), hi)
    return lo.astype(np.float32), hi.astype(np.float32)


_LAZY = {
    "OnnxImportError": "onnx",
    "OnnxModel": "onnx",
    "load_onnx": "onnx",
    "save_onnx": "onnx",
    "VnnlibCase": "vnnlib",
    "VnnlibError": "vnnlib",
    "VnnlibProperty": "vnnlib",
    "argmax_disjuncts": "vnnlib",
    "counterexample_text": "vnnlib",
    "load_vnnlib": "vnnlib",
    "nchw_to_nhwc": "vnnlib",
    "nhwc_to_nchw": "vnnlib",
    "read_counterexample": "vnnlib",
    "to_spec": "vnnlib",
    "violated": "vnnlib",
    "write_vnnlib": "vnnlib",
}


def __getattr__(name: str) -> Any:
    """The ONNX / VNN-LIB names, imported from their submodule on first use (see the docstring)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
