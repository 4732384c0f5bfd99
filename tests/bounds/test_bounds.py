"""Interval, CROWN and alpha-CROWN bounds: soundness, tightness order, exactness, one compilation."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lnjax import bounds as B, models
from lnjax.bounds import crown as C, patches as P
from lnjax.models.ops import conv as conv_op, pool as pool_op

STEPS = 4  # alpha-CROWN steps in tests (soundness and order hold for any number)
TOL = 1e-4  # float32 rounding slack for sampled values

TRACES = {"crown": 0, "alpha": 0, "crown_spec": 0, "alpha_spec": 0}


def _counted(name, fn):
    """jax.jit(fn), counting its traces in TRACES[name] (one per compiled shape)."""

    def traced(*args, **kwargs):
        TRACES[name] += 1
        return fn(*args, **kwargs)

    return jax.jit(traced)


# One jit per API function, shared by the tests: each shape compiles once for the whole file.
interval_jit = jax.jit(B.interval_bounds)
crown_jit = _counted("crown", B.crown_bounds)
alpha_jit = _counted("alpha", functools.partial(B.alpha_crown_bounds, steps=STEPS))
crown_spec_jit = _counted("crown_spec", B.crown_spec_lower)
alpha_spec_jit = _counted("alpha_spec", functools.partial(B.alpha_crown_spec_lower, steps=STEPS))


def _view(model: models.Sequential, key, bias_scale=0.1):
    """Random params with random (not zero) biases, as after training."""
    return models.layer_view(model, _params(model, key, bias_scale))


@functools.partial(jax.jit, static_argnums=(0, 2))
def _params(model, key, bias_scale):
    params = model.init_params(key)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    keys = jax.random.split(jax.random.fold_in(key, 1), len(leaves))
    leaves = [
        v + bias_scale * jax.random.normal(k, v.shape) if path[-1].key == "bias" else v
        for (path, v), k in zip(leaves, keys, strict=True)
    ]
    return jax.tree_util.tree_unflatten(treedef, leaves)


def _box(key, shape, eps):
    x = jax.random.uniform(key, shape)
    return B.clip_box(x - eps, x + eps)


def _samples(key, lower, upper, n):
    """Half uniform points, half random vertices of the box: [n, *shape]."""
    k1, k2 = jax.random.split(key)
    u = jax.random.uniform(k1, (n // 2, *lower.shape))
    v = jax.random.bernoulli(k2, 0.5, (n - n // 2, *lower.shape)).astype(lower.dtype)
    return lower + (upper - lower) * jnp.concatenate([u, v])


@jax.jit
def _all_outputs(view, xs):
    """Outputs of every op for a batch of inputs: list of [N, *shape]."""
    outs = []
    for op in view.ops:
        xs = jax.vmap(functools.partial(models.apply_op, op))(xs)
        outs.append(xs)
    return outs


def _assert_contains(bounds, outs, what):
    for i, ((lo, hi), z) in enumerate(zip(bounds, outs, strict=True)):
        lo, hi, z = np.asarray(lo), np.asarray(hi), np.asarray(z)  # host checks: no eager compiles
        assert lo.shape == hi.shape == z.shape[1:], (what, i)
        scale = TOL * (1.0 + np.abs(z))
        assert np.all(z >= lo - scale), f"{what}: op {i} below lower bound"
        assert np.all(z <= hi + scale), f"{what}: op {i} above upper bound"


def _assert_nested(inner, outer, what):
    for i, ((li, hi_), (lo, ho)) in enumerate(zip(inner, outer, strict=True)):
        assert np.all(np.asarray(li) >= np.asarray(lo) - 1e-5), f"{what}: op {i}"
        assert np.all(np.asarray(hi_) <= np.asarray(ho) + 1e-5), f"{what}: op {i}"


def _margin_spec(k, target=0):
    """z_target - z_j for j != target: [K - 1, K]."""
    eye = jnp.eye(k)
    return eye[target][None] - jnp.delete(eye, target, axis=0)


CONV_POOL = models.Sequential(  # max-pools over pre-activations; the second overlapping and padded
    specs=(
        models.ConvSpec(4, (3, 3), (1, 1), "SAME"),
        models.MaxPoolSpec((2, 2)),
        models.ReLUSpec(),
        models.ConvSpec(6, (3, 3), (1, 1), "VALID"),
        models.MaxPoolSpec((3, 3), (2, 2), "SAME"),
        models.ReLUSpec(),
        models.FlattenSpec(),
        models.DenseSpec(8),
        models.ReLUSpec(),
        models.DenseSpec(3),
    ),
    input_shape=(12, 12, 2),
)
CONV_AVG = models.Sequential(  # strided padded conv, average pooling, dense ReLU layer
    specs=(
        models.ConvSpec(4, (3, 3), (2, 2), "SAME"),
        models.ReLUSpec(),
        models.AvgPoolSpec((2, 2)),
        models.ConvSpec(5, (2, 2), (1, 1), "VALID"),
        models.ReLUSpec(),
        models.FlattenSpec(),
        models.DenseSpec(6),
        models.ReLUSpec(),
        models.DenseSpec(4),
    ),
    input_shape=(10, 10, 1),
)
NETS = {  # 2-input MLPs: see the grid test
    "mlp5": (models.mlp((5,), (10, 10, 10), 4), 0.2),
    "conv_pool": (CONV_POOL, 0.1),
    "conv_avg": (CONV_AVG, 0.1),
}


def test_clip_box():
    lo, hi = B.clip_box(jnp.array([-0.5, 0.2, 0.9, 1.2]), jnp.array([0.1, 0.3, 1.4, 1.5]))
    np.testing.assert_array_equal(lo, np.float32([0.0, 0.2, 0.9, 1.0]))
    np.testing.assert_array_equal(hi, np.float32([0.1, 0.3, 1.0, 1.0]))


@pytest.mark.parametrize(  # the conv nets (13-16 s each) slow for the time budget; fast: every op's rule
    # checks (tests/models/test_ops.py) and the conv net of the patch-mode test, sampled for containment
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n.startswith("conv") else n for n in sorted(NETS)],
)
def test_bounds_sound_nested_and_ordered(name):
    model, eps = NETS[name]
    for trial in range(2):
        key = jax.random.fold_in(jax.random.key(0), trial)
        view = _view(model, key)
        lower, upper = _box(jax.random.fold_in(key, 2), model.input_shape, eps)
        ib = interval_jit(view, lower, upper)
        cb = crown_jit(view, lower, upper)
        ab = alpha_jit(view, lower, upper, base=cb)  # base=cb: no second CROWN compile
        outs = _all_outputs(view, _samples(jax.random.fold_in(key, 3), lower, upper, 512))
        for what, b in (("interval", ib), ("crown", cb), ("alpha", ab)):
            _assert_contains(b, outs, what)
        _assert_nested(cb, ib, "crown within interval")
        _assert_nested(ab, cb, "alpha within crown")
        ci, cc, ca = (B.unstable_counts(view, b) for b in (ib, cb, ab))
        assert all(a <= c <= i for i, c, a in zip(ci, cc, ca, strict=True)), (ci, cc, ca)

        c = _margin_spec(outs[-1].shape[-1])
        lo_i = C.interval_spec_lower(c, ib[-1])
        lo_c = crown_spec_jit(view, lower, upper, c, bounds=cb)
        lo_a = alpha_spec_jit(view, lower, upper, c, bounds=cb)
        lo_aa = alpha_spec_jit(view, lower, upper, c, bounds=ab)
        sampled = jnp.min(outs[-1] @ c.T, axis=0)
        assert bool(jnp.all(lo_i <= lo_c + 1e-6)) and bool(jnp.all(lo_c <= lo_a + 1e-6))
        assert bool(jnp.all(lo_a <= sampled + TOL)) and bool(jnp.all(lo_aa <= sampled + TOL))


@pytest.mark.slow  # 13 s; an option of alpha-CROWN, whose soundness the fast nested/ordered tests cover
def test_alpha_without_logits_skips_only_the_logits():
    model, eps = NETS["conv_avg"]
    view = _view(model, jax.random.key(21))
    lower, upper = _box(jax.random.key(22), model.input_shape, eps)
    cb = crown_jit(view, lower, upper)
    alpha = functools.partial(B.alpha_crown_bounds, steps=STEPS, base=cb)
    with_logits = jax.jit(alpha)(view, lower, upper)
    without = jax.jit(functools.partial(alpha, logits=False))(view, lower, upper)
    for k, ((wl, wh), (nl, nh)) in enumerate(zip(with_logits, without, strict=True)):
        if k < len(view.ops) - 1:
            np.testing.assert_allclose(nl, wl, rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(nh, wh, rtol=1e-6, atol=1e-6)
    # The logits: base (∩ interval arithmetic from the tightened layer before); their own α pass is
    # strictly tighter here.
    _assert_nested(without[-1:], cb[-1:], "logits without their pass, within base")
    _assert_nested(with_logits[-1:], without[-1:], "logits with their pass, within those without")
    width = lambda b: float(jnp.sum(b[-1][1] - b[-1][0]))  # noqa: E731
    assert width(with_logits) < width(without) - 1e-4, (width(with_logits), width(without))


def test_tightness_order_against_exact_minimum_on_a_grid():
    model = models.mlp((2,), (12, 12), 3)
    view = _view(model, jax.random.key(5), bias_scale=0.3)
    lower, upper = jnp.array([0.2, 0.3]), jnp.array([0.6, 0.8])
    t = jnp.linspace(0.0, 1.0, 501)
    grid = lower + (upper - lower) * jnp.stack(jnp.meshgrid(t, t), -1).reshape(-1, 2)
    outs = _all_outputs(view, grid)
    c = jnp.array([[1.0, -1.0, 0.0], [1.0, 0.0, -1.0], [0.0, 1.0, -1.0], [0.0, 0.0, 1.0]])
    exact = jnp.min(outs[-1] @ c.T, axis=0)  # >= the true minimum, within ~1e-3 of it

    ib = B.interval_bounds(view, lower, upper)
    cb = crown_jit(view, lower, upper)
    ab = jax.jit(functools.partial(B.alpha_crown_bounds, steps=30))(view, lower, upper)  # base: CROWN
    for what, b in (("interval", ib), ("crown", cb), ("alpha", ab)):
        _assert_contains(b, outs, what)
    _assert_nested(ab, cb, "alpha within crown")
    assert B.unstable_counts(view, ab) <= B.unstable_counts(view, cb) <= B.unstable_counts(view, ib)

    alpha_spec = jax.jit(functools.partial(B.alpha_crown_spec_lower, steps=30))
    lo_i = C.interval_spec_lower(c, ib[-1])
    lo_c = crown_spec_jit(view, lower, upper, c, bounds=cb)
    lo_a = alpha_spec(view, lower, upper, c, bounds=cb)
    lo_aa = alpha_spec(view, lower, upper, c, bounds=ab)
    for lo in (lo_i, lo_c, lo_a, lo_aa):
        assert bool(jnp.all(lo <= exact + 1e-5)), (lo, exact)
    assert bool(jnp.all(lo_i <= lo_c + 1e-6)) and bool(jnp.all(lo_c <= lo_a + 1e-6))
    # The relaxations must be worth something here: CROWN beats interval, alpha beats CROWN somewhere.
    assert bool(jnp.any(lo_c > lo_i + 1e-3)) and bool(jnp.any(lo_a > lo_c + 1e-4))


def test_alpha_spec_slopes_reproduce_each_rows_best_bound():
    """`alpha_crown_spec`'s slopes are those of each row's best bound: one backward pass with them gives
    that bound (branch-and-bound's root starts there)."""
    model = models.mlp((2,), (12, 12), 3)
    view = _view(model, jax.random.key(5), bias_scale=0.3)
    lower, upper = jnp.array([0.2, 0.3]), jnp.array([0.6, 0.8])
    c = jnp.array([[1.0, -1.0, 0.0], [1.0, 0.0, -1.0], [0.0, 1.0, -1.0]])
    cb = crown_jit(view, lower, upper)
    k = len(view.ops) - 1
    rows, slopes = jax.jit(functools.partial(B.alpha_crown_spec, steps=30, lr=0.5))(
        view, lower, upper, c, bounds=cb
    )
    again = C.backward_lower(view, cb, k, c, lower, upper, slopes)
    np.testing.assert_allclose(
        np.asarray(jnp.maximum(again, C.interval_spec_lower(c, cb[k]))), rows, atol=1e-5
    )
    assert set(slopes) == {j for j, op in enumerate(view.ops) if isinstance(op, models.layers.ReLU)}

    # The slopes moved off CROWN's (returning the starting slopes, the deliberate bug, gives CROWN's
    # bound, which is lower here).
    assert bool(jnp.any(rows > crown_spec_jit(view, lower, upper, c, bounds=cb) + 1e-3))


def test_crown_is_exact_without_unstable_relus():
    model = NETS["mlp5"][0]  # shapes already compiled by the soundness test
    params = model.init_params(jax.random.key(7))
    # Large biases of both signs: every ReLU is stably active or stably inactive on the box.
    for i in (1, 3, 5):
        n = params[f"layer_{i}"]["bias"].shape[0]
        params[f"layer_{i}"]["bias"] = jnp.where(jnp.arange(n) % 2 == 0, 5.0, -5.0)
    view = models.layer_view(model, params)
    lower, upper = jnp.array([0.1, 0.4, 0.2, 0.0, 0.7]), jnp.array([0.5, 0.6, 0.9, 0.3, 0.8])
    cb = crown_jit(view, lower, upper)
    assert B.unstable_counts(view, cb) == (0, 0, 0)

    mid, rad = (upper + lower) / 2, (upper - lower) / 2
    outs = _all_outputs(view, mid[None])
    jacs = jax.jit(jax.jacfwd(lambda x: _all_outputs(view, x[None])))(mid)
    # The net is affine on the box, so the exact range of op i's output is f_i(mid) ± |J_i| rad. Stable
    # pre-activations are left to interval arithmetic (nothing to gain for the ReLU); the logits,
    # bounded by CROWN in full, and the specification are exact.
    ib = interval_jit(view, lower, upper)
    for i, (z, jac) in enumerate(zip(outs, jacs, strict=True)):
        z, spread = np.asarray(z[0]), np.asarray(jnp.abs(jac[0]) @ rad)
        assert np.all(np.asarray(cb[i][0]) <= z - spread + 1e-5), i
        assert np.all(np.asarray(cb[i][1]) >= z + spread - 1e-5), i
    np.testing.assert_allclose(cb[-1][0], z - spread, atol=1e-5)
    np.testing.assert_allclose(cb[-1][1], z + spread, atol=1e-5)
    assert np.any(np.asarray(ib[-1][0]) < np.asarray(cb[-1][0]) - 1e-2)
    c = _margin_spec(4)
    exact = c @ z - np.abs(c @ np.asarray(jacs[-1][0])) @ np.asarray(rad)
    np.testing.assert_allclose(crown_spec_jit(view, lower, upper, c, bounds=cb), exact, atol=1e-5)


def test_maxpool_relaxation_exact_when_one_input_dominates():
    op = models.MaxPool(window=(2, 2), strides=(2, 2))
    lower = jnp.array([[0.0, 2.0], [0.5, -1.0]])[:, :, None]
    upper = jnp.array([[1.0, 3.0], [1.9, 0.0]])[:, :, None]
    _, w_lo, w_up, up_bias, undecided = pool_op.maxpool_relaxation(op, lower, upper)
    np.testing.assert_array_equal(w_lo[0, 0, :, 0], [0, 1, 0, 0])
    np.testing.assert_array_equal(w_up[0, 0, :, 0], [0, 1, 0, 0])
    assert float(up_bias[0, 0, 0]) == 0.0 and not bool(undecided[0, 0, 0])
    upper = upper.at[1, 0, 0].set(2.5)  # now input (1, 0) may beat input (0, 1)
    _, w_lo, w_up, up_bias, undecided = pool_op.maxpool_relaxation(op, lower, upper)
    np.testing.assert_array_equal(w_lo[0, 0, :, 0], [0, 1, 0, 0])
    np.testing.assert_array_equal(w_up[0, 0, :, 0], [0, 0, 0, 0])
    assert float(up_bias[0, 0, 0]) == 3.0 and bool(undecided[0, 0, 0])


def test_refine_mask_covers_exactly_the_undecided_pool_windows():
    model = models.Sequential(
        specs=(
            models.DenseSpec(16),
            models.ReLUSpec(),
            models.DenseSpec(16),
            models.MaxPoolSpec((2, 2)),
            models.FlattenSpec(),
            models.DenseSpec(2),
        ),
        input_shape=(4, 4, 1),
    )
    view = _view(model, jax.random.key(0))  # Dense acts on the channel axis: op 2 gives [4, 4, 16]
    lower, upper = jnp.zeros((4, 4, 16)), jnp.ones((4, 4, 16))
    lower = lower.at[0, 0].set(2.0).at[2, 2].set(2.0)
    upper = upper.at[0, 0].set(3.0).at[2, 2].set(3.0)  # windows (0, 0) and (1, 1): decided ...
    upper = upper.at[2, 3, 5].set(2.5)  # ... except channel 5 of window (1, 1)
    mask = np.asarray(C.refine_mask(view, 2, lower, upper))
    expected = np.ones((4, 4, 16), bool)
    expected[:2, :2] = False
    expected[2:, 2:] = False
    expected[2:, 2:, 5] = True
    np.testing.assert_array_equal(mask, expected)


@pytest.mark.parametrize(
    "hw,kernel,strides,padding",
    [
        ((7, 9), (3, 3), (2, 2), "SAME"),
        ((8, 8), (2, 4), (3, 2), "VALID"),
        ((9, 6), (5, 5), (1, 1), ((1, 2), (0, 3))),
        ((6, 7), (1, 1), (2, 3), "VALID"),
    ],
)
def test_conv_transpose_equals_vjp(hw, kernel, strides, padding):
    if isinstance(padding, str):
        pads = jax.lax.padtype_to_pads(hw, kernel, strides, padding)
        padding = tuple((int(lo), int(hi)) for lo, hi in pads)
    k1, k2 = jax.random.split(jax.random.key(9))
    op = models.Conv(jax.random.normal(k1, (*kernel, 3, 4)), jnp.zeros(4), strides, padding)
    in_shape = (*hw, 3)

    @jax.jit
    def both(op, a):
        _, vjp = jax.vjp(lambda x: models.apply_op(op, x), jnp.zeros(in_shape))
        return conv_op.conv_transpose(op, in_shape, a), jax.vmap(lambda ai: vjp(ai)[0])(a)

    out_shape = jax.eval_shape(lambda x: models.apply_op(op, x), jax.ShapeDtypeStruct(in_shape, jnp.float32))
    got, expected = both(op, jax.random.normal(k2, (2, *out_shape.shape)))
    np.testing.assert_allclose(got, expected, atol=1e-4)


CONV_PATCH = models.Sequential(  # conv-only prefix: CROWN bounds its conv neurons in patch mode
    specs=(
        models.ConvSpec(4, (3, 3), (1, 1), "SAME"),
        models.ReLUSpec(),
        models.ConvSpec(5, (3, 3), (2, 2), "SAME"),  # asymmetric padding (0, 1) on even sizes
        models.ReLUSpec(),
        models.ConvSpec(3, (2, 4), (1, 2), "VALID"),
        models.ReLUSpec(),
        models.FlattenSpec(),
        models.DenseSpec(4),
    ),
    input_shape=(10, 10, 2),
)


def _conv_patch_case():
    """CONV_PATCH's view, a box on it, and its CROWN bounds without patch mode (the reference)."""
    view = _view(CONV_PATCH, jax.random.key(12))
    lo, hi = _box(jax.random.key(13), view.input_shape, 0.15)
    full = jax.jit(functools.partial(B.crown_bounds, patches=False, chunk=64))(view, lo, hi)
    return view, lo, hi, full


def test_patch_mode_equals_the_full_backward_pass():
    view, lo, hi, full = _conv_patch_case()
    assert P.patch_frames(view, 2) is not None and P.patch_frames(view, 4) is not None
    assert P.patch_frames(view, 7) is None  # the logits: a dense op on the path
    patch = jax.jit(functools.partial(B.crown_bounds, patches=True, chunk=8))(view, lo, hi)
    assert sum(C.unstable_counts(view, full)[1:]) > 0  # patch mode had neurons to bound
    for (pl, ph), (fl, fh) in zip(patch, full, strict=True):
        np.testing.assert_allclose(pl, fl, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(ph, fh, rtol=1e-5, atol=1e-5)
    _assert_contains(patch, _all_outputs(view, _samples(jax.random.key(14), lo, hi, 256)), "patch")


@pytest.mark.slow  # 9 s; the conv verifier tests run α-CROWN in patch mode (checked for soundness there)
def test_alpha_patch_mode_equals_the_full_backward_pass():
    view, lo, hi, full = _conv_patch_case()
    alpha = functools.partial(B.alpha_crown_bounds, steps=STEPS, chunk=64, base=full)
    alpha_patch = jax.jit(functools.partial(alpha, patches=True))(view, lo, hi)
    alpha_full = jax.jit(functools.partial(alpha, patches=False))(view, lo, hi)
    for (pl, ph), (fl, fh) in zip(alpha_patch, alpha_full, strict=True):
        np.testing.assert_allclose(pl, fl, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(ph, fh, rtol=1e-4, atol=1e-4)
    _assert_nested(alpha_patch, full, "alpha patch in crown")


@pytest.mark.slow  # 10 s; the plain patch-mode equality test stays fast
def test_patch_mode_crosses_an_input_normalisation():
    """An elementwise affine op (an ONNX import's normalisation) at the input keeps patch mode on."""
    model = models.Sequential(specs=(models.AffineSpec((2,)), *CONV_PATCH.specs), input_shape=(10, 10, 2))
    params = _params(model, jax.random.key(15), 0.1)
    params = {**params, "layer_0": {"scale": jnp.array([2.0, -0.5]), "shift": jnp.array([-1.0, 0.3])}}
    view = models.layer_view(model, params)
    assert P.patch_frames(view, 3) is not None and P.patch_frames(view, 5) is not None
    lo, hi = _box(jax.random.key(17), view.input_shape, 0.15)
    patch = jax.jit(functools.partial(B.crown_bounds, patches=True, chunk=8))(view, lo, hi)
    full = jax.jit(functools.partial(B.crown_bounds, patches=False, chunk=64))(view, lo, hi)
    assert sum(C.unstable_counts(view, full)[1:]) > 0
    for (pl, ph), (fl, fh) in zip(patch, full, strict=True):
        np.testing.assert_allclose(pl, fl, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(ph, fh, rtol=1e-5, atol=1e-5)
    _assert_contains(patch, _all_outputs(view, _samples(jax.random.key(18), lo, hi, 256)), "patch")


@pytest.mark.slow  # the full-size DOUBLE-MNIST CNN; conv_pool / conv_avg / CONV_PATCH cover its ops fast
def test_dmnist_cnn_bounds_sound_and_ordered():
    model = models.get_model("dmnist_cnn")
    view = _view(model, jax.random.key(11))
    key = jax.random.key(12)
    x = jnp.where(jax.random.uniform(key, model.input_shape) > 0.8, 1.0, 0.0)  # sparse "ink"
    lower, upper = B.clip_box(x - 0.01, x + 0.01)
    ib = interval_jit(view, lower, upper)
    cb = crown_jit(view, lower, upper)
    ab = alpha_jit(view, lower, upper, base=cb)  # base=cb: no second CROWN compile
    outs = _all_outputs(view, _samples(jax.random.fold_in(key, 1), lower, upper, 256))
    for what, b in (("interval", ib), ("crown", cb), ("alpha", ab)):
        _assert_contains(b, outs, what)
    _assert_nested(cb, ib, "crown within interval")
    _assert_nested(ab, cb, "alpha within crown")
    ci, cc, ca = (B.unstable_counts(view, b) for b in (ib, cb, ab))
    assert ci[0] == cc[0] == ca[0]  # the first layer is exact under interval arithmetic
    assert ca[1] <= cc[1] < ci[1], (ci, cc, ca)
    c = _margin_spec(10, target=3)
    lo_i = C.interval_spec_lower(c, ib[-1])
    lo_c = crown_spec_jit(view, lower, upper, c, bounds=cb)
    lo_a = alpha_spec_jit(view, lower, upper, c, bounds=cb)
    sampled = jnp.min(outs[-1] @ c.T, axis=0)
    assert bool(jnp.all(lo_i <= lo_c + 1e-6)) and bool(jnp.all(lo_c <= lo_a + 1e-6))
    assert bool(jnp.all(lo_a <= sampled + TOL))


def test_jit_compiles_once_per_shape():
    model, eps = NETS["mlp5"]
    c = _margin_spec(4)

    def run(seed):  # new params and a new box of the same shapes
        view = _view(model, jax.random.key(100 + seed))
        lower, upper = _box(jax.random.key(200 + seed), model.input_shape, eps * (seed + 1))
        cb = crown_jit(view, lower, upper)
        ab = alpha_jit(view, lower, upper, base=cb)
        crown_spec_jit(view, lower, upper, c, bounds=cb)
        alpha_spec_jit(view, lower, upper, c, bounds=ab)

    run(0)  # compiles unless an earlier test already did
    before = dict(TRACES)
    run(1)
    run(2)
    assert TRACES == before
    assert all(n >= 1 for n in before.values())


def test_batched_with_vmap_matches_per_example():
    model, eps = NETS["mlp5"]
    view = _view(model, jax.random.key(3))
    x = jax.random.uniform(jax.random.key(4), (3, *model.input_shape))
    lower, upper = B.clip_box(x - eps, x + eps)
    batched = jax.jit(jax.vmap(B.crown_bounds, in_axes=(None, 0, 0)))(view, lower, upper)
    for b in range(3):
        single = crown_jit(view, lower[b], upper[b])
        for (lb, ub), (ls, us) in zip(batched, single, strict=True):
            np.testing.assert_allclose(lb[b], ls, atol=1e-5)
            np.testing.assert_allclose(ub[b], us, atol=1e-5)


def test_relu_stability_loss_penalises_the_interval_bounds():
    """The RS loss is −tanh(1 + l·u) averaged over the ReLU inputs' interval bounds (one propagation)."""
    from lnjax.train.stability import relu_stability_loss

    model, eps = NETS["conv_pool"]
    view = _view(model, jax.random.key(31))
    x = jax.random.uniform(jax.random.key(32), model.input_shape)
    lower, upper = B.clip_box(x - eps, x + eps)
    ib = interval_jit(view, lower, upper)
    relus = [k for k, op in enumerate(view.ops) if isinstance(op, models.ReLU)]
    terms = [-np.tanh(1.0 + np.asarray(ib[k - 1][0]) * np.asarray(ib[k - 1][1])) for k in relus]
    expected = sum(float(t.sum()) for t in terms) / sum(t.size for t in terms)
    assert float(jax.jit(relu_stability_loss, static_argnums=2)(view, x, eps)) == pytest.approx(
        expected, rel=1e-5
    )
