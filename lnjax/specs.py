"""Output properties ("specs") of a classifier, as a margin and as linear rows, and the attacks'
per-label margins: the one place every margin of lnjax is defined.

Every spec is the same shape of object: with logits z: [K], rows C: [M, K] and offsets c0: [M],
let d = C z + c0 (one value per row). The margin is the k-th smallest entry of d, and the property
holds iff the margin is > 0:

- `Argmax(t)`:       d_j = z_t − z_j (j ≠ t), k = 1:    z_t > z_j for every j ≠ t.
- `TopK(t, k)`:      d_j = z_t − z_j (j ≠ t), k = k:    fewer than k competitors have z_j ≥ z_t,
                     i.e. z_t > (k-th largest z_j over j ≠ t) (ties count against the target).
- `Threshold(t, τ)`: d = z_t − τ, k = 1:                z_t > τ (τ = 0: sigmoid(z_t) > 0.5).

This single form serves three consumers: the JAX margin (attacks, gradients, confirming
counterexamples), linear bounds (a lower bound on every row gives a lower bound on the margin,
since the k-th smallest is monotone in each entry) and the MILP (minimise the k-th smallest row
with one binary per competing row — one query for top-k, not one per pair).

Attacks batch examples with different labels under one jit, so their margins (`MarginFn`:
`(logits [K], label) -> scalar`, positive = the model is still right) take the label as a traced
array: `argmax_margin`, `make_topk_margin(k)`, `make_threshold_margin(τ)` are the same quantities
as `Argmax`, `TopK` and `Threshold` (a test checks it), and `targeted_margin` is the targeted one.

References:
  Tjeng, Xiao & Tedrake, Evaluating Robustness of Neural Networks with Mixed Integer Programming,
  ICLR 2019 (MIPVerify).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lnjax.types import MarginFn


class SpecRows(NamedTuple):
    """The linear form of a spec: margin = k-th smallest of (c @ z + offset).

    Attributes:
      c: [M, K] float32 rows over the logits.
      offset: [M] float32 constants added to the rows.
      k: which order statistic (1 = the minimum).
    """

    c: np.ndarray
    offset: np.ndarray
    k: int


def kth_smallest(values: jax.Array, k: int) -> jax.Array:
    """The k-th smallest entry (k ≥ 1, static) along the last axis. values: [..., M] -> [...]."""
    if k == 1:
        return jnp.min(values, axis=-1)
    return jnp.sort(values, axis=-1)[..., k - 1]


def margin_from_rows(rows: SpecRows, logits: jax.Array) -> jax.Array:
    """The spec margin from its rows. logits: [..., K] -> [...]; positive = the property holds."""
    d = jnp.einsum("mk,...k->...m", jnp.asarray(rows.c), logits) + jnp.asarray(rows.offset)
    return kth_smallest(d, rows.k)


def kth_lower(values: np.ndarray | jax.Array, k: int) -> np.ndarray:
    """The k-th smallest of lower bounds along the last axis, a NaN counted as −inf (a missing bound
    proves nothing: `np.sort` puts NaN last, where it would let the finite rows decide)."""
    v = np.asarray(values, np.float64)
    return np.sort(np.where(np.isnan(v), -np.inf, v), axis=-1)[..., k - 1]


def margin_lower_bound(rows: SpecRows, row_lower: np.ndarray | jax.Array) -> float:
    """A lower bound on the margin from lower bounds of `c @ z` (without the offset). row_lower: [M]."""
    return float(kth_lower(np.asarray(row_lower, np.float64) + rows.offset.astype(np.float64), rows.k))


def _check_target(target: int, num_classes: int) -> None:
    if not 0 <= target < num_classes:
        raise ValueError(f"target {target} is not a class index in [0, {num_classes})")


def _competitor_rows(target: int, num_classes: int) -> np.ndarray:
    eye = np.eye(num_classes, dtype=np.float32)
    others = [j for j in range(num_classes) if j != target]
    return eye[target][None, :] - eye[others]


@dataclasses.dataclass(frozen=True)
class TopK:
    """Multi-label top-k: the target stays among the k largest logits.

    Holds iff fewer than k competitors j ≠ t have z_j ≥ z_t. margin = z_t − (k-th largest z_j, j ≠ t).

    Attributes:
      target: the class index t.
      k: number of labels (2 for DOUBLE-MNIST); 1 ≤ k < number of classes.
    """

    target: int
    k: int = 2

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"TopK needs k ≥ 1, got k={self.k}")
        if self.target < 0:
            raise ValueError(f"target must be a class index ≥ 0, got {self.target}")

    @property
    def name(self) -> str:
        return f"top{self.k}"

    def rows(self, num_classes: int) -> SpecRows:
        """d_j = z_t − z_j for the K − 1 competitors; margin = k-th smallest d_j."""
        _check_target(self.target, num_classes)
        if self.k >= num_classes:
            raise ValueError(
                f"TopK k={self.k} must be smaller than the number of classes ({num_classes}): "
                "with k ≥ K every class is always among the top k"
            )
        c = _competitor_rows(self.target, num_classes)
        return SpecRows(c=c, offset=np.zeros(len(c), np.float32), k=self.k)

    def margin(self, logits: jax.Array) -> jax.Array:
        """logits: [..., K] -> [...] = z_t − k-th largest z_j over j ≠ t."""
        return margin_from_rows(self.rows(logits.shape[-1]), logits)


@dataclasses.dataclass(frozen=True)
class Argmax:
    """Single-label: the target is the strict argmax. margin = z_t − max_{j≠t} z_j.

    Attributes:
      target: the class index t.
    """

    target: int

    def __post_init__(self) -> None:
        if self.target < 0:
            raise ValueError(f"target must be a class index ≥ 0, got {self.target}")

    @property
    def name(self) -> str:
        return "argmax"

    def rows(self, num_classes: int) -> SpecRows:
        """d_j = z_t − z_j; margin = min_j d_j."""
        _check_target(self.target, num_classes)
        if num_classes < 2:
            raise ValueError("Argmax needs at least 2 classes")
        c = _competitor_rows(self.target, num_classes)
        return SpecRows(c=c, offset=np.zeros(len(c), np.float32), k=1)

    def margin(self, logits: jax.Array) -> jax.Array:
        """logits: [..., K] -> [...]."""
        return margin_from_rows(self.rows(logits.shape[-1]), logits)


@dataclasses.dataclass(frozen=True)
class Threshold:
    """Multi-label threshold: z_t > τ (τ = 0: the sigmoid output exceeds 0.5). margin = z_t − τ.

    Attributes:
      target: the class index t.
      tau: the logit threshold.
    """

    target: int
    tau: float = 0.0

    def __post_init__(self) -> None:
        if self.target < 0:
            raise ValueError(f"target must be a class index ≥ 0, got {self.target}")

    @property
    def name(self) -> str:
        return "threshold"

    def rows(self, num_classes: int) -> SpecRows:
        """One row: d = z_t − τ."""
        _check_target(self.target, num_classes)
        c = np.eye(num_classes, dtype=np.float32)[self.target][None, :]
        return SpecRows(c=c, offset=np.array([-self.tau], np.float32), k=1)

    def margin(self, logits: jax.Array) -> jax.Array:
        """logits: [..., K] -> [...]."""
        return margin_from_rows(self.rows(logits.shape[-1]), logits)


@dataclasses.dataclass(frozen=True, eq=False)
class Linear:
    """A general linear property: the k-th smallest of the rows c_i · z + d_i is > 0 (its margin).

    k = 1 (default): every row holds. The form of a VNN-LIB output property whose counterexample
    region is a disjunction of single linear constraints ("violated iff some c_i · z + d_i ≤ 0", e.g.
    argmax robustness written as `(or (and (>= Y_j Y_t)) ...)`).
    k = M: some row holds (margin = the largest row). The form of a property whose counterexample
    region is one conjunction ("violated iff every c_i · z + d_i ≤ 0", e.g. ACAS Xu property 3, "Y_0
    is minimal": Y_0 ≤ Y_j for every j). `lnjax.io.vnnlib.to_spec` builds both.

    Attributes:
      c: [M, K] rows over the logits; offset: [M] constants (float32 copies are kept).
      k: the order statistic, 1 ≤ k ≤ M.
    """

    c: np.ndarray
    offset: np.ndarray
    k: int = 1

    def __post_init__(self) -> None:
        c = np.asarray(self.c, np.float32)
        off = np.asarray(self.offset, np.float32)
        if c.ndim != 2 or off.shape != (c.shape[0],) or c.shape[0] < 1:
            raise ValueError(
                f"Linear spec needs c [M, K] and offset [M] with M ≥ 1, got {c.shape} and {off.shape}"
            )
        if not (np.all(np.isfinite(c)) and np.all(np.isfinite(off))):
            raise ValueError("Linear spec rows must be finite")
        k = self.k
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= c.shape[0]:
            raise ValueError(f"Linear spec k = {k!r}; expected an integer in [1, {c.shape[0]}] (the rows)")
        object.__setattr__(self, "c", c)
        object.__setattr__(self, "offset", off)
        object.__setattr__(self, "k", int(k))

    @property
    def name(self) -> str:
        return "linear"

    def rows(self, num_classes: int) -> SpecRows:
        """The rows as given; margin = the k-th smallest c_i · z + d_i."""
        if self.c.shape[1] != num_classes:
            raise ValueError(
                f"Linear spec rows have {self.c.shape[1]} columns; the network has {num_classes} outputs"
            )
        return SpecRows(c=self.c, offset=self.offset, k=self.k)

    def margin(self, logits: jax.Array) -> jax.Array:
        """logits: [..., K] -> [...]."""
        return margin_from_rows(self.rows(logits.shape[-1]), logits)


Spec = TopK | Argmax | Threshold | Linear


# ---------------------------------------------------------------------------- attack margins per label


def argmax_margin(logits: jax.Array, label: jax.Array) -> jax.Array:
    """Single-label: z_y − max_{j≠y} z_j. logits: [K], label: int scalar."""
    others = jnp.where(jnp.arange(logits.shape[-1]) == label, -jnp.inf, logits)
    return logits[label] - jnp.max(others)


def make_topk_margin(k: int) -> MarginFn:
    """Multi-label: z_t − (k-th largest z_j, j ≠ t); label t an int scalar (the target label)."""

    def margin(logits: jax.Array, label: jax.Array) -> jax.Array:
        others = jnp.where(jnp.arange(logits.shape[-1]) == label, -jnp.inf, logits)
        return logits[label] - jax.lax.top_k(others, k)[0][k - 1]

    return margin


def make_threshold_margin(tau: float = 0.0) -> MarginFn:
    """Multi-label: z_t − τ (τ = 0: sigmoid(z_t) > 0.5)."""
    return lambda logits, label: logits[label] - tau


def targeted_margin(logits: jax.Array, target: jax.Array) -> jax.Array:
    """Targeted attacks: max_{j≠t} z_j − z_t (positive = the target class t is not yet the argmax)."""
    return -argmax_margin(logits, target)
