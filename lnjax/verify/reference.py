"""A brute-force reference for tiny ReLU networks: one LP per activation pattern.

On a fixed ReLU activation pattern the network is affine, so the minimum of the spec margin over
the box ∩ {pattern} is a small LP per set of k rows (margin = k-th smallest row = min over row sets
S of size k of max_{j∈S} d_j). Enumerating every pattern (2^#ReLUs) gives the exact minimum —
only for a handful of ReLUs; it exists to check the MILP and the verifier, not to verify.

References:
  Tjeng, Xiao & Tedrake, ICLR 2019 (MIPVerify) — the exact answer the MILP must reproduce.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import numpy as np
from scipy.optimize import linprog

from lnjax.models import layers as L
from lnjax.specs import SpecRows
from lnjax.verify.milp import AffineLayer, network_from_view


class BruteForceResult(NamedTuple):
    """minimum: the exact minimum margin over the box; argmin: [n_in] a minimiser; patterns: LPs' count."""

    minimum: float
    argmin: np.ndarray
    patterns: int


def _affine_layers(view: L.LayerView) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(W [out, in], b [out]), ...] with a ReLU between consecutive entries.

    The linear ops are the MILP network's (`milp.network_from_view`: every op's `MilpRules.matrix`),
    so any linear op of the rule table is supported; the nonlinear ops must be ReLUs, since this
    enumerates ReLU activation patterns.
    """
    layers = []
    for layer in network_from_view(view).layers:
        if isinstance(layer, AffineLayer):
            layers.append((layer.w.toarray(), np.asarray(layer.b, np.float64)))
        elif not isinstance(layer.op, L.ReLU):  # a precondition of the algorithm, not a dispatch
            raise TypeError(f"brute force handles ReLU networks only, not {type(layer.op).__name__}")
    return layers


def brute_force_min(
    view: L.LayerView,
    lower: np.ndarray,
    upper: np.ndarray,
    rows: SpecRows,
    *,
    max_relus: int = 16,
    phases: np.ndarray | None = None,
) -> BruteForceResult:
    """The exact minimum of the spec margin over the box, by enumerating activation patterns.

    Args:
      view: a network whose nonlinear ops are ReLUs, with at most `max_relus` of them.
      lower, upper: [*input_shape] the box.
      rows: the spec's rows (`spec.rows(K)`).
      phases: optional [#ReLUs] fixed phases (branch-and-bound's subdomain, in op order): +1 active
        (pre-activation ≥ 0), −1 inactive (≤ 0), 0 free; only patterns that agree are enumerated.
        The minimum is +inf when no point of the box has those phases.

    Returns:
      BruteForceResult.
    """
    layers = _affine_layers(view)
    sizes = [w.shape[0] for w, _ in layers[:-1]]
    if sum(sizes) > max_relus:
        raise ValueError(f"{sum(sizes)} ReLUs > max_relus={max_relus}")
    lo = np.asarray(lower, np.float64).ravel()
    hi = np.asarray(upper, np.float64).ravel()
    n = lo.size
    c = np.asarray(rows.c, np.float64)
    off = np.asarray(rows.offset, np.float64)
    best, best_x, count = np.inf, (lo + hi) / 2, 0
    fixed = None if phases is None else np.asarray(phases).reshape(-1)
    for pattern in itertools.product((0.0, 1.0), repeat=sum(sizes)):
        pattern = np.array(pattern)
        if fixed is not None and np.any((fixed > 0) & (pattern == 0) | (fixed < 0) & (pattern == 1)):
            continue
        # Affine map of x for each layer's pre-activation under this pattern; sign constraints.
        a_ub, b_ub = [], []
        w_acc, b_acc = np.eye(n), np.zeros(n)
        start = 0
        for (w, b), size in zip(layers[:-1], sizes, strict=True):
            pre_w, pre_b = w @ w_acc, w @ b_acc + b
            p = pattern[start : start + size]
            start += size
            sign = np.where(p > 0, -1.0, 1.0)  # active: pre ≥ 0 ⇔ −pre ≤ 0; inactive: pre ≤ 0
            a_ub.append(sign[:, None] * pre_w)
            b_ub.append(-sign * pre_b)
            w_acc, b_acc = p[:, None] * pre_w, p * pre_b
        w, b = layers[-1]
        z_w, z_b = w @ w_acc, w @ b_acc + b
        d_w, d_b = c @ z_w, c @ z_b + off
        for subset in itertools.combinations(range(len(d_b)), rows.k):
            # min t s.t. d_j(x) ≤ t for j in subset, pattern constraints, box.
            s = list(subset)
            a = np.concatenate([np.concatenate(a_ub, 0) if a_ub else np.zeros((0, n)), d_w[s]], axis=0)
            a = np.concatenate([a, np.zeros((a.shape[0], 1))], axis=1)
            a[-len(s) :, -1] = -1.0
            rhs = np.concatenate([np.concatenate(b_ub) if b_ub else np.zeros(0), -d_b[s]])
            obj = np.zeros(n + 1)
            obj[-1] = 1.0
            res = linprog(
                obj, A_ub=a, b_ub=rhs, bounds=[*zip(lo, hi, strict=True), (None, None)], method="highs"
            )
            count += 1
            if res.status == 0 and res.fun < best:
                best, best_x = float(res.fun), res.x[:n]
    return BruteForceResult(minimum=best, argmin=best_x.reshape(np.shape(lower)), patterns=count)
