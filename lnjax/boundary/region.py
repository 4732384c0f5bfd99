"""Region classification (Cao & Gong 2017): the majority vote of the point classifier over points drawn
uniformly from the L∞ box of radius τ around the input, clipped to the pixel range [0, 1].

At τ = 0 every sample is the input itself, so the region classifier equals the point classifier.
Reference settings (SPEC §3): τ = 0.3 on MNIST, 0.02 on CIFAR-10 (5.1 / 255), 100 samples.

References:
  Cao & Gong, Mitigating Evasion Attacks to Deep Neural Networks via Region-based Classification,
    ACSAC 2017.
  He, Li & Song, Decision Boundary Analysis of Adversarial Examples, ICLR 2018.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from lnjax.types import ApplyFn

SAMPLES = 100  # the reference's sample count


class RegionVotes(NamedTuple):
    """label: [B] int32, the class with the most votes (ties go to the lowest class index, as
    `argmax` of the counts); counts: [B, K] int32 votes per class (each row sums to `samples`)."""

    label: jax.Array
    counts: jax.Array


def _one(key, apply_fn, params, x0, tau, samples):
    # drawn flat and reshaped: the same distribution, and XLA compiles a 1-D threefry several times faster
    noise = jax.random.uniform(key, (samples * x0.size,), x0.dtype, minval=-tau, maxval=tau)
    noise = noise.reshape(samples, *x0.shape)
    logits = apply_fn(params, jnp.clip(x0[None] + noise, 0.0, 1.0))
    votes = jax.nn.one_hot(jnp.argmax(logits, axis=-1), logits.shape[-1], dtype=jnp.int32)
    counts = jnp.sum(votes, axis=0)
    return jnp.argmax(counts).astype(jnp.int32), counts


@functools.partial(jax.jit, static_argnames=("apply_fn", "samples"))
def _classify(key, params, x, tau, *, apply_fn, samples):
    keys = jax.random.split(key, x.shape[0])
    label, counts = jax.vmap(lambda k, xi: _one(k, apply_fn, params, xi, tau, samples))(keys, x)
    return RegionVotes(label=label, counts=counts)


class RegionClassifier(NamedTuple):
    """A region classifier with its settings; call it as `classify(key, apply_fn, params, x)`."""

    tau: float
    samples: int

    def __call__(self, key: jax.Array, apply_fn: ApplyFn, params: Any, x: jax.Array) -> RegionVotes:
        return _classify(key, params, x, jnp.float32(self.tau), apply_fn=apply_fn, samples=self.samples)

    @property
    def jitted(self) -> jax.stages.Wrapped:
        """The jitted function behind every region classifier (for compilation counts)."""
        return _classify


def make_region_classifier(*, tau: float, samples: int = SAMPLES) -> RegionClassifier:
    """Cao & Gong's region classifier.

    Args:
      tau: half-width of the L∞ box (pixel units of [0, 1]); 0 = the point classifier.
      samples: points drawn per input.

    Returns:
      A `RegionClassifier`: classify(key, apply_fn, params, x) -> RegionVotes, with x: [B, H, W, C] in
      [0, 1] and `apply_fn(params, x) -> logits [B, K]`. One jit: the samples of each example are one
      batch of the model, vmapped over the examples; example i draws its samples from the i-th split of
      `key`, so results reproduce from the key. `apply_fn` and `samples` are static, params, x and τ are
      traced: one compilation per model function, sample count and batch shape, shared by every
      classifier made here. `classify.jitted` is the jitted function (for compilation counts).
    """
    if tau < 0 or samples < 1:
        raise ValueError(f"need tau ≥ 0 and samples ≥ 1, got tau={tau}, samples={samples}")
    return RegionClassifier(float(tau), int(samples))
