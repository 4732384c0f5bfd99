"""The layer view equals `model.apply` on every model."""

import jax
import numpy as np
import pytest

from lnjax import models

# The GPU-scale zoo models run in the slow suite; their ops (conv, max-pool, dense) are covered fast.
GPU_SCALE = ("cifar10_cnn", "mnist_madry")


@pytest.mark.parametrize(
    "name",
    [n if n not in GPU_SCALE else pytest.param(n, marks=pytest.mark.slow) for n in sorted(models.MODELS)],
)
def test_layer_view_equals_apply(name):
    model = models.get_model(name)
    params = model.init_params(jax.random.key(0))
    x = jax.random.uniform(jax.random.key(1), (3, *model.input_shape))
    expected = model.apply({"params": params}, x)
    view = models.layer_view(model, params)
    got = jax.jit(models.apply_layers_batch)(view, x)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)
    assert got.shape == (3, 10)
    assert view.output_shapes[-1] == (10,)


def test_layer_view_with_avgpool_and_valid_padding():
    model = models.Sequential(
        specs=(
            models.ConvSpec(4, (3, 3), (1, 1), "VALID"),
            models.ReLUSpec(),
            models.AvgPoolSpec((2, 2)),
            models.MaxPoolSpec((3, 3), (2, 2), "SAME"),
            models.FlattenSpec(),
            models.DenseSpec(5),
        ),
        input_shape=(11, 11, 2),
    )
    params = model.init_params(jax.random.key(2))
    x = jax.random.uniform(jax.random.key(3), (2, 11, 11, 2))
    np.testing.assert_allclose(
        models.apply_layers_batch(models.layer_view(model, params), x),
        model.apply({"params": params}, x),
        atol=1e-5,
        rtol=1e-5,
    )


def test_unknown_model_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        models.get_model("nope")
