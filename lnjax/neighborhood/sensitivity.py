"""Shrink weights of the neighborhood optimizer: fixed (by distance) or by sensitivity (saliency).

When a candidate ε is not proven robust, the optimizer shrinks it per layer with weights
w ∈ [floor, 1] (the rule is the optimizer's, `lnjax.neighborhood.optimizer`: layer d's growth since
the last robust ε is cut by the factor 1 − w_d, or, before any robust ε, log ε_d drops by
−log(1 − first_shrink · w_d)):

- fixed: a profile over the layer index d = 0..R−1 that shrinks more far from the non-target
  object and less near it: w_d = near + (1 − near) · (d / (R − 1))^power (the seed's fixed weights).
- sensitivity: vanilla-gradient saliency |∂ margin / ∂x| at the image (Simonyan et al. 2013),
  aggregated per layer (mean over the layer's pixels by default) and normalised to s_d ∈ [0, 1].
  Orientation "insensitive" (the seed's default: shrink more where the network is less sensitive):
  w_d = 1 − (1 − floor) · s_d; orientation "sensitive" (shrink more where it is more sensitive,
  i.e. where shrinking buys the most margin): w_d = floor + (1 − floor) · s_d.

References:
  Simonyan, Vedaldi & Zisserman, Deep Inside Convolutional Networks: Visualising Image
    Classification Models and Saliency Maps, 2013.
  Mour, Maximal Robust Layer-Neighborhoods in Multi-Label Neural Networks (thesis proposal,
    Technion 2023): fixed and sensitivity shrink weights.
"""

from __future__ import annotations

import numpy as np
from jax.typing import ArrayLike

SHRINKS = ("fixed", "sensitivity")
ORIENTATIONS = ("insensitive", "sensitive")
REDUCTIONS = ("mean", "sum", "max")


def fixed_weights(num_layers: int, *, near: float = 0.25, power: float = 1.0) -> np.ndarray:
    """w_d = near + (1 − near) · (d / (R − 1))^power: [R] in [near, 1], increasing with d.

    Args:
      num_layers: R ≥ 1.
      near: the weight of layer 0 (on the non-target object), in (0, 1].
      power: the profile's shape (1: linear).
    """
    if num_layers < 1:
        raise ValueError(f"num_layers must be ≥ 1, got {num_layers}")
    if not 0 < near <= 1 or power <= 0:
        raise ValueError(f"need 0 < near ≤ 1 and power > 0, got near={near}, power={power}")
    if num_layers == 1:
        return np.ones(1, np.float64)
    t = np.arange(num_layers, dtype=np.float64) / (num_layers - 1)
    return near + (1.0 - near) * t**power


def layer_sensitivity(
    saliency: ArrayLike, layers: ArrayLike, num_layers: int, *, reduce: str = "mean"
) -> np.ndarray:
    """Saliency aggregated per layer.

    Args:
      saliency: [H, W] or [H, W, C] |gradient| (channels are summed).
      layers: int [H, W] layer map.
      num_layers: R.
      reduce: "mean" (per pixel of the layer; default), "sum" or "max".

    Returns:
      float64 [R] (0 for empty layers).
    """
    if reduce not in REDUCTIONS:
        raise ValueError(f"unknown reduce {reduce!r}; expected one of {REDUCTIONS}")
    s = np.asarray(saliency, np.float64)
    if s.ndim == 3:
        s = s.sum(axis=-1)
    idx = np.asarray(layers).ravel()
    if reduce == "max":
        out = np.zeros(num_layers, np.float64)
        np.maximum.at(out, idx, s.ravel())
        return out
    total = np.bincount(idx, weights=s.ravel(), minlength=num_layers)[:num_layers]
    if reduce == "sum":
        return total
    count = np.bincount(idx, minlength=num_layers)[:num_layers]
    return np.where(count > 0, total / np.maximum(count, 1), 0.0)


def sensitivity_weights(
    sensitivity: ArrayLike, *, orientation: str = "insensitive", floor: float = 0.25
) -> np.ndarray:
    """Shrink weights from per-layer sensitivities: [R] in [floor, 1].

    Args:
      sensitivity: [R] ≥ 0 (e.g. `layer_sensitivity`).
      orientation: "insensitive" (shrink more where less sensitive; the seed's) or "sensitive".
      floor: the smallest weight, in (0, 1].
    """
    if orientation not in ORIENTATIONS:
        raise ValueError(f"unknown orientation {orientation!r}; expected one of {ORIENTATIONS}")
    if not 0 < floor <= 1:
        raise ValueError(f"floor must be in (0, 1], got {floor}")
    s = np.asarray(sensitivity, np.float64)
    top = float(np.max(s)) if s.size else 0.0
    s = s / top if top > 0 else np.zeros_like(s)
    if orientation == "insensitive":
        return 1.0 - (1.0 - floor) * s
    return floor + (1.0 - floor) * s
