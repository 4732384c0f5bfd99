"""The chunked loop shared by every node-bounding pass (full and patch mode, CROWN and α-CROWN)."""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax


def masked_node_bounds(
    bound_ids: Callable[[jax.Array], jax.Array], mask: jax.Array, chunk: int
) -> tuple[jax.Array, jax.Array]:
    """Bounds of the masked neurons of one node, `chunk` neurons per call, in a `lax` loop.

    Args:
      bound_ids: ids [chunk] (flat indices into the node; n = mask.size marks padding) -> [2 * chunk]
        lower bounds of the rows (e_id; −e_id), i.e. the neurons' lower bounds then minus their upper
        bounds.
      mask: [*S] bool, neurons to bound.
      chunk: neurons per call (static).

    Returns:
      (lower, upper) [*S]; −inf / +inf where not masked.
    """
    shape, n = mask.shape, math.prod(mask.shape)
    chunk = min(chunk, n)
    n_pad = -(-n // chunk) * chunk
    ids = jnp.nonzero(mask.reshape(-1), size=n_pad, fill_value=n)[0]
    n_chunks = (jnp.sum(mask) + chunk - 1) // chunk

    def body(c, carry):
        lo, hi = carry
        sel = lax.dynamic_slice(ids, (c * chunk,), (chunk,))
        res = bound_ids(sel)
        lo = lo.at[sel].set(res[:chunk], mode="drop")
        hi = hi.at[sel].set(-res[chunk:], mode="drop")
        return lo, hi

    init = (jnp.full((n,), -jnp.inf), jnp.full((n,), jnp.inf))
    lo, hi = lax.fori_loop(0, n_chunks, body, init)
    return lo.reshape(shape), hi.reshape(shape)
