"""lnjax.io.onnx: lnjax -> ONNX -> lnjax round trips, PyTorch-style NCHW graphs against ONNX Runtime,
folding rules, clear errors, and an imported network through the bounds and the MILP."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from lnjax import bounds as B, models, specs
from lnjax.io.onnx import OnnxImportError, load_onnx, save_onnx
from lnjax.models import ops
from lnjax.verify import milp as M
from lnjax.verify.reference import brute_force_min

TOL = 1e-5


def _params(model, seed):
    """Random params (nonzero biases and shifts), shaped as flax would make them (traced, not compiled)."""
    shapes = jax.eval_shape(model.init_params, jax.random.key(seed))
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda v: jnp.asarray(0.5 * rng.normal(size=v.shape), jnp.float32), shapes)


def _ort(path, x_onnx):
    """ONNX Runtime on the file, one example at a time (graphs with a fixed batch of 1 too)."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: xi[None].astype(np.float32)})[0] for xi in x_onnx])


def _apply(loaded, x):
    return np.asarray(loaded.model.apply({"params": loaded.params}, x))


def _spec_names(model):
    return [type(s).__name__.removesuffix("Spec") for s in model.specs]


MLP = models.Sequential(  # image input: the first Dense reads the NCHW flatten order
    specs=(ops.AffineSpec((3, 4, 2)), *models.mlp((3, 4, 2), (8, 6), 3).specs), input_shape=(3, 4, 2)
)
FLAT_MLP = models.Sequential(specs=(ops.AffineSpec(()), *models.mlp((7,), (5,), 4).specs), input_shape=(7,))
CNN = models.Sequential(  # normalisation, padded strided conv, padded max-pool, avg-pool
    specs=(
        ops.AffineSpec((2,)),
        ops.ConvSpec(3, (3, 3), (2, 2), "SAME"),
        ops.ReLUSpec(),
        ops.MaxPoolSpec((2, 2), (1, 1), "SAME"),
        ops.ConvSpec(4, (2, 2), (1, 1), ((1, 0), (0, 1))),
        ops.ReLUSpec(),
        ops.AvgPoolSpec((2, 2)),
        ops.FlattenSpec(),
        ops.DenseSpec(6),
        ops.ReLUSpec(),
        ops.DenseSpec(3),
    ),
    input_shape=(9, 8, 2),
)


@pytest.mark.parametrize("name", ["mlp", "flat_mlp", "cnn"])
def test_save_load_round_trip_and_onnxruntime_agree(name, tmp_path):
    model = {"mlp": MLP, "flat_mlp": FLAT_MLP, "cnn": CNN}[name]
    params = _params(model, 0)
    path = tmp_path / f"{name}.onnx"
    save_onnx(model, params, path)
    loaded = load_onnx(path)
    assert loaded.input_shape == model.input_shape == loaded.model.input_shape
    per = (model.input_shape[2], *model.input_shape[:2]) if len(model.input_shape) == 3 else model.input_shape
    assert loaded.onnx_input_shape == ("N", *per)
    assert (loaded.input_name, loaded.output_name) == ("input", "logits")
    x = np.asarray(jax.random.uniform(jax.random.key(2), (6, *model.input_shape)))
    want = np.asarray(model.apply({"params": params}, x))
    np.testing.assert_allclose(_apply(loaded, x), want, rtol=TOL, atol=TOL)
    x_onnx = x.transpose(0, 3, 1, 2) if x.ndim == 4 else x
    np.testing.assert_allclose(_ort(path, x_onnx), want, rtol=TOL, atol=TOL)
    if name == "cnn":  # the normalisation before a zero-padded conv is kept as its own op
        assert _spec_names(loaded.model) == _spec_names(model)
        np.testing.assert_allclose(loaded.params["layer_0"]["scale"], params["layer_0"]["scale"], rtol=1e-6)
    else:  # before a Dense (across the Flatten, NCHW order and all) it is folded into the kernel
        want = _spec_names(model)[1:]
        assert _spec_names(loaded.model) == (want if name == "mlp" else want[1:])  # flat: no Flatten needed


# ----------------------------------------------------------------------------- hand-built graphs


def _init(name, value):
    return numpy_helper.from_array(np.asarray(value, np.float32), name)


def _graph_file(path, nodes, inits, in_shape, out_shape, *, input_name=None, opset=13):
    graph = helper.make_graph(
        nodes,
        "test",
        [helper.make_tensor_value_info(input_name or nodes[0].input[0], TensorProto.FLOAT, list(in_shape))],
        [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, list(out_shape))],
        initializer=inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    proto.ir_version = 7
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return path


def _torch_like(path, rng):
    """What torch.onnx.export gives for a normalised CNN (batch 1, NCHW, fixed shapes)."""
    n = lambda *s: rng.normal(size=s)  # noqa: E731
    inits = [
        _init("mean", [[[[0.485]], [[0.456]], [[0.406]]]]),
        _init("std", [[[[0.229]], [[0.224]], [[0.225]]]]),
        _init("conv1.weight", 0.5 * n(4, 3, 3, 3)),
        _init("conv1.bias", 0.1 * n(4)),
        _init("bn.weight", 1 + 0.2 * n(4)),
        _init("bn.bias", 0.1 * n(4)),
        _init("bn.running_mean", 0.1 * n(4)),
        _init("bn.running_var", 0.5 + rng.uniform(size=4)),
        _init("conv2.weight", 0.3 * n(5, 4, 2, 2)),
        _init("conv2.bias", 0.1 * n(5)),
        _init("fc1.weight", 0.2 * n(10, 5 * 3 * 3)),  # [out, in]: transB=1
        _init("fc1.bias", 0.1 * n(10)),
        _init("fc2.weight", 0.3 * n(3, 10)),
        _init("fc2.bias", 0.1 * n(3)),
    ]
    nodes = [
        helper.make_node("Sub", ["input.1", "mean"], ["x0"], name="/Sub"),
        helper.make_node("Div", ["x0", "std"], ["x1"], name="/Div"),
        helper.make_node(
            "Conv",
            ["x1", "conv1.weight", "conv1.bias"],
            ["x2"],
            name="/conv1/Conv",
            kernel_shape=[3, 3],
            pads=[1, 1, 1, 1],
            strides=[1, 1],
            dilations=[1, 1],
            group=1,
        ),
        helper.make_node(
            "BatchNormalization",
            ["x2", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"],
            ["x3"],
            name="/bn/BatchNormalization",
            epsilon=1e-5,
        ),
        helper.make_node("Relu", ["x3"], ["x4"], name="/relu/Relu"),
        helper.make_node(
            "MaxPool", ["x4"], ["x5"], name="/pool/MaxPool", kernel_shape=[2, 2], strides=[2, 2]
        ),
        helper.make_node(
            "Conv",
            ["x5", "conv2.weight", "conv2.bias"],
            ["x6"],
            name="/conv2/Conv",
            kernel_shape=[2, 2],
            pads=[0, 0, 0, 0],
        ),
        helper.make_node("Relu", ["x6"], ["x7"], name="/relu_1/Relu"),
        helper.make_node("Flatten", ["x7"], ["x8"], name="/Flatten", axis=1),
        helper.make_node(
            "Gemm", ["x8", "fc1.weight", "fc1.bias"], ["x9"], name="/fc1/Gemm", transB=1, alpha=1.0, beta=1.0
        ),
        helper.make_node("Relu", ["x9"], ["x10"], name="/relu_2/Relu"),
        helper.make_node("Dropout", ["x10"], ["x11"], name="/dropout/Dropout"),
        helper.make_node("Gemm", ["x11", "fc2.weight", "fc2.bias"], ["logits"], name="/fc2/Gemm", transB=1),
    ]
    return _graph_file(path, nodes, inits, (1, 3, 8, 8), (1, 3))


def test_pytorch_style_nchw_graph_matches_onnxruntime(tmp_path):
    path = _torch_like(tmp_path / "torch.onnx", np.random.default_rng(0))
    loaded = load_onnx(path)
    assert loaded.input_shape == (8, 8, 3) and loaded.onnx_input_shape == (1, 3, 8, 8)
    assert (loaded.input_name, loaded.output_name) == ("input.1", "logits")
    # Sub/Div kept before the padded conv (per channel); the batch norm folded into conv1; Dropout gone.
    assert _spec_names(loaded.model) == [
        "Affine",
        "Conv",
        "ReLU",
        "MaxPool",
        "Conv",
        "ReLU",
        "Flatten",
        "Dense",
        "ReLU",
        "Dense",
    ]
    assert loaded.params["layer_0"]["scale"].shape == (3,)
    np.testing.assert_allclose(
        loaded.params["layer_0"]["scale"], 1 / np.float32([0.229, 0.224, 0.225]), rtol=1e-6
    )
    assert loaded.model.specs[1].padding == ((1, 1), (1, 1))
    x = np.asarray(jax.random.uniform(jax.random.key(3), (4, 8, 8, 3)))
    want = _ort(path, x.transpose(0, 3, 1, 2))
    np.testing.assert_allclose(_apply(loaded, x), want, rtol=TOL, atol=TOL)


def test_matmul_add_mlp_folds_the_input_normalisation_exactly(tmp_path):
    """Mul/Add before the first MatMul and the bias Add after it fold into one Dense; a flatten of a
    [N, 1, 1, D] input by Reshape through Shape/Gather/Concat (torch's x.view(x.size(0), -1))."""
    rng = np.random.default_rng(1)
    inits = [
        _init("scale", 1 / (0.3 + rng.uniform(size=(1, 6)))),
        _init("shift", rng.normal(size=(1, 6))),
        _init("w1", rng.normal(size=(6, 5))),
        _init("b1", rng.normal(size=5)),
        _init("w2", rng.normal(size=(5, 2))),
        _init("b2", rng.normal(size=2)),
        numpy_helper.from_array(np.array(0, np.int64), "zero"),
        numpy_helper.from_array(np.array([-1], np.int64), "minus_one"),
    ]
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"], name="shape"),
        helper.make_node("Gather", ["shape", "zero"], ["batch"], name="gather", axis=0),
        helper.make_node("Unsqueeze", ["batch", "zero_axes"], ["batch1"], name="unsqueeze"),
        helper.make_node("Concat", ["batch1", "minus_one"], ["target"], name="concat", axis=0),
        helper.make_node("Reshape", ["x", "target"], ["flat"], name="reshape"),
        helper.make_node("Mul", ["flat", "scale"], ["m"], name="mul"),
        helper.make_node("Add", ["m", "shift"], ["a"], name="add"),
        helper.make_node("MatMul", ["a", "w1"], ["h"], name="fc1"),
        helper.make_node("Add", ["h", "b1"], ["hb"], name="fc1_bias"),
        helper.make_node("Relu", ["hb"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "w2"], ["o"], name="fc2"),
        helper.make_node("Add", ["o", "b2"], ["y"], name="fc2_bias"),
    ]
    inits.append(numpy_helper.from_array(np.array([0], np.int64), "zero_axes"))
    nodes = [helper.make_node("Identity", ["x_in"], ["x"], name="input_identity"), *nodes]
    path = _graph_file(tmp_path / "mlp.onnx", nodes, inits, ("batch", 1, 1, 6), ("batch", 2))
    loaded = load_onnx(path)
    assert loaded.input_shape == (1, 6, 1) and loaded.onnx_input_shape == ("batch", 1, 1, 6)
    assert _spec_names(loaded.model) == ["Flatten", "Dense", "ReLU", "Dense"]
    x = np.asarray(jax.random.normal(jax.random.key(4), (5, 1, 6, 1)))
    np.testing.assert_allclose(_apply(loaded, x), _ort(path, x.transpose(0, 3, 1, 2)), rtol=TOL, atol=TOL)


def test_reshapes_transposes_and_pool_variants_match_onnxruntime(tmp_path):
    """Layout moves that cancel (Transpose pairs, Unsqueeze/Squeeze), c - x, SAME_UPPER conv padding,
    ceil_mode where it changes nothing, an AveragePool and an Add of a [C, H, W] constant."""
    rng = np.random.default_rng(2)
    inits = [
        _init("c", rng.normal(size=(2, 6, 6))),
        _init("w", rng.normal(size=(3, 2, 3, 3))),
        _init("fc", rng.normal(size=(12, 4))),
        numpy_helper.from_array(np.array([2], np.int64), "axis2"),
    ]
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], name="to_nhwc", perm=[0, 2, 3, 1]),
        helper.make_node("Transpose", ["t"], ["t2"], name="to_nchw", perm=[0, 3, 1, 2]),
        helper.make_node("Sub", ["c", "t2"], ["s"], name="c_minus_x"),
        helper.make_node(
            "Conv", ["s", "w"], ["v"], name="conv", kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER"
        ),
        helper.make_node("Relu", ["v"], ["r"], name="relu"),
        helper.make_node(
            "MaxPool", ["r"], ["p"], name="pool", kernel_shape=[2, 2], strides=[1, 1], ceil_mode=1
        ),
        helper.make_node("AveragePool", ["p"], ["a"], name="avg", kernel_shape=[1, 1]),
        helper.make_node("Flatten", ["a"], ["f"], name="flatten"),
        helper.make_node("Unsqueeze", ["f", "axis2"], ["u"], name="unsqueeze"),
        helper.make_node("Squeeze", ["u", "axis2"], ["q"], name="squeeze"),
        helper.make_node("MatMul", ["q", "fc"], ["y"], name="fc"),
    ]
    path = _graph_file(tmp_path / "moves.onnx", nodes, inits, (1, 2, 6, 6), (1, 4))
    loaded = load_onnx(path)
    assert _spec_names(loaded.model) == ["Affine", "Conv", "ReLU", "MaxPool", "AvgPool", "Flatten", "Dense"]
    assert loaded.model.specs[0].shape == (6, 6, 2)  # c - x: scale -1, shift c in our layout
    np.testing.assert_array_equal(loaded.params["layer_0"]["scale"], -np.ones((6, 6, 2)))
    np.testing.assert_array_equal(
        loaded.params["layer_0"]["shift"], numpy_helper.to_array(inits[0]).transpose(1, 2, 0)
    )
    x = np.asarray(jax.random.uniform(jax.random.key(5), (3, 6, 6, 2)))
    np.testing.assert_allclose(_apply(loaded, x), _ort(path, x.transpose(0, 3, 1, 2)), rtol=TOL, atol=TOL)


BAD_GRAPHS = {  # name: (nodes, initializers, expected message)
    "softmax": (
        [helper.make_node("Softmax", ["x"], ["y"], name="probs")],
        [],
        "Softmax node 'probs': unsupported op; supported: Add, AveragePool,",
    ),
    "group_conv": (
        [helper.make_node("Conv", ["x", "w"], ["y"], name="dw", group=2, kernel_shape=[1, 1])],
        [_init("w", np.ones((2, 1, 1, 1)))],
        "Conv node 'dw': group=2 is not supported",
    ),
    "reciprocal": (
        [helper.make_node("Div", ["c", "x"], ["y"], name="inv")],
        [_init("c", [2.0])],
        "Div node 'inv': constant / x is not affine",
    ),
    "square": (
        [helper.make_node("Mul", ["x", "x"], ["y"], name="square")],
        [],
        "Mul node 'square': two non-constant inputs",
    ),
    "branch": (
        [
            helper.make_node("Relu", ["x"], ["a"], name="left"),
            helper.make_node("Relu", ["x"], ["y"], name="right"),
        ],
        [],
        "Relu node 'right': tensor 'x' is used by more than one node",
    ),
    "nhwc_conv": (
        [
            helper.make_node("Transpose", ["x"], ["t"], name="to_nhwc", perm=[0, 2, 3, 1]),
            helper.make_node("Conv", ["t", "w"], ["y"], name="conv", kernel_shape=[1, 1]),
        ],
        [_init("w", np.ones((2, 4, 1, 1)))],
        "Conv node 'conv': needs an NCHW image input",
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_GRAPHS))
def test_unsupported_graphs_raise_one_line_naming_op_and_node(name, tmp_path):
    nodes, inits, match = BAD_GRAPHS[name]
    path = _graph_file(tmp_path / "bad.onnx", nodes, inits, (1, 2, 4, 4), (1, 2, 4, 4), input_name="x")
    with pytest.raises(OnnxImportError, match=match) as info:
        load_onnx(path)
    assert "\n" not in str(info.value) and isinstance(info.value, ValueError)


# ----------------------------------------------------------------------------- verification


def test_imported_network_bounds_and_milp_are_exact(tmp_path):
    """A normalised conv net from ONNX through interval / CROWN bounds and the MILP: bounds contain
    the sampled logits, the MILP optimum equals brute force over the ReLU patterns."""
    rng = np.random.default_rng(5)
    inits = [
        _init("mean", [[[[0.5]]]]),
        _init("std", [[[[0.25]]]]),
        _init("w", rng.normal(size=(1, 1, 2, 2))),
        _init("b", [0.1]),
        _init("fc", rng.normal(size=(3, 9))),
        _init("fc_b", rng.normal(size=3)),
    ]
    nodes = [
        helper.make_node("Sub", ["x", "mean"], ["a"], name="sub"),
        helper.make_node("Div", ["a", "std"], ["n"], name="div"),
        helper.make_node("Conv", ["n", "w", "b"], ["c"], name="conv", kernel_shape=[2, 2], pads=[1, 1, 0, 0]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Flatten", ["r"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc", "fc_b"], ["y"], name="fc", transB=1),
    ]
    loaded = load_onnx(_graph_file(tmp_path / "tiny.onnx", nodes, inits, (1, 1, 3, 3), (1, 3)))
    assert _spec_names(loaded.model)[0] == "Affine"  # padded conv: the normalisation stays an op
    view = models.layer_view(loaded.model, loaded.params)
    x0 = rng.uniform(0.3, 0.7, (3, 3, 1)).astype(np.float32)
    lo, hi = np.clip(x0 - 0.15, 0, 1), np.clip(x0 + 0.15, 0, 1)
    xs = lo + (hi - lo) * rng.uniform(size=(200, 3, 3, 1)).astype(np.float32)
    logits = np.asarray(models.apply_layers_batch(view, jnp.asarray(xs)))
    ib = B.interval_bounds(view, jnp.asarray(lo), jnp.asarray(hi))
    cb = B.crown_bounds(view, jnp.asarray(lo), jnp.asarray(hi), base=ib)
    for b in (ib, cb):
        assert np.all(logits >= np.asarray(b[-1][0]) - 1e-4) and np.all(logits <= np.asarray(b[-1][1]) + 1e-4)
    spec = specs.Argmax(int(np.argmax(models.apply_layers(view, jnp.asarray(x0)))))
    rows = spec.rows(3)
    ref = brute_force_min(view, lo, hi, rows)
    query = M.make_query(M.network_from_view(view), jnp.asarray(lo), jnp.asarray(hi), ib, rows, None)
    result = M.solve(M.network_from_view(view), query, M.MilpOptions(mode="optimise"))
    assert result.status == "optimal"
    assert result.objective == pytest.approx(ref.minimum, abs=1e-5)
