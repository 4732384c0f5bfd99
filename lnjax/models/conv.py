"""A convolution whose reverse-mode input gradient stays on XLA CPU's fast path inside loops.

`conv_general_dilated` computes exactly `lax.conv_general_dilated`; only its derivative is
spelled differently. The reason is one XLA CPU pass. JAX transposes a convolution with respect to
its input into a convolution over the spatially reversed kernel with the kernel's in/out
dimensions swapped (dim_labels `…_01oi->…`). XLA CPU sends a convolution to Eigen's fast kernels
only in canonical form (`01io`), and its `ConvCanonicalization` pass canonicalises only the
top-level computation's convolutions. Inside a `lax.fori_loop` / `lax.scan` / `lax.while_loop`
body, where every attack, PGD training step and boundary scan runs its gradients, the transposed
convolution stays `01oi` and falls to XLA's elemental (naive-loop) emitter.

Measured on the `mnist_small` CNN, 100 MNIST images, 2 CPU cores (jax 0.10.2): one jitted
value_and_grad 9.6 ms; the same call as the body of a `fori_loop` 27 ms per step; with this
convolution 10.5 ms per step in the loop (the forward pass alone is 4.5 ms in and out of loops).

The fix is a `custom_jvp` whose tangent map convolves the input tangent with the kernel's in/out
axes swapped and dimension numbers to match (the same linear map). Reverse mode transposes that
tangent convolution into a canonical `01io` convolution, which takes the fast path everywhere.
Forward mode (`jax.jvp`, `jax.jacfwd`, Hessian-vector products) keeps working, since this is a
custom JVP rather than a custom VJP; only a forward-mode tangent through the input runs through a
non-canonical convolution inside loops. Zero tangents (the kernel's when attacking, the image's in
the first layer when training) are skipped rather than convolved.

Flax's `nn.Conv` takes it as `conv_general_dilated=`; `Sequential` passes it for every conv layer.
Parameters, initialisation and outputs are unchanged.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero
from jax.typing import DTypeLike


def conv_general_dilated(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]],
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers: lax.ConvGeneralDilatedDimensionNumbers = None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
    precision: lax.PrecisionLike = None,
    preferred_element_type: DTypeLike | None = None,
) -> jax.Array:
    """`lax.conv_general_dilated` (same arguments, same result) with a loop-friendly gradient.

    Grouped convolutions (`feature_group_count` or `batch_group_count` > 1), a
    `preferred_element_type`, and string padding with `lhs_dilation` (which lax rejects) go straight
    to `lax.conv_general_dilated`.
    """
    nd = lhs.ndim - 2
    lhs_dilation = tuple(lhs_dilation or (1,) * nd)
    rhs_dilation = tuple(rhs_dilation or (1,) * nd)
    if (
        feature_group_count != 1
        or batch_group_count != 1
        or preferred_element_type is not None
        or (isinstance(padding, str) and lhs_dilation != (1,) * nd)  # lax raises its own error
    ):
        return lax.conv_general_dilated(
            lhs,
            rhs,
            window_strides,
            padding,
            lhs_dilation,
            rhs_dilation,
            dimension_numbers,
            feature_group_count,
            batch_group_count,
            precision,
            preferred_element_type,
        )
    dn = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
    if isinstance(padding, str):  # as lax resolves it
        in_spatial = [lhs.shape[d] for d in dn.lhs_spec[2:]]
        window = [(rhs.shape[d] - 1) * r + 1 for d, r in zip(dn.rhs_spec[2:], rhs_dilation, strict=True)]
        padding = lax.padtype_to_pads(in_spatial, window, window_strides, padding)
    config = (
        tuple(window_strides),
        tuple((int(lo), int(hi)) for lo, hi in padding),
        lhs_dilation,
        rhs_dilation,
        dn,
        precision,
    )
    return _conv(config, lhs, rhs)


def _lax_conv(config, lhs, rhs, dn=None):
    strides, padding, lhs_dilation, rhs_dilation, config_dn, precision = config
    return lax.conv_general_dilated(
        lhs,
        rhs,
        strides,
        padding,
        lhs_dilation,
        rhs_dilation,
        dn or config_dn,
        precision=precision,
    )


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _conv(config, lhs, rhs):
    return _lax_conv(config, lhs, rhs)


def _conv_jvp(config, primals, tangents):
    lhs, rhs = primals
    d_lhs, d_rhs = tangents
    out = _lax_conv(config, lhs, rhs)
    terms = []
    if not isinstance(d_lhs, SymbolicZero):
        # The same linear map in lhs with the kernel's out/in axes swapped in the array and in the
        # dimension numbers: its transpose (what reverse mode runs) is a canonical convolution.
        dn = config[4]
        o_axis, i_axis = dn.rhs_spec[0], dn.rhs_spec[1]
        swapped = lax.ConvDimensionNumbers(dn.lhs_spec, (i_axis, o_axis, *dn.rhs_spec[2:]), dn.out_spec)
        terms.append(_lax_conv(config, d_lhs, jnp.swapaxes(rhs, o_axis, i_axis), swapped))
    if not isinstance(d_rhs, SymbolicZero):
        terms.append(_lax_conv(config, lhs, d_rhs))
    if not terms:
        return out, jnp.zeros_like(out)
    return out, sum(terms[1:], terms[0])


_conv.defjvp(_conv_jvp, symbolic_zeros=True)
