"""lnjax.neighborhood.layers: layer maps on hand-made masks, sizes, boxes, per-layer sums."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lnjax import neighborhood as N


def brute_force_distance(mask, metric):
    """Distance of every pixel to the nearest mask pixel by enumeration (the definition)."""
    ys, xs = np.nonzero(mask)
    yy, xx = np.indices(mask.shape)
    dy = np.abs(yy[..., None] - ys)
    dx = np.abs(xx[..., None] - xs)
    if metric == "chebyshev":
        d = np.maximum(dy, dx)
    elif metric == "manhattan":
        d = dy + dx
    else:
        d = np.floor(np.sqrt(dy**2 + dx**2) + 1e-9)
    return d.min(axis=-1).astype(np.int32)


def test_single_pixel_rings_for_each_metric():
    mask = np.zeros((7, 7), bool)
    mask[3, 3] = True
    cheb = np.array(
        [
            [3, 3, 3, 3, 3, 3, 3],
            [3, 2, 2, 2, 2, 2, 3],
            [3, 2, 1, 1, 1, 2, 3],
            [3, 2, 1, 0, 1, 2, 3],
            [3, 2, 1, 1, 1, 2, 3],
            [3, 2, 2, 2, 2, 2, 3],
            [3, 3, 3, 3, 3, 3, 3],
        ]
    )
    # Euclidean rounded down: (±2, ±2) is √8 ≈ 2.83 → 2; (±3, ±2) is √13 ≈ 3.61 → 3; corners √18 → 4.
    eucl = np.array(
        [
            [4, 3, 3, 3, 3, 3, 4],
            [3, 2, 2, 2, 2, 2, 3],
            [3, 2, 1, 1, 1, 2, 3],
            [3, 2, 1, 0, 1, 2, 3],
            [3, 2, 1, 1, 1, 2, 3],
            [3, 2, 2, 2, 2, 2, 3],
            [4, 3, 3, 3, 3, 3, 4],
        ]
    )
    yy, xx = np.indices((7, 7))
    manh = np.abs(yy - 3) + np.abs(xx - 3)
    np.testing.assert_array_equal(N.layer_map(mask), cheb)  # Chebyshev is the default
    np.testing.assert_array_equal(N.layer_map(mask, metric="chebyshev"), cheb)
    np.testing.assert_array_equal(N.layer_map(mask, metric="euclidean"), eucl)
    np.testing.assert_array_equal(N.layer_map(mask, metric="manhattan"), manh)
    # Chebyshev rings around a point hold 8d pixels; Manhattan diamonds 4d (inside the image).
    np.testing.assert_array_equal(N.layer_sizes(N.layer_map(mask)), [1, 8, 16, 24])
    np.testing.assert_array_equal(N.layer_sizes(N.layer_map(mask, metric="manhattan"))[:4], [1, 4, 8, 12])


def test_stroke_on_a_non_square_image():
    """A vertical stroke plus a separate dot on a 5×9 image; every metric by hand."""
    mask = np.zeros((5, 9), bool)
    mask[1:4, 1] = True  # stroke
    mask[4, 8] = True  # dot in the corner
    expected_cheb = np.array(
        [
            [1, 1, 1, 2, 3, 4, 4, 4, 4],
            [1, 0, 1, 2, 3, 3, 3, 3, 3],
            [1, 0, 1, 2, 3, 3, 2, 2, 2],
            [1, 0, 1, 2, 3, 3, 2, 1, 1],
            [1, 1, 1, 2, 3, 3, 2, 1, 0],
        ]
    )
    expected_manh = np.array(
        [
            [2, 1, 2, 3, 4, 5, 6, 5, 4],
            [1, 0, 1, 2, 3, 4, 5, 4, 3],
            [1, 0, 1, 2, 3, 4, 4, 3, 2],
            [1, 0, 1, 2, 3, 4, 3, 2, 1],
            [2, 1, 2, 3, 4, 3, 2, 1, 0],
        ]
    )
    np.testing.assert_array_equal(N.layer_map(mask, metric="chebyshev"), expected_cheb)
    np.testing.assert_array_equal(N.layer_map(mask, metric="manhattan"), expected_manh)
    # Euclidean: (0, 0) is at √2 from (1, 1) → 1; (0, 8) is 4 rows above the dot → 4; (0, 5) is at
    # √17 ≈ 4.12 from (1, 1) and √25 = 5 from the dot → 4 (an exact square root must not round down).
    eucl = N.layer_map(mask, metric="euclidean")
    assert eucl[0, 0] == 1 and eucl[0, 8] == 4 and eucl[0, 5] == 4 and eucl[2, 4] == 3 and eucl[4, 5] == 3
    for metric in N.METRICS:
        np.testing.assert_array_equal(N.layer_map(mask, metric=metric), brute_force_distance(mask, metric))


@pytest.mark.parametrize("metric", N.METRICS)
def test_matches_brute_force_on_random_masks(metric):
    rng = np.random.default_rng(0)
    for h, w, p in ((12, 17, 0.02), (30, 30, 0.005), (64, 64, 0.01), (9, 4, 0.3)):
        mask = rng.random((h, w)) < p
        mask[rng.integers(h), rng.integers(w)] = True
        got = N.distance_map(mask, metric=metric)
        assert got.dtype == np.int32 and got.shape == (h, w)
        np.testing.assert_array_equal(got, brute_force_distance(mask, metric))


def test_euclidean_exact_squares_are_not_rounded_down():
    """Pixels at exactly integer Euclidean distance (3-4-5 and axis-aligned) land in that layer."""
    mask = np.zeros((20, 20), bool)
    mask[0, 0] = True
    d = N.layer_map(mask, metric="euclidean")
    assert d[3, 4] == 5 and d[4, 3] == 5 and d[0, 7] == 7 and d[12, 16] == 20 and d[5, 12] == 13
    assert d[3, 3] == 4 and d[1, 1] == 1  # √18 ≈ 4.24, √2 ≈ 1.41


def test_cap_puts_far_pixels_in_the_last_layer():
    mask = np.zeros((9, 9), bool)
    mask[0, 0] = True
    full = N.layer_map(mask)
    capped = N.layer_map(mask, max_layers=3)
    assert N.num_layers(full) == 9 and N.num_layers(capped) == 3
    np.testing.assert_array_equal(capped, np.minimum(full, 2))
    sizes = N.layer_sizes(capped)
    np.testing.assert_array_equal(sizes, [1, 3, 81 - 4])
    assert N.layer_sizes(capped, 5).tolist() == [1, 3, 77, 0, 0]
    np.testing.assert_array_equal(N.layer_map(mask, max_layers=1), np.zeros((9, 9)))
    # A cap above the natural number of layers changes nothing.
    np.testing.assert_array_equal(N.layer_map(mask, max_layers=50), full)


def test_box_of_and_box_layers():
    mask = np.zeros((8, 10), bool)
    mask[2, 3] = mask[5, 6] = True
    box = N.box_of(mask)
    assert box.sum() == 4 * 4 and box[2:6, 3:7].all()
    layers = N.layer_map(box)
    assert (layers[2:6, 3:7] == 0).all() and layers[0, 0] == 3 and layers[0, 4] == 2 and layers[7, 9] == 3


def test_neighborhood_box_values_clipping_and_channels():
    mask = np.zeros((4, 4), bool)
    mask[0, 0] = True
    layers = N.layer_map(mask)  # distances 0..3
    eps = np.array([0.0, 0.1, 0.2, 0.5], np.float32)
    x = np.full((4, 4), 0.5, np.float32)
    x[3, 3] = 0.9
    lo, hi = N.neighborhood_box(x, layers, eps)
    np.testing.assert_allclose(np.asarray(hi - lo)[0, 0], 0.0)
    np.testing.assert_allclose(np.asarray(lo)[1, 1], 0.4, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(hi)[2, 0], 0.7, rtol=1e-6)
    assert float(lo[3, 3]) == pytest.approx(0.4) and float(hi[3, 3]) == 1.0  # clipped to [0, 1]
    assert float(jnp.min(lo)) >= 0.0 and float(jnp.max(hi)) <= 1.0
    # Channels share their pixel's ε; extra ε entries are unused.
    lo3, hi3 = N.neighborhood_box(np.repeat(x[..., None], 3, -1), layers, np.append(eps, 9.0))
    assert lo3.shape == (4, 4, 3)
    np.testing.assert_array_equal(np.asarray(lo3[..., 2]), np.asarray(lo))
    np.testing.assert_array_equal(np.asarray(hi3[..., 0]), np.asarray(hi))


def test_box_is_jittable_and_differentiable_per_layer():
    mask = np.zeros((6, 6), bool)
    mask[2:4, 2:4] = True
    layers = N.layer_map(mask)
    n = N.num_layers(layers)
    x = jnp.full((6, 6, 1), 0.5)

    @jax.jit
    def width(eps):
        lo, hi = N.neighborhood_box(x, layers, eps)
        return jnp.sum(hi - lo)

    eps = jnp.full((n,), 0.1)
    assert float(width(eps)) == pytest.approx(2 * 0.1 * 36, rel=1e-5)
    # No clipping at ε = 0.1 around 0.5: d width / d ε_d = 2 |l_d|, the same as summing per pixel.
    np.testing.assert_allclose(np.asarray(jax.grad(width)(eps)), 2 * N.layer_sizes(layers), rtol=1e-6)
    per_layer = N.layer_sum(jnp.ones((6, 6, 1)), layers, n)
    np.testing.assert_array_equal(np.asarray(per_layer), N.layer_sizes(layers))


def test_errors():
    with pytest.raises(ValueError, match="empty"):
        N.layer_map(np.zeros((3, 3), bool))
    with pytest.raises(ValueError, match="2-D"):
        N.layer_map(np.ones((3, 3, 1), bool))
    with pytest.raises(ValueError, match="unknown metric"):
        N.layer_map(np.ones((3, 3), bool), metric="cosine")
    with pytest.raises(ValueError, match="max_layers"):
        N.layer_map(np.ones((3, 3), bool), max_layers=0)
    layers = N.layer_map(np.eye(3, dtype=bool))
    with pytest.raises(ValueError, match="≥ 0"):
        N.neighborhood_box(np.zeros((3, 3)), layers, [0.1, -0.1])
    with pytest.raises(ValueError, match="entries"):
        N.neighborhood_box(np.zeros((3, 3)), layers, [0.1])
    with pytest.raises(ValueError, match="height/width"):
        N.neighborhood_box(np.zeros((4, 3)), layers, [0.1, 0.1])
    with pytest.raises(ValueError, match="smaller"):
        N.layer_sizes(layers, 1)


def test_target_layer_is_separate_from_the_far_background():
    other = np.zeros((12, 12), bool)
    other[1:3, 1:3] = True
    target = np.zeros((12, 12), bool)
    target[7:11, 7:11] = True
    target[2, 2] = True  # a pixel of both masks stays with the non-target object
    base = N.layer_map(other, max_layers=4)
    split = N.layer_map(other, max_layers=4, target_mask=target)
    np.testing.assert_array_equal(
        base, N.layer_map(other, max_layers=4, target_mask=None)
    )  # default unchanged
    assert N.num_layers(base) == 4 and N.num_layers(split) == 5
    own = target & ~other
    np.testing.assert_array_equal(split[own], 4)  # the target: one layer, the last
    np.testing.assert_array_equal(split[~own], base[~own])  # every other pixel keeps its ring
    assert split[2, 2] == 0 and (split == 3).any()  # far background (layer 3) without the target
    sizes = N.layer_sizes(split)
    assert sizes[4] == own.sum() and sizes.sum() == 144
    # Without a cap, and on a small image, the target still comes right after the last ring.
    small = N.layer_map(other[:6, :6], max_layers=16, target_mask=target[:6, :6] | (np.eye(6, dtype=bool)))
    assert N.layer_sizes(small).min() > 0


@pytest.mark.parametrize(
    "target, message",
    [(np.zeros((5, 5), bool), "target_mask has shape"), (np.eye(4, dtype=bool), "no pixel outside")],
)
def test_bad_target_mask_is_one_line(target, message):
    other = np.eye(4, dtype=bool)
    with pytest.raises(ValueError, match=message) as e:
        N.layer_map(other, target_mask=target)
    assert "\n" not in str(e.value)
