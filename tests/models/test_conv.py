"""The loop-friendly convolution equals `lax.conv_general_dilated` in value and every derivative,
and keeps the gradient's convolutions canonical inside loops (the reason it exists)."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from lnjax import models
from lnjax.models.conv import conv_general_dilated as fast_conv

DN = ("NHWC", "HWIO", "NHWC")
CASES = [  # x shape, kernel shape, strides, padding, lhs_dilation, rhs_dilation
    ((3, 9, 9, 2), (3, 3, 2, 4), (2, 2), "SAME", None, None),
    ((2, 10, 8, 3), (4, 2, 3, 5), (1, 2), "VALID", None, (2, 1)),
    ((2, 7, 7, 2), (3, 3, 2, 3), (1, 1), [(1, 2), (0, 1)], (2, 2), None),
    ((2, 28, 28, 1), (4, 4, 1, 16), (2, 2), "SAME", None, None),
]


def _pair(case):
    _, _, strides, padding, lhs_d, rhs_d = case
    kw = dict(dimension_numbers=DN, precision=lax.Precision.HIGHEST)
    ref = lambda x, k: lax.conv_general_dilated(x, k, strides, padding, lhs_d, rhs_d, **kw)  # noqa: E731
    ours = lambda x, k: fast_conv(x, k, strides, padding, lhs_d, rhs_d, **kw)  # noqa: E731
    return ref, ours


def _inputs(case, seed=0):
    keys = jax.random.split(jax.random.key(seed), 4)
    x, k = jax.random.normal(keys[0], case[0]), jax.random.normal(keys[1], case[1])
    return x, k, (jax.random.normal(keys[2], case[0]), jax.random.normal(keys[3], case[1]))


def _close(a, b):
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", CASES)
def test_value_gradients_jvp_and_second_order_match_lax(case):
    ref, ours = _pair(case)
    x, k, tangents = _inputs(case)
    loss = lambda f: lambda x, k: jnp.sum(jnp.sin(f(x, k)))  # noqa: E731
    _close(ours(x, k), ref(x, k))
    _close(jax.grad(loss(ours), (0, 1))(x, k), jax.grad(loss(ref), (0, 1))(x, k))
    _close(jax.grad(loss(ours), 0)(x, k), jax.grad(loss(ref), 0)(x, k))  # kernel tangent zero
    _close(jax.grad(loss(ours), 1)(x, k), jax.grad(loss(ref), 1)(x, k))  # input tangent zero
    _close(jax.jvp(ours, (x, k), tangents), jax.jvp(ref, (x, k), tangents))
    hvp = lambda f: jax.jvp(jax.grad(loss(f), (0, 1)), (x, k), tangents)[1]  # noqa: E731
    _close(hvp(ours), hvp(ref))
    gg = lambda f: jax.grad(lambda x: jnp.sum(jax.grad(loss(f))(x, k) ** 2))(x)  # noqa: E731
    _close(gg(ours), gg(ref))
    _close(jax.vmap(ours, (0, None))(x[:, None], k), jax.vmap(ref, (0, None))(x[:, None], k))


def _conv_labels(hlo_text):
    return re.findall(r"convolution\(.*dim_labels=(\S+?),", hlo_text)


def test_model_input_gradient_in_a_loop_compiles_to_canonical_convolutions():
    """XLA CPU canonicalises (fast Eigen path) only top-level convolutions; inside a loop, JAX's own
    transposed convolution would stay `01oi` and run on the naive emitter."""
    model = models.get_model("mnist_small")
    params = model.init_params(jax.random.key(0))
    apply = models.apply_fn(model)
    x = jnp.zeros((4, *model.input_shape))

    def attack(params, x):
        grad = jax.grad(lambda x: jnp.sum(apply(params, x)[:, 0]))
        return lax.fori_loop(0, 3, lambda _, x: x - 0.1 * grad(x), x)

    labels = _conv_labels(jax.jit(attack).lower(params, x).compile().as_text())
    assert len(labels) == 4, labels  # two forward convolutions, two input-gradient convolutions
    assert all("_01io->" in lab for lab in labels), labels


def test_grouped_convolution_falls_back_to_lax():
    x, k = jnp.ones((1, 5, 5, 4)), jnp.ones((3, 3, 2, 4))
    got = fast_conv(x, k, (1, 1), "SAME", dimension_numbers=DN, feature_group_count=2)
    want = lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=DN, feature_group_count=2)
    _close(got, want)
