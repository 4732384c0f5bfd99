"""lnjax.attacks.pgd: the one PGD core (descend / best_of_starts) and its box PGD on a network."""

import jax
import jax.numpy as jnp
import numpy as np

from lnjax import attacks, models, specs
from lnjax.attacks import pgd as P

MODEL = models.mlp((4,), (8,), 3)
VIEW = models.layer_view(MODEL, MODEL.init_params(jax.random.key(0)))


def test_an_linf_ball_clipped_to_the_pixel_box_is_the_box_projection():
    x0 = jax.random.uniform(jax.random.key(0), (50, 4))
    x = jax.random.uniform(jax.random.key(1), (50, 4), minval=-0.5, maxval=1.5)
    two_clips = jnp.clip(jnp.clip(x, x0 - 0.1, x0 + 0.1), 0.0, 1.0)
    np.testing.assert_array_equal(P.box_projection(*P.linf_box(x0, 0.1))(x), two_clips)  # bit-identical


def test_keep_best_never_ends_above_its_start_and_stays_feasible():
    spec = specs.Argmax(0)
    margin = lambda x: spec.margin(models.apply_layers(VIEW, x))
    lo, hi = jnp.array([0.1, 0.2, 0.0, 0.5]), jnp.array([0.4, 0.9, 0.3, 0.5])
    start = (lo + hi) / 2
    for keep_best in (True, False):
        r = P.descend(
            margin,
            start,
            steps=15,
            step=P.sign_step(0.5),
            project=P.box_projection(lo, hi),
            keep_best=keep_best,
        )
        assert bool(jnp.all((r.x >= lo) & (r.x <= hi)))
        np.testing.assert_allclose(r.margin, margin(r.x), atol=1e-6)
        if keep_best:  # a huge step oscillates; the best iterate is still no worse than the start
            assert float(r.margin) <= float(margin(start))


def test_view_box_pgd_is_the_box_pgd_on_the_spec_rows():
    rows = specs.TopK(1, 2).rows(3)
    c, offset = jnp.asarray(rows.c), jnp.asarray(rows.offset)
    x0 = jnp.array([0.3, 0.6, 0.2, 0.9])
    lo, hi = jnp.clip(x0 - 0.2, 0, 1), jnp.clip(x0 + 0.2, 0, 1)
    got = attacks.view_box_pgd(10, 3, 0.5)(jax.random.key(2), VIEW, lo, hi, c, offset, x0, k=2)
    want = jax.jit(
        lambda key: attacks.make_pgd_box(steps=10, step_size=0.5, restarts=3)(
            key, lambda x: attacks.view_margin(VIEW, x, c, offset, 2), lo, hi, x0
        )
    )(jax.random.key(2))
    np.testing.assert_array_equal(got.x, want.x)
    assert float(got.margin) == float(want.margin)
    assert float(got.margin) <= float(attacks.view_margin(VIEW, x0, c, offset, 2))  # x0 is the first start
    assert attacks.view_box_pgd(10, 3, 0.5) is attacks.view_box_pgd(10, 3, 0.5)  # one jit per settings
