"""The `vnncomp` experiment: every instance of a VNN-COMP-style instances.csv, the competition's way.

  python -m experiments.run --flagfile=experiments/flagfiles/vnncomp.flags \
      --config.instances=PATH/instances.csv --workdir=runs/NAME

Each row of `instances` (onnx path, vnnlib path, timeout in seconds; paths relative to the CSV, no
header, as the competition's benchmarks are laid out) is run by `lnjax.vnncomp.run_instance` with one
`VerifierCache`, so each network is loaded, its verifier built and warmed up once (the preparation
is timed apart from the run, as in the competition); counterexamples are re-checked before they are
written.

workdir/config.json (with the CSV's sha256: a changed CSV is refused in the same workdir),
results/NNNN_<onnx>_<vnnlib>.txt (the competition's result file of instance NNNN),
records/NNNN_<onnx>_<vnnlib>.json (the same facts plus notes; written atomically as soon as the
instance is done, so a restarted run skips finished instances), results.csv (one row per instance
in the competition's column order: benchmark, onnx, vnnlib, prepare s, result, run s; no header),
summary.json, log.txt. The summary is returned (and printed by the runner as one JSON line).

Bad input (no CSV, a row without three fields or with a non-positive timeout, a missing .onnx or
.vnnlib file) is one `error:` line, exit code 2, nothing written. A network or property the importers
refuse is that instance's `error` result (as in the competition), not a failed run.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import re
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
from absl import logging
from ml_collections import ConfigDict

from experiments.common import (
    check_workdir,
    dataclass_from,
    open_workdir,
    require,
    to_dict,
    unknown_keys,
)
from experiments.configs.vnncomp import base as base_config
from experiments.records import RecordStore
from lnjax import verify as V, vnncomp
from lnjax.io import write_bytes_atomic, write_json_atomic


class Instance(NamedTuple):
    """One row of instances.csv: the paths as written (relative to the CSV), resolved, and the timeout."""

    onnx: str
    vnnlib: str
    timeout: float
    onnx_path: Path
    vnnlib_path: Path

    @property
    def stem(self) -> str:
        """Both file stems, safe characters only (with the row index, the name of its files)."""
        return re.sub(r"[^A-Za-z0-9._-]+", "-", f"{Path(self.onnx).stem}_{Path(self.vnnlib).stem}")


PATTERN = "{:04d}_{}"
"""An instance's file name (without suffix) in results/ and records/: row index, `Instance.stem`."""


def validate(c: ConfigDict) -> V.VerifierConfig:
    """The checked verifier options; UsageError naming the first invalid field (reads no file)."""
    base = base_config()
    unknown = unknown_keys(c.to_dict(), base.to_dict())
    require(not unknown, f"unknown config options {unknown}; see experiments/configs/vnncomp.py")
    require(c.experiment == "vnncomp", f"experiment = {c.experiment!r}; this module runs 'vnncomp'")
    require(
        bool(str(c.instances).strip()),
        "instances is empty; pass --config.instances=PATH/instances.csv (rows: onnx, vnnlib, timeout)",
    )
    stages = tuple(s.strip() for s in str(c.stages).split(",") if s.strip())
    return dataclass_from(ConfigDict({"stages": stages}), V.VerifierConfig)


def load_instances(path: str) -> tuple[list[Instance], str]:
    """The rows of an instances CSV and the file's sha256.

    Raises:
      UsageError: no such file, an empty file, a row without exactly three fields (onnx, vnnlib,
        timeout), a timeout that is not a positive number, or a .onnx / .vnnlib file that is missing.
    """
    file = Path(path).expanduser()
    require(file.is_file(), f"instances = {path!r}: no such file; expected PATH/instances.csv")
    raw = file.read_bytes()
    rows: list[Instance] = []
    for number, fields in enumerate(csv.reader(io.StringIO(raw.decode(errors="replace"))), start=1):
        if not any(f.strip() for f in fields):
            continue
        where = f"{file}:{number}"
        require(
            len(fields) == 3,
            f"{where}: {len(fields)} fields {fields}; expected onnx path, vnnlib path, timeout seconds",
        )
        onnx, vnnlib, timeout_text = (f.strip() for f in fields)
        try:
            timeout = float(timeout_text)
        except ValueError:
            timeout = math.nan
        require(
            math.isfinite(timeout) and timeout > 0,
            f"{where}: timeout {timeout_text!r} is not a positive number of seconds",
        )
        paths = [file.parent / onnx, file.parent / vnnlib]
        for kind, given, resolved in zip(("onnx", "vnnlib"), (onnx, vnnlib), paths, strict=True):
            require(resolved.is_file(), f"{where}: {kind} file {given!r} not found (looked for {resolved})")
        rows.append(Instance(onnx, vnnlib, timeout, *paths))
    require(bool(rows), f"instances = {path!r} has no rows; expected onnx, vnnlib, timeout per line")
    return rows, hashlib.sha256(raw).hexdigest()


def run_one(
    inst: Instance,
    index: int,
    benchmark: str,
    cache: vnncomp.VerifierCache,
    key: jax.Array,
    results_dir: Path,
) -> dict[str, Any]:
    """Runs one instance, writes its result file and returns its record."""
    res = vnncomp.run_instance(inst.onnx_path, inst.vnnlib_path, inst.timeout, key=key, verifier_cache=cache)
    results_dir.mkdir(parents=True, exist_ok=True)
    name = PATTERN.format(index, inst.stem)
    result_file = results_dir / f"{name}.txt"
    vnncomp.write_result(result_file, res)
    notes = "; ".join(res.notes)
    logging.info(
        "%s: %s in %.2f s (prepare %.2f s); %s", name, res.result, res.seconds, res.prepare_seconds, notes
    )
    return {
        "index": index,
        "benchmark": benchmark,
        "onnx": inst.onnx,
        "vnnlib": inst.vnnlib,
        "timeout": inst.timeout,
        "result": res.result,
        "prepare_s": res.prepare_seconds,
        "run_s": res.seconds,
        "decided_by": list(res.decided_by),
        "rejected_counterexamples": res.rejected,
        "notes": list(res.notes),
        "result_file": str(result_file.relative_to(results_dir.parent)),
    }


def results_csv(records: list[dict[str, Any]]) -> str:
    """The competition's results rows: benchmark, onnx, vnnlib, prepare s, result, run s (no header)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for r in records:
        writer.writerow(
            [
                r["benchmark"],
                r["onnx"],
                r["vnnlib"],
                f"{r['prepare_s']:.6f}",
                r["result"],
                f"{r['run_s']:.6f}",
            ]
        )
    return out.getvalue()


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts per result, run times, the preparation per network (its largest: the one that loaded,
    built and warmed up the verifier)."""
    counts = {r: sum(rec["result"] == r for rec in records) for r in vnncomp.RESULTS}
    times = np.array([rec["run_s"] for rec in records if rec["result"] != "error"], np.float64)
    prepare: dict[str, float] = {}
    for rec in records:
        prepare[rec["onnx"]] = max(prepare.get(rec["onnx"], 0.0), rec["prepare_s"])
    return {
        "instances": len(records),
        **counts,
        "median_s": float(np.median(times)) if len(times) else None,
        "total_s": float(times.sum()),
        "rejected_counterexamples": sum(rec["rejected_counterexamples"] for rec in records),
        "prepare_s": prepare,
    }


def run(c: ConfigDict, workdir: str, *, progress: bool = True) -> dict[str, Any]:
    """Runs the instances of `c.instances`; returns the summary (also written to summary.json).

    The config, the CSV and every file it names are checked before the workdir is touched, so bad
    input writes nothing.
    """
    verifier_options = validate(c)
    instances, sha = load_instances(str(c.instances))
    benchmark = str(c.benchmark) or Path(str(c.instances)).expanduser().resolve().parent.name
    resolved = {**to_dict(c), "instances_sha256": sha}
    path = check_workdir(workdir, resolved)
    open_workdir(path, resolved)
    store: RecordStore[tuple[int, str]] = RecordStore(path / "records", PATTERN)
    root = jax.random.key(c.seed)
    worker = V.MilpWorker()
    try:
        cache = vnncomp.VerifierCache(verifier_options, worker=worker)

        def compute(key: tuple[int, str]) -> dict[str, Any]:
            i = key[0]
            return run_one(instances[i], i, benchmark, cache, jax.random.fold_in(root, i), path / "results")

        keys = [(i, inst.stem) for i, inst in enumerate(instances)]
        records = store.resume(keys, compute, desc="vnncomp", progress=progress)
    finally:
        worker.close()
    write_bytes_atomic(path / "results.csv", results_csv(records).encode())
    summary = summarize(records)
    write_json_atomic(path / "summary.json", summary)
    return {**summary, "workdir": str(path)}
