"""lnjax.attacks.pgd: the one PGD core (descend / best_of_starts) and its box PGD on a network."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

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


def test_odi_starts_on_a_linear_output_reach_the_vertex_of_their_own_direction():
    """Two half-width steps of a constant gradient cross the whole box: each start ends at the box
    vertex maximising w · A x for its own w, whatever it started from."""
    a = jax.random.normal(jax.random.key(3), (3, 5))
    lo = jnp.array([0.1, 0.0, 0.4, 0.2, 0.3])
    hi = jnp.array([0.5, 0.2, 0.9, 0.2, 0.8])  # one pixel fixed (lo = hi)
    starts = lo + jax.random.uniform(jax.random.key(4), (6, 5)) * (hi - lo)
    key = jax.random.key(5)
    got = P.odi_starts(key, lambda x: a @ x, starts, lo, hi, 2)
    w = jax.random.uniform(key, (6, 3), minval=-1.0, maxval=1.0)  # the directions it drew
    want = jnp.where((w @ a) > 0, hi, lo)
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert len({tuple(np.asarray(v).round(6)) for v in got}) > 1  # spread out, not one point
    np.testing.assert_array_equal(P.odi_starts(key, lambda x: a @ x, starts, lo, hi, 0), starts)


def test_odi_keeps_the_first_start_and_changes_only_the_random_ones():
    spec = specs.Argmax(0)
    lo, hi = jnp.array([0.1, 0.2, 0.0, 0.5]), jnp.array([0.4, 0.9, 0.3, 0.5])
    x0 = jnp.array([0.2, 0.3, 0.1, 0.5])

    def margin(x):
        return spec.margin(models.apply_layers(VIEW, x))

    def logits(x):
        return models.apply_layers(VIEW, x)

    plain = attacks.make_pgd_box(steps=0, restarts=5)
    odi = attacks.make_pgd_box(steps=0, restarts=5, odi_steps=2)
    key = jax.random.key(6)
    one = attacks.make_pgd_box(steps=0, restarts=1, odi_steps=2)(key, margin, lo, hi, x0, logits)
    np.testing.assert_array_equal(one.x, x0)  # a single start is the first: never diversified
    r = odi(key, margin, lo, hi, x0, logits)
    assert bool(jnp.all((r.x >= lo) & (r.x <= hi)))
    near = odi(key, lambda x: jnp.sum((x - x0) ** 2), lo, hi, x0, logits)  # 0 only at x0 itself
    assert float(near.margin) == 0.0  # the first start is x0, undiversified
    np.testing.assert_array_equal(
        odi(key, margin, lo, hi, x0).x, plain(key, margin, lo, hi, x0).x
    )  # no output_fn
    with pytest.raises(ValueError, match="odi_steps"):
        attacks.make_pgd_box(odi_steps=-1)


def test_target_sets_rank_rows_and_keep_the_most_promising_sets():
    values = np.array([3.0, -1.0, 2.0, 0.0])  # ranks: row 1, row 3, row 2, row 0
    np.testing.assert_array_equal(P.target_sets(values, 1), [[1], [3], [2], [0]])
    np.testing.assert_array_equal(
        P.target_sets(values, 2), [[1, 3], [1, 2], [3, 2], [1, 0], [3, 0], [2, 0]]
    )  # by rank sum, then the highest rank
    np.testing.assert_array_equal(P.target_sets(values, 2, limit=3), [[1, 3], [1, 2], [3, 2]])
    for k in (0, 5):
        with pytest.raises(ValueError, match="1 ≤ k ≤ 4"):
            P.target_sets(values, k)


def test_the_targeted_pgd_pushes_each_sets_rows_together_and_reports_the_spec_margin():
    """For one set {i, j} it is the box PGD on max(row_i, row_j) (a bug taking the min pushes one row
    only and ends elsewhere on this net); over several sets it keeps the smallest spec margin, and
    the margin it reports is the spec's (k-th smallest of all rows) at its point, not its own loss."""
    model = models.mlp((4,), (8,), 4)
    view = models.layer_view(model, model.init_params(jax.random.key(2)))
    rows = specs.TopK(0, 2).rows(4)
    c, offset = jnp.asarray(rows.c), jnp.asarray(rows.offset)
    x0 = jnp.array([0.3, 0.6, 0.2, 0.9])
    lo, hi = jnp.clip(x0 - 0.3, 0, 1), jnp.clip(x0 + 0.3, 0, 1)
    pgd = attacks.view_box_pgd_targeted(10, 3, 0.25)
    key = jax.random.key(4)

    def pgd_on(k, loss):
        return attacks.make_pgd_box(steps=10, step_size=0.25, restarts=3)(k, loss, lo, hi, x0).x

    def rows_at(x):
        return c @ models.apply_layers(view, x) + offset

    one = pgd(key, view, lo, hi, c, offset, x0, jnp.array([[0, 1]]), k=2)
    want = jax.jit(pgd_on, static_argnums=1)(jax.random.split(key, 1)[0], lambda x: jnp.max(rows_at(x)[:2]))
    np.testing.assert_array_equal(one.x, want)
    assert float(one.margin) == float(attacks.view_margin(view, want, c, offset, 2))
    sets = jnp.array([[0, 1], [2, 0], [1, 2]])
    three = pgd(key, view, lo, hi, c, offset, x0, sets, k=2)
    each = [
        float(attacks.view_margin(view, pgd_on(k, lambda x, s=s: jnp.max(rows_at(x)[s])), c, offset, 2))
        for k, s in zip(jax.random.split(key, 3), sets, strict=True)
    ]
    assert float(three.margin) == pytest.approx(min(each), abs=1e-6)
    assert attacks.view_box_pgd_targeted(10, 3, 0.25) is pgd  # one jit per settings
