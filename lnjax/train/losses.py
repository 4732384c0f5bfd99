"""Per-example losses and evaluation metrics."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def sigmoid_bce(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Multi-label loss. logits, labels: [B, K] (labels multi-hot in {0, 1}) -> [B] (mean over K)."""
    return optax.sigmoid_binary_cross_entropy(logits, labels).mean(axis=-1)


def softmax_ce(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Single-label loss. logits: [B, K], labels: [B] int -> [B]."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


LOSSES = {"multilabel": sigmoid_bce, "single": softmax_ce}


def topk_exact_set(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
    """1.0 where the k largest logits are exactly the true label set. logits, labels: [B, K] -> [B]."""
    _, idx = jax.lax.top_k(logits, k)
    predicted = jnp.zeros_like(labels).at[jnp.arange(labels.shape[0])[:, None], idx].set(1.0)
    return jnp.all(predicted == labels, axis=-1).astype(jnp.float32)


def per_label_accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Share of labels right when thresholding sigmoid at 0.5. [B, K] -> [B]."""
    return ((logits > 0) == (labels > 0.5)).astype(jnp.float32).mean(axis=-1)


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Single-label accuracy. logits: [B, K], labels: [B] -> [B]."""
    return (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)


def correct(logits: jax.Array, labels: jax.Array, *, task: str, k: int) -> jax.Array:
    """The headline per-example correctness: top-k exact set (multi-label) or accuracy. -> [B]."""
    if task == "multilabel":
        return topk_exact_set(logits, labels, k)
    return accuracy(logits, labels)
