"""The network as host data: each run of linear ops composed into one sparse matrix, the nonlinear ops
(ReLU, max-pool) in between, a fingerprint of the weights, and the float64 forward pass."""

from __future__ import annotations

import hashlib
from typing import Any, NamedTuple, cast

import numpy as np
import scipy.sparse as sp

from lnjax.models import layers as L
from lnjax.models.ops import MilpRules, rules_of


class AffineLayer(NamedTuple):
    """y = w @ x + b. w: CSR [n_out, n_in] float64, b: [n_out] float64."""

    w: sp.csr_matrix
    b: np.ndarray


class NonlinearLayer(NamedTuple):
    """A nonlinear op (ReLU, max-pool, ...) as host data: `op` is the layer-view op (its rules encode
    it), `data` what its `MilpRules.layer` precomputed (e.g. max-pool windows), `op_index` its index
    in `view.ops`."""

    op: Any
    data: Any
    op_index: int


Layer = AffineLayer | NonlinearLayer


class MilpNetwork(NamedTuple):
    """A view as host data. `layers` alternate affine and nonlinear layers; the last is affine."""

    layers: tuple[Layer, ...]
    input_size: int
    num_classes: int
    key: str  # a fingerprint of the weights, so a worker can cache the network


def network_from_view(view: L.LayerView) -> MilpNetwork:
    """Converts a layer view into host data for the encoder (call once per network).

    Consecutive linear ops (their `MilpRules.matrix`) are composed into one sparse matrix; weights
    are cast to float64. Nonlinear ops become a `NonlinearLayer` (their `MilpRules.layer`).
    """
    shape = tuple(view.input_shape)
    n_in = int(np.prod(shape))
    layers: list[Layer] = []
    pending_w = sp.identity(n_in, format="csr", dtype="float64")
    pending_b = np.zeros(n_in)

    def flush():
        layers.append(AffineLayer(cast(sp.csr_matrix, pending_w.tocsr()), pending_b))

    for i, op in enumerate(view.ops):
        milp = rules_of(op).milp
        if milp.matrix is not None:  # linear: fold into the pending affine map
            m, bias, out = milp.matrix(op, shape)
            if m is not None:
                pending_w = m @ pending_w
                pending_b = m @ pending_b
            if bias is not None:
                pending_b = pending_b + bias
        elif milp.layer is not None:
            flush()
            data, out = milp.layer(op, shape)
            layers.append(NonlinearLayer(op=op, data=data, op_index=i))
            pending_w = sp.identity(int(np.prod(out)), format="csr", dtype="float64")
            pending_b = np.zeros(int(np.prod(out)))
        else:
            raise TypeError(f"the MILP encoder does not support op {type(op).__name__}")
        shape = tuple(out)
    flush()
    h = hashlib.blake2b(digest_size=16)
    for layer in layers:
        for part in _fingerprint_parts(layer):
            h.update(part)
    h.update(repr(shape).encode())
    return MilpNetwork(
        layers=tuple(layers), input_size=n_in, num_classes=int(np.prod(shape)), key=h.hexdigest()
    )


def _fingerprint_parts(layer: Layer) -> list[bytes]:
    """The bytes that identify a layer (weights, windows, op geometry)."""
    if isinstance(layer, AffineLayer):
        w = layer.w
        return [np.ascontiguousarray(p).tobytes() for p in (w.data, w.indices, w.indptr, layer.b)]
    data = np.asarray(layer.data)
    return [repr(layer.op).encode(), np.ascontiguousarray(data).tobytes(), repr(layer.op_index).encode()]


def _nonlinear_rules(layer: NonlinearLayer) -> MilpRules:
    return rules_of(layer.op).milp


def network_forward(net: MilpNetwork, x: np.ndarray) -> np.ndarray:
    """Runs the host network in float64. x: [n_in] (or any shape with n_in entries) -> logits [K]."""
    v = np.asarray(x, np.float64).ravel()
    for layer in net.layers:
        if isinstance(layer, AffineLayer):
            v = layer.w @ v + layer.b
        else:
            forward = _nonlinear_rules(layer).forward
            assert forward is not None
            v = forward(layer.data, v)
    return v


def nonlinear_op_indices(net: MilpNetwork) -> list[int]:
    """The `view.ops` index of every nonlinear layer, in order (their input bounds are needed)."""
    return [layer.op_index for layer in net.layers if isinstance(layer, NonlinearLayer)]
