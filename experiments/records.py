"""The resumable per-item record store shared by verify, neighborhood and boundary.

An experiment that walks over items (test images, (model, input kind) stages, detectors) keeps one
file per finished item under its workdir, written atomically (`lnjax.io`) as soon as the item is
done. A restarted run loads the finished items and computes only the missing ones, so a killed run
loses at most the item it was working on, and the summary is always built from the files.

  store = RecordStore(path / "verdicts", "img_{:05d}")
  records = store.resume(range(start, stop), compute)   # compute(index) -> dict, called if missing

Records are JSON objects (`.json`) or named arrays (`.npz`, `kind="npz"`, byte-reproducible). An item
whose computation failed on a Ray worker (`experiments.parallel`) gets `<name>.error.json` instead;
it is not finished, so the next run computes it again (and removes the error file once it succeeds).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

import numpy as np
from absl import logging
from tqdm import tqdm

from lnjax.data import load_npz, save_npz_deterministic
from lnjax.io import read_json, write_json_atomic

Key = TypeVar("Key")


class RecordStore(Generic[Key]):
    """One file per item in `directory`, named `pattern.format(*key)` (a tuple key) or `pattern.format(key)`.

    Args:
      directory: where the files live (created on the first save).
      pattern: a `str.format` pattern without the suffix, e.g. "img_{:05d}" or "{}/{}" (subdirectories
        are created as needed).
      kind: "json" (a JSON object per item) or "npz" (a dict of arrays per item).
    """

    def __init__(self, directory: str | Path, pattern: str, *, kind: Literal["json", "npz"] = "json"):
        if kind not in ("json", "npz"):
            raise ValueError(f"kind = {kind!r}; expected 'json' or 'npz'")
        self.directory = Path(directory)
        self.pattern = pattern
        self.kind = kind

    def path(self, key: Key) -> Path:
        """The file of `key` (it may not exist yet)."""
        name = self.pattern.format(*key) if isinstance(key, tuple) else self.pattern.format(key)
        return self.directory / f"{name}.{self.kind}"

    def error_path(self, key: Key) -> Path:
        """The error file of `key` (written when its computation failed)."""
        file = self.path(key)
        return file.with_name(file.name.removesuffix(f".{self.kind}") + ".error.json")

    def save_error(self, key: Key, message: str) -> None:
        """Records that computing `key` failed (the item stays missing, so a rerun retries it)."""
        file = self.error_path(key)
        file.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(file, {"item": list(key) if isinstance(key, tuple) else key, "error": message})

    def done(self, key: Key) -> bool:
        return self.path(key).is_file()

    def missing(self, keys: Iterable[Key]) -> list[Key]:
        """The keys without a finished record, in order."""
        return [k for k in keys if not self.done(k)]

    def load(self, key: Key) -> Any:
        """The record of `key` (a dict; for npz a dict of arrays)."""
        file = self.path(key)
        return load_npz(file) if self.kind == "npz" else read_json(file)

    def save(self, key: Key, record: Any) -> None:
        """Writes the record of `key` atomically (its directory is created if missing)."""
        file = self.path(key)
        file.parent.mkdir(parents=True, exist_ok=True)
        if self.kind == "npz":
            save_npz_deterministic(file, {name: np.asarray(v) for name, v in record.items()})
        else:
            write_json_atomic(file, record)
        self.error_path(key).unlink(missing_ok=True)

    def load_all(self, keys: Iterable[Key]) -> dict[Key, Any]:
        """{key: record} of the keys that have a finished record (for summaries and panels)."""
        return {k: self.load(k) for k in keys if self.done(k)}

    def resume(
        self,
        keys: Iterable[Key],
        compute: Callable[[Key], Any],
        *,
        desc: str = "items",
        progress: bool = False,
    ) -> list[Any]:
        """The records of `keys` in order: loaded where finished, else `compute(key)`, saved at once."""
        records = []
        for key in tqdm(list(keys), desc=desc, disable=not progress):
            if self.done(key):
                records.append(self.load(key))
                logging.info("%s: loaded %s", key, self.path(key))
                continue
            record = compute(key)
            self.save(key, record)
            records.append(record)
        return records
