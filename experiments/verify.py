"""The `verify` experiment: verdicts for boxes around DOUBLE-MNIST test images of a trained model.

  python -m experiments.run --flagfile=experiments/flagfiles/verify.flags

For each test image start .. start + images − 1 and each target digit (`target`: left, right or
both), the box is a uniform L∞ ball or a layer-neighborhood around the non-target digit (see
`experiments/configs/verify.py`), and the staged verifier (`lnjax.verify.make_verifier`: PGD →
CROWN → α-CROWN → MILP sign question) answers ROBUST / NOT_ROBUST / UNKNOWN for the spec (top-k
with the training run's k, or the sigmoid threshold).

workdir/config.json, verdicts/img_NNNNN.json (one per image, written atomically as soon as the
image is done, so a restarted run skips finished images), summary.json (counts by status and by
deciding stage, time per query, MILP sizes), log.txt. The summary is returned (and printed by the
runner as one JSON line).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from absl import logging
from ml_collections import ConfigDict
from tqdm import tqdm

from experiments.common import UsageError, check_workdir, open_workdir, require, to_dict, unknown_keys
from experiments.configs.verify import base as base_config
from experiments.runs import load_double_mnist_run
from lnjax import data, models, neighborhood as nbh, verify as V
from lnjax.io import read_json, write_json_atomic

SIDES = {"left": (0,), "right": (1,), "both": (0, 1)}
SIDE_NAMES = ("left", "right")
SPECS = ("topk", "threshold")
SHAPES = ("uniform", "layers")
OBJECTS = ("ink", "box")
MILP_MODES = ("sign", "optimise")


# ---------------------------------------------------------------------------------------------- config


def parse_floats(text: str, what: str) -> tuple[float, ...]:
    """ "0.01, 0.02" -> (0.01, 0.02); UsageError naming `what` otherwise."""
    try:
        return tuple(float(v) for v in str(text).split(",") if v.strip())
    except ValueError as e:
        raise UsageError(f"{what} = {text!r} must be comma-separated numbers, e.g. '0.01,0.02,0.04'") from e


def parse_stages(text: str) -> tuple[str, ...]:
    stages = tuple(s.strip() for s in str(text).split(",") if s.strip())
    known = (*V.STAGES, "interval")
    bad = [s for s in stages if s not in known]
    require(not bad, f"unknown verifier.stages {bad}; expected a comma-separated subset of {V.STAGES}")
    return stages


def layer_eps(*, eps: float, growth: float, eps_layers: tuple[float, ...], num_layers: int) -> np.ndarray:
    """ε per layer d = 0..num_layers − 1: the explicit list (its last value repeated farther out) or
    eps · (1 + growth · d). float32 [num_layers]."""
    if eps_layers:
        e = np.asarray(eps_layers, np.float64)
        e = np.concatenate([e, np.full(max(num_layers - len(e), 0), e[-1])])[:num_layers]
    else:
        e = eps * (1.0 + growth * np.arange(num_layers))
    return e.astype(np.float32)


def validate(c: ConfigDict) -> None:
    """Raises UsageError naming the first invalid value (before anything is loaded or written)."""
    unknown = unknown_keys(c.to_dict(), base_config().to_dict())
    require(not unknown, f"unknown config options {unknown}; see experiments/configs/verify.py")
    require(c.experiment == "verify", f"experiment = {c.experiment!r}; this module runs 'verify'")
    require(bool(c.train_workdir), "train_workdir is empty; name a finished training run (runs/quickstart)")
    require(c.images >= 1, f"images = {c.images} must be ≥ 1")
    require(c.start >= 0, f"start = {c.start} must be ≥ 0")
    require(c.target in SIDES, f"unknown target {c.target!r}; expected one of {sorted(SIDES)}")
    require(c.spec in SPECS, f"unknown spec {c.spec!r}; expected one of {SPECS}")
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
    v = c.verifier
    parse_stages(v.stages)
    require(v.time_limit > 0, f"verifier.time_limit = {v.time_limit} must be > 0 seconds")
    require(v.milp_mode in MILP_MODES, f"unknown verifier.milp_mode {v.milp_mode!r}; expected {MILP_MODES}")
    require(v.atol >= 0 and v.rtol >= 0, "verifier.atol and verifier.rtol must be ≥ 0")
    require(v.pgd_steps >= 1 and v.pgd_restarts >= 1, "verifier.pgd_steps and pgd_restarts must be ≥ 1")
    require(v.pgd_step_size > 0, f"verifier.pgd_step_size = {v.pgd_step_size} must be > 0")
    require(v.pgd_quick_steps >= 0, f"verifier.pgd_quick_steps = {v.pgd_quick_steps} must be ≥ 0")
    require(v.milp_max_unstable >= 0, f"verifier.milp_max_unstable = {v.milp_max_unstable} must be ≥ 0")
    require(v.alpha_steps >= 1 and v.alpha_lr > 0, "verifier.alpha_steps must be ≥ 1 and alpha_lr > 0")


def make_verifier_from_config(view, v: ConfigDict, worker: V.MilpWorker | None = None) -> V.VerifyFn:
    """`lnjax.verify.make_verifier` with the `verifier` block of a verify config."""
    return V.make_verifier(
        view=view,
        stages=parse_stages(v.stages),
        time_limit=float(v.time_limit),
        milp_mode=v.milp_mode,
        atol=float(v.atol),
        rtol=float(v.rtol),
        pgd_steps=int(v.pgd_steps),
        pgd_restarts=int(v.pgd_restarts),
        pgd_step_size=float(v.pgd_step_size),
        pgd_quick_steps=int(v.pgd_quick_steps),
        alpha_steps=int(v.alpha_steps),
        alpha_intermediate=bool(v.alpha_intermediate),
        alpha_intermediate_steps=int(v.alpha_intermediate_steps),
        alpha_intermediate_lr=float(v.alpha_intermediate_lr),
        alpha_lr=float(v.alpha_lr),
        lp_tighten=bool(v.lp_tighten),
        milp_max_unstable=int(v.milp_max_unstable) or None,
        worker=worker,
    )


# ---------------------------------------------------------------------------------------------- boxes


def object_mask(meta: dict[str, Any], index: int, which: int, kind: str) -> np.ndarray:
    """The DOUBLE-MNIST digit `which` (0 left, 1 right) of image `index` as a bool [64, 64] mask."""
    if kind == "ink":
        return data.ink_mask(meta["masks"][index], meta["offsets"][index], which)
    return data.box_mask(meta["boxes"][index], which)


def image_box(x: np.ndarray, mask: np.ndarray | None, b: ConfigDict) -> tuple[np.ndarray, np.ndarray, dict]:
    """The box of one query: x [H, W, C] in [0, 1], the non-target object's mask [H, W] (layers).

    Returns:
      (lower, upper) [H, W, C] float32 clipped to [0, 1], and facts for the record (ε per layer,
      layer sizes).
    """
    if b.shape == "uniform":
        lo = np.clip(x - b.eps, 0.0, 1.0).astype(np.float32)
        hi = np.clip(x + b.eps, 0.0, 1.0).astype(np.float32)
        return lo, hi, {"eps": [float(b.eps)]}
    layers = nbh.layer_map(mask, metric=b.metric, max_layers=int(b.max_layers))
    eps = layer_eps(
        eps=float(b.eps),
        growth=float(b.growth),
        eps_layers=parse_floats(b.eps_layers, "box.eps_layers"),
        num_layers=nbh.num_layers(layers),
    )
    lo, hi = nbh.neighborhood_box(x, layers, eps)
    info = {"eps": eps.tolist(), "layer_sizes": nbh.layer_sizes(layers).tolist()}
    return np.asarray(lo), np.asarray(hi), info


def make_spec(kind: str, target: int, k: int) -> V.Spec:
    return V.TopK(int(target), int(k)) if kind == "topk" else V.Threshold(int(target), 0.0)


# ---------------------------------------------------------------------------------------------- run


def _record_path(path: Path, index: int) -> Path:
    return path / "verdicts" / f"img_{index:05d}.json"


def _verify_image(c, verify, view, logits_fn, test, index, key, k) -> dict[str, Any]:
    x = test.x[index]
    digits = [int(d) for d in test.meta["digits"][index]]
    logits = np.asarray(logits_fn(view, x))
    queries = []
    for side in SIDES[c.target]:
        target, other = digits[side], digits[1 - side]
        spec = make_spec(c.spec, target, k)
        clean_margin = float(spec.margin(logits))
        q: dict[str, Any] = {
            "side": SIDE_NAMES[side],
            "target": target,
            "other": other,
            "clean_margin": clean_margin,
        }
        if c.only_correct and clean_margin <= 0:
            q["status"] = "skipped"
            q["reason"] = "the model misses the target at the image itself"
            queries.append(q)
            continue
        mask = object_mask(test.meta, index, 1 - side, c.box.object) if c.box.shape == "layers" else None
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
    return {"image": int(index), "digits": digits, "queries": queries}


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts by status and deciding stage, time per query, MILP sizes."""
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
    """Verifies the configured boxes; returns the summary (also written to summary.json)."""
    validate(c)
    model, params, k, test = load_double_mnist_run(c, needs="verify needs a DOUBLE-MNIST (multi-label) run")
    resolved = to_dict(c)
    path = open_workdir(check_workdir(workdir, resolved), resolved)
    (path / "verdicts").mkdir(exist_ok=True)

    view = models.layer_view(model, params)
    logits_fn = jax.jit(models.apply_layers)
    worker = V.MilpWorker()
    verify = make_verifier_from_config(view, c.verifier, worker)
    root = jax.random.key(c.seed)
    records = []
    indices = range(c.start, c.start + c.images)
    try:
        if any(not _record_path(path, i).is_file() for i in indices):
            # Compile the stages outside the per-query budgets (a zero-width box, the same spec type).
            x0 = test.x[c.start]
            spec0 = make_spec(c.spec, int(test.meta["digits"][c.start][SIDES[c.target][0]]), k)
            logging.info("verifier warm-up (compilation): %.1f s", verify.warm_up(x0, x0, spec0))
        for index in tqdm(indices, desc="verify", disable=not progress):
            file = _record_path(path, index)
            if file.is_file():
                records.append(read_json(file))
                continue
            key = jax.random.fold_in(root, index)
            record = _verify_image(c, verify, view, logits_fn, test, index, key, k)
            write_json_atomic(file, record)
            records.append(record)
            logging.info(
                "image %d: %s",
                index,
                ", ".join(f"{q['side']} {q['status']} ({q.get('decided_by')})" for q in record["queries"]),
            )
    finally:
        worker.close()
    summary = summarize(records)
    write_json_atomic(path / "summary.json", summary)
    return {**summary, "workdir": str(path)}
