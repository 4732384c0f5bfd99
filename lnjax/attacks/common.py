"""What every attack returns, and the norms it is measured in."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from lnjax.types import ApplyFn, Params


class AttackResult(NamedTuple):
    """x_adv: [B, ...] inside the pixel box (and the attack's ball); success: [B] bool, confirmed
    by the model on x_adv itself; margin: [B] the margin at x_adv (≤ 0 = misclassified)."""

    x_adv: jax.Array
    success: jax.Array
    margin: jax.Array


def per_example(apply_fn: ApplyFn, params: Params) -> Callable[[jax.Array], jax.Array]:
    """logits of one example: x [...] -> [K]."""
    return lambda x: apply_fn(params, x[None])[0]


def vmap_chunked(fn: Callable[..., Any], args: tuple, chunk: int | None) -> Any:
    """`jax.vmap(fn)(*args)` over the leading axis, run as sequential chunks of at most `chunk`
    examples (`lax.map` with `batch_size`; None or ≥ the batch: one vmap). The chunks are equal
    where they divide the batch, since a remainder chunk compiles a second copy of `fn`."""
    b = jax.tree.leaves(args)[0].shape[0]
    if chunk is None or chunk >= b:
        return jax.vmap(fn)(*args)
    size = -(-b // -(-b // chunk))
    return jax.lax.map(lambda a: fn(*a), args, batch_size=size)


def rms(delta: jax.Array) -> jax.Array:
    """Root mean square over the pixels of each example. delta: [B, ...] -> [B]."""
    return jnp.sqrt(jnp.mean(jnp.square(delta.reshape(delta.shape[0], -1)), axis=-1))


def l2(delta: jax.Array) -> jax.Array:
    """Euclidean norm over the pixels of each example. delta: [B, ...] -> [B]."""
    return jnp.linalg.norm(delta.reshape(delta.shape[0], -1), axis=-1)


def linf(delta: jax.Array) -> jax.Array:
    """Largest absolute entry of each example. delta: [B, ...] -> [B]."""
    return jnp.max(jnp.abs(delta.reshape(delta.shape[0], -1)), axis=-1)


def summarize(x: jax.Array, result: AttackResult) -> dict[str, float]:
    """Success rate and mean RMS / L2 / L∞ distortion over the successful examples (NaN if none)."""
    delta = result.x_adv - x
    ok = result.success
    n_ok = jnp.sum(ok)

    def mean_ok(v: jax.Array) -> float:
        return float(jnp.where(n_ok > 0, jnp.sum(jnp.where(ok, v, 0.0)) / jnp.maximum(n_ok, 1), jnp.nan))

    return {
        "n": int(x.shape[0]),
        "success_rate": float(jnp.mean(ok)),
        "rms": mean_ok(rms(delta)),
        "l2": mean_ok(l2(delta)),
        "linf": mean_ok(linf(delta)),
    }
