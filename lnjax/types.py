"""Shared type aliases and protocols: what the code really passes around.

The protocols name values made by one room and called by another: a model's `ApplyFn`, a loss, an
attack (`attacks.make_*`), a margin, and the verifier (`verify.make_verifier`), the oracle of the
neighborhood optimizer and its baseline.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import jax
from jax.typing import ArrayLike

if TYPE_CHECKING:
    from lnjax.attacks.common import AttackResult
    from lnjax.specs import Spec
    from lnjax.verify.verdict import Verdict

PRNGKey = jax.Array  # a typed key from `jax.random.key`
Params = Any  # a pytree of arrays
Array = jax.Array
MarginFn = Callable[[Array, Array], Array]  # (logits [K], label) -> scalar; positive = still right


class ApplyFn(Protocol):
    """`apply_fn(params, x) -> logits`, x: [B, H, W, C] in [0, 1], logits: [B, K]."""

    def __call__(self, params: Params, x: Array, /) -> Array: ...


class LossFn(Protocol):
    """`loss_fn(logits, labels) -> [B]` per-example loss."""

    def __call__(self, logits: Array, labels: Array, /) -> Array: ...


class AttackFn(Protocol):
    """`attack(key, apply_fn, params, x, y) -> AttackResult`: x [B, ...] in [0, 1], y [B] labels;
    x_adv inside the attack's ball and [0, 1], success confirmed by the model at x_adv."""

    def __call__(
        self, key: PRNGKey, apply_fn: ApplyFn, params: Params, x: Array, y: Array
    ) -> AttackResult: ...


class VerifyFn(Protocol):
    """`verify(key, x_lower, x_upper, spec) -> Verdict` over the box [x_lower, x_upper] (one input's
    shape, clipped to [0, 1]): `verify.make_verifier(...)`, or any oracle with its signature."""

    def __call__(self, key: PRNGKey, x_lower: ArrayLike, x_upper: ArrayLike, spec: Spec, /) -> Verdict: ...
