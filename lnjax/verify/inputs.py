"""The verifier's API boundary: the view, the box and the spec, checked before any stage runs.

A verdict is only as sound as its input. A NaN in the box makes every bound NaN, and a NaN bound
proves nothing in JAX but can make the MILP infeasible, which reads as ROBUST; a 0..255 image
clipped to [0, 1] is a different question from the one asked; an object that is not a spec or a
layer view fails deep inside a stage. So `make_verifier` and each query check their arguments
first and raise one line naming the argument, what was wrong and what was expected: TypeError for
an object of the wrong kind, ValueError for a wrong value.

The host copies made here are for the checks only (a few KB); the stages receive the caller's
arrays converted as before, so the checks change no compiled function's arguments.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lnjax import bounds as B
from lnjax.io import outward_float32
from lnjax.models import layers as L
from lnjax.specs import Argmax, Linear, SpecRows, Threshold, TopK

# Overshoots of [0, 1] up to this much (an ε-box around a pixel near 0 or 1) are clipped; beyond it
# the box is taken to be on another scale (0..255, [-1, 1]) and refused.
PIXEL_SLACK = 0.5


def describe(value: object) -> str:
    """A short one-line description of a value for an error message: its repr if short, and its type."""
    r = repr(value)
    kind = type(value).__name__
    return f"{r} ({kind})" if len(r) <= 40 and "\n" not in r else f"a {kind}"


def checked_view(view: object) -> L.LayerView:
    """The view, if it is a `LayerView` with ops and finite parameters.

    Raises:
      TypeError: another object (e.g. the Flax model or its params instead of their layer view).
      ValueError: no ops, or a NaN/inf parameter (a diverged network; its bounds would be NaN).
    """
    if not isinstance(view, L.LayerView):
        raise TypeError(
            f"view = {describe(view)}; expected a LayerView (lnjax.models.layer_view(model, params))"
        )
    if not view.ops:
        raise ValueError("view has no ops; expected lnjax.models.layer_view(model, params)")
    for i, op in enumerate(view.ops):
        for leaf in jax.tree.leaves(op):
            a = np.asarray(leaf)
            if jnp.issubdtype(a.dtype, jnp.inexact) and not np.all(np.isfinite(a)):
                raise ValueError(
                    f"view op {i} ({type(op).__name__}) has non-finite parameters; "
                    "expected a finite network (a diverged training run cannot be verified)"
                )
    return view


def checked_rows(spec: object, num_classes: int) -> SpecRows:
    """The spec's rows over `num_classes` logits; TypeError if it is not a `lnjax.specs` spec (a
    ValueError from the spec itself if its target or k does not fit the network)."""
    if not isinstance(spec, TopK | Argmax | Threshold | Linear):
        raise TypeError(
            f"spec = {describe(spec)}; expected a TopK, Argmax, Threshold or Linear (lnjax.specs)"
        )
    return spec.rows(num_classes)


def checked_corner(
    name: str, x: object, shape: tuple[int, ...], domain: tuple[float, float] | None = (0.0, 1.0)
) -> np.ndarray:
    """One corner of a box as a float64 host copy (for the checks only), if it is a finite float array
    of `shape` with values in `domain` up to `PIXEL_SLACK` of its width (None: any finite values).

    Raises:
      TypeError: not an array of numbers.
      ValueError: an integer or bool array (boxes are float images), another shape, NaN or ±inf
        entries, or values far outside `domain` (another pixel scale).
    """
    where = "" if domain is None else f" in [{domain[0]:g}, {domain[1]:g}]"
    try:
        a = np.asarray(x)
    except (TypeError, ValueError):  # e.g. a ragged list
        a = np.asarray(None)
    if a.dtype.kind in "biu":
        raise ValueError(
            f"{name} has dtype {a.dtype}; boxes are float images{where} (scale integer images by 1/255)"
        )
    if a.dtype == object:
        raise TypeError(f"{name} = {describe(x)}; expected a float array of shape {shape}{where}")
    if not jnp.issubdtype(a.dtype, jnp.floating):
        raise TypeError(f"{name} has dtype {a.dtype}; expected a float array of shape {shape}{where}")
    if a.shape != shape:
        raise ValueError(f"{name} has shape {a.shape}; expected the input shape {shape}")
    a = a.astype(np.float64)
    bad = int(np.sum(~np.isfinite(a)))
    if bad:
        raise ValueError(
            f"{name} has {bad} non-finite (NaN or inf) of {a.size} entries; a box must be finite{where}"
        )
    if domain is None:
        return a
    low, high = float(a.min()), float(a.max())
    slack = PIXEL_SLACK * (domain[1] - domain[0])
    if low < domain[0] - slack or high > domain[1] + slack:
        raise ValueError(
            f"{name} spans [{low:g}, {high:g}]; boxes are float images{where} "
            f"(scale 0..255 images by 1/255; overshoots up to {slack:g} are clipped; a network with "
            "another input range: set VerifierConfig.input_domain)"
        )
    return a


def checked_box(
    view: L.LayerView, x_lower: Any, x_upper: Any, domain: tuple[float, float] | None = (0.0, 1.0)
) -> tuple[jax.Array, jax.Array]:
    """The box [x_lower, x_upper] clipped to the input domain (None: as given) as float32 arrays,
    once both corners pass `checked_corner` and x_lower ≤ x_upper everywhere, as given (else
    ValueError: an empty box; compared before clipping, so a reversed pair outside the domain is
    refused, not clipped to a point). Corners given in float64 are rounded outwards (the float32 box
    contains the caller's), so a proof covers every point the caller asked about."""
    shape = tuple(view.input_shape)
    lower = checked_corner("x_lower", x_lower, shape, domain)
    upper = checked_corner("x_upper", x_upper, shape, domain)
    empty = int(np.sum(lower > upper))
    if empty:
        raise ValueError(f"empty box: x_lower > x_upper at {empty} of {lower.size} entries")
    lo, hi = (jnp.asarray(v) for v in outward_float32(lower, upper))
    if domain is None:
        return lo, hi
    return B.clip_box(lo, hi, *domain)
