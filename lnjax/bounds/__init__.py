"""Interval, CROWN and alpha-CROWN bounds over the layer view (pure JAX, per example).

None of these is jitted inside: jit at your outermost step, e.g. `jax.jit(crown_bounds)(view, lo,
hi)` (the view is a pytree) or inside your own jitted function, and `vmap` over examples. Called
eagerly they still work, but their chunked `lax` loops are traced and compiled again at every call
(each call pays the compilation).
"""

from lnjax.bounds.alpha_crown import alpha_crown_bounds, alpha_crown_spec, alpha_crown_spec_lower
from lnjax.bounds.crown import crown_bounds, crown_spec_lower, unstable_counts
from lnjax.bounds.interval import LayerBounds, clip_box, interval_bounds

__all__ = [
    "LayerBounds",
    "alpha_crown_bounds",
    "alpha_crown_spec",
    "alpha_crown_spec_lower",
    "clip_box",
    "crown_bounds",
    "crown_spec_lower",
    "interval_bounds",
    "unstable_counts",
]
