"""CROWN: backward linear bounds over the layer view, per example.

A bound on a linear function `a · z_k` of the output of op k is propagated backwards op by op to
an affine function of the input and concretised against the input box. Each step is the op's
`backward` rule (`lnjax.models.ops`):
- affine ops (Conv, Dense, Flatten, AvgPool): exactly, through the transpose of their linear part;
- ReLU with input bounds [l, u]: identity if l >= 0, zero if u <= 0, otherwise the standard
  relaxation alpha*x <= relu(x) <= u/(u-l) * (x - l), with the adaptive lower slope
  alpha = 1 if u >= -l else 0 (alpha-CROWN optimises alpha instead);
- MaxPool: y >= x_j for the input j with the largest lower bound; y <= x_j if it dominates its
  window, else y <= max_i u_i (see `lnjax.models.ops.pool`).

`crown_bounds` applies this to every pre-activation (the output of an affine op that feeds a ReLU or
MaxPool) and to the logits, intersected with interval (or the given `base`) bounds; ops in between
are propagated by interval arithmetic from the tightened bounds. Rows are computed only for
neurons that can still matter (unstable ReLU inputs; inputs of undecided max-pool windows; all
logits), in fixed-size chunks of `chunk` neurons inside a `lax` loop, so one compilation serves
every box of the same shape. The first pre-activation layer (one affine map of the box) is exact
under interval arithmetic and is skipped.

All bounds are float32 and sound up to float rounding; see `interval`.

References:
  Zhang et al., Efficient Neural Network Robustness Certification with General Activation
    Functions (CROWN), NeurIPS 2018; Xu et al., Fast and Complete: Enabling Complete Neural Network
    Verification with Rapid and Massively Parallel Incomplete Verifiers (alpha-CROWN), ICLR 2021.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from lnjax.bounds import patches as P
from lnjax.bounds.interval import LayerBounds, input_bounds_of, interval_bounds, interval_op
from lnjax.bounds.nodes import masked_node_bounds
from lnjax.models import layers as L
from lnjax.models.ops import is_linear, rules_of

CHUNK = 256
"""Neurons per backward pass (each gives two rows: lower and upper)."""

# (bounds so far, op index, mask) -> the node's (lower, upper), or None to use the row passes.
NodeBounds = Callable[[LayerBounds, int, jax.Array], "tuple[jax.Array, jax.Array] | None"]

# A function from rows A: [R, *shape of op k's output] to lower bounds [R] of A · z_k over the box.
RowLower = Callable[[LayerBounds, int, jax.Array], jax.Array]


# ----------------------------------------------------------------------------- backward pass


def backward_pass(
    view: L.LayerView,
    bounds: LayerBounds,
    k: int,
    a: jax.Array,
    lower: jax.Array,
    upper: jax.Array,
    alphas: Mapping[int, jax.Array] | None = None,
    extra: Mapping[int, jax.Array] | None = None,
) -> tuple[jax.Array, jax.Array, dict[int, jax.Array]]:
    """Rows a on z_k propagated back to the input: a · z_k >= a_in · x + bias on the box.

    Args:
      view, bounds, k, a, lower, upper, alphas: as in `backward_lower`.
      extra: optional rows {op index j: [R, *shape of op j's input]} added to the rows on op j's input
        after op j's rule (beta-CROWN's split terms −β·s on a ReLU's pre-activation: a lower bound
        of a·z_k − Σ β s z_j, which is a lower bound of a·z_k wherever every s z_j ≥ 0).

    Returns:
      (a_in [R, *input_shape], bias [R], rows {op index j: [R, *shape of op j's output]}: the rows
      as they reached each op, before its rule; unused outputs cost nothing under jit).
    """
    alphas = alphas or {}
    extra = extra or {}
    bias = jnp.zeros((a.shape[0],), a.dtype)
    rows = {}
    for j in range(k, -1, -1):
        op = view.ops[j]
        rows[j] = a
        l_in, u_in = input_bounds_of(bounds, j, lower, upper)
        a, term = rules_of(op).backward(op, a, l_in, u_in, alphas.get(j))
        if j in extra:
            a = a + extra[j]
        bias = bias + term
    return a, bias, rows


def concretize(a: jax.Array, bias: jax.Array, lower: jax.Array, upper: jax.Array) -> jax.Array:
    """min over the box of a · x + bias, per row. a: [R, *input_shape] -> [R]."""
    flat = a.reshape(a.shape[0], -1)
    mid, rad = ((upper + lower) / 2).reshape(-1), ((upper - lower) / 2).reshape(-1)
    hi = lax.Precision.HIGHEST
    return jnp.dot(flat, mid, precision=hi) - jnp.dot(jnp.abs(flat), rad, precision=hi) + bias


def backward_lower(
    view: L.LayerView,
    bounds: LayerBounds,
    k: int,
    a: jax.Array,
    lower: jax.Array,
    upper: jax.Array,
    alphas: Mapping[int, jax.Array] | None = None,
) -> jax.Array:
    """Lower bounds of a · z_k over the box, z_k the output of op k.

    Args:
      view: the network.
      bounds: bounds of the outputs of ops 0..k-1 (at least), used by the relaxations.
      k: op index.
      a: [R, *shape of op k's output] rows.
      lower, upper: [*input_shape] input box.
      alphas: optional ReLU lower slopes {relu op index: [R, *its input shape]} (alpha-CROWN);
        missing ReLUs use `default_alpha`.

    Returns:
      [R] lower bounds.
    """
    a_in, bias, _ = backward_pass(view, bounds, k, a, lower, upper, alphas)
    return concretize(a_in, bias, lower, upper)


# ----------------------------------------------------------------------------- driver


def _exact_by_interval(view: L.LayerView, k: int) -> bool:
    """True if op k's output is a single affine map of the box (interval bounds are exact)."""
    prefix = [rules_of(op) for op in view.ops[: k + 1]]
    mixing = sum(not r.box_exact for r in prefix)
    return all(r.linear is not None for r in prefix) and mixing <= 1


def refine_mask(view: L.LayerView, k: int, lower: jax.Array, upper: jax.Array) -> jax.Array | None:
    """Neurons of op k's output worth a backward pass, or None for no pass at all.

    Outputs of linear ops whose next op's relaxation depends on their bounds (its `refine` rule: a
    ReLU's unstable inputs, a MaxPool's inputs in undecided windows), and the logits (all), unless
    interval bounds are already exact there.
    """
    if not is_linear(view.ops[k]) or _exact_by_interval(view, k):
        return None
    if k == len(view.ops) - 1:
        return jnp.ones(lower.shape, bool)
    nxt = view.ops[k + 1]
    return rules_of(nxt).refine(nxt, lower, upper)


def _node_bounds(row_lower: Callable[[jax.Array], jax.Array], mask: jax.Array, chunk: int):
    """Bounds of the masked neurons of one node, `chunk` neurons per call of row_lower.

    Args:
      row_lower: rows [2 * chunk, *S] -> lower bounds [2 * chunk].
      mask: [*S] bool, neurons to bound.
      chunk: neurons per call (static).

    Returns:
      (lower, upper) [*S]; -inf / +inf where not masked.
    """
    shape, n = mask.shape, math.prod(mask.shape)

    def bound_ids(sel):
        e = jax.nn.one_hot(sel, n, dtype=jnp.float32).reshape(sel.shape[0], *shape)  # id n -> zero row
        return row_lower(jnp.concatenate([e, -e]))

    return masked_node_bounds(bound_ids, mask, chunk)


def refine_bounds(
    view: L.LayerView,
    lower: jax.Array,
    upper: jax.Array,
    base: LayerBounds,
    row_lower: RowLower,
    chunk: int,
    node_bounds: NodeBounds | None = None,
) -> LayerBounds:
    """Walks the ops: interval from the tightened bounds ∩ base, then `row_lower` where it matters.

    `node_bounds(bounds, k, mask)`, if given, may bound a node itself (returning (lower, upper)) or
    decline (None), e.g. patch mode for convolutional nodes.
    """
    out: list[tuple[jax.Array, jax.Array]] = []
    lo, hi = lower, upper
    for k, op in enumerate(view.ops):
        lo, hi = interval_op(op, lo, hi)
        lo, hi = jnp.maximum(lo, base[k][0]), jnp.minimum(hi, base[k][1])
        mask = refine_mask(view, k, lo, hi)
        if mask is not None:
            node = None if node_bounds is None else node_bounds(tuple(out), k, mask)
            if node is None:
                fn = functools.partial(row_lower, tuple(out), k)
                node = _node_bounds(fn, mask, chunk)
            node_lo, node_hi = node
            lo, hi = jnp.maximum(lo, node_lo), jnp.minimum(hi, node_hi)
        # Sound bounds from different computations can cross by float rounding; never leave an
        # empty interval behind (an infeasible MILP would read as "robust").
        lo, hi = jnp.minimum(lo, hi), jnp.maximum(lo, hi)
        out.append((lo, hi))
    return tuple(out)


# ----------------------------------------------------------------------------- public API


def crown_bounds(
    view: L.LayerView,
    lower: jax.Array,
    upper: jax.Array,
    *,
    base: LayerBounds | None = None,
    chunk: int = CHUNK,
    patches: bool = True,
) -> LayerBounds:
    """CROWN bounds of every op output over the box `[lower, upper]`.

    Pre-activations (outputs of affine ops feeding a ReLU or MaxPool) and the logits get backward
    linear bounds, intersected with `base` (interval bounds by default); other outputs are
    propagated by interval arithmetic from the tightened bounds.

    Args:
      view: the network.
      lower, upper: [*view.input_shape] input box.
      base: bounds to intersect with (e.g. from an earlier, cheaper method); interval if None.
      chunk: neurons per backward pass (static; memory ~ 2 * chunk * largest activation).
      patches: bound convolutional neurons in patch mode (`patches`: the backward pass cropped to
        each neuron's receptive field; same bounds up to float rounding, far cheaper).

    Returns:
      LayerBounds: (lower, upper) of the output of each op.

    References:
      Zhang et al. 2018 (CROWN).
    """
    if base is None:
        base = interval_bounds(view, lower, upper)

    def row_lower(bounds, k, a):
        return backward_lower(view, bounds, k, a, lower, upper)

    def node_bounds(bounds, k, mask):
        frames = P.patch_frames(view, k) if patches else None
        if frames is None:
            return None
        return P.patch_node_bounds(
            view, bounds, k, mask, lower, upper, frames, chunk=max(chunk, P.PATCH_CHUNK)
        )

    return refine_bounds(view, lower, upper, base, row_lower, chunk, node_bounds)


def interval_spec_lower(c: jax.Array, logit_bounds: tuple[jax.Array, jax.Array]) -> jax.Array:
    """Lower bounds [M] of c @ z from elementwise logit bounds. c: [M, K]."""
    lo, hi = logit_bounds
    return jnp.maximum(c, 0.0) @ lo.reshape(-1) + jnp.minimum(c, 0.0) @ hi.reshape(-1)


def crown_spec_lower(
    view: L.LayerView, lower: jax.Array, upper: jax.Array, c: jax.Array, *, bounds: LayerBounds
) -> jax.Array:
    """CROWN lower bounds of the specification c @ logits over the box.

    Args:
      view: the network.
      lower, upper: [*view.input_shape] input box.
      c: [M, K] specification rows (e.g. z_t - z_j as e_t - e_j).
      bounds: intermediate bounds (`interval_bounds`, `crown_bounds`, `alpha_crown_bounds`).

    Returns:
      [M] lower bounds, never looser than the interval bound from `bounds[-1]`.

    References:
      Zhang et al. 2018 (CROWN).
    """
    k = len(view.ops) - 1
    a = c.reshape(c.shape[0], *bounds[k][0].shape)
    return jnp.maximum(backward_lower(view, bounds, k, a, lower, upper), interval_spec_lower(c, bounds[k]))


def unstable_counts(view: L.LayerView, bounds: LayerBounds) -> tuple[int, ...]:
    """Number of unstable ReLUs (l < 0 < u on the ReLU's input) for each ReLU op, in order (host).

    "ReLU" is any op with an `unstable` rule (`lnjax.models.ops`)."""
    counts = []
    for k, op in enumerate(view.ops):
        unstable = rules_of(op).unstable
        if unstable is not None:
            if k == 0:
                raise ValueError(f"a {type(op).__name__} as the first op has no input bounds in LayerBounds")
            lo, hi = np.asarray(bounds[k - 1][0]), np.asarray(bounds[k - 1][1])
            counts.append(int(np.sum(np.asarray(unstable(lo, hi)))))
    return tuple(counts)
