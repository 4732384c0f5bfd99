"""lnjax.io.vnnlib: hand-written VNN-LIB files (argmax robustness, conjunctions, disjunctions, input
disjunctions, notation), malformed files with useful errors, write -> load round trips, and the
counterexample format."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from lnjax.io.vnnlib import (
    VnnlibError,
    argmax_disjuncts,
    counterexample_text,
    load_vnnlib,
    nchw_to_nhwc,
    nhwc_to_nchw,
    read_counterexample,
    to_spec,
    violated,
    write_vnnlib,
)


def _file(tmp_path, *parts, name="p.vnnlib"):
    """A .vnnlib file from text parts (each dedented)."""
    path = tmp_path / name
    path.write_text("\n".join(textwrap.dedent(part).strip() for part in parts) + "\n")
    return path


def _declare(n_in, n_out):
    xs = [f"(declare-const X_{i} Real)" for i in range(n_in)]
    return "\n".join(xs + [f"(declare-const Y_{j} Real)" for j in range(n_out)])


def _box(n_in, lo=0.0, hi=1.0):
    return "\n".join(f"(assert (>= X_{i} {lo}))\n(assert (<= X_{i} {hi}))" for i in range(n_in))


def _disjuncts_equal(got, want):
    assert len(got) == len(want)
    for (ga, gb), (wa, wb) in zip(got, want, strict=True):
        np.testing.assert_array_equal(ga, wa)
        np.testing.assert_array_equal(gb, wb)


def test_argmax_robustness_with_comments_and_nchw_layout(tmp_path):
    """A VNN-COMP-style image property (input [C=2, H=1, W=2]): X_i in NCHW order, read as NHWC."""
    lows = [0.0, 0.125, 0.25, 0.375]  # exact in float32 (rounding: see the notation test)
    bounds = [f"(assert (<= X_{i} {v + 0.5}))  ; upper\n(assert (>= X_{i} {v}))" for i, v in enumerate(lows)]
    path = _file(
        tmp_path,
        "; robustness of label 1",
        _declare(4, 3),
        "; input constraints",
        *bounds,
        """
        ; output: violated iff another class scores at least as high
        (assert (or
            (and (>= Y_0 Y_1))
            (and (>= Y_2 Y_1))
        ))
        """,
    )
    prop = load_vnnlib(path, (2, 1, 2), 3, nhwc=True)
    (case,) = prop.cases
    assert case.lower.dtype == np.float32 and case.lower.shape == (1, 2, 2)
    nchw = np.float32(lows).reshape(2, 1, 2)
    np.testing.assert_array_equal(case.lower, nchw_to_nhwc(nchw))
    np.testing.assert_array_equal(case.upper, nchw_to_nhwc(nchw + np.float32(0.5)))
    np.testing.assert_array_equal(nhwc_to_nchw(case.lower), nchw)
    _disjuncts_equal(case.disjuncts, argmax_disjuncts(1, 3))
    assert not violated(case.disjuncts, np.array([0.0, 1.0, 0.5]))
    assert violated(case.disjuncts, np.array([0.0, 1.0, 1.0]))  # a tie counts as a violation
    assert violated(case.disjuncts, np.array([1.2, 1.0, 0.0]))
    assert load_vnnlib(path, (4,), 3).cases[0].lower.tolist() == np.float32(lows).tolist()  # flat order


def test_top_level_output_asserts_form_one_conjunction(tmp_path):
    path = _file(
        tmp_path,
        _declare(2, 3),
        _box(2),
        """
        (assert (<= Y_0 Y_1))
        (assert (>= (+ Y_0 (* 2 Y_2)) 1.5e-1))
        (assert (<= (- Y_1 Y_0) 3))
        """,
    )
    (case,) = load_vnnlib(path, (2,), 3).cases
    a = np.array([[1.0, -1.0, 0.0], [-1.0, 0.0, -2.0], [-1.0, 1.0, 0.0]])
    _disjuncts_equal(case.disjuncts, [(a, np.array([0.0, -0.15, 3.0]))])
    assert violated(case.disjuncts, [0.2, 0.5, 0.0]) and not violated(case.disjuncts, [0.0, 0.5, 0.0])


def test_disjunction_of_conjunctions_distributes_and_is_capped(tmp_path):
    path = _file(
        tmp_path,
        _declare(1, 3),
        _box(1),
        """
        (assert (or (and (<= Y_0 Y_1) (<= Y_0 Y_2)) (and (>= Y_0 1e2))))
        (assert (or (<= Y_1 0) (< Y_2 -.5)))  ; strict < is read as <=
        """,
    )
    (case,) = load_vnnlib(path, (1,), 3).cases
    d1 = [[1.0, -1.0, 0.0], [1.0, 0.0, -1.0]], [0.0, 0.0]
    d2 = [[-1.0, 0.0, 0.0]], [-100.0]
    e1, e2 = ([[0.0, 1.0, 0.0]], [0.0]), ([[0.0, 0.0, 1.0]], [-0.5])
    want = [(np.array(d[0] + e[0]), np.array(d[1] + e[1])) for d in (d1, d2) for e in (e1, e2)]
    _disjuncts_equal(case.disjuncts, want)
    with pytest.raises(
        VnnlibError, match=r"p.vnnlib:\d+: the conjunction expands to 4 disjuncts > max_disjuncts=3"
    ):
        load_vnnlib(path, (1,), 3, max_disjuncts=3)


def test_input_disjunction_gives_one_case_per_box(tmp_path):
    path = _file(
        tmp_path,
        _declare(2, 2),
        """
        (assert (or
            (and (>= X_0 0.0) (<= X_0 0.5) (>= X_1 -1) (<= X_1 1) (>= Y_0 Y_1))
            (and (>= X_0 0.5) (<= X_0 1.0) (>= X_1 -1) (<= X_1 1) (>= Y_1 Y_0))
        ))
        """,
    )
    prop = load_vnnlib(path, (2,), 2)
    assert len(prop.cases) == 2
    np.testing.assert_array_equal(prop.cases[0].lower, [0.0, -1.0])
    np.testing.assert_array_equal(prop.cases[0].upper, [0.5, 1.0])
    np.testing.assert_array_equal(prop.cases[1].lower, [0.5, -1.0])
    _disjuncts_equal(prop.cases[0].disjuncts, [(np.array([[-1.0, 1.0]]), np.zeros(1))])
    _disjuncts_equal(prop.cases[1].disjuncts, [(np.array([[1.0, -1.0]]), np.zeros(1))])


def test_scientific_notation_equalities_and_outward_rounding(tmp_path):
    path = _file(
        tmp_path,
        "(set-logic QF_LRA) ; ignored, as are check-sat and get-model",
        _declare(3, 1),
        """
        (assert (>= X_0 1.0e-1)) (assert (<= X_0 3E-1))
        (assert (= X_1 -2.5e+0))
        (assert (<= (* 2 X_2) 1)) (assert (<= (- 0 X_2) -0.25))
        (assert (>= Y_0 (/ 1 4)))
        (check-sat)
        """,
    )
    (case,) = load_vnnlib(path, (3,), 1).cases
    lo, hi = case.lower.astype(np.float64), case.upper.astype(np.float64)
    assert lo[0] <= 0.1 and hi[0] >= 0.3  # rounded outward to float32, by at most one step
    up, down = np.float32(1), np.float32(0)
    assert float(np.nextafter(case.lower[0], up)) > 0.1 and float(np.nextafter(case.upper[0], down)) < 0.3
    assert lo[1] == hi[1] == -2.5
    assert (lo[2], hi[2]) == (0.25, 0.5)
    _disjuncts_equal(case.disjuncts, [(np.array([[-1.0]]), np.array([-0.25]))])


MALFORMED = {
    "unclosed": (
        "(declare-const X_0 Real)\n(assert (<= X_0 1)\n",
        r"p.vnnlib:2: unbalanced parentheses: '\(' opened",
    ),
    "extra_close": (
        "(declare-const X_0 Real))\n",
        r"p.vnnlib:1: unbalanced parentheses: '\)' closes nothing",
    ),
    "undeclared": (
        "(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (<= X_1 1))\n",
        r"p.vnnlib:3: X_1 is not declared; expected \(declare-const X_1 Real\)",
    ),
    "missing_bound": (
        "(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (>= X_0 0))\n(assert (<= Y_0 0))\n",
        r"X_0 has no upper bound; expected \(assert \(<= X_0 <number>\)\)",
    ),
    "nonlinear": (
        "(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (<= (* Y_0 Y_0) 1))\n",
        r"p.vnnlib:3: nonlinear term \(\* Y_0 Y_0\); expected a product with one non-constant factor",
    ),
    "x_count": (
        "(declare-const X_0 Real)\n(declare-const Y_0 Real)\n",
        r"declares 1 X variables, expected X_0..X_1 \(the input shape \(2,\) has 2 elements\); missing X_1",
    ),
    "mixed": (
        "(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (<= X_0 Y_0))\n",
        r"p.vnnlib:3: \(<= X_0 Y_0\) mixes inputs and outputs",
    ),
    "not": (
        "(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (not (<= Y_0 0)))\n",
        r"p.vnnlib:3: unsupported formula \(not \(<= Y_0 0\)\); expected and, or",
    ),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_files_raise_vnnlib_errors_saying_what_and_where(name, tmp_path):
    text, match = MALFORMED[name]
    path = _file(tmp_path, text)
    shape = (2,) if name == "x_count" else (1,)
    with pytest.raises(VnnlibError, match=match) as info:
        load_vnnlib(path, shape, 1)
    assert isinstance(info.value, ValueError)


def test_write_load_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    lower = rng.uniform(-1, 1, (2, 3, 3)).astype(np.float32)  # an NCHW image box
    upper = lower + rng.uniform(0, 0.1, lower.shape).astype(np.float32)
    general = (np.array([[0.5, -1.25, 3e-7, 0.0], [0.0, 0.0, 1.0, 0.0]]), np.array([0.1, -2.0]))
    disjuncts = (*argmax_disjuncts(2, 4), general, (np.array([[0.0, 0.0, 0.0, -1.0]]), np.array([1e-3])))
    path = tmp_path / "out.vnnlib"
    write_vnnlib(path, lower, upper, disjuncts)
    assert "(>= Y_0 Y_2)" in path.read_text()  # competition style for argmax rows
    (case,) = load_vnnlib(path, lower.shape, 4).cases
    np.testing.assert_array_equal(case.lower, lower)  # float32 values survive exactly
    np.testing.assert_array_equal(case.upper, upper)
    _disjuncts_equal(case.disjuncts, disjuncts)
    (nhwc,) = load_vnnlib(path, lower.shape, 4, nhwc=True).cases
    np.testing.assert_array_equal(nhwc.lower, lower.transpose(1, 2, 0))
    (single,) = load_vnnlib(_write(tmp_path, lower, upper, [general]), lower.shape, 4).cases
    _disjuncts_equal(single.disjuncts, [general])


def _write(tmp_path, lower, upper, disjuncts):
    path = tmp_path / "single.vnnlib"
    write_vnnlib(path, lower, upper, disjuncts)
    return path


def test_counterexample_text_has_full_precision():
    x = np.array([[0.1, 0.2]], np.float32)
    y = np.array([1 / 3], np.float32)
    text = counterexample_text(x, y)
    assert text == "((X_0 0.10000000149011612)\n (X_1 0.20000000298023224)\n (Y_0 0.3333333432674408))"
    values = [float(part.split()[1].rstrip(")")) for part in text.split("\n")]
    np.testing.assert_array_equal(np.float32(values), np.float32([0.1, 0.2, 1 / 3]))


def test_to_spec_maps_single_constraint_disjuncts_onto_linear_rows(tmp_path):
    """Argmax robustness and a general disjunction of single constraints: the spec's margin is > 0
    exactly when no disjunct holds (checked on random outputs, ties included)."""
    path = _file(
        tmp_path,
        _declare(1, 3),
        _box(1),
        """
        (assert (or (and (>= Y_0 Y_1)) (and (<= (+ Y_2 (* 0.5 Y_0)) 0.25)) (and (>= Y_2 Y_1))))
        """,
    )
    (case,) = load_vnnlib(path, (1,), 3).cases
    spec = to_spec(case.disjuncts, 3)
    # violated iff Y_1 - Y_0 <= 0, 0.5 Y_0 + Y_2 <= 0.25 or Y_1 - Y_2 <= 0: robust iff every row a·y - b > 0
    np.testing.assert_array_equal(spec.c, np.float32([[-1, 1, 0], [0.5, 0, 1], [0, 1, -1]]))
    np.testing.assert_array_equal(spec.offset, np.float32([0, -0.25, 0]))
    rng = np.random.default_rng(0)
    ys = np.concatenate([rng.integers(-2, 3, (200, 3)) / 4.0, rng.normal(size=(200, 3))])
    for y in ys:
        assert (float(spec.margin(np.float32(y))) > 0) == (not violated(case.disjuncts, y)), y
    argmax = to_spec(argmax_disjuncts(1, 3), 3)
    assert argmax.rows(3).k == 1 and float(argmax.margin(np.float32([0.0, 1.0, 0.5]))) == 0.5
    always = to_spec(
        [(np.zeros((0, 3)), np.zeros(0))], 3
    )  # no output constraint: the box is a counterexample
    assert float(always.margin(np.float32([1.0, 2.0, 3.0]))) == 0.0


def test_to_spec_maps_one_conjunction_to_the_largest_row(tmp_path):
    """ACAS Xu property 3's form ("Y_0 is minimal": every Y_0 <= Y_j at once) holds iff some row is
    > 0: Linear with k = M. The margin's sign agrees with `violated` on random outputs."""
    path = _file(
        tmp_path,
        _declare(1, 3),
        _box(1),
        "(assert (<= Y_0 Y_1))\n(assert (<= Y_0 Y_2))",
    )
    (case,) = load_vnnlib(path, (1,), 3).cases
    spec = to_spec(case.disjuncts, 3)
    assert spec.rows(3).k == 2
    rng = np.random.default_rng(0)
    for y in rng.normal(size=(200, 3)).astype(np.float32):
        assert (float(spec.margin(y)) > 0) == (not violated(case.disjuncts, y)), y
    with pytest.raises(VnnlibError, match=r"expected \[m, 4\]"):
        to_spec(case.disjuncts[:1], 4)
    with pytest.raises(VnnlibError, match="disjunct 0: a conjunction of 2 output constraints next to other"):
        to_spec([*case.disjuncts, (np.float64([[0.0, 0.0, 1.0]]), np.float64([5.0]))], 3)


def test_read_counterexample_inverts_counterexample_text():
    x = np.float32([[0.1, -2.5e-8], [3.0, 0.0]])
    y = np.float32([1 / 3, -7.0])
    got_x, got_y = read_counterexample("sat\n" + counterexample_text(x, y) + "\n")
    np.testing.assert_array_equal(got_x, np.float64(x.reshape(-1)))
    np.testing.assert_array_equal(got_y, np.float64(y))
    with pytest.raises(VnnlibError, match="X_1 is missing"):
        read_counterexample("((X_0 1.0) (X_2 0.5) (Y_0 0.0))")
    with pytest.raises(VnnlibError, match="Y_0 appears twice"):
        read_counterexample("((X_0 1.0) (Y_0 0.0) (Y_0 1.0))")
    with pytest.raises(VnnlibError, match="expected \\(X_i value\\)"):
        read_counterexample("((X_0 one) (Y_0 0.0))")


def test_lnjax_io_reexports_lazily():
    """`from lnjax.io import load_vnnlib, load_onnx` works; the JSON helpers do not pull in jax."""
    import lnjax.io
    from lnjax.io import onnx as onnx_io, vnnlib

    assert lnjax.io.load_vnnlib is vnnlib.load_vnnlib and lnjax.io.load_onnx is onnx_io.load_onnx
    code = "import sys, lnjax.io, lnjax.io.vnnlib; assert 'jax' not in sys.modules, 'jax imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])
