"""Deterministic batch order from a key: a resumed run sees exactly the batches it would have seen."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lnjax.types import PRNGKey


def epoch_permutation(key: PRNGKey, n: int) -> jax.Array:
    """A random permutation of range(n).

    Args:
      key: a typed key (`jax.random.key`).
      n: the number of examples.

    Returns:
      int32 [n].
    """
    return jax.random.permutation(key, jnp.arange(n, dtype=jnp.int32))


def batch_indices(key: PRNGKey, n: int, batch_size: int, epoch: int) -> jax.Array:
    """The example indices of every batch of one epoch; the last partial batch is dropped.

    The order depends only on (key, epoch): it uses `fold_in(key, epoch)`, so epoch e of a resumed run
    equals epoch e of an uninterrupted one.

    Args:
      key: the run's data key (typed).
      n: the number of examples.
      batch_size: examples per batch, 1 <= batch_size <= n.
      epoch: the epoch number (>= 0).

    Returns:
      int32 [n // batch_size, batch_size]; row s is step s of the epoch.
    """
    if not 1 <= batch_size <= n:
        raise ValueError(f"batch_size must be in [1, n={n}], got {batch_size}")
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    perm = epoch_permutation(jax.random.fold_in(key, epoch), n)
    num_batches = n // batch_size
    return perm[: num_batches * batch_size].reshape(num_batches, batch_size)
