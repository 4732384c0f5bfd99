"""lnjax.boundary: region classification, boundary distances (scan vs bisection), purity, the detector."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lnjax import boundary as B, models

SHAPE = (6, 6, 1)  # 36 pixels: enough directions for the detector's two convolutions
K = 4


def _net(hidden, seed=0, scale=1.0):
    model = models.mlp(SHAPE, hidden, K)
    params = jax.tree_util.tree_map(lambda a: a * scale, model.init_params(jax.random.key(seed)))
    return model, params, (lambda p, x: model.apply({"params": p}, x))


RELU_NET = _net((16,), seed=0, scale=3.0)
LINEAR_NET = _net((), seed=1)  # class regions are convex: one crossing per ray


@jax.jit
def _argmax(params, x):
    return {name: jnp.argmax(net[2](params[name], x), -1) for name, net in NETS.items()}


NETS = {"relu": RELU_NET, "linear": LINEAR_NET}


def _predict(net, x):
    """The point classifier, checked directly: one jit for both nets, inputs padded to 64 rows."""
    name = "relu" if net is RELU_NET else "linear"
    x = np.asarray(x, np.float32)
    padded = np.zeros((-(-len(x) // 64) * 64, *SHAPE), np.float32)
    padded[: len(x)] = x
    preds = [
        _argmax({n: v[1] for n, v in NETS.items()}, padded[i : i + 64])[name]
        for i in range(0, len(padded), 64)
    ]
    return np.concatenate([np.asarray(p) for p in preds])[: len(x)]


def _inputs(n, seed=2, lo=0.0, hi=1.0):
    return jax.random.uniform(jax.random.key(seed), (n, *SHAPE), minval=lo, maxval=hi)


# ------------------------------------------------------------------------------------- region classifier


def test_region_equals_point_classifier_at_tau_zero_and_compiles_once():
    _, params, apply_fn = RELU_NET
    x = _inputs(8)
    classify = B.make_region_classifier(tau=0.0, samples=5)
    votes = classify(jax.random.key(0), apply_fn, params, x)
    np.testing.assert_array_equal(np.asarray(votes.label), _predict(RELU_NET, x))
    assert votes.counts.shape == (8, K) and np.all(np.asarray(votes.counts).sum(1) == 5)
    assert np.all(np.asarray(votes.counts).max(1) == 5)  # every sample is x itself
    compiled = classify.jitted._cache_size()
    other = jax.tree_util.tree_map(lambda a: a + 0.1, params)
    classify(jax.random.key(1), apply_fn, other, x)
    B.make_region_classifier(tau=0.3, samples=5)(jax.random.key(1), apply_fn, other, x)  # τ is traced
    assert classify.jitted._cache_size() == compiled


def test_region_votes_take_the_majority_and_reproduce_from_the_key():
    _, params, apply_fn = RELU_NET
    x = _inputs(8)
    classify = B.make_region_classifier(tau=0.3, samples=5)  # compiled by the test above
    a = classify(jax.random.key(3), apply_fn, params, x)
    b = classify(jax.random.key(3), apply_fn, params, x)
    np.testing.assert_array_equal(np.asarray(a.counts), np.asarray(b.counts))
    counts = np.asarray(a.counts)
    assert np.all(counts.sum(1) == 5) and np.any(counts.max(1) < 5)  # samples differ in class
    np.testing.assert_array_equal(np.asarray(a.label), counts.argmax(1))
    c = classify(jax.random.key(4), apply_fn, params, x)
    assert np.any(np.asarray(c.counts) != counts)  # another key, other samples
    with pytest.raises(ValueError, match="tau"):
        B.make_region_classifier(tau=-0.1, samples=3)


# ------------------------------------------------------------------------------------------ distances


def test_random_directions_are_orthogonal_in_rms_units_and_reproduce():
    v = np.asarray(B.random_directions(jax.random.key(0), SHAPE, 10, antipodal=True), np.float64)
    assert v.shape == (20, *SHAPE)
    flat = v[:10].reshape(10, -1)
    np.testing.assert_allclose(flat @ flat.T, 36 * np.eye(10), atol=1e-3)
    np.testing.assert_allclose(np.sqrt(np.mean(flat**2, axis=1)), 1.0, atol=1e-5)
    np.testing.assert_array_equal(v[10:], -v[:10])
    again = np.asarray(B.random_directions(jax.random.key(0), SHAPE, 10, antipodal=True))
    np.testing.assert_array_equal(again, v.astype(np.float32))
    with pytest.raises(ValueError, match="pixels"):
        B.random_directions(jax.random.key(0), SHAPE, 37)


SCAN = dict(max_distance=0.1, step=0.005, coarse_step=0.025, tol=0.002)
# One function per mode for the whole file (and one input / direction shape), so each compiles once per net.
DISTANCES = {mode: B.make_boundary_distances(mode=mode, **SCAN) for mode in B.MODES}
N_DIRS = 18  # and their negatives


def _both(net, x, dirs):
    _, params, apply_fn = net
    linear = DISTANCES["linear"](apply_fn, params, x, dirs)
    bisect = DISTANCES["bisect"](apply_fn, params, x, dirs)
    return jax.device_get(linear), jax.device_get(bisect)


def test_scan_and_bisection_agree_within_the_scan_step_on_convex_regions():
    x = _inputs(3, lo=0.4, hi=0.6)
    dirs = B.random_directions(jax.random.key(4), SHAPE, N_DIRS, antipodal=True)
    # no clipping anywhere up to max_distance, so each ray crosses the convex region of its class once
    assert float(jnp.max(jnp.abs(dirs))) * SCAN["max_distance"] < 0.4
    linear, bisect = _both(LINEAR_NET, x, dirs)
    found = np.isfinite(linear.distance)
    assert found.mean() > 0.15 and (~found).any()  # boundaries in reach along some directions, not all
    np.testing.assert_array_equal(np.isfinite(bisect.distance), found)
    diff = np.abs(linear.distance[found] - bisect.distance[found])
    assert diff.max() < SCAN["step"] + 1e-6
    assert np.mean(linear.adjacent[found] == bisect.adjacent[found]) > 0.9
    np.testing.assert_array_equal(linear.center, bisect.center)
    np.testing.assert_array_equal(linear.center, _predict(LINEAR_NET, x))
    # bisection is at least as exact: its bracket [lower, distance] is within tol
    assert np.all(bisect.distance[found] - bisect.lower[found] <= SCAN["tol"] + 1e-6)
    assert np.all(bisect.adjacent[~found] == -1) and np.all(np.isinf(bisect.lower[~found]))
    # the prediction is the center's all the way up to `lower` (fine grid, checked with the model)
    for mode in (linear, bisect):
        for i in range(x.shape[0]):
            for j in np.flatnonzero(found[i])[:6]:
                ts = np.linspace(0, mode.lower[i, j], 25, dtype=np.float32)
                pts = np.clip(np.asarray(x[i]) + ts[:, None, None, None] * np.asarray(dirs[j]), 0, 1)
                assert np.all(_predict(LINEAR_NET, pts) == mode.center[i])


@pytest.mark.parametrize("mode", B.MODES)
def test_a_found_distance_flips_the_prediction_there_and_not_just_before(mode):
    _, params, apply_fn = RELU_NET
    x = _inputs(3, seed=5)
    dirs = B.random_directions(jax.random.key(6), SHAPE, N_DIRS, antipodal=True)
    r = jax.device_get(DISTANCES[mode](apply_fn, params, x, dirs))
    found = np.isfinite(r.distance)
    assert found.any()
    i, j = np.nonzero(found)
    at = np.clip(np.asarray(x)[i] + r.distance[i, j][:, None, None, None] * np.asarray(dirs)[j], 0, 1)
    before = np.clip(np.asarray(x)[i] + r.lower[i, j][:, None, None, None] * np.asarray(dirs)[j], 0, 1)
    pred_at, pred_before = _predict(RELU_NET, at), _predict(RELU_NET, before)
    np.testing.assert_array_equal(pred_at, r.adjacent[i, j])
    assert np.all(pred_at != r.center[i])
    np.testing.assert_array_equal(pred_before, r.center[i])
    resolution = (
        SCAN["step"] if mode == "linear" else SCAN["coarse_step"] / 2 ** DISTANCES[mode].bisection_steps
    )
    assert np.all(r.distance[i, j] - r.lower[i, j] <= resolution + 1e-6)
    if mode == "linear":  # the reference's scan: the first changed grid point, one pass per grid point
        steps = np.where(found, np.round(r.distance / SCAN["step"]), 20).sum(1)
        np.testing.assert_array_equal(r.forward_passes, steps)


def test_forward_passes_chunks_and_compilation():
    _, params, apply_fn = RELU_NET
    x = _inputs(3, seed=5)
    dirs = B.random_directions(jax.random.key(6), SHAPE, N_DIRS, antipodal=True)
    linear, bisect = _both(RELU_NET, x, dirs)
    n_dirs = dirs.shape[0]
    assert np.all(bisect.forward_passes <= n_dirs * (4 + B.bisection_steps(0.025, 0.002)))
    assert np.all(linear.forward_passes <= n_dirs * 20)
    chunked = B.make_boundary_distances(mode="bisect", chunk=16, **SCAN)(apply_fn, params, x, dirs)
    np.testing.assert_array_equal(np.asarray(chunked.distance), bisect.distance)
    compiled = DISTANCES["bisect"].jitted._cache_size()
    DISTANCES["bisect"](apply_fn, jax.tree_util.tree_map(lambda a: a * 1.1, params), x, dirs)
    assert DISTANCES["bisect"].jitted._cache_size() == compiled  # new params: no recompilation
    assert B.grid(0.1, 0.49).tolist() == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.49])
    assert len(B.grid(0.01, 0.49)) == 49 and len(B.grid(2 / 255, 126 / 255)) == 63
    with pytest.raises(ValueError, match="mode"):
        B.make_boundary_distances(mode="golden")


# --------------------------------------------------------------------------------------------- purity


def test_purity_is_monotone_and_ends_at_one():
    purity = jax.jit(B.adjacent_purity, static_argnums=1)
    adj = jnp.asarray([[1, 1, 2, -1], [3, 3, 3, 3], [-1, -1, -1, -1], [0, 1, 2, 3]])
    p = np.asarray(purity(adj, K))
    np.testing.assert_allclose(p[0], [2 / 3, 1, 1, 1], rtol=1e-6)
    np.testing.assert_allclose(p[1], [1, 1, 1, 1])
    np.testing.assert_allclose(p[2], [0, 0, 0, 0])  # no hit at all: the reference's convention
    np.testing.assert_allclose(p[3], [0.25, 0.5, 0.75, 1.0])
    rand = np.random.default_rng(0).integers(-1, 10, (50, 40))
    p = np.asarray(purity(jnp.asarray(rand), 10))
    assert np.all(np.diff(p, axis=1) >= 0) and np.all(p[:, -1] == 1.0)


# ------------------------------------------------------------------------------------------- detector


_features = jax.jit(B.detector_features, static_argnames="num_classes")


def _toy(seed, n, adversarial):
    """Separable toy features: adversarial inputs have near boundaries and pure neighbourhoods."""
    rng = np.random.default_rng(seed)
    if adversarial:
        d = rng.uniform(0.0, 0.08, (n, 40))
        adj = np.where(rng.random((n, 40)) < 0.9, 3, rng.integers(0, K, (n, 40)))
    else:
        d = rng.uniform(0.15, 0.6, (n, 40))
        adj = rng.integers(0, K, (n, 40))
    d = np.where(d > 0.49, np.inf, d)
    adj = np.where(np.isinf(d), -1, adj)
    return jax.device_get(_features(jnp.asarray(d, jnp.float32), jnp.asarray(adj, jnp.int32), num_classes=K))


def test_detector_trains_end_to_end_better_than_chance_and_reproduces():
    benign, adversarial = _toy(0, 48, False), _toy(1, 48, True)
    assert benign.distances.shape == (48, 40) and benign.purity.shape == (48, 3)
    assert np.all(np.diff(np.asarray(benign.distances), axis=1) >= 0)
    ok_b = np.ones(48, bool)
    ok_a = np.arange(48) % 5 != 0  # failed attacks are left out
    tr, te = slice(0, 32), slice(32, 48)
    take = lambda f, s: B.DetectorFeatures(f.distances[s], f.purity[s])
    kw = dict(steps=100, half_batch=16)
    fit = B.train_detector(
        jax.random.key(2), take(benign, tr), take(adversarial, tr), ok_b[tr], ok_a[tr], **kw
    )
    assert fit.losses.shape == (100,) and np.all(np.isfinite(np.asarray(fit.losses)))
    assert float(fit.losses[-20:].mean()) < float(fit.losses[:5].mean())
    rates = B.detector_rates(fit.params, take(benign, te), take(adversarial, te), ok_b[te], ok_a[te])
    assert 0 <= rates.false_positive <= 1 and 0 <= rates.false_negative <= 1
    assert rates.false_positive + rates.false_negative < 0.5  # better than chance (1.0 for a coin)
    assert rates.benign == 16 and rates.adversarial == int(ok_a[te].sum())
    cache = B.detector._fit._cache_size()
    again = B.train_detector(
        jax.random.key(2), take(benign, tr), take(adversarial, tr), ok_b[tr], ok_a[tr], **kw
    )
    assert B.detector._fit._cache_size() == cache  # same shapes and settings: no recompilation
    for a, b in zip(
        jax.tree_util.tree_leaves(fit.params), jax.tree_util.tree_leaves(again.params), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match="usable rows"):
        B.train_detector(jax.random.key(2), benign, adversarial, ok_b, np.zeros(48, bool), **kw)


def test_detector_architecture_at_mnist_size():
    d, p = jnp.zeros((2, 1568)), jnp.zeros((2, 3))
    params = jax.eval_shape(lambda: B.BoundaryDetector().init(jax.random.key(0), d, p, train=False))["params"]
    assert params["conv_0"]["kernel"].shape == (8, 1, 8)
    assert params["conv_1"]["kernel"].shape == (8, 8, 16)
    assert params["dense_0"]["kernel"].shape == (96 * 16 + 3, 32)
    assert params["dense_1"]["kernel"].shape == (32, 2)


def test_detector_init_and_dropout_only_in_training():
    params = B.init_detector(jax.random.key(0), num_distances=40)
    kernel = np.asarray(params["conv_0"]["kernel"])  # Glorot-uniform: |w| ≤ √(6 / (8·1 + 8·8))
    assert kernel.shape == (8, 1, 8) and np.abs(kernel).max() <= np.sqrt(6 / 72) and kernel.std() > 0.05
    assert not np.any(np.asarray(params["dense_0"]["bias"]))
    d, p = jnp.linspace(0, 1, 160).reshape(4, 40), jnp.ones((4, 3))
    apply = jax.jit(
        lambda k, train: B.BoundaryDetector().apply(
            {"params": params}, d, p, train=train, rngs={"dropout": k}
        ),
        static_argnums=1,
    )
    assert not np.allclose(apply(jax.random.key(1), True), apply(jax.random.key(2), True))
    np.testing.assert_array_equal(apply(jax.random.key(1), False), apply(jax.random.key(2), False))
