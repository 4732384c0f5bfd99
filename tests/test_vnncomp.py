"""lnjax.vnncomp: the VNN-COMP runner on tiny exported networks. unsat, sat with a counterexample that
ONNX Runtime confirms on its own, the result file's exact format, NCHW layout, a normalised network
whose box lies outside [0, 1], timeout / unknown, refused counterexamples, errors with exit code 2,
and the suite generator."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from lnjax import models, vnncomp
from lnjax.io.onnx import save_onnx
from lnjax.io.vnnlib import argmax_disjuncts, load_vnnlib, read_counterexample, violated, write_vnnlib
from lnjax.models import ops
from lnjax.verify import VerifierConfig

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("pgd", "crown")  # cheap to compile; the default stages run in the slow end-to-end test
MLP = models.mlp((6,), (8,), 3)
CNN = models.Sequential(
    specs=(ops.ConvSpec(3, (3, 3), (1, 1), "SAME"), ops.ReLUSpec(), ops.FlattenSpec(), ops.DenseSpec(3)),
    input_shape=(3, 4, 2),  # H ≠ W ≠ C: a layout mix-up moves X_i out of its box
)


def _params(model, seed):
    shapes = jax.eval_shape(model.init_params, jax.random.key(seed))
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda v: jnp.asarray(0.5 * rng.normal(size=v.shape), jnp.float32), shapes)


def _logits(model, params, x):
    return np.asarray(model.apply({"params": params}, np.asarray(x, np.float32)[None]))[0]


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    """{name: (model, params, onnx path)} for the MLP and the CNN, exported once."""
    root = tmp_path_factory.mktemp("nets")
    out = {}
    for name, model in (("mlp", MLP), ("cnn", CNN)):
        params = _params(model, 1)
        save_onnx(model, params, root / f"{name}.onnx")
        out[name] = (model, params, root / f"{name}.onnx")
    return out


@pytest.fixture(scope="module")
def cache():
    return vnncomp.VerifierCache(VerifierConfig(stages=STAGES))


def _property(tmp_path, name, lower, upper, label, classes=3):
    """A VNN-LIB argmax property over a box given in the ONNX layout."""
    path = tmp_path / f"{name}.vnnlib"
    write_vnnlib(path, lower, upper, argmax_disjuncts(label, classes))
    return path


def _ort_outputs(onnx_path, x_onnx):
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return sess.run(None, {name: np.asarray(x_onnx, np.float32)[None]})[0].reshape(-1)


def _check_sat_file(text, onnx_path, vnnlib_path, onnx_shape, num_outputs):
    """The result file: exactly "sat", then one (X_i v) line per input and (Y_j v) per output in
    order; X in the box, and ONNX Runtime's outputs at X match Y and violate the property."""
    lines = text.splitlines()
    n_in = int(np.prod(onnx_shape))
    assert lines[0] == "sat" and len(lines) == 1 + n_in + num_outputs
    names = [f"X_{i}" for i in range(n_in)] + [f"Y_{j}" for j in range(num_outputs)]
    for k, (line, name) in enumerate(zip(lines[1:], names, strict=True)):
        prefix = "((" if k == 0 else " ("
        suffix = "))" if k == len(names) - 1 else ")"
        assert re.fullmatch(re.escape(prefix + name + " ") + r"-?\d[\d.e+-]*" + re.escape(suffix), line), line
    assert text.endswith("))\n")
    x, y = read_counterexample(text)
    (case,) = load_vnnlib(vnnlib_path, onnx_shape, num_outputs).cases  # the ONNX layout, no transposes
    x = x.reshape(onnx_shape)
    assert np.all(case.lower <= x) and np.all(x <= case.upper)
    y_ort = _ort_outputs(onnx_path, x)
    np.testing.assert_allclose(y, y_ort, rtol=1e-5, atol=1e-5)
    assert violated(case.disjuncts, y_ort)


def test_unsat_on_an_easy_box_and_the_result_file(nets, cache, tmp_path):
    model, params, onnx_path = nets["mlp"]
    x = np.linspace(0.1, 0.9, 6, dtype=np.float32)
    label = int(np.argmax(_logits(model, params, x)))
    vnnlib = _property(tmp_path, "easy", x - 1e-3, x + 1e-3, label)
    res = vnncomp.run_instance(onnx_path, vnnlib, 20.0, key=jax.random.key(0), verifier_cache=cache)
    assert res.result == "unsat", res.notes
    assert res.counterexample_text is None and res.decided_by[0] in ("interval", "crown")
    assert 0 < res.seconds < 20 and res.prepare_seconds >= 0
    out = tmp_path / "out.txt"
    vnncomp.write_result(out, res)
    assert out.read_text() == "unsat\n"
    again = vnncomp.run_instance(onnx_path, vnnlib, 20.0, key=jax.random.key(0), verifier_cache=cache)
    assert again.result == "unsat" and again.prepare_seconds < 1.0  # the cached network, warmed up


def test_sat_counterexample_in_nchw_order_confirmed_by_onnxruntime(nets, cache, tmp_path):
    """A CNN exported as NCHW; a per-element box (C, H, W all different) the net obviously fails."""
    model, params, onnx_path = nets["cnn"]
    rng = np.random.default_rng(0)
    x = rng.uniform(0.2, 0.8, model.input_shape).astype(np.float32)  # NHWC
    label = int(np.argmin(_logits(model, params, x)))  # already wrong at the box centre
    lo_nchw = (x - rng.uniform(0.01, 0.05, x.shape)).astype(np.float32).transpose(2, 0, 1)
    hi_nchw = (x + rng.uniform(0.01, 0.05, x.shape)).astype(np.float32).transpose(2, 0, 1)
    vnnlib = _property(tmp_path, "fails", lo_nchw, hi_nchw, label)
    res = vnncomp.run_instance(onnx_path, vnnlib, 20.0, key=jax.random.key(0), verifier_cache=cache)
    assert res.result == "sat", res.notes
    out = tmp_path / "out.txt"
    vnncomp.write_result(out, res)
    _check_sat_file(out.read_text(), onnx_path, vnnlib, (2, 3, 4), 3)


def _normalised_net(path):
    """x' = (x - 0.5) / 0.25, h = relu(x' + [3, 0]), z = [h_0 - 0.6, 0]: class 0 wins iff x_0 > -0.1.
    Robust on every box inside [0, 1]; broken only below x_0 = -0.1."""
    inits = [
        numpy_helper.from_array(np.float32([0.5]), "mean"),
        numpy_helper.from_array(np.float32([0.25]), "std"),
        numpy_helper.from_array(np.eye(2, dtype=np.float32), "w1"),
        numpy_helper.from_array(np.float32([3.0, 0.0]), "b1"),
        numpy_helper.from_array(np.float32([[1.0, 0.0], [0.0, 0.0]]), "w2"),
        numpy_helper.from_array(np.float32([-0.6, 0.0]), "b2"),
    ]
    nodes = [
        helper.make_node("Sub", ["x", "mean"], ["x0"], name="/Sub"),
        helper.make_node("Div", ["x0", "std"], ["x1"], name="/Div"),
        helper.make_node("Gemm", ["x1", "w1", "b1"], ["h0"], name="/fc1/Gemm", transB=1),
        helper.make_node("Relu", ["h0"], ["h1"], name="/relu/Relu"),
        helper.make_node("Gemm", ["h1", "w2", "b2"], ["y"], name="/fc2/Gemm", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "normalised",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        initializer=inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    proto.ir_version = 7
    onnx.save(proto, str(path))
    return path


def test_normalised_network_boxes_outside_the_unit_interval_are_used_as_given(cache, tmp_path):
    """Clipped to [0, 1] (the default input domain of our image models) the first box would be
    robust; as given it is not. The second box lies wholly outside [0, 1] and is robust."""
    onnx_path = _normalised_net(tmp_path / "normalised.onnx")
    straddles = _property(tmp_path, "straddles", np.float32([-0.5, 0.0]), np.float32([1.0, 1.0]), 0, 2)
    res = vnncomp.run_instance(onnx_path, straddles, 20.0, key=jax.random.key(0), verifier_cache=cache)
    assert res.result == "sat", res.notes
    x, _ = read_counterexample(res.file_text())
    assert -0.5 <= x[0] <= -0.1
    _check_sat_file(res.file_text(), onnx_path, straddles, (2,), 2)
    outside = _property(tmp_path, "outside", np.float32([2.0, -3.0]), np.float32([3.0, -2.0]), 0, 2)
    res = vnncomp.run_instance(onnx_path, outside, 20.0, key=jax.random.key(0), verifier_cache=cache)
    assert res.result == "unsat", res.notes


def test_timeout_and_unknown(nets, tmp_path):
    """CROWN alone cannot decide a wide box: "unknown" with time to spare, "timeout" without."""
    model, params, onnx_path = nets["mlp"]
    x = np.full(6, 0.5, np.float32)
    label = int(np.argmax(_logits(model, params, x)))
    wide = _property(tmp_path, "wide", x - 0.5, x + 0.5, label)
    crown_only = vnncomp.VerifierCache(VerifierConfig(stages=("crown",)))
    res = vnncomp.run_instance(onnx_path, wide, 30.0, key=jax.random.key(0), verifier_cache=crown_only)
    assert res.result == "unknown" and res.decided_by == (None,), res.notes
    res = vnncomp.run_instance(onnx_path, wide, 1e-4, key=jax.random.key(0), verifier_cache=crown_only)
    assert res.result == "timeout", res.notes
    assert res.file_text() == "timeout\n"


def test_a_counterexample_the_recheck_refuses_is_not_written(nets, cache, tmp_path, monkeypatch):
    model, params, onnx_path = nets["mlp"]
    x = np.full(6, 0.5, np.float32)
    label = int(np.argmin(_logits(model, params, x)))
    vnnlib = _property(tmp_path, "fails", x - 0.01, x + 0.01, label)
    honest = np.eye(3)[label] * 100.0  # an evaluator that says the label wins by far
    monkeypatch.setattr(vnncomp._Network, "outputs", lambda self, x: honest)
    res = vnncomp.run_instance(onnx_path, vnnlib, 20.0, key=jax.random.key(0), verifier_cache=cache)
    assert res.result == "unknown" and res.rejected == 1 and res.counterexample_text is None
    assert any("counterexample rejected: the counterexample violates no disjunct" in n for n in res.notes)


def _unsupported_op(path):
    nodes = [
        helper.make_node("Gemm", ["x", "w"], ["h"], name="/fc/Gemm"),
        helper.make_node("Sigmoid", ["h"], ["y"], name="/act/Sigmoid"),
    ]
    graph = helper.make_graph(
        nodes,
        "sigmoid",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        initializer=[numpy_helper.from_array(np.eye(2, dtype=np.float32), "w")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    proto.ir_version = 7
    onnx.save(proto, str(path))
    return path


def test_errors_exit_2_with_one_line(nets, tmp_path, capsys):
    _, _, onnx_path = nets["mlp"]
    malformed = tmp_path / "bad.vnnlib"
    malformed.write_text("(declare-const X_0 Real)\n(assert (<= X_0 1)\n")
    sigmoid = _unsupported_op(tmp_path / "sigmoid.onnx")
    good = _property(tmp_path, "good", np.zeros(2, np.float32), np.ones(2, np.float32), 0, 2)
    cases = {
        "malformed": ([str(onnx_path), str(malformed)], "bad.vnnlib:2: unbalanced parentheses"),
        "unsupported op": ([str(sigmoid), str(good)], "Sigmoid node '/act/Sigmoid': unsupported op"),
        "missing file": ([str(tmp_path / "none.onnx"), str(good)], "none.onnx: no such file"),
    }
    for what, (files, expected) in cases.items():
        out = tmp_path / f"{what}.txt"
        code = vnncomp.main([*files, "--timeout", "5", "--results", str(out)])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2, what
        assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], (what, err)
        assert out.read_text() == "error\n"
    conjunction = tmp_path / "acas3.vnnlib"  # ACAS Xu property 3's output form: "Y_0 is minimal"
    text = good.read_text().split("; output constraints")[0]
    conjunction.write_text(text + "(assert (<= Y_0 Y_1))\n(assert (<= Y_0 (+ Y_1 1)))\n")
    res = vnncomp.run_instance(sigmoid.parent / "x.onnx", conjunction, 5.0, key=jax.random.key(0))
    assert res.result == "error" and "no such file" in res.notes[0]
    mixed = tmp_path / "mixed.vnnlib"  # a conjunction next to another disjunct: min of maxima
    mixed.write_text(text + "(assert (or (and (<= Y_0 Y_1) (<= Y_0 (+ Y_1 1))) (and (>= Y_0 5))))\n")
    res = vnncomp.run_instance(_normalised_net(tmp_path / "n.onnx"), mixed, 5.0, key=jax.random.key(0))
    assert res.result == "error"
    assert "a conjunction of 2 output constraints next to other disjuncts is not supported" in res.notes[0]
    assert vnncomp.main([str(onnx_path), str(good), "--timeout", "0", "--results", "x"]) == 2
    assert capsys.readouterr().err.startswith("error: --timeout 0 must be a positive number")


def test_a_single_conjunction_is_verified_both_ways(tmp_path):
    """ACAS Xu property 3's output form, one conjunction ("Y_0 is minimal": Y_0 <= Y_1 and
    Y_0 <= Y_1 + 1 at once): robust iff some constraint fails everywhere (the largest row, k = 2).
    On the normalised net z_0 = relu(4 x_0 + 1) - 0.6, z_1 = 0: unsat on [0, 1]^2 (z_0 >= 0.4), sat
    once the box reaches x_0 = -0.5 (z_0 = -0.6), with a counterexample meeting both constraints."""
    net = _normalised_net(tmp_path / "n.onnx")
    minimal = [(np.float64([[1.0, -1.0], [1.0, -1.0]]), np.float64([0.0, 1.0]))]
    cache = vnncomp.VerifierCache(VerifierConfig(stages=STAGES))
    results = {}
    for name, lo in (("inside", 0.0), ("reaching", -0.5)):
        path = tmp_path / f"{name}.vnnlib"
        write_vnnlib(path, np.float32([lo, 0.0]), np.float32([1.0, 1.0]), minimal)
        res = vnncomp.run_instance(net, path, 20.0, key=jax.random.key(0), verifier_cache=cache)
        results[name] = res.file_text()
    assert results["inside"] == "unsat\n"
    x, y = read_counterexample(results["reaching"])
    assert -0.5 <= x[0] <= 1.0 and 0.0 <= x[1] <= 1.0
    np.testing.assert_allclose(y, _ort_outputs(net, np.float32(x)), rtol=1e-6, atol=1e-6)
    assert y[0] <= y[1] and y[0] <= y[1] + 1  # inside the counterexample region: both constraints


def test_write_suite_layout_and_boxes(tmp_path):
    params = _params(CNN, 2)
    x = np.random.default_rng(0).uniform(0, 1, CNN.input_shape).astype(np.float32)
    instances = [vnncomp.SuiteInstance("cnn", "img0_eps0.03", x, 1, 0.03)]
    instances.append(vnncomp.SuiteInstance("cnn", "img0_eps0.5", x, 2, 0.5))
    csv = vnncomp.write_suite(tmp_path / "suite", {"cnn": (CNN, params)}, instances, timeout=120)
    assert csv.read_text() == (
        "onnx/cnn.onnx,vnnlib/cnn_img0_eps0.03.vnnlib,120\nonnx/cnn.onnx,vnnlib/cnn_img0_eps0.5.vnnlib,120\n"
    )
    (case,) = load_vnnlib(tmp_path / "suite/vnnlib/cnn_img0_eps0.5.vnnlib", (2, 3, 4), 3, nhwc=True).cases
    np.testing.assert_array_equal(case.lower, np.clip(x - 0.5, 0, 1))  # the box, clipped, back in NHWC
    np.testing.assert_array_equal(case.upper, np.clip(x + 0.5, 0, 1))
    assert len(case.disjuncts) == 2 and case.disjuncts[0][0].tolist() == [[-1.0, 0.0, 1.0]]  # Y_0 >= Y_2
    first = (tmp_path / "suite/onnx/cnn.onnx").read_bytes()
    vnncomp.write_suite(tmp_path / "suite", {"cnn": (CNN, params)}, instances, timeout=120)
    assert (tmp_path / "suite/onnx/cnn.onnx").read_bytes() == first  # deterministic rewrite
    with pytest.raises(ValueError, match="appears twice"):
        vnncomp.write_suite(tmp_path / "s2", {"cnn": (CNN, params)}, instances[:1] * 2, timeout=1)


@pytest.mark.slow
def test_cli_in_a_subprocess_with_the_default_verifier(nets, tmp_path):
    """`python -m lnjax.vnncomp` end to end (default stages, MILP worker and all): unsat, then sat."""
    model, params, onnx_path = nets["mlp"]
    x = np.linspace(0.1, 0.9, 6, dtype=np.float32)
    z = _logits(model, params, x)
    for name, label, result in (("easy", int(np.argmax(z)), "unsat"), ("fails", int(np.argmin(z)), "sat")):
        vnnlib = _property(tmp_path, name, x - 1e-3, x + 1e-3, label)
        out = tmp_path / f"{name}.txt"
        cmd = [sys.executable, "-m", "lnjax.vnncomp", str(onnx_path), str(vnnlib)]
        proc = subprocess.run(
            [*cmd, "--timeout", "30", "--results", str(out)], cwd=ROOT, capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr
        assert out.read_text().splitlines()[0] == result
        assert f'"result": "{result}"' in proc.stdout.strip().splitlines()[-1]
        if result == "sat":
            _check_sat_file(out.read_text(), onnx_path, vnnlib, (6,), 3)


def test_without_onnxruntime_the_float64_forward_rechecks(nets, tmp_path, monkeypatch):
    model, params, onnx_path = nets["cnn"]
    monkeypatch.setattr(vnncomp, "_onnxruntime_session", lambda path: None)
    x = np.full(model.input_shape, 0.5, np.float32)
    label = int(np.argmin(_logits(model, params, x)))
    lo, hi = (np.float32(v).transpose(2, 0, 1) for v in (x - 0.01, x + 0.01))
    vnnlib = _property(tmp_path, "fails", lo, hi, label)
    own = vnncomp.VerifierCache(VerifierConfig(stages=STAGES))
    res = vnncomp.run_instance(onnx_path, vnnlib, 20.0, key=jax.random.key(0), verifier_cache=own)
    assert res.result == "sat", res.notes
    (net,) = own._networks.values()
    assert net.session is None and net.evaluator == "lnjax float64 forward"
    _check_sat_file(res.file_text(), onnx_path, vnnlib, (2, 3, 4), 3)
