"""lnjax.verify specs (margins vs set semantics, rows, validation) and the box PGD."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lnjax import models, specs
from lnjax.attacks import make_pgd_box


def _logits(seed, n=200, k=6, ties=True):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, k)).astype(np.float32)
    if ties:  # exact ties with the target must count against it
        z[: n // 4, 1] = z[: n // 4, 0]
    return z


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_topk_margin_matches_set_semantics(k):
    z = _logits(k)
    spec = specs.TopK(0, k)
    m = np.asarray(spec.margin(jnp.asarray(z)))
    for zi, mi in zip(z, m, strict=True):
        beats = int(np.sum(zi[1:] >= zi[0]))
        assert (mi > 0) == (beats < k)
        assert mi == pytest.approx(zi[0] - np.sort(zi[1:])[::-1][k - 1], abs=1e-6)


def test_argmax_and_threshold_margins():
    z = _logits(0)
    m = np.asarray(specs.Argmax(2).margin(jnp.asarray(z)))
    np.testing.assert_allclose(m, z[:, 2] - np.delete(z, 2, axis=1).max(1), atol=1e-6)
    np.testing.assert_array_equal(m > 0, z[:, 2] > np.delete(z, 2, axis=1).max(1))
    t = np.asarray(specs.Threshold(3, tau=0.25).margin(jnp.asarray(z)))
    np.testing.assert_allclose(t, z[:, 3] - 0.25, atol=1e-6)
    np.testing.assert_allclose(specs.TopK(2, 1).margin(jnp.asarray(z)), m, atol=0)


def test_rows_reproduce_margin_and_bound_it():
    z = _logits(1, ties=False)
    for spec in (specs.TopK(4, 2), specs.Argmax(1), specs.Threshold(0, -0.5)):
        rows = spec.rows(z.shape[1])
        assert rows.c.shape == (1 if isinstance(spec, specs.Threshold) else z.shape[1] - 1, z.shape[1])
        d = z @ rows.c.T  # without offset
        for di, zi in zip(d, z, strict=True):
            m = float(spec.margin(jnp.asarray(zi)))
            assert specs.margin_lower_bound(rows, di) == pytest.approx(m, abs=1e-5)
            # Lower bounds of the rows give a lower bound of the margin.
            assert specs.margin_lower_bound(rows, di - np.abs(di) * 0.1 - 0.01) <= m + 1e-6


def test_a_nan_row_bound_proves_nothing(monkeypatch):
    """A NaN lower bound (a stage that produced no bound) counts as −inf in the margin's bound, and
    the query context keeps an earlier stage's bound of that row (`np.fmax`). With NaN sorted last
    the finite rows decided: argmax rows [NaN, 5] had margin bound 5, and a NaN from a later stage
    wiped out the earlier bound (`np.maximum`)."""
    from types import SimpleNamespace

    from lnjax.verify import stages

    assert specs.margin_lower_bound(specs.Argmax(0).rows(3), np.asarray([np.nan, 5.0])) == -np.inf
    top2 = specs.TopK(0, 2).rows(4)  # three rows: the 2nd smallest decides; NaN is the smallest
    assert specs.margin_lower_bound(top2, np.asarray([np.nan, 5.0, 7.0])) == 5.0
    assert specs.margin_lower_bound(top2, np.asarray([np.nan, np.nan, 7.0])) == -np.inf
    monkeypatch.setattr(stages.B, "unstable_counts", lambda view, bounds: ())
    ctx = SimpleNamespace(
        view=None,
        rows=specs.Argmax(0).rows(3),
        row_lower=np.asarray([0.5, 2.0]),
        stats=SimpleNamespace(unstable={}, margin_lower={}),
        proven=[],
        safety=1e-5,
    )
    assert stages.QueryContext.prove(ctx, "later", None, np.asarray([np.nan, 3.0]))  # pyright: ignore[reportArgumentType]
    assert list(ctx.row_lower) == [0.5, 3.0] and ctx.stats.margin_lower["later"] == 0.5


def test_validation_errors():
    with pytest.raises(ValueError, match="smaller than the number of classes"):
        specs.TopK(0, 10).rows(10)
    with pytest.raises(ValueError, match="k ≥ 1"):
        specs.TopK(0, 0)
    with pytest.raises(ValueError, match="not a class index"):
        specs.Argmax(10).rows(10)
    with pytest.raises(ValueError, match="not a class index"):
        specs.Threshold(4).rows(3)


def test_pgd_box_stays_in_box_and_improves_on_the_centre():
    model = models.mlp((4,), (16, 16), 3)
    view = models.layer_view(model, model.init_params(jax.random.key(0)))
    spec = specs.Argmax(0)
    lo = jnp.array([0.1, 0.0, 0.5, 0.2])
    hi = jnp.array([0.6, 0.3, 0.5, 0.9])  # one degenerate coordinate
    attack = jax.jit(
        lambda key, lo, hi: make_pgd_box(steps=30, restarts=3)(
            key, lambda x: spec.margin(models.apply_layers(view, x)), lo, hi
        )
    )
    res = attack(jax.random.key(1), lo, hi)
    assert bool(jnp.all(res.x >= lo)) and bool(jnp.all(res.x <= hi))
    centre = float(spec.margin(models.apply_layers(view, (lo + hi) / 2)))
    assert float(res.margin) <= centre
    assert float(res.margin) == pytest.approx(float(spec.margin(models.apply_layers(view, res.x))), abs=1e-6)
    grid = jnp.stack(jnp.meshgrid(*[jnp.linspace(a, b, 9) for a, b in zip(lo, hi, strict=True)]), -1)
    grid_min = float(jnp.min(spec.margin(models.apply_layers_batch(view, grid.reshape(-1, 4)))))
    assert float(res.margin) <= grid_min + 0.05 * abs(grid_min) + 1e-3


def test_linear_spec_is_the_minimum_of_its_rows_and_matches_argmax():
    """Linear(c, d): margin = min_i (c_i · z + d_i); with Argmax's rows it is Argmax."""
    z = jnp.asarray([[0.5, 2.0, -1.0], [3.0, 0.0, 1.0]])
    lin = specs.Linear(c=np.array([[1.0, 0.0, 0.0], [0.0, -1.0, 1.0]]), offset=np.array([0.25, 2.0]))
    np.testing.assert_allclose(lin.margin(z), [min(0.75, 2.0 - 2.0 - 1.0), min(3.25, 3.0)], rtol=1e-6)
    rows = specs.Argmax(1).rows(3)
    np.testing.assert_allclose(
        specs.Linear(rows.c, rows.offset).margin(z), specs.Argmax(1).margin(z), rtol=1e-6
    )
    with pytest.raises(ValueError, match="columns"):
        lin.rows(4)
    with pytest.raises(ValueError, match="finite"):
        specs.Linear(c=np.array([[np.nan, 0.0]]), offset=np.zeros(1))
    for k in (0, 3, 1.5, True):  # k counts rows: an integer in [1, M]
        with pytest.raises(ValueError, match=r"Linear spec k = .*; expected an integer in \[1, 2\]"):
            specs.Linear(c=np.eye(2), offset=np.zeros(2), k=k)  # pyright: ignore[reportArgumentType]
