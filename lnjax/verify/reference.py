"""A brute-force reference for tiny ReLU networks: one LP per activation pattern.

On a fixed ReLU activation pattern the network is affine, so the minimum of the spec margin over
the box ∩ {pattern} is a small LP per set of k rows (margin = k-th smallest row = min over row sets
S of size k of max_{j∈S} d_j). Enumerating every pattern gives the exact minimum — only for a
handful of unstable ReLUs; it exists to check the MILP and the verifier, not to verify. Patterns
with a ReLU in a phase it has nowhere on the box (float64 interval arithmetic on the same
matrices, not lnjax.bounds, so the reference stays independent of the bounds it checks) are left
out: their LPs are infeasible, so the minimum and the minimiser are those of the full enumeration.

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


def _stable_phases(
    layers: list[tuple[np.ndarray, np.ndarray]], lo: np.ndarray, hi: np.ndarray, slack: float = 1e-6
) -> np.ndarray:
    """[#ReLUs] in op order: +1 where a ReLU's input is > `slack` on the whole box [lo, hi], −1
    where it is < −`slack`, 0 otherwise; float64 interval arithmetic over `_affine_layers`."""
    phases = [np.zeros(0, np.int32)]
    for w, b in layers[:-1]:
        centre, radius = w @ ((lo + hi) / 2) + b, np.abs(w) @ ((hi - lo) / 2)
        lo, hi = centre - radius, centre + radius
        phases.append(np.where(lo > slack, 1, np.where(hi < -slack, -1, 0)).astype(np.int32))
        lo, hi = np.maximum(lo, 0.0), np.maximum(hi, 0.0)
    return np.concatenate(phases)


def stable_phases(view: L.LayerView, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """[#ReLUs] in op order: +1 / −1 where a ReLU is active / inactive on the whole box, 0 where it
    is unstable (the phases `brute_force_min` does not enumerate)."""
    lo = np.asarray(lower, np.float64).ravel()
    hi = np.asarray(upper, np.float64).ravel()
    return _stable_phases(_affine_layers(view), lo, hi)


def brute_force_min(
    view: L.LayerView,
    lower: np.ndarray,
    upper: np.ndarray,
    rows: SpecRows,
    *,
    max_relus: int = 16,
    phases: np.ndarray | None = None,
    prune_stable: bool = True,
) -> BruteForceResult:
    """The exact minimum of the spec margin over the box, by enumerating activation patterns.

    Args:
      view: a network whose nonlinear ops are ReLUs.
      lower, upper: [*input_shape] the box.
      rows: the spec's rows (`spec.rows(K)`).
      max_relus: the most ReLUs left to enumerate (neither fixed nor stable); more raise ValueError.
      phases: optional [#ReLUs] fixed phases (branch-and-bound's subdomain, in op order): +1 active
        (pre-activation ≥ 0), −1 inactive (≤ 0), 0 free; only patterns that agree are enumerated.
        They win over the stable phases; where the two disagree no point of the box has those
        phases either way. The minimum is +inf when no point of the box has them.
      prune_stable: leave out the patterns with a stable ReLU in its other phase (same result,
        fewer LPs); False enumerates them all (the check that pruning changes nothing).

    Returns:
      BruteForceResult.
    """
    layers = _affine_layers(view)
    sizes = [w.shape[0] for w, _ in layers[:-1]]
    lo = np.asarray(lower, np.float64).ravel()
    hi = np.asarray(upper, np.float64).ravel()
    fixed = np.zeros(sum(sizes), np.int32) if phases is None else np.asarray(phases).reshape(-1)
    if fixed.size != sum(sizes):
        raise ValueError(f"phases has {fixed.size} entries; the network has {sum(sizes)} ReLUs")
    if prune_stable:
        fixed = np.where(fixed != 0, fixed, _stable_phases(layers, lo, hi))
    free = int(np.sum(fixed == 0))
    if free > max_relus:
        raise ValueError(f"{free} ReLUs to enumerate (neither fixed nor stable) > max_relus={max_relus}")
    n = lo.size
    c = np.asarray(rows.c, np.float64)
    off = np.asarray(rows.offset, np.float64)
    best, best_x, count = np.inf, (lo + hi) / 2, 0
    choices = [(1.0,) if f > 0 else (0.0,) if f < 0 else (0.0, 1.0) for f in fixed]
    for pattern in itertools.product(*choices):
        pattern = np.array(pattern)
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
