"""The rule table (`lnjax.models.ops`): every rule of every op checked through the table.

Each check is a property a wrong rule breaks (an interval that misses a sampled output, a CROWN step
whose linear bound exceeds a sampled value, a MILP matrix that disagrees with `apply`), and
`test_checks_catch_a_deliberately_wrong_rule` shows the checks fail on broken rules.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from lnjax import models
from lnjax.models import ops
from lnjax.models.ops import geometry as G

N_SAMPLES = 256
TOL = 1e-5


def _op_cases():
    k = jax.random.split(jax.random.key(0), 8)
    return {
        "affine": (  # per channel, some scales negative
            ops.Affine(jax.random.normal(k[4], (2,)), jax.random.normal(k[5], (2,))),
            (3, 4, 2),
        ),
        "affine_full": (ops.Affine(jax.random.normal(k[6], (5,)), jax.random.normal(k[7], ())), (5,)),
        "conv": (
            ops.Conv(
                jax.random.normal(k[0], (3, 3, 2, 3)), jax.random.normal(k[1], (3,)), (2, 1), ((1, 1), (0, 1))
            ),
            (6, 5, 2),
        ),
        "dense": (ops.Dense(jax.random.normal(k[2], (4, 3)), jax.random.normal(k[3], (3,))), (4,)),
        "relu": (ops.ReLU(), (3, 4, 2)),
        "flatten": (ops.Flatten(), (3, 4, 2)),
        "maxpool": (ops.MaxPool((3, 2), (2, 1), ((1, 1), (0, 1))), (5, 4, 2)),
        "avgpool": (ops.AvgPool((2, 2), (1, 2)), (5, 4, 2)),
    }


CASES = _op_cases()


def _box(shape, seed):
    k1, k2 = jax.random.split(jax.random.key(seed))
    mid = jax.random.normal(k1, shape)
    rad = 0.5 * jax.random.uniform(k2, shape)
    return mid - rad, mid + rad


def _samples(lower, upper, seed, n=N_SAMPLES):
    """Half uniform points, half vertices of the box: [n, *shape]."""
    k1, k2 = jax.random.split(jax.random.key(seed))
    u = jax.random.uniform(k1, (n // 2, *lower.shape))
    v = jax.random.bernoulli(k2, 0.5, (n - n // 2, *lower.shape)).astype(lower.dtype)
    return lower + (upper - lower) * jnp.concatenate([u, v])


def check_interval(rules, op, in_shape, seed=0):
    @jax.jit  # one compilation per check (eager dispatch of each small op is slower)
    def run(op):
        lower, upper = _box(in_shape, seed)
        lo, hi = rules.interval(op, lower, upper)
        ys = jax.vmap(lambda x: rules.apply(op, x))(_samples(lower, upper, seed + 1))
        return lo, hi, ys

    lo, hi, ys = (np.asarray(v) for v in run(op))
    assert lo.shape == hi.shape == ys.shape[1:]
    assert np.all(ys >= lo - TOL * (1 + np.abs(ys))), "interval: output below the lower bound"
    assert np.all(ys <= hi + TOL * (1 + np.abs(ys))), "interval: output above the upper bound"


def check_backward(rules, op, in_shape, seed=0):
    """a · apply(x) >= a_in · x + bias for sampled x in the box, random rows a (and slopes)."""

    @jax.jit
    def run(op):
        lower, upper = _box(in_shape, seed)
        xs = _samples(lower, upper, seed + 1)
        ys = jax.vmap(lambda x: rules.apply(op, x))(xs)
        a = jax.random.normal(jax.random.key(seed + 2), (5, *ys.shape[1:]))
        alpha = None
        if rules.alpha_init is not None:  # any slopes in [0, 1] are sound
            alpha = jax.random.uniform(jax.random.key(seed + 3), (5, *in_shape))
        a_in, bias = rules.backward(op, a, lower, upper, alpha)
        lhs = jnp.einsum("r...,n...->nr", a, ys)
        rhs = jnp.einsum("r...,n...->nr", a_in, xs) + bias
        return a_in, bias, lhs, rhs

    a_in, bias, lhs, rhs = (np.asarray(v) for v in run(op))
    assert a_in.shape == (5, *in_shape) and bias.shape == (5,)
    assert np.all(lhs >= rhs - 1e-4 * (1 + np.abs(lhs))), "backward: relaxation not a lower bound"
    if rules.linear is not None:  # linear ops: the step is exact
        np.testing.assert_allclose(lhs, rhs, rtol=1e-4, atol=1e-4)


def check_linear(rules, op, in_shape, seed=0):
    """apply(x) = linear(x) + apply(0) (linear part + offset)."""
    x = jax.random.normal(jax.random.key(seed), in_shape)
    zero = rules.apply(op, jnp.zeros(in_shape))
    np.testing.assert_allclose(rules.linear(op, x) + zero, rules.apply(op, x), rtol=1e-5, atol=1e-5)


def check_milp(rules, op, in_shape, seed=0):
    """The MILP's host form of the op equals `apply` in float64."""
    x = np.asarray(jax.random.normal(jax.random.key(seed), in_shape))
    y = np.asarray(rules.apply(op, jnp.asarray(x)))
    if rules.milp.matrix is not None:
        m, b, out_shape = rules.milp.matrix(op, in_shape)
        got = x.reshape(-1).astype(np.float64)
        got = got if m is None else m @ got
        got = got if b is None else got + b
    else:
        data, out_shape = rules.milp.layer(op, in_shape)
        got = rules.milp.forward(data, x.reshape(-1).astype(np.float64))
    assert tuple(out_shape) == y.shape
    np.testing.assert_allclose(got, y.reshape(-1), rtol=1e-5, atol=1e-5)


CHECKS = {"interval": check_interval, "backward": check_backward, "milp": check_milp}


@pytest.mark.parametrize("check", sorted(CHECKS))
@pytest.mark.parametrize("name", sorted(CASES))
def test_rule_holds_for_every_op(name, check):
    op, in_shape = CASES[name]
    CHECKS[check](ops.rules_of(op), op, in_shape)


@pytest.mark.parametrize("name", sorted(CASES))
def test_linear_part_of_linear_ops(name):
    op, in_shape = CASES[name]
    rules = ops.rules_of(op)
    if rules.linear is None:
        assert rules.milp.layer is not None and rules.milp.encode is not None  # nonlinear: a MILP encoding
        return
    check_linear(rules, op, in_shape)
    assert rules.milp.matrix is not None


def test_every_op_and_spec_is_in_the_table():
    assert set(ops.RULES) == {
        ops.Affine,
        ops.Conv,
        ops.Dense,
        ops.ReLU,
        ops.Flatten,
        ops.MaxPool,
        ops.AvgPool,
    }
    assert {type(op) for op, _ in CASES.values()} == set(ops.RULES)
    with pytest.raises(TypeError, match="unknown op int"):
        ops.rules_of(3)
    with pytest.raises(ValueError, match="registered twice"):
        ops.register(ops.ReLU, ops.rules_of(ops.ReLU()))


def test_checks_catch_a_deliberately_wrong_rule():
    """The checks above are not vacuous: each fails on a rule with a plausible bug."""
    relu, relu_shape = CASES["relu"]
    rules = ops.rules_of(relu)
    shrunk = rules._replace(interval=lambda op, lo, hi: (jax.nn.relu(lo) + 0.01, jax.nn.relu(hi)))
    with pytest.raises(AssertionError, match="interval"):
        check_interval(shrunk, relu, relu_shape)
    steep = rules._replace(backward=lambda op, a, lo, hi, alpha: (1.2 * a, jnp.zeros(a.shape[0])))
    with pytest.raises(AssertionError, match="backward"):
        check_backward(steep, relu, relu_shape)
    conv, conv_shape = CASES["conv"]
    crules = ops.rules_of(conv)
    no_bias = crules._replace(
        backward=lambda op, a, lo, hi, alpha: (crules.backward(op, a, lo, hi)[0], 0 * a[:, 0, 0, 0])
    )
    with pytest.raises(AssertionError):
        check_backward(no_bias, conv, conv_shape)
    flipped = ops.Conv(conv.kernel[::-1], conv.bias, conv.strides, conv.padding)
    wrong_matrix = crules._replace(
        milp=crules.milp._replace(matrix=lambda op, s: crules.milp.matrix(flipped, s))
    )
    with pytest.raises(AssertionError):
        check_milp(wrong_matrix, conv, conv_shape)
    affine, affine_shape = CASES["affine"]
    assert bool(jnp.any(affine.scale < 0))  # the case the signed radius below gets wrong
    arules = ops.rules_of(affine)
    signed = arules._replace(
        interval=lambda op, lo, hi: arules.interval(op.replace(scale=jnp.abs(op.scale)), lo, hi)
    )
    with pytest.raises(AssertionError, match="interval"):
        check_interval(signed, affine, affine_shape)
    no_shift = arules._replace(
        milp=arules.milp._replace(matrix=lambda op, s: (arules.milp.matrix(op, s)[0], None, s))
    )
    with pytest.raises(AssertionError):
        check_milp(no_shift, affine, affine_shape)


# ----------------------------------------------------------------------------- geometry


@pytest.mark.parametrize(
    "hw,window,strides,padding",
    [((7, 9), (3, 3), (2, 2), "SAME"), ((8, 8), (2, 4), (3, 2), "VALID"), ((6, 7), (4, 1), (1, 3), "SAME")],
)
def test_geometry_matches_lax(hw, window, strides, padding):
    pads = G.explicit_padding(padding, hw, window, strides)
    assert pads == tuple(tuple(int(v) for v in p) for p in lax.padtype_to_pads(hw, window, strides, padding))
    x = jax.random.normal(jax.random.key(1), (*hw, 2))
    y = lax.reduce_window(x, -jnp.inf, lax.max, (*window, 1), (*strides, 1), (*pads, (0, 0)))
    assert G.output_size(hw, window, strides, pads) == y.shape[:2]
    # Every window's cells (spatial and per element) pick out exactly what reduce_window maxes over.
    idx = G.window_index(hw, window, strides, pads, pad=hw[0] * hw[1])
    np.testing.assert_array_equal(jnp.max(G.window_patches(x, idx, -jnp.inf), axis=2), y)
    windows = G.element_windows((*hw, 2), window, strides, pads)
    flat = np.concatenate([np.asarray(x).reshape(-1), [-np.inf]])
    np.testing.assert_array_equal(flat[windows].max(axis=1), np.asarray(y).reshape(-1))


def test_patch_geometry():
    offsets = jnp.array([[-1, 0], [2, 3]])
    x = jnp.arange(4 * 5 * 1, dtype=jnp.float32).reshape(4, 5, 1) + 1
    patches = G.gather_patches(x, offsets, (3, 2))
    inside = G.inside_frame(offsets, (3, 2), (4, 5))
    assert patches.shape == inside.shape == (2, 3, 2, 1)
    np.testing.assert_array_equal(patches > 0, inside > 0)  # zero exactly outside the frame
    np.testing.assert_array_equal(patches[1, 0, :, 0], x[2, 3:5, 0])
    np.testing.assert_array_equal(G.receptive_offsets(offsets, (2, 1), ((1, 0), (2, 0))), [[-3, -2], [3, 1]])
    assert G.receptive_patch((2, 3), (3, 3), (2, 1)) == (5, 5)


def test_specs_build_their_flax_layer_and_op():
    model = models.Sequential(
        specs=(
            ops.AffineSpec((2,)),
            ops.ConvSpec(3, (3, 2), (2, 1), "SAME"),
            ops.ReLUSpec(),
            ops.MaxPoolSpec((2, 2), (1, 1), "SAME"),
            ops.ConvSpec(2, (2, 2), (1, 1), ((1, 0), (0, 2))),  # explicit padding
            ops.MaxPoolSpec((2, 3), (1, 2), ((0, 1), (1, 1))),
            ops.AvgPoolSpec((2, 2)),
            ops.FlattenSpec(),
            ops.DenseSpec(4),
        ),
        input_shape=(7, 6, 2),
    )
    params = model.init_params(jax.random.key(3))
    assert set(params) == {"layer_0", "layer_1", "layer_4", "layer_8"}  # only parametrised layers
    assert params["layer_0"]["scale"].shape == params["layer_0"]["shift"].shape == (2,)
    key_s, key_t = jax.random.split(jax.random.key(5))
    params["layer_0"] = {"scale": jax.random.normal(key_s, (2,)), "shift": jax.random.normal(key_t, (2,))}
    view = models.layer_view(model, params)
    assert [type(op) for op in view.ops] == [
        ops.Affine,
        ops.Conv,
        ops.ReLU,
        ops.MaxPool,
        ops.Conv,
        ops.MaxPool,
        ops.AvgPool,
        ops.Flatten,
        ops.Dense,
    ]
    assert view.ops[1].padding == G.explicit_padding("SAME", (7, 6), (3, 2), (2, 1))
    assert view.ops[4].padding == ((1, 0), (0, 2)) and view.ops[5].padding == ((0, 1), (1, 1))
    x = jax.random.uniform(jax.random.key(4), (2, 7, 6, 2))
    np.testing.assert_allclose(
        models.apply_layers_batch(view, x), model.apply({"params": params}, x), rtol=1e-5, atol=1e-5
    )


# ----------------------------------------------------------------------------- domain clipping


def _exact_halfspace_box(op, lower, upper, sign):
    """Per coordinate, min and max over box ∩ {s_n·y_n ≥ 0} for each signed neuron n alone (scipy's
    LP), intersected over the neurons: what `OpRules.clip` must give (one half-space and a box: the
    coordinate bounds are exact)."""
    from scipy.optimize import linprog

    rules = ops.rules_of(op)
    shape, n_in = lower.shape, lower.size
    w = np.asarray(jax.jacobian(lambda x: rules.linear(op, x))(jnp.zeros(shape))).reshape(-1, n_in)
    b = np.asarray(rules.apply(op, jnp.zeros(shape))).reshape(-1)
    box = list(
        zip(np.asarray(lower, np.float64).reshape(-1), np.asarray(upper, np.float64).reshape(-1), strict=True)
    )
    lo, hi = (
        np.asarray(lower, np.float64).reshape(-1).copy(),
        np.asarray(upper, np.float64).reshape(-1).copy(),
    )
    for n in np.flatnonzero(np.asarray(sign).reshape(-1)):
        s = float(np.asarray(sign).reshape(-1)[n])
        a_ub, b_ub = -s * w[n][None], np.asarray([s * b[n]])  # s (w x + b) ≥ 0
        for i in range(n_in):
            e = np.zeros(n_in)
            e[i] = 1.0
            low = linprog(e, A_ub=a_ub, b_ub=b_ub, bounds=box)
            high = linprog(-e, A_ub=a_ub, b_ub=b_ub, bounds=box)
            assert low.status == 0 and high.status == 0  # each half-space meets the box (chosen so)
            lo[i], hi[i] = max(lo[i], low.fun), min(hi[i], -high.fun)
    return lo.reshape(shape), hi.reshape(shape)


def check_clip(rules, op, in_shape, seed=0):
    """`clip` with a few signed neurons, each on the side of its range the box centre is not on (so
    the half-space cuts the box): equal to the exact box of each half-space, intersected."""
    lower, upper = _box(in_shape, seed)
    lower, upper = lower - 2 * (upper - lower), upper + 2 * (upper - lower)  # wide: unstable neurons
    z_lo, z_hi = (np.asarray(v) for v in rules.interval(op, lower, upper))
    centre = np.asarray(rules.apply(op, (lower + upper) / 2))
    unstable = (z_lo < 0) & (z_hi > 0)
    minority = np.where(centre >= 0, -z_lo, z_hi) / (z_hi - z_lo)  # the share of the range cut to
    picked = np.flatnonzero(unstable.reshape(-1))
    picked = picked[np.argsort(minority.reshape(-1)[picked])][:3]
    sign = np.zeros(centre.size, np.float32)
    sign[picked] = -np.sign(centre.reshape(-1)[picked])
    sign = sign.reshape(centre.shape)
    got_lo, got_hi = (np.asarray(v) for v in rules.clip(op, lower, upper, jnp.asarray(sign)))
    want_lo, want_hi = _exact_halfspace_box(op, lower, upper, sign)
    assert len(picked) > 0 and np.any(want_hi - want_lo < np.asarray(upper - lower) - 1e-3), (
        "clip: case cuts nothing"
    )
    tol = 1e-4 * (1 + np.abs(want_lo) + np.abs(want_hi))
    assert np.all(got_lo <= want_lo + tol) and np.all(got_hi >= want_hi - tol), (
        "clip: a point of the half-spaces cut off"
    )
    np.testing.assert_allclose(got_lo, want_lo, atol=5e-3, err_msg="clip: looser than the exact box")
    np.testing.assert_allclose(got_hi, want_hi, atol=5e-3, err_msg="clip: looser than the exact box")


@pytest.mark.parametrize("name", ["conv", "dense"])
def test_clip_is_the_exact_box_of_each_half_space(name):
    op, in_shape = CASES[name]
    check_clip(ops.rules_of(op), op, in_shape)


def test_clip_check_catches_a_deliberately_wrong_clip():
    """A clip that forgets the bias (the half-space moved) or the sign (the other side) fails."""
    for name in ("conv", "dense"):
        op, in_shape = CASES[name]
        rules = ops.rules_of(op)
        no_bias = rules._replace(
            clip=lambda op, lo, hi, s, r=rules: r.clip(op.replace(bias=0 * op.bias), lo, hi, s)
        )
        with pytest.raises(AssertionError, match="clip"):
            check_clip(no_bias, op, in_shape)
        flipped = rules._replace(clip=lambda op, lo, hi, s, r=rules: r.clip(op, lo, hi, -s))
        with pytest.raises(AssertionError, match="clip"):
            check_clip(flipped, op, in_shape)
