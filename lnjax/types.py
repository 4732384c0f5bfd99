"""Shared type aliases and protocols."""

from __future__ import annotations

from typing import Any, Protocol

import jax

PRNGKey = jax.Array  # a typed key from `jax.random.key`
Params = Any  # a pytree of arrays
Array = jax.Array


class ApplyFn(Protocol):
    """`apply_fn(params, x) -> logits`, x: [B, H, W, C] in [0, 1], logits: [B, K]."""

    def __call__(self, params: Params, x: Array) -> Array: ...


class LossFn(Protocol):
    """`loss_fn(logits, labels) -> [B]` per-example loss."""

    def __call__(self, logits: Array, labels: Array) -> Array: ...


class AttackFn(Protocol):
    """`attack(key, apply_fn, params, x, y) -> x_adv` with x_adv inside the attack's ball and [0, 1]."""

    def __call__(self, key: PRNGKey, apply_fn: ApplyFn, params: Params, x: Array, y: Array) -> Array: ...
