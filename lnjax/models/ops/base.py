"""The rule table: every op type registers, in its own module, everything the rest of lnjax does with it.

jax_verify's primitive -> rule idea over our explicit layer view: `RULES` maps an op class to its
`OpRules`; interval and CROWN bounds, α-CROWN, patch mode, the MILP network and encoder, the
brute-force reference, the ReLU-stability loss and the layer view itself look an op up with
`rules_of(op)` and call what they need, so none of them names an op type. Adding an op is one
module (the op dataclass, its Flax spec, its `OpRules`, `register`) plus its tests; see BUILD.md.

Contract (shapes per example; `a` are rows [R, *shape]):
- `apply(op, x) -> y` — the op itself.
- `interval(op, lower, upper) -> (lower, upper)` — sound elementwise bounds of the output.
- `backward(op, a, l_in, u_in, alpha) -> (a_in, bias [R])` — CROWN: rows on the output to rows
  on the input with `a · y >= a_in · x + bias` for every x in [l_in, u_in]; exact for linear ops
  (through the transpose of the linear part), a linear relaxation for nonlinear ones. `alpha`
  are optimisable lower slopes (only ops with `alpha_init`).
- `linear(op, x)` — the linear part (no bias) of a linear op; None for nonlinear ops. Linear ops are
  folded into sparse matrices by the MILP and propagated exactly by CROWN.
- `box_exact` — the op maps a box onto a box exactly (reindexing: Flatten), so interval arithmetic
  after one affine op stays exact through it.
- `reshape` — the op is a row-major reshape of its input (Flatten): a box maps through it and back
  by reshaping.
- `refine(op, l_in, u_in) -> mask | None` — which of its input neurons are worth a CROWN pass (their
  bounds shape this op's relaxation); None: none.
- `unstable(l_in, u_in) -> mask` — ReLU-like ops: neurons whose phase is undecided (counted by
  `unstable_counts`, penalised by the RS loss); None otherwise.
- `alpha_init(l_in, u_in) -> alpha` — α-CROWN's starting slopes; None: nothing to optimise.
- `patch` — `PatchRules` if CROWN's patch mode can cross the op, else None.
- `clip(op, lower, upper, sign) -> (lower, upper)` — affine ops: the input box shrunk to (a box
  around) the points where every output neuron n with sign s_n ≠ 0 has s_n·y_n ≥ 0 (ReLU split
  phases as half-spaces of the input: branch-and-bound's domain clipping); None: not available.
- `milp` — `MilpRules`: linear ops give a sparse matrix, nonlinear ops a host layer and its encoding
  into the MILP encoder passed in (so op modules never import `lnjax.verify`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

Array = jax.Array
Shape = tuple[int, ...]
Bounds = tuple[jax.Array, jax.Array]


class MilpEncoder(Protocol):
    """What an op's MILP encoding may do to the model being built (`lnjax.verify.milp.encoding._Encoder`)."""

    @property
    def ncols(self) -> int: ...

    def add_columns(self, lower: np.ndarray, upper: np.ndarray, binary: bool = False) -> np.ndarray: ...

    def resize(self, a: sp.csr_matrix) -> sp.csr_matrix: ...

    def add_rows(self, a: Any, rhs: np.ndarray, sense: str) -> None: ...


class MilpOptionsLike(Protocol):
    """The encoding options an op reads (`lnjax.verify.milp.MilpOptions`)."""

    @property
    def inline_max_terms(self) -> int: ...


class MilpRules(NamedTuple):
    """How the MILP sees an op (host side: numpy / scipy, float64).

    Linear ops set `matrix(op, in_shape) -> (w | None, b | None, out_shape)`: w a CSR matrix over the
    row-major flattened input (None: a pure reshape), b [n_out] float64 (None: no offset).
    Nonlinear ops set `layer(op, in_shape) -> (data, out_shape)` (host data, picklable),
    `forward(data, v) -> v` (float64 evaluation over flat vectors), and
    `encode(enc, a, b, raw, lo, hi, data, options) -> (a, b, n_unstable)`: the input values are the
    sparse rows a @ columns + b; raw are the input bounds as given, lo / hi the widened ones used in
    big-M coefficients; returns the output rows. `lp_tighten`: LP tightening of its input bounds helps.
    """

    matrix: Callable[[Any, Shape], tuple[Any, np.ndarray | None, Shape]] | None = None
    layer: Callable[[Any, Shape], tuple[Any, Shape]] | None = None
    forward: Callable[[Any, np.ndarray], np.ndarray] | None = None
    encode: Callable[..., tuple[sp.csr_matrix, np.ndarray, int]] | None = None
    lp_tighten: bool = False


class PatchRules(NamedTuple):
    """How CROWN's patch mode crosses an op (rows are patches [R, ph, pw, C] at offsets [R, 2]).

    - `grow(op, patch) -> patch`: the input patch an output patch depends on.
    - `context(op, offsets, in_bounds, patch_in, frame_in) -> (offsets_in, entry)`: what the backward
      step reads, gathered once outside optimisation loops; in_bounds are the op's input bounds.
    - `matrix(op, patch) -> [P_in, P_out] | None`: an optional dense form of the step (BLAS).
    - `backward(op, a, entry, alpha, matrix) -> (a_in, bias [R])`: `OpRules.backward` on patches.
    - `alpha_init(entry) -> alpha | None`: α-CROWN's starting slopes at the patch.
    """

    grow: Callable[[Any, tuple[int, int]], tuple[int, int]]
    context: Callable[[Any, Array, Bounds, tuple[int, int], tuple[int, ...]], tuple[Array, Any]]
    backward: Callable[[Any, Array, Any, Array | None, Array | None], tuple[Array, Array]]
    matrix: Callable[[Any, tuple[int, int]], Array | None] = lambda op, patch: None
    alpha_init: Callable[[Any], Array | None] = lambda entry: None


class OpRules(NamedTuple):
    """Everything lnjax does with one op type (see the module docstring for the contract)."""

    apply: Callable[[Any, Array], Array]
    interval: Callable[[Any, Array, Array], Bounds]
    backward: Callable[[Any, Array, Array, Array, Array | None], tuple[Array, Array]]
    milp: MilpRules
    linear: Callable[[Any, Array], Array] | None = None
    box_exact: bool = False
    reshape: bool = False
    refine: Callable[[Any, Array, Array], Array | None] = lambda op, lower, upper: None
    unstable: Callable[[Any, Any], Any] | None = None  # on jax or numpy arrays
    alpha_init: Callable[[Array, Array], Array] | None = None
    patch: PatchRules | None = None
    clip: Callable[[Any, Array, Array, Array], Bounds] | None = None


RULES: dict[type, OpRules] = {}
"""Op class -> its rules. Filled by the op modules at import (`register`)."""


def register(op_type: type, rules: OpRules) -> None:
    """Registers an op type's rules (once, from the op's own module)."""
    if op_type in RULES:
        raise ValueError(f"op {op_type.__name__} is registered twice")
    RULES[op_type] = rules


def rules_of(op: Any) -> OpRules:
    """The rules of an op; a clear error for an op type no module registered."""
    try:
        return RULES[type(op)]
    except KeyError:
        known = ", ".join(t.__name__ for t in RULES)
        raise TypeError(f"unknown op {type(op).__name__}; expected one of {known}") from None


def is_linear(op: Any) -> bool:
    """True for ops with a linear part (affine: conv, dense, flatten, average pooling)."""
    return rules_of(op).linear is not None


# ----------------------------------------------------------------------------- shared rule parts


def monotone_interval(op: Any, lower: Array, upper: Array) -> Bounds:
    """Interval rule of a monotone non-decreasing op (ReLU, pooling, reshapes): apply to each end."""
    apply = rules_of(op).apply
    return apply(op, lower), apply(op, upper)


def affine_interval(op: Any, lower: Array, upper: Array) -> Bounds:
    """Interval rule of an affine op with a `kernel` (centre/radius form: exact for one affine map)."""
    rules = rules_of(op)
    assert rules.linear is not None
    mid, rad = (upper + lower) / 2, (upper - lower) / 2
    out_mid = rules.apply(op, mid)
    out_rad = rules.linear(op.replace(kernel=jnp.abs(op.kernel)), rad)
    return out_mid - out_rad, out_mid + out_rad


CLIP_SLACK = 1e-5
"""Relative widening of each half-space's reach in `clip_by_halfspaces` (float32 rounding of the
reach and of the division: the clipped box stays a superset of the exact one)."""


def halfspace_reach(op: Any, lower: Array, upper: Array, sign: Array) -> Array:
    """max over the box of s_n·y_n for each output neuron of an affine op (exact: interval bounds of
    one affine map), widened by `CLIP_SLACK` × the magnitude of its terms (Σ |w| |x| + |b|)."""
    rules = rules_of(op)
    assert rules.linear is not None
    lo, hi = affine_interval(op, lower, upper)
    size = rules.linear(op.replace(kernel=jnp.abs(op.kernel)), jnp.maximum(jnp.abs(lower), jnp.abs(upper)))
    return jnp.where(sign > 0, hi, -lo) + CLIP_SLACK * (size + jnp.abs(op.bias) + jnp.abs(lo) + jnp.abs(hi))


def clip_by_halfspaces(a: Array, reach: Array, lower: Array, upper: Array) -> Bounds:
    """Coordinate bounds implied by half-spaces Σ_i a_i x_i + b ≥ 0 over a box (domain clipping).

    With R = max over the box of Σ_i a_i x_i + b (`reach`), the half-space holds only where, for each
    coordinate i, a_i x_i ≥ a_i x_i* − R (x_i* the maximising corner): x_i ≥ u_i − R / a_i for a_i > 0,
    x_i ≤ l_i − R / a_i for a_i < 0. The last axis of `a` / `reach` runs over half-spaces and is
    reduced (max of the lower, min of the upper candidates); the others broadcast with `lower`,
    `upper` [..., 1]. Returns (lower, upper) candidates [...]: −inf / +inf where no half-space binds.
    R < 0 (an empty intersection) gives lower > upper.

    References:
      Zhou et al., Clip-and-Verify: Linear Constraint-Driven Domain Clipping for Accelerating Neural
        Network Verification, NeurIPS 2025 (alpha-beta-CROWN's complete_verifier/domain_clipper.py,
        read, not copied): the same per-coordinate bound from one constraint and a box.
    """
    tiny = 1e-12
    pos, neg = a > tiny, a < -tiny
    t = reach / jnp.where(pos | neg, a, 1.0)
    lo = jnp.max(jnp.where(pos, upper - t, -jnp.inf), axis=-1)
    hi = jnp.min(jnp.where(neg, lower - t, jnp.inf), axis=-1)
    return lo, hi


def row_sum(x: Array) -> Array:
    """[R, ...] -> [R]."""
    return jnp.sum(x.reshape(x.shape[0], -1), axis=1)


def vjp_transpose(linear: Callable[[Array], Array], in_shape: Sequence[int], a: Array) -> Array:
    """Rows a: [R, *out] -> [R, *in_shape] through the transpose of `linear` (by `jax.vjp`)."""
    _, vjp = jax.vjp(linear, jnp.zeros(tuple(in_shape), a.dtype))
    return jax.vmap(lambda ai: vjp(ai)[0])(a)


def no_bias(a: Array) -> Array:
    """The zero bias [R] of an exact backward step without offset."""
    return jnp.zeros((a.shape[0],), a.dtype)


def relaxation_backward(a: Array, lo_slope: Array, up_slope: Array, up_bias: Array) -> tuple[Array, Array]:
    """CROWN through an elementwise relaxation lo_slope·x <= y <= up_slope·x + up_bias.

    Args:
      a: [R, *S] rows; slopes and bias broadcastable against them.

    Returns:
      (rows on x, bias [R]) of the lower bound of a · y.
    """
    a_pos, a_neg = jnp.maximum(a, 0.0), jnp.minimum(a, 0.0)
    return a_pos * lo_slope + a_neg * up_slope, row_sum(a_neg * up_bias)
