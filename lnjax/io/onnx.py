"""ONNX in and out: feed-forward ONNX graphs as lnjax `Sequential` models, and back.

`load_onnx(path)` reads a graph with the `onnx` package (the optional extra `lnjax[onnx]`) and maps
it onto the layer specs of `lnjax.models` (Conv, Dense, ReLU, Flatten, MaxPool, AvgPool, Affine).
`save_onnx(model, params, path)` writes an lnjax `Sequential` as a standard NCHW ONNX graph that
`load_onnx` reads back to the same model (same `input_shape`, logits within float rounding).

Layout. ONNX images are NCHW, ours NHWC. A graph input [N, C, H, W] becomes our per-example input
(H, W, C); [N, D] becomes (D,); any other [N, *S] stays S. While walking the graph the loader keeps,
for the ONNX tensor it is at, an index array (its per-example shape) of positions in our row-major
flattened tensor, so pure reshapes (Flatten, Reshape, Transpose, Squeeze, Unsqueeze, Identity,
Dropout) only move indices and cost nothing. Conv and pooling need the ONNX tensor to be the NCHW
view of our [H, W, C] one (kernels OIHW -> HWIO). The first Gemm / MatMul after a Flatten of an NCHW
tensor gets its weight rows permuted by the index array, so its result is identical; a constant
operand of Add / Sub / Mul / Div is permuted the same way.

Ops (ONNX operator spec, https://onnx.ai/onnx/operators/): Gemm (transA = 0, transB 0/1, alpha,
beta), MatMul (dynamic @ constant), Add / Sub / Mul / Div with one constant operand, Conv (2-D, pads,
strides, auto_pad; dilations 1, group 1), Relu, MaxPool / AveragePool (2-D, dilations 1; ceil_mode
only where it does not change the output size; AveragePool without padding), Flatten (axis 1),
Reshape, Transpose and Squeeze / Unsqueeze that keep the batch axis first, Identity, Dropout
(removed), Constant, BatchNormalization (inference), and Shape / Gather / Concat / Cast / arithmetic
on constants only (folded). Anything else raises `OnnxImportError` naming the op and the node.

Folding (all exact in real arithmetic; float32 results differ from ONNX Runtime by rounding only):
- a constant Add / Sub / Mul / Div or a BatchNormalization becomes an elementwise `Affine` op;
- an Affine after a Dense, or after a Conv when it is per channel, is folded into its kernel and bias;
- an Affine before a Dense (also across a Flatten) is folded into the Dense, since nothing pads;
- an Affine before a Conv, a pooling or a ReLU is kept: folding a shift into a zero-padded Conv is
  not exact at the borders (the padding would be shifted too), so an input normalisation before the
  first Conv stays an op of its own, exactly as the graph computes it.
Consecutive Affines are composed and an identity Affine is dropped.

References:
  ONNX operators: https://onnx.ai/onnx/operators/ (opset 13 and later); VNN-COMP rules
    (https://sites.google.com/view/vnn2024): networks are given as ONNX, properties as VNN-LIB.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp
import numpy as np

from lnjax.io import write_bytes_atomic
from lnjax.models import ops as O
from lnjax.models.ops import geometry as G
from lnjax.models.sequential import Sequential, layer_view
from lnjax.types import Params

SUPPORTED = (
    "Add",
    "AveragePool",
    "BatchNormalization",
    "Constant",
    "Conv",
    "Div",
    "Dropout",
    "Flatten",
    "Gemm",
    "Identity",
    "MatMul",
    "MaxPool",
    "Mul",
    "Relu",
    "Reshape",
    "Shape",
    "Squeeze",
    "Sub",
    "Transpose",
    "Unsqueeze",
)
"""Op types `load_onnx` maps (plus Cast / Concat / Gather when every input is a constant)."""


class OnnxImportError(ValueError):
    """A graph `load_onnx` cannot map onto a `Sequential` (one line: op type, node name, why)."""


class OnnxModel(NamedTuple):
    """A loaded ONNX network.

    model: the `Sequential`; params: its Flax params (`layer_{i}`); input_shape: our per-example
    input shape (NHWC, e.g. (28, 28, 1), or (784,) for a flat input); onnx_input_shape: the graph's
    input shape with its batch axis (e.g. (1, 1, 28, 28); a symbolic batch axis is its name, e.g.
    "N"); input_name / output_name: the graph's input and output tensor names.
    """

    model: Sequential
    params: Params
    input_shape: tuple[int, ...]
    onnx_input_shape: tuple[int | str, ...]
    input_name: str
    output_name: str


# ----------------------------------------------------------------------------- layout helpers


def _nchw_index(hwc: Sequence[int]) -> np.ndarray:
    """[C, H, W]: the flat position in a row-major [H, W, C] tensor of each NCHW element."""
    h, w, c = hwc
    return np.arange(h * w * c).reshape(h, w, c).transpose(2, 0, 1)


def _to_ours(c: np.ndarray, index: np.ndarray, ours: tuple[int, ...]) -> np.ndarray:
    """A constant over the ONNX per-example shape (index.shape) laid out in our shape."""
    out = np.empty(math.prod(ours), np.float64)
    out[index.reshape(-1)] = np.broadcast_to(c, index.shape).reshape(-1)
    return out.reshape(ours)


def _host(a: Any) -> jax.Array:
    """A float64 numpy array standing in for a jax array in an op while the graph is mapped and
    folded on the host (`_sequential` casts every parameter to a float32 jax array)."""
    return cast(jax.Array, np.array(a, np.float64))


def _compact(v: np.ndarray) -> np.ndarray:
    """An elementwise parameter in its smallest broadcasting form: () if constant, (C,) if an
    [H, W, C] array is constant over H and W, else as is."""
    v = np.asarray(v, np.float64)
    flat = v.reshape(-1)
    if flat.size and np.all(flat == flat[0]):
        return np.asarray(flat[0])
    if v.ndim == 3 and np.all(v == v[:1, :1]):
        return v[0, 0].copy()
    return v


def _pads_of(
    attrs: dict[str, Any], in_hw: Sequence[int], kernel: Sequence[int], strides: Sequence[int]
) -> G.Padding:
    """ONNX auto_pad / pads ([top, left, bottom, right]) as ((top, bottom), (left, right)).

    Raises:
      ValueError: pads that are not 2-D, or an unknown auto_pad.
    """
    auto = attrs.get("auto_pad", "NOTSET")
    if auto == "NOTSET":
        p = [int(v) for v in attrs.get("pads", [0, 0, 0, 0])]
        if len(p) != 4:
            raise ValueError(f"pads {p} are not 2-D [top, left, bottom, right]")
        return (p[0], p[2]), (p[1], p[3])
    if auto == "VALID":
        return (0, 0), (0, 0)
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        out = []
        for n, k, s in zip(in_hw, kernel, strides, strict=True):
            total = max((-(-n // s) - 1) * s + k - n, 0)
            small, large = total // 2, total - total // 2
            out.append((small, large) if auto == "SAME_UPPER" else (large, small))
        return out[0], out[1]
    raise ValueError(f"auto_pad={auto!r} is not supported")


# ----------------------------------------------------------------------------- import


class _Value(NamedTuple):
    """The one dynamic tensor: our per-example shape, and for each element of the ONNX per-example
    tensor its position in our row-major flattened tensor."""

    ours: tuple[int, ...]
    index: np.ndarray


_CONST_FOLD: dict[str, Callable[..., np.ndarray]] = {
    "Identity": lambda a, x: x,
    "Add": lambda a, x, y: x + y,
    "Sub": lambda a, x, y: x - y,
    "Mul": lambda a, x, y: x * y,
    "Div": lambda a, x, y: x // y if np.issubdtype(np.result_type(x, y), np.integer) else x / y,
    "Neg": lambda a, x: -x,
    "Sqrt": lambda a, x: np.sqrt(x),
    "Reshape": lambda a, x, s: x.reshape([d if d != 0 else x.shape[i] for i, d in enumerate(s)]),
    "Transpose": lambda a, x: x.transpose(a.get("perm")),
    "Squeeze": lambda a, x, axes=None: np.squeeze(x, tuple(int(v) for v in (a.get("axes", axes)))),
    "Unsqueeze": lambda a, x, axes=None: np.expand_dims(x, tuple(int(v) for v in a.get("axes", axes))),
    "Concat": lambda a, *xs: np.concatenate(xs, axis=a["axis"]),
    "Gather": lambda a, x, i: np.take(x, i, axis=a.get("axis", 0)),
    "Cast": lambda a, x: x.astype(_numpy_dtype(a["to"])),
    "Flatten": lambda a, x: x.reshape(math.prod(x.shape[: a.get("axis", 1)]), -1),
}


def _numpy_dtype(onnx_type: int) -> Any:
    from onnx import helper

    return helper.tensor_dtype_to_np_dtype(onnx_type)


class _Importer:
    """Walks the graph's nodes (topologically sorted, as ONNX requires) along the one dynamic tensor."""

    def __init__(self, graph: Any, consts: dict[str, np.ndarray], input_name: str, value: _Value):
        self.graph = graph
        self.consts = consts
        self.values: dict[str, _Value] = {input_name: value}
        self.current = input_name
        self.dead: dict[str, str] = {}  # outputs that must stay unused -> why
        self.ops: list[Any] = []

    # -- helpers

    def fail(self, node: Any, why: str) -> OnnxImportError:
        return OnnxImportError(f"{node.op_type} node {node.name or '(unnamed)'!r}: {why}")

    def const(self, node: Any, i: int, what: str) -> np.ndarray:
        names = list(node.input)
        if i >= len(names) or not names[i]:
            raise self.fail(node, f"missing input {i} ({what})")
        if names[i] not in self.consts:
            raise self.fail(node, f"input {i} ({what}) must be a constant (an initializer or Constant)")
        return self.consts[names[i]]

    def optional_const(self, node: Any, i: int) -> np.ndarray | None:
        names = list(node.input)
        if i >= len(names) or not names[i]:
            return None
        return self.const(node, i, f"input {i}")

    def emit(self, node: Any, op: Any, value: _Value) -> None:
        if op is not None:
            self.ops.append(op)
        self.set_output(node, value)

    def set_output(self, node: Any, value: _Value) -> None:
        self.values[node.output[0]] = value
        self.current = node.output[0]
        for extra in list(node.output)[1:]:
            if extra:
                self.dead[extra] = f"output {extra!r} of {node.op_type} node {node.name!r} is not supported"

    def flat(self, v: _Value) -> _Value:
        """Our tensor flattened (appends a Flatten op; the indices already point into the flat order)."""
        if len(v.ours) == 1:
            return v
        self.ops.append(O.Flatten())
        return _Value((math.prod(v.ours),), v.index)

    def pads(self, node: Any, attrs: dict[str, Any], in_hw, kernel, strides) -> G.Padding:
        try:
            return _pads_of(attrs, in_hw, kernel, strides)
        except ValueError as e:
            raise self.fail(node, str(e)) from None

    def image(self, node: Any, v: _Value) -> tuple[int, int, int]:
        """(H, W, C) if the ONNX tensor is the NCHW view of our [H, W, C] tensor, else an error."""
        if len(v.ours) != 3 or v.index.ndim != 3 or not np.array_equal(v.index, _nchw_index(v.ours)):
            raise self.fail(
                node,
                f"needs an NCHW image input; got an ONNX tensor of per-example shape {v.index.shape} "
                "that is not the NCHW view of an image (only reshapes that keep it one are supported)",
            )
        h, w, c = v.ours
        return h, w, c

    # -- the walk

    def run(self) -> None:
        for node in self.graph.node:
            if node.domain not in ("", "ai.onnx"):
                raise self.fail(node, f"op of domain {node.domain!r} (only the default ONNX domain)")
            for name in node.input:
                if name in self.dead:
                    raise self.fail(node, self.dead[name])
                if name and name not in self.values and name not in self.consts:
                    raise self.fail(node, f"input {name!r} is not defined by any earlier node")
            dynamic = [n for n in node.input if n in self.values]
            if not dynamic:
                self.fold_constant(node)
                continue
            if node.op_type == "Shape":
                self.shape_of(node, self.values[dynamic[0]])
                continue
            if len(dynamic) > 1:
                raise self.fail(
                    node, "two non-constant inputs (branches or residual connections are not supported)"
                )
            if dynamic[0] != self.current:
                raise self.fail(
                    node,
                    f"tensor {dynamic[0]!r} is used by more than one node (branches are not supported)",
                )
            handler = getattr(self, f"op_{node.op_type}", None)
            if handler is None:
                raise self.fail(node, f"unsupported op; supported: {', '.join(SUPPORTED)}")
            handler(node, self.values[self.current], list(node.input).index(self.current), _attrs(node))

    def fold_constant(self, node: Any) -> None:
        attrs = _attrs(node)
        if node.op_type == "Constant":
            self.consts[node.output[0]] = _constant_value(node, attrs, self)
            return
        fold = _CONST_FOLD.get(node.op_type)
        if fold is None:
            raise self.fail(node, f"unsupported op on constants; supported: {', '.join(_CONST_FOLD)}")
        args = [self.consts[n] if n else None for n in node.input]
        if not args or args[0] is None:
            raise self.fail(node, "missing input")
        try:
            self.consts[node.output[0]] = np.asarray(fold(attrs, *args))
        except (ValueError, TypeError, IndexError, KeyError) as e:
            raise self.fail(node, f"cannot fold constants ({e})") from e

    def shape_of(self, node: Any, v: _Value) -> None:
        attrs = _attrs(node)
        shape = np.array([1, *v.index.shape], np.int64)  # the batch axis as 1: one example
        self.consts[node.output[0]] = shape[attrs.get("start", 0) : attrs.get("end", None)]

    # -- pass-through and reshapes

    def op_Identity(self, node, v, pos, attrs):
        self.set_output(node, v)

    def op_Dropout(self, node, v, pos, attrs):
        mode = self.optional_const(node, 2)  # opset 12+: training_mode
        if mode is not None and bool(np.asarray(mode).reshape(-1)[0]):
            raise self.fail(node, "training_mode=True is not supported (inference only)")
        self.set_output(node, v)

    def op_Flatten(self, node, v, pos, attrs):
        axis = int(attrs.get("axis", 1))
        if axis < 0:
            axis += v.index.ndim + 1
        if axis != 1:
            raise self.fail(node, f"axis={attrs.get('axis')} would mix the batch axis (only axis=1)")
        self.set_output(node, _Value(v.ours, v.index.reshape(-1)))

    def op_Reshape(self, node, v, pos, attrs):
        target = [int(d) for d in self.const(node, 1, "shape").reshape(-1)]
        size = v.index.size
        if not target:
            raise self.fail(node, "an empty target shape drops the batch axis")
        full_in = (1, *v.index.shape)
        if not attrs.get("allowzero", 0):
            target = [full_in[i] if d == 0 and i < len(full_in) else d for i, d in enumerate(target)]
        batch, rest = target[0], target[1:]
        if batch not in (1, -1):
            raise self.fail(node, f"target {target} does not keep the batch axis first (expected 0, 1 or -1)")
        if rest.count(-1) > (0 if batch == -1 else 1):
            raise self.fail(node, f"target {target} has more than one inferred (-1) size")
        known = math.prod(d for d in rest if d != -1)
        rest = [size // known if d == -1 else d for d in rest]
        if math.prod(rest) != size:
            raise self.fail(node, f"target {target} does not keep {size} elements per example")
        self.set_output(node, _Value(v.ours, v.index.reshape(rest)))

    def op_Transpose(self, node, v, pos, attrs):
        perm = [int(p) for p in attrs.get("perm", range(v.index.ndim, -1, -1))]
        if perm[0] != 0:
            raise self.fail(node, f"perm {perm} moves the batch axis (it must stay first)")
        self.set_output(node, _Value(v.ours, v.index.transpose([p - 1 for p in perm[1:]])))

    def _axes(self, node, attrs, rank):
        axes = attrs.get("axes")
        if axes is None:
            given = self.optional_const(node, 1)
            if given is None:
                raise self.fail(node, "axes are required (squeezing every unit axis could drop the batch)")
            axes = given.reshape(-1)
        axes = sorted(int(a) + rank if int(a) < 0 else int(a) for a in axes)
        if 0 in axes:
            raise self.fail(node, "axis 0 is the batch axis")
        return [a - 1 for a in axes]

    def op_Squeeze(self, node, v, pos, attrs):
        axes = self._axes(node, attrs, v.index.ndim + 1)
        if any(v.index.shape[a] != 1 for a in axes):
            raise self.fail(node, f"squeezes an axis of size > 1 (per-example shape {v.index.shape})")
        self.set_output(node, _Value(v.ours, np.squeeze(v.index, tuple(axes))))

    def op_Unsqueeze(self, node, v, pos, attrs):
        n_axes = len(attrs["axes"]) if "axes" in attrs else self.const(node, 1, "axes").size
        axes = self._axes(node, attrs, v.index.ndim + 1 + n_axes)
        self.set_output(node, _Value(v.ours, np.expand_dims(v.index, tuple(axes))))

    # -- elementwise

    def op_Relu(self, node, v, pos, attrs):
        self.emit(node, O.ReLU(), v)

    def _elementwise_const(self, node, v, c: np.ndarray) -> np.ndarray:
        c = np.asarray(c, np.float64)
        full = (1, *v.index.shape)
        try:
            ok = np.broadcast_shapes(c.shape, full) == full
        except ValueError:
            ok = False
        if not ok:
            raise self.fail(node, f"constant of shape {c.shape} does not broadcast onto the input {full}")
        if c.ndim == len(full):
            c = c[0]
        return _to_ours(c, v.index, v.ours)

    def _affine(self, node, v, scale, shift):
        self.emit(node, O.Affine(scale=_host(_compact(scale)), shift=_host(_compact(shift))), v)

    def _binary(self, node, v, pos):
        other = self.const(node, 1 - pos, "the constant operand")
        return self._elementwise_const(node, v, other)

    def op_Add(self, node, v, pos, attrs):
        self._affine(node, v, np.ones(()), self._binary(node, v, pos))

    def op_Sub(self, node, v, pos, attrs):
        c = self._binary(node, v, pos)
        if pos == 0:  # x - c
            self._affine(node, v, np.ones(()), -c)
        else:  # c - x
            self._affine(node, v, -np.ones(()), c)

    def op_Mul(self, node, v, pos, attrs):
        self._affine(node, v, self._binary(node, v, pos), np.zeros(()))

    def op_Div(self, node, v, pos, attrs):
        if pos != 0:
            raise self.fail(node, "constant / x is not affine (only x / constant)")
        c = self._binary(node, v, pos)
        if np.any(c == 0):
            raise self.fail(node, "division by zero")
        self._affine(node, v, 1.0 / c, np.zeros(()))

    def op_BatchNormalization(self, node, v, pos, attrs):
        if attrs.get("training_mode", 0):
            raise self.fail(node, "training_mode=1 is not supported (inference only)")
        gamma, beta, mean, var = (
            self.const(node, i, w) for i, w in enumerate(("scale", "B", "mean", "var"), 1)
        )
        s = np.asarray(gamma, np.float64) / np.sqrt(np.asarray(var, np.float64) + attrs.get("epsilon", 1e-5))
        t = np.asarray(beta, np.float64) - np.asarray(mean, np.float64) * s
        channel = (-1,) + (1,) * (v.index.ndim - 1)  # ONNX axis 1: the first per-example axis
        if v.index.ndim < 1 or s.size != v.index.shape[0]:
            raise self.fail(
                node, f"{s.size} channels do not match the input's per-example shape {v.index.shape}"
            )
        self._affine(
            node,
            v,
            _to_ours(s.reshape(channel), v.index, v.ours),
            _to_ours(t.reshape(channel), v.index, v.ours),
        )

    # -- linear layers

    def _dense(self, node, v: _Value, w: np.ndarray, b: np.ndarray, out_index_shape: tuple[int, ...]):
        v = self.flat(v)
        if w.shape[0] != v.index.size:
            raise self.fail(node, f"weight of shape {w.shape} does not match {v.index.size} input features")
        kernel = np.empty_like(w, dtype=np.float64)
        kernel[v.index.reshape(-1)] = w  # our row index[j] is ONNX row j
        k = w.shape[1]
        self.emit(
            node,
            O.Dense(kernel=_host(kernel), bias=_host(b)),
            _Value((k,), np.arange(k).reshape(out_index_shape)),
        )

    def op_Gemm(self, node, v, pos, attrs):
        if pos != 0 or attrs.get("transA", 0):
            raise self.fail(node, "only Gemm(x, W) with the input first and transA=0 is supported")
        if v.index.ndim != 1:
            raise self.fail(node, f"input of per-example shape {v.index.shape} is not [N, D]")
        w = np.asarray(self.const(node, 1, "B"), np.float64)
        if w.ndim != 2:
            raise self.fail(node, f"B of shape {w.shape} is not a matrix")
        w = (w.T if attrs.get("transB", 0) else w) * float(attrs.get("alpha", 1.0))
        c = self.optional_const(node, 2)
        k = w.shape[1]
        b = np.zeros(k) if c is None else np.asarray(c, np.float64) * float(attrs.get("beta", 1.0))
        try:
            b = np.broadcast_to(b, (1, k))[0]
        except ValueError:
            raise self.fail(
                node, f"C of shape {None if c is None else c.shape} does not broadcast onto [N, {k}]"
            ) from None
        self._dense(node, v, w, b, (k,))

    def op_MatMul(self, node, v, pos, attrs):
        if pos != 0:
            raise self.fail(node, "constant @ x is not supported (only x @ W)")
        w = np.asarray(self.const(node, 1, "the weight"), np.float64)
        lead = v.index.shape[:-1]
        if w.ndim != 2 or math.prod(lead) != 1:
            raise self.fail(
                node, f"only [N, D] @ [D, K] is supported (input {v.index.shape}, weight {w.shape})"
            )
        self._dense(node, v, w, np.zeros(w.shape[1]), (*lead, w.shape[1]))

    def op_Conv(self, node, v, pos, attrs):
        h, w_, c = self.image(node, v)
        weight = np.asarray(self.const(node, 1, "W"), np.float64)
        if weight.ndim != 4:
            raise self.fail(node, f"weight of shape {weight.shape} is not a 2-D convolution")
        if attrs.get("group", 1) != 1:
            raise self.fail(node, f"group={attrs['group']} is not supported (only group=1)")
        if any(d != 1 for d in attrs.get("dilations", [1, 1])):
            raise self.fail(node, f"dilations={attrs['dilations']} are not supported (only 1)")
        o, i, kh, kw = weight.shape
        if i != c:
            raise self.fail(node, f"weight expects {i} input channels, the input has {c}")
        strides = tuple(int(s) for s in attrs.get("strides", [1, 1]))
        padding = self.pads(node, attrs, (h, w_), (kh, kw), strides)
        bias = self.optional_const(node, 2)
        op = O.Conv(
            kernel=_host(weight.transpose(2, 3, 1, 0)),
            bias=_host(np.zeros(o) if bias is None else bias),
            strides=(strides[0], strides[1]),
            padding=padding,
        )
        ho, wo = G.output_size((h, w_), (kh, kw), strides, padding)
        self.emit(node, op, _Value((ho, wo, o), _nchw_index((ho, wo, o))))

    def _pool_geometry(self, node, v, attrs):
        h, w, c = self.image(node, v)
        kernel = tuple(int(k) for k in attrs["kernel_shape"])
        if len(kernel) != 2:
            raise self.fail(node, f"kernel_shape {kernel} is not 2-D")
        if any(d != 1 for d in attrs.get("dilations", [1, 1])):
            raise self.fail(node, f"dilations={attrs['dilations']} are not supported (only 1)")
        strides = tuple(int(s) for s in attrs.get("strides", [1, 1]))
        padding = self.pads(node, attrs, (h, w), kernel, strides)
        out = G.output_size((h, w), kernel, strides, padding)
        if attrs.get("ceil_mode", 0):
            (pt, pb), (pl, pr) = padding
            spans = (h + pt + pb - kernel[0], w + pl + pr - kernel[1])
            ceil = tuple(-(-n // s) + 1 for n, s in zip(spans, strides, strict=True))
            if ceil != out:
                raise self.fail(node, f"ceil_mode=1 changes the output size here ({ceil} vs {out})")
        return (h, w, c), (kernel[0], kernel[1]), (strides[0], strides[1]), padding, out

    def op_MaxPool(self, node, v, pos, attrs):
        (_, _, c), kernel, strides, padding, (ho, wo) = self._pool_geometry(node, v, attrs)
        self.emit(
            node,
            O.MaxPool(window=kernel, strides=strides, padding=padding),
            _Value((ho, wo, c), _nchw_index((ho, wo, c))),
        )

    def op_AveragePool(self, node, v, pos, attrs):
        (_, _, c), kernel, strides, padding, (ho, wo) = self._pool_geometry(node, v, attrs)
        if padding != ((0, 0), (0, 0)):
            raise self.fail(
                node, f"padding {padding} is not supported (average pooling without padding only)"
            )
        self.emit(
            node, O.AvgPool(window=kernel, strides=strides), _Value((ho, wo, c), _nchw_index((ho, wo, c)))
        )


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    out = {}
    for a in node.attribute:
        value = helper.get_attribute_value(a)
        out[a.name] = value.decode() if isinstance(value, bytes) else value
    return out


def _constant_value(node: Any, attrs: dict[str, Any], importer: _Importer) -> np.ndarray:
    from onnx import numpy_helper

    if "value" in attrs:
        return numpy_helper.to_array(attrs["value"])
    for key, dtype in (
        ("value_float", np.float32),
        ("value_floats", np.float32),
        ("value_int", np.int64),
        ("value_ints", np.int64),
    ):
        if key in attrs:
            return np.asarray(attrs[key], dtype)
    raise importer.fail(node, f"unsupported attribute(s) {sorted(attrs)}")


# ----------------------------------------------------------------------------- folding


def _in_shapes(ops: list[Any], input_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    from lnjax.models.layers import op_output_shape

    shapes, shape = [], input_shape
    for op in ops:
        shapes.append(shape)
        shape = op_output_shape(op, shape)
    return shapes


def _fold_step(ops: list[Any], input_shape: tuple[int, ...]) -> bool:
    """Applies the first applicable folding rule (see the module docstring); False when none applies."""
    shapes = _in_shapes(ops, input_shape)
    for i, op in enumerate(ops):
        nxt = ops[i + 1] if i + 1 < len(ops) else None
        if isinstance(op, O.Affine):
            s, t = np.asarray(op.scale, np.float64), np.asarray(op.shift, np.float64)
            if np.all(s == 1) and np.all(t == 0):
                del ops[i]
                return True
            if isinstance(nxt, O.Affine):
                s2, t2 = np.asarray(nxt.scale, np.float64), np.asarray(nxt.shift, np.float64)
                ops[i : i + 2] = [O.Affine(scale=_host(_compact(s * s2)), shift=_host(_compact(t * s2 + t2)))]
                return True
            full = shapes[i]
            if isinstance(nxt, O.Flatten) and isinstance(ops[i + 2] if i + 2 < len(ops) else None, O.Dense):
                flat = (math.prod(full),)
                s_f, t_f = (np.broadcast_to(v, full).reshape(flat) for v in (s, t))
                ops[i : i + 2] = [O.Flatten(), O.Affine(scale=_host(s_f), shift=_host(t_f))]
                return True
            if isinstance(nxt, O.Dense):
                k = np.asarray(nxt.kernel, np.float64)
                s_f, t_f = (np.broadcast_to(v, full).reshape(-1) for v in (s, t))
                ops[i : i + 2] = [
                    O.Dense(
                        kernel=_host(k * s_f[:, None]), bias=_host(t_f @ k + np.asarray(nxt.bias, np.float64))
                    )
                ]
                return True
        if isinstance(op, O.Dense | O.Conv) and isinstance(nxt, O.Affine):
            s, t = _compact(np.asarray(nxt.scale)), _compact(np.asarray(nxt.shift))
            if s.ndim <= 1 and t.ndim <= 1:  # per output channel (Dense: always)
                k = np.asarray(op.kernel, np.float64)
                b = np.asarray(op.bias, np.float64)
                ops[i : i + 2] = [dataclasses.replace(op, kernel=_host(k * s), bias=_host(b * s + t))]
                return True
    return False


def _fold(ops: list[Any], input_shape: tuple[int, ...]) -> list[Any]:
    ops = list(ops)
    while _fold_step(ops, input_shape):
        pass
    return ops


# ----------------------------------------------------------------------------- ops -> Sequential


def _sequential(ops: list[Any], input_shape: tuple[int, ...]) -> tuple[Sequential, Params]:
    specs: list[O.Spec] = []
    params: dict[str, Any] = {}
    f32 = lambda a: jnp.asarray(np.asarray(a, np.float64), jnp.float32)  # noqa: E731
    for i, op in enumerate(ops):
        name = f"layer_{i}"
        if isinstance(op, O.Conv):
            kh, kw, _, co = np.shape(op.kernel)
            specs.append(O.ConvSpec(int(co), (int(kh), int(kw)), op.strides, op.padding))
            params[name] = {"kernel": f32(op.kernel), "bias": f32(op.bias)}
        elif isinstance(op, O.Dense):
            specs.append(O.DenseSpec(int(np.shape(op.kernel)[1])))
            params[name] = {"kernel": f32(op.kernel), "bias": f32(op.bias)}
        elif isinstance(op, O.Affine):
            shape = np.broadcast_shapes(np.shape(op.scale), np.shape(op.shift))
            specs.append(O.AffineSpec(tuple(int(d) for d in shape)))
            params[name] = {
                "scale": f32(np.broadcast_to(op.scale, shape)),
                "shift": f32(np.broadcast_to(op.shift, shape)),
            }
        elif isinstance(op, O.ReLU):
            specs.append(O.ReLUSpec())
        elif isinstance(op, O.Flatten):
            specs.append(O.FlattenSpec())
        elif isinstance(op, O.MaxPool):
            specs.append(O.MaxPoolSpec(op.window, op.strides, op.padding))
        elif isinstance(op, O.AvgPool):
            specs.append(O.AvgPoolSpec(op.window, op.strides))
        else:  # pragma: no cover - the importer only makes the ops above
            raise TypeError(f"no spec for {type(op).__name__}")
    return Sequential(specs=tuple(specs), input_shape=tuple(input_shape)), params


def load_onnx(path: str | os.PathLike) -> OnnxModel:
    """Reads a feed-forward ONNX classifier as an lnjax `Sequential` (see the module docstring).

    Args:
      path: an .onnx file with one input [N, C, H, W] (or [N, D], [N, *S]) and one output [N, K].

    Returns:
      OnnxModel: `model.apply({"params": params}, x)` with x: [B, *input_shape] (NHWC) equals the
      graph on x transposed to the graph's layout (NCHW), within float32 rounding.

    Raises:
      OnnxImportError: an unsupported op or attribute (one line naming the op type and node), a
        graph with branches, or a layout Conv / pooling cannot take.
      ImportError: without the `onnx` package (`pip install 'lnjax[onnx]'`).
    """
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("load_onnx needs the onnx package: pip install 'lnjax[onnx]'") from e

    proto = onnx.load(os.fspath(path))
    graph = proto.graph
    consts = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    inputs = [i for i in graph.input if i.name not in consts]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise OnnxImportError(
            f"{path}: expected one input and one output, got inputs {[i.name for i in inputs]} "
            f"and outputs {[o.name for o in graph.output]}"
        )
    inp, out = inputs[0], graph.output[0]
    dims: list[int | str] = [
        int(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?")
        for d in inp.type.tensor_type.shape.dim
    ]
    per = dims[1:]
    if len(dims) < 2 or not all(isinstance(d, int) and d > 0 for d in per):
        raise OnnxImportError(
            f"{path}: input {inp.name!r} of shape {tuple(dims)} is not [N, ...] with fixed per-example sizes"
        )
    per_int = tuple(int(d) for d in per)
    if len(per_int) == 3:  # NCHW image -> NHWC
        c, h, w = per_int
        input_shape = (h, w, c)
        index = _nchw_index(input_shape)
    else:
        input_shape = per_int
        index = np.arange(math.prod(per_int)).reshape(per_int)
    importer = _Importer(graph, consts, inp.name, _Value(input_shape, index))
    importer.run()
    if out.name not in importer.values or out.name != importer.current:
        raise OnnxImportError(f"{path}: output {out.name!r} is not the end of the chain of supported ops")
    v = importer.flat(importer.values[out.name])
    if not np.array_equal(v.index.reshape(-1), np.arange(v.index.size)):
        raise OnnxImportError(
            f"{path}: output {out.name!r} of per-example shape {v.index.shape} is not logits in our order "
            "(end the graph with a Gemm / MatMul)"
        )
    model, params = _sequential(_fold(importer.ops, input_shape), input_shape)
    return OnnxModel(
        model=model,
        params=params,
        input_shape=input_shape,
        onnx_input_shape=tuple(dims),
        input_name=inp.name,
        output_name=out.name,
    )


# ----------------------------------------------------------------------------- export


def save_onnx(model: Sequential, params: Params, path: str | os.PathLike, *, opset: int = 13) -> None:
    """Writes an lnjax `Sequential` as an ONNX graph (written atomically).

    Layout: standard NCHW, as PyTorch exports and VNN-COMP use. The graph's input is "input" of
    shape [N, C, H, W] for our (H, W, C) models ([N, D] for a flat (D,) input; [N, *S] otherwise),
    its output "logits" [N, K]. Conv kernels are written OIHW, a Dense after a Flatten of an image
    gets its rows permuted to the NCHW flatten order, an Affine becomes Mul + Add. `load_onnx` reads
    the file back to the same `input_shape` and the same logits (within float32 rounding).

    Args:
      model, params: the network (`model.apply({"params": params}, x)`).
      path: where to write the .onnx file.
      opset: the default-domain opset to declare (13 or later).

    Raises:
      ValueError: a Dense on a non-flat input (add a FlattenSpec), or outputs that are not [N, K].
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if opset < 13 or opset > onnx.defs.onnx_opset_version():
        raise ValueError(f"opset {opset} is not in [13, {onnx.defs.onnx_opset_version()}]")
    view = layer_view(model, params)
    ours = tuple(view.input_shape)
    if len(ours) == 3:
        index = _nchw_index(ours)
    else:
        index = np.arange(math.prod(ours)).reshape(ours)
    nodes, inits = [], []
    x = "input"
    in_dims: list[int | str] = ["N", *index.shape]

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(value, np.float32), name))
        return name

    for i, op in enumerate(view.ops):
        name, y = f"layer_{i}", f"layer_{i}_out"
        if isinstance(op, O.Conv):
            kernel = np.asarray(op.kernel).transpose(3, 2, 0, 1)  # HWIO -> OIHW
            (pt, pb), (pl, pr) = op.padding
            nodes.append(
                helper.make_node(
                    "Conv",
                    [x, const(f"{name}.weight", kernel), const(f"{name}.bias", np.asarray(op.bias))],
                    [y],
                    name=name,
                    kernel_shape=list(kernel.shape[2:]),
                    strides=list(op.strides),
                    pads=[pt, pl, pb, pr],
                )
            )
        elif isinstance(op, O.Dense):
            if len(ours) != 1:
                raise ValueError(
                    f"save_onnx: Dense {name} on a non-flat input {ours}; add a FlattenSpec before it"
                )
            kernel = np.asarray(op.kernel)[index.reshape(-1)]  # ONNX row j is our row index[j]
            weight, bias = const(f"{name}.weight", kernel), const(f"{name}.bias", np.asarray(op.bias))
            nodes.append(helper.make_node("Gemm", [x, weight, bias], [y], name=name))
        elif isinstance(op, O.Affine):
            full = [np.broadcast_to(np.asarray(v, np.float64), ours) for v in (op.scale, op.shift)]
            scale, shift = (f.reshape(-1)[index][None] for f in full)  # ONNX layout, batch axis 1
            if len(ours) == 3 and all(np.ndim(v) <= 1 for v in (op.scale, op.shift)):  # per channel
                scale, shift = scale[:, :, :1, :1], shift[:, :, :1, :1]
            nodes.append(
                helper.make_node(
                    "Mul", [x, const(f"{name}.scale", scale)], [f"{y}_scaled"], name=f"{name}_mul"
                )
            )
            nodes.append(
                helper.make_node("Add", [f"{y}_scaled", const(f"{name}.shift", shift)], [y], name=name)
            )
        elif isinstance(op, O.ReLU):
            nodes.append(helper.make_node("Relu", [x], [y], name=name))
        elif isinstance(op, O.Flatten):
            nodes.append(helper.make_node("Flatten", [x], [y], name=name, axis=1))
        elif isinstance(op, O.MaxPool):
            (pt, pb), (pl, pr) = op.padding
            nodes.append(
                helper.make_node(
                    "MaxPool",
                    [x],
                    [y],
                    name=name,
                    kernel_shape=list(op.window),
                    strides=list(op.strides),
                    pads=[pt, pl, pb, pr],
                )
            )
        elif isinstance(op, O.AvgPool):
            nodes.append(
                helper.make_node(
                    "AveragePool", [x], [y], name=name, kernel_shape=list(op.window), strides=list(op.strides)
                )
            )
        else:
            raise ValueError(f"save_onnx: no ONNX export for op {type(op).__name__}")
        out_shape = view.output_shapes[i]
        if len(out_shape) == 3:
            index = _nchw_index(out_shape)
        elif isinstance(op, O.Flatten):
            index = index.reshape(-1)
        elif not isinstance(op, O.Affine | O.ReLU):
            index = np.arange(math.prod(out_shape)).reshape(out_shape)
        ours, x = out_shape, y
    if len(ours) != 1 or not np.array_equal(index.reshape(-1), np.arange(index.size)):
        raise ValueError(f"save_onnx: the network's output {ours} is not logits [K] in order")
    nodes.append(helper.make_node("Identity", [x], ["logits"], name="logits"))
    graph = helper.make_graph(
        nodes,
        "lnjax",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, in_dims)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", int(ours[0])])],
        initializer=inits,
    )
    opsets = [helper.make_opsetid("", opset)]
    proto = helper.make_model(graph, opset_imports=opsets, producer_name="lnjax")
    proto.ir_version = helper.find_min_ir_version_for(opsets)
    onnx.checker.check_model(proto)
    write_bytes_atomic(path, proto.SerializeToString())
