"""Fixed random orthonormal directions, scaled to a given RMS: the one direction helper.

Used by OPTMARGIN's noise copies (`cw.orthogonal_noise`) and the boundary distances
(`boundary.random_directions`). The directions are the columns of Q of a QR factorisation of a
d × n standard Gaussian matrix (d = the number of pixels), times rms · √d: each has RMS `rms`
(‖v‖₂ = rms · √d), and distinct directions are orthogonal.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def random_directions(
    key: jax.Array, shape: tuple[int, ...], n: int, *, rms: float = 1.0, antipodal: bool = False
) -> jax.Array:
    """[n, *shape] float32 orthogonal random directions of RMS `rms` ([2n, ...] with `antipodal`:
    the negatives after the originals).

    Args:
      key: a typed PRNG key.
      shape: the shape of one input, e.g. (28, 28, 1).
      n: directions, 1 ≤ n ≤ prod(shape).
      rms: the root mean square of each direction over its pixels.
      antipodal: also return the negatives.
    """
    d = math.prod(shape)
    if not 1 <= n <= d:
        raise ValueError(f"need 1 ≤ n ≤ {d} (the number of pixels) orthogonal directions, got {n}")
    gaussian = jax.random.normal(key, (d * n,), jnp.float32).reshape(d, n)  # flat: compiles faster
    q, _ = jnp.linalg.qr(gaussian)
    v = (q.T * (rms * jnp.sqrt(jnp.float32(d)))).reshape(n, *shape)
    return jnp.concatenate([v, -v]) if antipodal else v
