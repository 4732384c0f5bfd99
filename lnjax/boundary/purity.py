"""Adjacent-class purity: how much the boundaries around an input belong to a few classes.

For an input with boundary hits along some of its directions, let n_c be the number of directions whose
adjacent class (the prediction at the first change, `BoundaryDistances.adjacent`) is c, sorted so that
n_(1) ≥ n_(2) ≥ … ≥ n_(K), and H = Σ_c n_c the number of directions that hit a boundary at all. The
purity of the top k classes is

    P_k = (n_(1) + … + n_(k)) / H,   k = 1 … K,

the largest share of the hitting directions that lead to one of k classes ("the largest cumulative
fraction of random directions which encounter a boundary adjacent to one of the k classes", seed 003).
P is non-decreasing in k and P_K = 1 (the center class itself is never adjacent, so P_{K−1} = 1
already). Directions without a boundary (adjacent −1) are left out of both counts; an input with no
hit at all has P = 0 for every k — the reference's convention (`max(1, H)` in the denominator), which
the detector reads as "no boundary in reach". Adversarial examples tend to be pure (most directions
lead back to the original class); the detector uses P_1, P_2, P_3.

References:
  He, Li & Song, Decision Boundary Analysis of Adversarial Examples, ICLR 2018.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def class_counts(adjacent: jax.Array, num_classes: int) -> jax.Array:
    """Directions per adjacent class. adjacent: [..., D] int (−1 = no boundary) -> [..., K] int32."""
    return jnp.sum(jax.nn.one_hot(adjacent, num_classes, dtype=jnp.int32), axis=-2)


def adjacent_purity(adjacent: jax.Array, num_classes: int) -> jax.Array:
    """The purity curve P_1 … P_K of every input (see the module docstring).

    Args:
      adjacent: [..., D] int, the adjacent class per direction (−1 where no boundary was found).
      num_classes: K.

    Returns:
      [..., K] float32, non-decreasing in k, ending at 1 (all 0 for an input without any hit).
    """
    counts = class_counts(adjacent, num_classes)
    top = -jnp.sort(-counts, axis=-1)
    hits = jnp.sum(counts, axis=-1, keepdims=True)
    return (jnp.cumsum(top, axis=-1) / jnp.maximum(hits, 1)).astype(jnp.float32)
