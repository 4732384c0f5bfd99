"""Deterministic, atomic `.npz` files and content checksums.

`np.savez` stamps every member with the current time, so two runs over identical arrays give different
bytes. `save_npz_deterministic` writes the same zip layout as `np.savez_compressed` (one `NAME.npy` member
per array, readable by `np.load`) with a fixed timestamp and fixed permissions, so identical arrays give
byte-identical files (for a given zlib). It writes to a temporary file beside the target and renames it,
so a crash never leaves a half-written file under the final name.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

_ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip header can hold


def save_npz_deterministic(
    path: str | os.PathLike, arrays: Mapping[str, Any], *, compress: bool = True
) -> Path:
    """Writes `arrays` to `path` as an `.npz`, atomically and byte-reproducibly.

    Args:
      path: the target file; its directory is created if missing.
      arrays: name -> array (anything `np.asarray` accepts; no object arrays). Members are written in
        the mapping's order.
      compress: deflate the members (like `np.savez_compressed`).

    Returns:
      The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    compression = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as raw, zipfile.ZipFile(raw, mode="w", compression=compression) as zf:
            for name, value in arrays.items():
                array = np.asarray(value)  # write_array stores any memory layout; keeps 0-d arrays 0-d
                if array.dtype.hasobject:
                    raise TypeError(f"array {name!r} has dtype object; only plain dtypes can be saved")
                info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE_TIME)
                info.compress_type = compression
                info.external_attr = 0o644 << 16
                with zf.open(info, mode="w", force_zip64=True) as member:
                    np.lib.format.write_array(member, array, allow_pickle=False)
        os.chmod(tmp_name, 0o644)  # mkstemp makes 0600
        os.replace(tmp_name, path)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise
    return path


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads every array of an `.npz` into memory (no pickles).

    Args:
      path: an `.npz` file.

    Returns:
      name -> array.

    Raises:
      FileNotFoundError: no such file.
      ValueError: the file is not a readable `.npz` (truncated, zero bytes, corrupted members,
        pickled objects); the message names the file and the reason.
    """
    try:
        with open(path, "rb") as f:  # our handle: np.load(path) leaks its own when the zip is bad
            loaded = np.load(f, allow_pickle=False)
            if not isinstance(loaded, np.lib.npyio.NpzFile):
                raise ValueError("a single .npy array, not an .npz archive")
            with loaded as npz:
                return {name: npz[name] for name in npz.files}
    except FileNotFoundError:
        raise
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error) as e:
        reason = "zero bytes" if isinstance(e, EOFError) else f"{type(e).__name__}: {str(e).split('. ')[0]}"
        raise ValueError(f"{path} is not a readable .npz file ({reason})") from e


def arrays_sha256(arrays: Mapping[str, np.ndarray]) -> str:
    """A sha256 over names, dtypes, shapes and bytes of `arrays`, in sorted name order.

    It identifies the content, independent of the file layout or compression.
    """
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.asarray(arrays[name])
        header = json.dumps([name, array.dtype.str, list(array.shape)])
        digest.update(header.encode())
        digest.update(array.tobytes(order="C"))
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike, *, chunk_size: int = 1 << 20) -> str:
    """The sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def json_array(value: Any) -> np.ndarray:
    """A 0-d unicode array holding `value` as canonical JSON (sorted keys), storable without pickles."""
    return np.array(json.dumps(value, sort_keys=True))


def read_json_array(array: np.ndarray) -> Any:
    """The inverse of `json_array`."""
    return json.loads(str(array[()]))
