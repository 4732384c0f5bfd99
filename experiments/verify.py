"""The `verify` experiment: verdicts for boxes around DOUBLE-MNIST test images of a trained model.

  python -m experiments.run --flagfile=experiments/flagfiles/verify.flags

For each test image start .. start + images − 1 and each target digit (`target`: left, right or
both), the box is a uniform L∞ ball or a layer-neighborhood around the non-target digit (see
`experiments/configs/verify.py`), and the staged verifier (`lnjax.verify.make_verifier`: PGD →
CROWN → α-CROWN → MILP sign question) answers ROBUST / NOT_ROBUST / UNKNOWN for the spec (top-k
with the training run's k, or the sigmoid threshold).

workdir/config.json, verdicts/img_NNNNN.json (one per image, written atomically as soon as the
image is done, so a restarted run skips finished images; `verdicts/img_NNNNN.error.json` for an image
that failed on a Ray worker, retried by the next run), summary.json (counts by status and by
deciding stage, time per query, MILP sizes), log.txt. The summary is returned (and printed by the
runner as one JSON line).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import jax
import numpy as np
from absl import logging
from ml_collections import ConfigDict

from experiments import parallel
from experiments.common import check_workdir, open_workdir, require, results_config
from experiments.configs.blocks import verifier_config
from experiments.configs.verify import base as base_config
from experiments.queries import (
    OBJECTS,
    SHAPES,
    SIDE_NAMES,
    SIDES,
    check_queries,
    image_box,
    make_spec,
    meta_of,
    object_mask,
    parse_floats,
    warm_up,
)
from experiments.records import RecordStore
from experiments.runs import load_double_mnist_run
from lnjax import data, models, neighborhood as nbh, verify as V
from lnjax.io import write_json_atomic


def validate(c: ConfigDict) -> V.VerifierConfig:
    """The checked verifier options; UsageError naming the first invalid value (reads and writes nothing)."""
    check_queries(c, base_config(), SIDES)
    b = c.box
    require(b.shape in SHAPES, f"unknown box.shape {b.shape!r}; expected one of {SHAPES}")
    require(0 <= b.eps <= 1, f"box.eps = {b.eps} must be in [0, 1] (pixels are in [0, 1])")
    eps_layers = parse_floats(b.eps_layers, "box.eps_layers")
    require(
        all(0 <= e <= 1 for e in eps_layers), f"box.eps_layers = {b.eps_layers!r}: every ε must be in [0, 1]"
    )
    require(b.growth >= 0, f"box.growth = {b.growth} must be ≥ 0 (ε grows with the distance from the object)")
    require(b.object in OBJECTS, f"unknown box.object {b.object!r}; expected one of {OBJECTS}")
    require(b.metric in nbh.METRICS, f"unknown box.metric {b.metric!r}; expected one of {nbh.METRICS}")
    require(b.max_layers >= 1, f"box.max_layers = {b.max_layers} must be ≥ 1")
    return verifier_config(c.verifier)


NEEDS = "verify needs a DOUBLE-MNIST (multi-label) run"


# ---------------------------------------------------------------------------------------------- run


def verify_image(
    c: ConfigDict,
    verify: Any,
    view: models.LayerView,
    logits_fn: Any,
    test: data.Dataset,
    index: int,
    key: jax.Array,
    k: int,
) -> dict[str, Any]:
    """The record of one test image: a verdict per queried side (or why it was skipped)."""
    x = test.x[index]
    meta = meta_of(test)
    digits = [int(d) for d in meta["digits"][index]]
    logits = logits_fn(view, x)
    queries = []
    for side in SIDES[c.target]:
        target, other = digits[side], digits[1 - side]
        spec = make_spec(c.spec, target, k)
        margin = float(spec.margin(logits))
        q: dict[str, Any] = {
            "side": SIDE_NAMES[side],
            "target": target,
            "other": other,
            "clean_margin": margin,
        }
        if c.only_correct and margin <= 0:
            q["status"] = "skipped"
            q["reason"] = "the model misses the target at the image itself"
            queries.append(q)
            continue
        mask = object_mask(meta, index, 1 - side, c.box.object) if c.box.shape == "layers" else None
        lo, hi, info = image_box(x, mask, c.box)
        t0 = time.perf_counter()
        verdict = verify(jax.random.fold_in(key, side), lo, hi, spec)
        seconds = time.perf_counter() - t0
        q.update(info)
        q.update(verdict.to_json())
        q["decided_by"] = verdict.stats.decided_by
        q["binaries"] = verdict.stats.binaries
        q["seconds"] = seconds
        queries.append(q)
    logging.info(
        "image %d: %s",
        index,
        ", ".join(f"{q['side']} {q['status']} ({q.get('decided_by')})" for q in queries),
    )
    return {"image": int(index), "digits": digits, "queries": queries}


@dataclasses.dataclass(frozen=True)
class ImageVerifier:
    """A Ray actor's setup (picklable: the config as plain values, `ConfigDict.to_dict()`): loads the
    run, builds and warms up the verifier once, and returns an `ItemWorker` whose `compute(index)`
    is the image's record."""

    config: dict[str, Any]

    def __call__(self) -> parallel.ItemWorker:
        c = ConfigDict(self.config)
        options = validate(c)
        model, params, k, test = load_double_mnist_run(c, needs=NEEDS)
        view = models.layer_view(model, params)
        logits_fn = jax.jit(models.apply_layers)
        worker = V.MilpWorker()
        verify = V.make_verifier(view, options, worker=worker)
        warm_up(verify, test, c.start, SIDES[c.target][0], c.spec, k)
        root = jax.random.key(c.seed)

        def compute(index: int) -> dict[str, Any]:
            return verify_image(c, verify, view, logits_fn, test, index, jax.random.fold_in(root, index), k)

        return parallel.ItemWorker(compute, worker.close)


def summarize(records: list[dict[str, Any]], errors: int = 0) -> dict[str, Any]:
    """Counts by status and deciding stage, time per query, MILP sizes; `errors`: images that failed."""
    queries = [q for r in records for q in r["queries"]]
    done = [q for q in queries if q["status"] != "skipped"]
    statuses = ("robust", "not_robust", "unknown", "skipped")
    counts = {s: sum(q["status"] == s for q in queries) for s in statuses}
    decided: dict[str, int] = {}
    for q in done:
        stage = q["decided_by"] or "none"
        decided[stage] = decided.get(stage, 0) + 1
    times = np.array([q["seconds"] for q in done], np.float64)
    binaries = [q["binaries"] for q in done if q["stats"]["milp_status"] is not None]
    return {
        "images": len(records),
        "errors": errors,
        "queries": len(done),
        **counts,
        "decided_by": dict(sorted(decided.items())),
        "median_s": float(np.median(times)) if len(times) else None,
        "p90_s": float(np.percentile(times, 90)) if len(times) else None,
        "total_s": float(times.sum()),
        "milp_queries": len(binaries),
        "median_binaries": float(np.median(binaries)) if binaries else None,
    }


def run(c: ConfigDict, workdir: str, *, progress: bool = True) -> dict[str, Any]:
    """Verifies the configured boxes; returns the summary (also written to summary.json).

    Everything is checked and built (config, training run, data, verifier) before the workdir is
    touched, so bad input writes nothing. With `workers` ≠ 1 the images run on Ray actors
    (`experiments.parallel`); the records are the same.
    """
    verifier_options = validate(c)
    cluster = parallel.settings_of(c)
    model, params, k, test = load_double_mnist_run(c, needs=NEEDS)
    resolved = results_config(c)
    path = check_workdir(workdir, resolved, growable=("images",))  # each image's record stands alone
    view = models.layer_view(model, params)
    logits_fn = jax.jit(models.apply_layers)
    worker = V.MilpWorker()
    errors: dict[int, str] = {}
    try:
        verify = V.make_verifier(view, verifier_options, worker=worker)
        open_workdir(path, resolved)
        store: RecordStore[int] = RecordStore(path / "verdicts", "img_{:05d}")
        indices = range(c.start, c.start + c.images)
        if not cluster.in_process:
            outcome = parallel.run_items(
                store, indices, ImageVerifier(c.to_dict()), cluster, desc="verify", progress=progress
            )
            records, errors = [outcome.records[i] for i in indices if i in outcome.records], outcome.errors
        else:
            if store.missing(indices):
                warm_up(verify, test, c.start, SIDES[c.target][0], c.spec, k)
            root = jax.random.key(c.seed)
            records = store.resume(
                indices,
                lambda i: verify_image(c, verify, view, logits_fn, test, i, jax.random.fold_in(root, i), k),
                desc="verify",
                progress=progress,
            )
    finally:
        worker.close()
    summary = summarize(records, errors=len(errors))
    write_json_atomic(path / "summary.json", summary)
    return {**summary, "workdir": str(path)}
