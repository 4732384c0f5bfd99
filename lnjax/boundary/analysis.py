"""The seed's tables from per-input arrays: attack rows, accuracy rows, distance rows, the detector.

A *stage* is the arrays one input kind (the benign test images, or one attack's adversarial
examples) produced for N inputs of one model:
  point [N] int          the prediction at the input (the distances' centre class)
  region_label [N] int   the region classifier's label; region_counts [N, K] its votes
  distance [N, D] float  boundary distance along each of D directions (inf: no boundary)
  adjacent [N, D] int    the class beyond that boundary (−1: none)
  forward_passes [N]     model evaluations spent on the distances
  region_seconds, distances_seconds   wall time of the two measurements (scalars)
and, for an attack, x_adv [N, ...], success [N] bool (confirmed by the model at x_adv) and
attack_seconds. Every function here is pure (NumPy, or jitted JAX), takes the true labels y [N]
and returns plain Python values, so the rows serialise to JSON as they are.

Definitions (He, Li & Song 2018, as in the seed): an attack's success rate is over the images the
model classifies correctly; its distortion is the mean RMS of x_adv − x over those successes.
Accuracies are over all images. The distance and detector statistics use the *usable* inputs:
correctly classified benign images, successful attacks on correctly classified images.

References:
  He, Li & Song, Decision Boundary Analysis of Adversarial Examples, ICLR 2018.
  Cao & Gong, Mitigating Evasion Attacks to Deep Neural Networks via Region-based Classification,
    ACSAC 2017.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lnjax.boundary.detector import DetectorFeatures, detector_features, detector_rates, train_detector
from lnjax.boundary.distances import BoundaryDistances
from lnjax.boundary.purity import adjacent_purity
from lnjax.stats import mean_interval, wilson_interval
from lnjax.types import ApplyFn, Params

Stage = Mapping[str, Any]  # name -> array (see the module docstring)
Batches = Callable[[list[tuple[int, int]]], Iterable[tuple[int, int]]]  # e.g. a progress bar


def batches(n: int, size: int) -> list[tuple[int, int]]:
    """[(start, end)] covering 0..n in steps of `size` (the last one may be shorter)."""
    return [(s, min(s + size, n)) for s in range(0, n, size)]


def padded(a: np.ndarray, s: int, e: int, size: int) -> jax.Array:
    """a[s:e] padded to `size` rows by repeating its last row (every call has the compiled shape)."""
    part = a[s:e]
    if len(part) < size:
        part = np.concatenate([part, np.repeat(part[-1:], size - len(part), axis=0)])
    return jnp.asarray(part)


def measure_stage(
    key: jax.Array,
    apply_fn: ApplyFn,
    params: Params,
    x: np.ndarray,
    *,
    region: Any,
    distances: Any,
    directions: jax.Array,
    region_batch: int,
    distances_batch: int,
    over: Batches = list,
    offset: int = 0,
) -> dict[str, Any]:
    """Point and region predictions and boundary distances of the inputs x [N, ...]: a stage's arrays.

    Args:
      key: the region classifier's randomness (the batch starting at row s uses fold_in(key, offset + s),
        so a part of the inputs starting at row `offset` of the whole computes what the whole would).
      region: `make_region_classifier(...)`; distances: `make_boundary_distances(...)`; directions
        their directions. Inputs go in batches of `region_batch` / `distances_batch`, the last one
        padded to the compiled shape.
      over: wraps the distance batches (e.g. a progress bar).
    """
    labels, counts = [], []
    t0 = time.perf_counter()
    size = min(region_batch, len(x))
    for s, e in batches(len(x), size):
        votes = region(jax.random.fold_in(key, offset + s), apply_fn, params, padded(x, s, e, size))
        labels.append(np.asarray(votes.label, np.int32)[: e - s])
        counts.append(np.asarray(votes.counts, np.int32)[: e - s])
    region_s = time.perf_counter() - t0
    parts = []
    t0 = time.perf_counter()
    size = min(distances_batch, len(x))
    for s, e in over(batches(len(x), size)):
        r = jax.device_get(distances(apply_fn, params, padded(x, s, e, size), directions))
        parts.append(BoundaryDistances(*(v[: e - s] for v in r)))
    distances_s = time.perf_counter() - t0
    return dict(
        point=np.concatenate([p.center for p in parts]).astype(np.int32),  # the distances' centre class
        region_label=np.concatenate(labels),
        region_counts=np.concatenate(counts),
        distance=np.concatenate([p.distance for p in parts]).astype(np.float32),
        adjacent=np.concatenate([p.adjacent for p in parts]).astype(np.int16),
        forward_passes=np.concatenate([p.forward_passes for p in parts]).astype(np.int64),
        region_seconds=np.float64(region_s),
        distances_seconds=np.float64(distances_s),
    )


def attack_stage(
    key: jax.Array,
    apply_fn: ApplyFn,
    params: Params,
    x: np.ndarray,
    y: np.ndarray,
    attack: Any,
    *,
    batch_size: int,
    over: Batches = list,
    offset: int = 0,
) -> tuple[np.ndarray, np.ndarray, float]:
    """(x_adv, success confirmed at x_adv by the model, seconds) of `attack` on x [N, ...], y [N]
    (the batch starting at row s uses fold_in(key, offset + s): see `measure_stage`; the last batch is
    padded to the compiled shape)."""
    xs, ok = [], []
    t0 = time.perf_counter()
    size = min(batch_size, len(x))
    for s, e in over(batches(len(x), size)):
        r = attack(
            jax.random.fold_in(key, offset + s),
            apply_fn,
            params,
            padded(x, s, e, size),
            padded(y, s, e, size),
        )
        xs.append(np.asarray(r.x_adv, np.float32)[: e - s])
        ok.append(np.asarray(r.success, bool)[: e - s])
    return np.concatenate(xs), np.concatenate(ok), time.perf_counter() - t0


def mean_or_none(values: Any) -> float | None:
    """The mean as a float, None for no values."""
    values = np.asarray(values, np.float64)
    return float(values.mean()) if values.size else None


def finite_or_none(v: float | None) -> float | None:
    """`v` as a float, None if it is None or not finite (JSON has no NaN)."""
    return None if v is None or not math.isfinite(v) else float(v)


def rms(delta: np.ndarray) -> np.ndarray:
    """Root-mean-square per input of delta [N, ...] -> [N]."""
    return np.sqrt(np.mean(np.square(delta.reshape(delta.shape[0], -1)), axis=1))


def usable_rows(y: np.ndarray, benign: Stage, stage: Stage, *, is_benign: bool) -> np.ndarray:
    """[N] bool: correctly classified benign images; successful attacks on correctly classified images."""
    clean = benign["point"] == y
    return clean if is_benign else clean & stage["success"]


def attack_row(
    x: np.ndarray, y: np.ndarray, benign: Stage, stage: Stage, *, pixel_scale: float = 1.0
) -> dict[str, Any]:
    """Table 1: success rate over the correct images, mean RMS distortion of the successes (pixels
    × `pixel_scale`: 255 gives the seed's CIFAR-10 units), time; 95 % intervals in `*_ci`."""
    clean = benign["point"] == y
    success = stage["success"] & clean
    distortion = pixel_scale * rms(stage["x_adv"] - x)[success]
    return {
        "success_rate": float(success.sum() / clean.sum()) if clean.any() else None,
        "success_ci": wilson_interval(int(success.sum()), int(clean.sum())).as_list(),
        "successes": int(success.sum()),
        "correct": int(clean.sum()),
        "rms": mean_or_none(distortion),
        "rms_ci": mean_interval(distortion).as_list(),
        "seconds": float(stage["attack_seconds"]),
    }


def accuracy_row(y: np.ndarray, stage: Stage) -> dict[str, Any]:
    """Table 2: region and point classification accuracy over all inputs of the stage (95 % Wilson
    intervals in `region_ci`, `point_ci`)."""
    n = len(y)
    right = {w: int(np.sum(stage[k] == y)) for w, k in (("region", "region_label"), ("point", "point"))}
    return {
        **{w: right[w] / n for w in right},
        **{f"{w}_ci": wilson_interval(right[w], n).as_list() for w in right},
        "n": n,
    }


_purity = jax.jit(adjacent_purity, static_argnums=1)


def purity_of(stage: Stage, num_classes: int) -> np.ndarray:
    """[N, K] purity curves of a stage's inputs (one compilation for all stages of a shape)."""
    return np.asarray(_purity(jnp.asarray(stage["adjacent"], jnp.int32), num_classes))


def distance_row(
    stage: Stage, usable: np.ndarray, num_classes: int, *, purity_levels: int = 3
) -> dict[str, Any]:
    """Boundary statistics of the usable inputs: share of directions with a boundary, median distance,
    top-1 purity and the purity curve P_1..P_`purity_levels` with 95 % t intervals (inputs with a
    hit); forward passes per image over all inputs (the cost)."""
    d = stage["distance"][usable]
    hit = np.isfinite(d)
    purity = purity_of(stage, num_classes)[usable]
    with_hits = hit.any(axis=1)
    return {
        "inputs": int(usable.sum()),
        "hit_share": mean_or_none(hit),
        "median_distance": float(np.median(d[hit])) if hit.any() else None,
        "purity_top1": mean_or_none(purity[with_hits, 0]),
        "purity": [mean_or_none(purity[with_hits, k]) for k in range(purity_levels)],
        "purity_ci": [mean_interval(purity[with_hits, k]).as_list() for k in range(purity_levels)],
        "forward_passes_per_image": mean_or_none(stage["forward_passes"]),
        "seconds_per_image": float(stage["distances_seconds"]) / max(len(stage["point"]), 1),
    }


_features = jax.jit(
    detector_features, static_argnames=("num_classes", "purity_k", "miss_distance", "shift", "scale")
)


def train_and_rate_detector(
    key: jax.Array,
    y: np.ndarray,
    benign: Stage,
    stage: Stage,
    *,
    num_classes: int,
    train_share: float,
    steps: int,
    half_batch: int,
    learning_rate: float,
    dropout: float,
    purity_k: int,
    miss_distance: float,
    shift: float,
    scale: float,
) -> dict[str, Any]:
    """Trains the boundary detector on the first `train_share` of the inputs (usable ones only) and
    rates it on the rest: false-positive / false-negative rates (held out and on the training part),
    counts, final loss, seconds. A record with "skipped" if the training part lacks either class."""
    n = len(y)
    n_train = min(max(round(train_share * n), 1), n - 1)
    kw = dict(
        purity_k=purity_k, miss_distance=miss_distance, shift=shift, scale=scale, num_classes=num_classes
    )
    fb, fa = (
        _features(jnp.asarray(s["distance"]), jnp.asarray(s["adjacent"], jnp.int32), **kw)
        for s in (benign, stage)
    )
    fb, fa = jax.device_get(fb), jax.device_get(fa)  # numpy: slicing below compiles nothing
    ok_b = usable_rows(y, benign, stage, is_benign=True)
    ok_a = usable_rows(y, benign, stage, is_benign=False)
    tr, te = slice(0, n_train), slice(n_train, n)

    def take(f: DetectorFeatures, sl: slice) -> DetectorFeatures:
        return DetectorFeatures(f.distances[sl], f.purity[sl])

    record: dict[str, Any] = {
        "train_images": n_train,
        "test_images": n - n_train,
        "train_benign": int(ok_b[tr].sum()),
        "train_adversarial": int(ok_a[tr].sum()),
    }
    if not ok_b[tr].any() or not ok_a[tr].any():
        record["skipped"] = (
            "no correctly classified benign image or no successful attack in the training part"
        )
        return record
    t0 = time.perf_counter()
    fit = train_detector(
        key,
        take(fb, tr),
        take(fa, tr),
        ok_b[tr],
        ok_a[tr],
        steps=steps,
        half_batch=half_batch,
        learning_rate=learning_rate,
        dropout=dropout,
    )
    rates = detector_rates(fit.params, take(fb, te), take(fa, te), ok_b[te], ok_a[te])
    train_rates = detector_rates(fit.params, take(fb, tr), take(fa, tr), ok_b[tr], ok_a[tr])
    losses = np.asarray(fit.losses)
    flagged = round(rates.false_positive * rates.benign) if rates.benign else 0
    missed = round(rates.false_negative * rates.adversarial) if rates.adversarial else 0
    record.update(
        false_positive=finite_or_none(rates.false_positive),
        false_negative=finite_or_none(rates.false_negative),
        false_positive_ci=wilson_interval(flagged, rates.benign).as_list(),
        false_negative_ci=wilson_interval(missed, rates.adversarial).as_list(),
        test_benign=rates.benign,
        test_adversarial=rates.adversarial,
        train_false_positive=finite_or_none(train_rates.false_positive),
        train_false_negative=finite_or_none(train_rates.false_negative),
        final_loss=float(losses[-max(len(losses) // 20, 1) :].mean()),
        seconds=time.perf_counter() - t0,
    )
    return record
