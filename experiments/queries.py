"""What verify and neighborhood share: DOUBLE-MNIST queries and the verifier built from its block.

A query is one test image, one target digit (left or right) that must stay in the top k (or above
the sigmoid threshold), a box around the image (a uniform L∞ ball or a layer-neighborhood around
the other digit) and the staged verifier that answers it. Both experiments import this module;
neither imports the other.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import numpy as np
from absl import logging
from ml_collections import ConfigDict

from experiments.common import UsageError, require, unknown_keys
from lnjax import data, neighborhood as nbh, verify as V
from lnjax.neighborhood.problem import Problem, make_problem

TARGETS = {"left": 0, "right": 1}  # neighborhood's `target`: the digit that must stay
SIDES = {"left": (0,), "right": (1,), "both": (0, 1)}  # verify's `target`: the digits queried
SIDE_NAMES = ("left", "right")
SPECS = ("topk", "threshold")
SHAPES = ("uniform", "layers")
OBJECTS = ("ink", "box")


def parse_floats(text: str, what: str) -> tuple[float, ...]:
    """ "0.01, 0.02" -> (0.01, 0.02); UsageError naming `what` otherwise."""
    try:
        return tuple(float(v) for v in str(text).split(",") if v.strip())
    except ValueError as e:
        raise UsageError(f"{what} = {text!r} must be comma-separated numbers, e.g. '0.01,0.02,0.04'") from e


def check_queries(c: ConfigDict, base: ConfigDict, targets: Collection[str]) -> None:
    """The fields verify and neighborhood share (experiment, run, images, target, spec): UsageError
    naming the first invalid one. `base` is the experiment's base config (its known fields)."""
    unknown = unknown_keys(c.to_dict(), base.to_dict())
    require(not unknown, f"unknown config options {unknown}; see experiments/configs/{base.experiment}.py")
    require(
        c.experiment == base.experiment,
        f"experiment = {c.experiment!r}; this module runs {base.experiment!r}",
    )
    require(
        bool(c.train_workdir), f"train_workdir is empty; name a finished training run ({base.train_workdir})"
    )
    require(c.images >= 1, f"images = {c.images} must be ≥ 1")
    require(c.start >= 0, f"start = {c.start} must be ≥ 0")
    require(c.target in targets, f"unknown target {c.target!r}; expected one of {sorted(targets)}")
    require(c.spec in SPECS, f"unknown spec {c.spec!r}; expected one of {SPECS}")


def layer_eps(*, eps: float, growth: float, eps_layers: tuple[float, ...], num_layers: int) -> np.ndarray:
    """ε per layer d = 0..num_layers − 1: the explicit list (its last value repeated farther out) or
    eps · (1 + growth · d). float32 [num_layers]."""
    if eps_layers:
        e = np.asarray(eps_layers, np.float64)
        e = np.concatenate([e, np.full(max(num_layers - len(e), 0), e[-1])])[:num_layers]
    else:
        e = eps * (1.0 + growth * np.arange(num_layers))
    return e.astype(np.float32)


def meta_of(test: data.Dataset) -> dict[str, Any]:
    """The DOUBLE-MNIST per-image facts (digits, masks, offsets, boxes) of a loaded test split."""
    assert test.meta is not None, "a DOUBLE-MNIST split carries its digits and masks in `meta`"
    return test.meta


def object_mask(meta: dict[str, Any], index: int, which: int, kind: str) -> np.ndarray:
    """The DOUBLE-MNIST digit `which` (0 left, 1 right) of image `index` as a bool [64, 64] mask."""
    if kind == "ink":
        return data.ink_mask(meta["masks"][index], meta["offsets"][index], which)
    return data.box_mask(meta["boxes"][index], which)


def image_box(
    x: np.ndarray, mask: np.ndarray | None, b: ConfigDict
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The box of one query: x [H, W, C] in [0, 1], the non-target object's mask [H, W] (layers).

    Returns:
      (lower, upper) [H, W, C] float32 clipped to [0, 1], and facts for the record (ε per layer,
      layer sizes).
    """
    if b.shape == "uniform":
        lo = np.clip(x - b.eps, 0.0, 1.0).astype(np.float32)
        hi = np.clip(x + b.eps, 0.0, 1.0).astype(np.float32)
        return lo, hi, {"eps": [float(b.eps)]}
    assert mask is not None, "a layers box needs the non-target object's mask"
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
    """ "topk": the target stays among the top k; "threshold": its logit stays > 0 (sigmoid > 0.5)."""
    return V.TopK(int(target), int(k)) if kind == "topk" else V.Threshold(int(target), 0.0)


def warm_up(verify: Any, test: data.Dataset, index: int, side: int, spec_kind: str, k: int) -> float:
    """Compiles the verifier's stages outside the per-query budgets (a zero-width box at image
    `index`, the spec type of the run); logs and returns the seconds it took."""
    x0 = test.x[index]
    spec0 = make_spec(spec_kind, int(meta_of(test)["digits"][index][side]), k)
    seconds = float(verify.warm_up(x0, x0, spec0))
    logging.info("verifier warm-up (compilation): %.1f s", seconds)
    return seconds


def image_problem(
    c: ConfigDict, test: data.Dataset, index: int, k: int
) -> tuple[Problem, dict[str, Any], tuple[np.ndarray, np.ndarray]]:
    """A neighborhood config's query on one image: the layers around the non-target digit, the spec.

    Returns:
      (problem, facts for the record, (target ink mask, non-target object mask)).
    """
    side = TARGETS[c.target]
    meta = meta_of(test)
    digits = [int(d) for d in meta["digits"][index]]
    target, other = digits[side], digits[1 - side]
    other_mask = object_mask(meta, index, 1 - side, c.layers.object)
    target_mask = object_mask(meta, index, side, "ink")
    own = target_mask if c.layers.get("target_layer", False) else None  # the target: its own layer
    layers = nbh.layer_map(
        other_mask, metric=c.layers.metric, max_layers=int(c.layers.max_layers), target_mask=own
    )
    problem = make_problem(test.x[index], layers, make_spec(c.spec, target, k))
    facts = {
        "image": int(index),
        "digits": digits,
        "side": SIDE_NAMES[side],
        "target": target,
        "other": other,
        "layer_sizes": problem.sizes.tolist(),
    }
    return problem, facts, (target_mask, other_mask)
