"""VNN-LIB properties: read them as input boxes and output disjunctions, write them, and print
counterexamples in the competition's format.

VNN-LIB (https://www.vnnlib.org) is the SMT-LIB 2 subset VNN-COMP uses for properties: inputs are
declared `(declare-const X_i Real)` in row-major order of the ONNX input (NCHW for images), outputs
`(declare-const Y_j Real)`, and `(assert ...)` formulas over them with `and`, `or`, `<=`, `>=`,
`<`, `>`, `=` and linear terms `(+ ...)`, `(- ...)`, `(* c t)`, `(/ t c)`, numerals in decimal or
scientific notation (`-0.5`, `1e-3`, as VNN-COMP files write them), comments from `;` to the end of
the line. The asserted formula describes a counterexample: the property is violated ("sat" in the
VNN-COMP rules) iff some input in the input set makes every assertion true.

`load_vnnlib` turns the conjunction of the assertions into disjunctive normal form and returns
`VnnlibProperty.cases`: one `VnnlibCase` per distinct input box (an input `(or (and <X bounds>) ...)`
gives several), each with its output `disjuncts`, pairs (A [m, K], b [m]) meaning "violated iff for
some disjunct A @ y <= b holds in every row". Strict comparisons are read as non-strict (`<` as
`<=`): verifiers decide them up to float tolerance anyway, and this errs on the side of reporting a
violation. Every X_i must end with finite bounds lower <= upper; bounds come back as float32,
rounded outward (a box that contains the file's box).

`to_spec` maps a case's disjuncts onto the verifier's `lnjax.specs.Linear` when each disjunct is a
single linear constraint (argmax robustness and the like; a conjunction inside a disjunct is a clear
error). `counterexample_text` / `read_counterexample` write and read the competition's
`((X_0 v) ... (Y_0 v) ...)` counterexample list; `violated` checks outputs against the disjuncts.

References:
  VNN-LIB standard, https://www.vnnlib.org; VNN-COMP rules (e.g. https://sites.google.com/view/vnn2024):
  property semantics, the `X_i` / `Y_j` naming, and the counterexample format of `counterexample_text`.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from lnjax.io import outward_float32, write_bytes_atomic

if TYPE_CHECKING:
    from lnjax.specs import Linear

Disjunct = tuple[np.ndarray, np.ndarray]
"""(A [m, K] float64, b [m] float64): the output constraints A @ y <= b of one disjunct."""

MAX_DISJUNCTS = 100_000
"""Default cap on the number of terms the disjunctive normal form may have."""


class VnnlibError(ValueError):
    """A VNN-LIB file `load_vnnlib` cannot read: says what was wrong, where, and what was expected."""


class VnnlibCase(NamedTuple):
    """One input box and its output disjuncts.

    lower, upper: float32 arrays of the input shape (see `load_vnnlib`'s `nhwc`); disjuncts: the
    property is violated on this box iff some x in it gives y = f(x) with A @ y <= b row-wise for
    some (A, b) in disjuncts.
    """

    lower: np.ndarray
    upper: np.ndarray
    disjuncts: tuple[Disjunct, ...]


class VnnlibProperty(NamedTuple):
    """A property: violated iff some case is (the cases are alternatives)."""

    cases: tuple[VnnlibCase, ...]


# ----------------------------------------------------------------------------- layout helpers


def nchw_to_nhwc(arr: np.ndarray) -> np.ndarray:
    """[C, H, W] -> [H, W, C] (or [N, C, H, W] -> [N, H, W, C]): an ONNX image in our layout."""
    arr = np.asarray(arr)
    if arr.ndim == 3:
        return arr.transpose(1, 2, 0)
    if arr.ndim == 4:
        return arr.transpose(0, 2, 3, 1)
    raise ValueError(f"expected [C, H, W] or [N, C, H, W], got shape {arr.shape}")


def nhwc_to_nchw(arr: np.ndarray) -> np.ndarray:
    """[H, W, C] -> [C, H, W] (or [N, H, W, C] -> [N, C, H, W]): our image in the ONNX layout."""
    arr = np.asarray(arr)
    if arr.ndim == 3:
        return arr.transpose(2, 0, 1)
    if arr.ndim == 4:
        return arr.transpose(0, 3, 1, 2)
    raise ValueError(f"expected [H, W, C] or [N, H, W, C], got shape {arr.shape}")


# ----------------------------------------------------------------------------- s-expressions


class _Sym(NamedTuple):
    text: str
    line: int


class _List(NamedTuple):
    items: list
    line: int


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_VAR = re.compile(r"([XY])_(\d+)")
_IGNORED = {"check-sat", "get-model", "set-logic", "set-info", "set-option", "exit"}


def _parse(text: str, where: str) -> list:
    """Top-level s-expressions of `text` (comments dropped), with line numbers."""
    stack: list[list] = [[]]
    opened: list[int] = []
    for number, line in enumerate(text.splitlines(), start=1):
        for tok in re.findall(r"\(|\)|[^\s()]+", line.split(";", 1)[0]):
            if tok == "(":
                stack.append([])
                opened.append(number)
            elif tok == ")":
                if len(stack) == 1:
                    raise VnnlibError(f"{where}:{number}: unbalanced parentheses: ')' closes nothing")
                items = stack.pop()
                stack[-1].append(_List(items, opened.pop()))
            else:
                stack[-1].append(_Sym(tok, number))
    if opened:
        raise VnnlibError(
            f"{where}:{opened[-1]}: unbalanced parentheses: '(' opened here is never closed "
            f"({len(opened)} unclosed at the end of the file)"
        )
    return stack[0]


def _show(e: _Sym | _List) -> str:
    """An expression as text (for error messages; long ones cut)."""
    text = e.text if isinstance(e, _Sym) else "(" + " ".join(_show(i) for i in e.items) + ")"
    return text if len(text) <= 80 else text[:77] + "..."


# ----------------------------------------------------------------------------- formulas


_Term = tuple[dict[str, float], float]  # a linear term: (coefficients by variable, constant)


class _Reader:
    def __init__(self, where: str, n_in: int, n_out: int, max_disjuncts: int):
        self.where, self.n_in, self.n_out, self.max = where, n_in, n_out, max_disjuncts
        self.declared: set[str] = set()
        self.literals: list[tuple] = []  # ("x", i, is_upper, value, line) | ("y", a [K], b, line)

    def error(self, line: int, what: str) -> VnnlibError:
        return VnnlibError(f"{self.where}:{line}: {what}")

    def declare(self, e: _List) -> None:
        items = e.items
        if (
            items[0].text == "declare-fun"
            and len(items) == 4
            and isinstance(items[2], _List)
            and not items[2].items
        ):
            items = [items[0], items[1], items[3]]
        name, sort = (items[1], items[2]) if len(items) == 3 else (None, None)
        if not isinstance(name, _Sym) or not isinstance(sort, _Sym):
            raise self.error(e.line, f"malformed {_show(e)}; expected (declare-const X_0 Real)")
        name, sort = name.text, sort.text
        if sort != "Real":
            raise self.error(e.line, f"{name} is declared {sort}; expected Real")
        m = _VAR.fullmatch(name)
        if m is None:
            raise self.error(e.line, f"variable {name!r}: VNN-LIB names inputs X_i and outputs Y_j")
        if name in self.declared:
            raise self.error(e.line, f"{name} is declared twice")
        self.declared.add(name)

    def check_declarations(self, input_shape: Sequence[int]) -> None:
        for prefix, n, what in (
            ("X", self.n_in, f"the input shape {tuple(input_shape)} has {self.n_in} elements"),
            ("Y", self.n_out, f"num_outputs is {self.n_out}"),
        ):
            got = sorted(int(v[2:]) for v in self.declared if v[0] == prefix)
            if got != list(range(n)):
                missing = sorted(set(range(n)) - set(got))[:3]
                extra = sorted(set(got) - set(range(n)))[:3]
                detail = (f"; missing {', '.join(f'{prefix}_{i}' for i in missing)}" if missing else "") + (
                    f"; unexpected {', '.join(f'{prefix}_{i}' for i in extra)}" if extra else ""
                )
                raise VnnlibError(
                    f"{self.where}: declares {len(got)} {prefix} variables, expected "
                    f"{prefix}_0..{prefix}_{n - 1} ({what}){detail}"
                )

    def linear(self, e: _Sym | _List) -> _Term:
        if isinstance(e, _Sym):
            if _NUMBER.fullmatch(e.text):
                return {}, float(e.text)
            if e.text in self.declared:
                return {e.text: 1.0}, 0.0
            if _VAR.fullmatch(e.text):
                raise self.error(
                    e.line, f"{e.text} is not declared; expected (declare-const {e.text} Real) first"
                )
            raise self.error(e.line, f"unknown symbol {e.text!r}; expected a number or a declared X_i / Y_j")
        if not e.items or not isinstance(e.items[0], _Sym):
            raise self.error(e.line, f"malformed term {_show(e)}")
        head, args = e.items[0].text, [self.linear(a) for a in e.items[1:]]
        if head == "+" and args:
            return _sum(args)
        if head == "-" and len(args) == 1:
            return _scaled(args[0], -1.0)
        if head == "-" and args:
            return _sum([args[0], *(_scaled(a, -1.0) for a in args[1:])])
        if head == "*" and args:
            variable = [a for a in args if a[0]]
            if len(variable) > 1:
                raise self.error(
                    e.line, f"nonlinear term {_show(e)}; expected a product with one non-constant factor"
                )
            factor = math.prod(a[1] for a in args if not a[0])
            return _scaled(variable[0], factor) if variable else ({}, factor)
        if head == "/" and len(args) == 2:
            if args[1][0] or args[1][1] == 0:
                raise self.error(
                    e.line, f"nonlinear term {_show(e)}; expected division by a nonzero constant"
                )
            return _scaled(args[0], 1.0 / args[1][1])
        raise self.error(e.line, f"unsupported term {_show(e)}; expected a number, X_i, Y_j, +, -, * or /")

    def atom(self, e: _List, head: str) -> list[int]:
        """The literals of a comparison (each: expression <= 0)."""
        if len(e.items) < 3:
            raise self.error(e.line, f"malformed comparison {_show(e)}; expected ({head} a b)")
        terms = [self.linear(a) for a in e.items[1:]]
        out = []
        for a, b in zip(terms, terms[1:], strict=False):  # chained comparisons hold pairwise
            diffs = {"<=": [(a, b)], "<": [(a, b)], ">=": [(b, a)], ">": [(b, a)], "=": [(a, b), (b, a)]}[
                head
            ]
            for lhs, rhs in diffs:
                out.append(self.literal(_sum([lhs, _scaled(rhs, -1.0)]), e))
        return [i for i in out if i >= 0]

    def literal(self, expr: _Term, e: _List) -> int:
        """Index of the literal `expr <= 0` (-1: always true)."""
        coeffs, const = expr
        coeffs = {k: v for k, v in coeffs.items() if v != 0}
        xs = [k for k in coeffs if k[0] == "X"]
        if not coeffs:
            if const <= 0:
                return -1
            raise self.error(e.line, f"{_show(e)} is always false")
        if xs and len(xs) < len(coeffs):
            raise self.error(
                e.line, f"{_show(e)} mixes inputs and outputs; expected bounds on X or constraints on Y"
            )
        if xs:
            if len(xs) > 1:
                raise self.error(
                    e.line, f"{_show(e)} constrains several inputs; expected bounds on single inputs (a box)"
                )
            c = coeffs[xs[0]]
            self.literals.append(("x", int(xs[0][2:]), c > 0, -const / c, e.line))
        else:
            row = np.zeros(self.n_out)
            for k, v in coeffs.items():
                row[int(k[2:])] = v
            self.literals.append(("y", row, -const, e.line))
        return len(self.literals) - 1

    def dnf(self, e: _Sym | _List) -> list[list[int]]:
        """Disjunctive normal form: a list of terms, each a list of literal indices."""
        if isinstance(e, _Sym) or not e.items or not isinstance(e.items[0], _Sym):
            raise self.error(e.line, f"expected a formula, got {_show(e)}")
        head, args = e.items[0].text, e.items[1:]
        if head == "and":
            return self.product([self.dnf(a) for a in args], e.line)
        if head == "or":
            terms = [t for a in args for t in self.dnf(a)]
            if len(terms) > self.max:
                raise self.error(e.line, f"more than max_disjuncts={self.max} disjuncts")
            return terms
        if head in ("<=", ">=", "<", ">", "="):
            return [self.atom(e, head)]
        raise self.error(e.line, f"unsupported formula {_show(e)}; expected and, or, <=, >=, <, >, =")

    def product(self, parts: list[list[list[int]]], line: int) -> list[list[int]]:
        """The DNF of a conjunction of DNFs (distributes over the disjunctions), capped."""
        size = math.prod(len(p) for p in parts)
        if size > self.max:
            raise self.error(
                line,
                f"the conjunction expands to {size} disjuncts > max_disjuncts={self.max} "
                "(products of disjunctions grow multiplicatively)",
            )
        terms: list[list[int]] = [[]]
        for part in parts:
            if len(part) == 1:
                for t in terms:
                    t.extend(part[0])
            else:
                terms = [t + p for t in terms for p in part]
        return terms


def _sum(parts: Sequence[_Term]) -> _Term:
    coeffs: dict[str, float] = {}
    for c, _ in parts:
        for k, v in c.items():
            coeffs[k] = coeffs.get(k, 0.0) + v
    return coeffs, sum(k for _, k in parts)


def _scaled(t: _Term, f: float) -> _Term:
    return {k: v * f for k, v in t[0].items()}, t[1] * f


def load_vnnlib(
    path: str | os.PathLike,
    input_shape: Sequence[int],
    num_outputs: int,
    *,
    nhwc: bool = False,
    max_disjuncts: int = MAX_DISJUNCTS,
) -> VnnlibProperty:
    """Reads a VNN-LIB property (see the module docstring for the subset and its semantics).

    Args:
      path: the .vnnlib file.
      input_shape: the ONNX per-example input shape (without the batch axis), e.g. (1, 28, 28) or
        (784,); X_i is element i of it in row-major order.
      num_outputs: the number of outputs K (Y_0 .. Y_{K-1}).
      nhwc: input_shape is an NCHW image (C, H, W); return the boxes as (H, W, C), the layout of
        lnjax models (`nchw_to_nhwc`), e.g. for `load_onnx(...).input_shape`.
      max_disjuncts: cap on the disjunctive normal form's size (a clear error beyond it).

    Returns:
      VnnlibProperty: cases in order of first appearance; boxes float32 (rounded outward), A and b
      float64.

    Raises:
      VnnlibError: with the file, line and offending term: unbalanced parentheses, undeclared or
        misnamed variables, X / Y counts that do not match input_shape / num_outputs, an input
        without a finite lower or upper bound (or with lower > upper), nonlinear terms, constraints
        that mix inputs and outputs or couple several inputs, unsupported commands or connectives.
    """
    where = os.fspath(path)
    input_shape = tuple(int(d) for d in input_shape)
    if nhwc and len(input_shape) != 3:
        raise ValueError(f"nhwc=True needs an NCHW per-example input shape (C, H, W), got {input_shape}")
    n_in = math.prod(input_shape)
    with open(where) as f:
        exprs = _parse(f.read(), where)
    reader = _Reader(where, n_in, int(num_outputs), max_disjuncts)
    asserts = []
    for e in exprs:
        if not isinstance(e, _List) or not e.items or not isinstance(e.items[0], _Sym):
            raise VnnlibError(f"{where}:{e.line}: expected a command like (assert ...), got {_show(e)}")
        head = e.items[0].text
        if head in ("declare-const", "declare-fun"):
            reader.declare(e)
        elif head == "assert":
            if len(e.items) != 2:
                raise reader.error(e.line, f"malformed {_show(e)}; expected (assert <formula>)")
            asserts.append(e)
        elif head not in _IGNORED:
            raise reader.error(e.line, f"unsupported command {head!r}; expected declare-const or assert")
    reader.check_declarations(input_shape)
    if not asserts:
        raise VnnlibError(f"{where}: no (assert ...); expected input bounds and output constraints")
    terms = reader.product([reader.dnf(e.items[1]) for e in asserts], asserts[0].line)
    groups: dict[bytes, tuple[np.ndarray, np.ndarray, list[Disjunct]]] = {}
    for number, term in enumerate(terms):
        lower, upper = np.full(n_in, -np.inf), np.full(n_in, np.inf)
        rows, rhs = [], []
        for i in term:
            lit = reader.literals[i]
            if lit[0] == "x":
                _, k, is_upper, value, _ = lit
                if is_upper:
                    upper[k] = min(upper[k], value)
                else:
                    lower[k] = max(lower[k], value)
            else:
                rows.append(lit[1])
                rhs.append(lit[2])
        context = f" (in disjunct {number} of the formula's normal form)" if len(terms) > 1 else ""
        for bound, sign, op in ((lower, -np.inf, ">="), (upper, np.inf, "<=")):
            missing = np.flatnonzero(bound == sign)
            if missing.size:
                k = int(missing[0])
                side = "lower" if op == ">=" else "upper"
                raise VnnlibError(
                    f"{where}: X_{k} has no {side} bound{context}; expected (assert ({op} X_{k} <number>)) "
                    f"({missing.size} inputs lack one)"
                )
        bad = np.flatnonzero(lower > upper)
        if bad.size:
            k = int(bad[0])
            raise VnnlibError(
                f"{where}: X_{k} has lower bound {lower[k]!r} > upper bound {upper[k]!r}{context}"
            )
        a = np.asarray(rows, np.float64).reshape(len(rows), reader.n_out)
        disjunct = (a, np.asarray(rhs, np.float64))
        key = lower.tobytes() + upper.tobytes()
        groups.setdefault(key, (lower, upper, []))[2].append(disjunct)
    cases = []
    for lower, upper, disjuncts in groups.values():
        lo, hi = (v.reshape(input_shape) for v in outward_float32(lower, upper))
        if nhwc:
            lo, hi = nchw_to_nhwc(lo), nchw_to_nhwc(hi)
        cases.append(
            VnnlibCase(
                lower=np.ascontiguousarray(lo), upper=np.ascontiguousarray(hi), disjuncts=tuple(disjuncts)
            )
        )
    return VnnlibProperty(cases=tuple(cases))


# ----------------------------------------------------------------------------- writing


def argmax_disjuncts(label: int, num_classes: int) -> tuple[Disjunct, ...]:
    """Robustness of class `label`: violated iff some Y_j >= Y_label (j != label), one disjunct per j
    with the row Y_label - Y_j <= 0."""
    if not 0 <= label < num_classes:
        raise ValueError(f"label {label} is not in [0, {num_classes})")
    out = []
    for j in range(num_classes):
        if j != label:
            a = np.zeros((1, num_classes))
            a[0, label], a[0, j] = 1.0, -1.0
            out.append((a, np.zeros(1)))
    return tuple(out)


def to_spec(disjuncts: Sequence[Disjunct], num_outputs: int) -> Linear:
    """The verifier's spec of a case's output property: robust iff no disjunct holds anywhere.

    Two forms:
    - every disjunct is one linear constraint a_i · y <= b_i (the competition's robustness form
      `(or (and (>= Y_j Y_t)) ...)`, or a single top-level output assertion): the property holds
      iff a_i · y - b_i > 0 for every i, i.e. `lnjax.specs.Linear(c=A, offset=-b)` (k = 1: the
      smallest row). A disjunct without output constraints (the input box alone is a
      counterexample) becomes the row 0 · y + 0, which is never > 0.
    - one disjunct, a conjunction of m constraints (ACAS Xu property 3: "Y_0 is minimal" is
      Y_0 <= Y_j for every j at once): the property holds iff some a_i · y - b_i > 0, i.e.
      `Linear(c=A, offset=-b, k=m)` (the largest row).

    Args:
      disjuncts: a case's disjuncts (`VnnlibCase.disjuncts`), each (A [m, K], b [m]).
      num_outputs: K, the network's number of outputs.

    Returns:
      `lnjax.specs.Linear`, rows in order.

    Raises:
      VnnlibError: several disjuncts of which one is a conjunction (a minimum over groups of maxima
        within them, which one order statistic cannot express), or a row over another number of
        outputs.
    """
    # lnjax.specs pulls in jax; imported here so that reading and writing files stays numpy-only.
    from lnjax.specs import Linear

    if not disjuncts:
        raise VnnlibError("no output disjuncts; expected at least one (A, b)")
    checked = []
    for i, (a, b) in enumerate(disjuncts):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64).reshape(-1)
        if a.ndim != 2 or a.shape[1] != num_outputs or len(b) != len(a):
            raise VnnlibError(
                f"disjunct {i} has A {a.shape} and b {b.shape}; expected [m, {num_outputs}] and [m]"
            )
        checked.append((a, b))
    if len(checked) == 1 and len(checked[0][0]) > 1:  # one conjunction: some constraint must fail
        a, b = checked[0]
        return Linear(c=a, offset=-b, k=len(a))
    rows, offsets = [], []
    for i, (a, b) in enumerate(checked):
        if len(a) > 1:
            raise VnnlibError(
                f"disjunct {i}: a conjunction of {len(a)} output constraints next to other disjuncts is "
                "not supported (supported: disjunctions of single linear constraints, e.g. argmax "
                "robustness, or a single conjunction, e.g. ACAS Xu property 3)"
            )
        rows.append(a[0] if len(a) else np.zeros(num_outputs))
        offsets.append(-b[0] if len(a) else 0.0)
    return Linear(c=np.stack(rows), offset=np.asarray(offsets))


def violated(disjuncts: Sequence[Disjunct], y: np.ndarray, *, tol: float = 0.0) -> bool:
    """True iff the outputs y [K] satisfy some disjunct (A @ y <= b + tol in every row)."""
    y = np.asarray(y, np.float64).reshape(-1)
    return any(bool(np.all(a @ y <= b + tol)) for a, b in disjuncts)


def _num(v: float) -> str:
    if not math.isfinite(v):
        raise ValueError(f"{v} is not a finite number; VNN-LIB needs finite constants")
    return repr(float(v))


def _row_text(a: np.ndarray, b: float) -> str:
    """One row a @ y <= b as a VNN-LIB comparison (competition style for y_p - y_n <= 0)."""
    nz = np.flatnonzero(a)
    if b == 0 and len(nz) == 2 and sorted(a[nz]) == [-1.0, 1.0]:
        p, n = (int(i) for i in (nz if a[nz[0]] > 0 else nz[::-1]))
        return f"(>= Y_{n} Y_{p})"
    if len(nz) == 1 and abs(a[nz[0]]) == 1:
        i = int(nz[0])
        return f"(<= Y_{i} {_num(b)})" if a[i] > 0 else f"(>= Y_{i} {_num(-b)})"
    terms = " ".join(f"(* {_num(a[i])} Y_{i})" for i in nz)
    return f"(<= (+ {terms}) {_num(b)})" if len(nz) > 1 else f"(<= {terms or '0.0'} {_num(b)})"


def write_vnnlib(
    path: str | os.PathLike, lower: np.ndarray, upper: np.ndarray, disjuncts: Sequence[Disjunct]
) -> None:
    """Writes a VNN-LIB property (atomically): the box lower <= X <= upper (X_i in row-major order of
    `lower`: pass ONNX-layout arrays, e.g. `nhwc_to_nchw(box)` for our images) and "violated iff
    some disjunct A @ Y <= b holds"; `load_vnnlib` reads it back to the same case (float32 bounds
    are written with full precision).
    """
    lower, upper = np.asarray(lower).reshape(-1), np.asarray(upper).reshape(-1)
    if lower.shape != upper.shape or not disjuncts:
        raise ValueError("write_vnnlib needs lower and upper of one shape and at least one disjunct")
    k = int(np.asarray(disjuncts[0][0]).shape[1])
    lines = ["; written by lnjax.io.vnnlib.write_vnnlib: violated iff some input in the box satisfies"]
    lines += ["; the output constraints below", ""]
    lines += [f"(declare-const X_{i} Real)" for i in range(lower.size)]
    lines += [""] + [f"(declare-const Y_{j} Real)" for j in range(k)]
    lines += ["", "; input box"]
    for i, (lo, hi) in enumerate(zip(lower, upper, strict=True)):
        lines += [f"(assert (<= X_{i} {_num(hi)}))", f"(assert (>= X_{i} {_num(lo)}))"]
    lines += ["", "; output constraints"]
    texts = []
    for a, b in disjuncts:
        a, b = np.asarray(a, np.float64).reshape(-1, k), np.asarray(b, np.float64).reshape(-1)
        texts.append([_row_text(row, float(v)) for row, v in zip(a, b, strict=True)])
    if len(texts) == 1:
        lines += [f"(assert {t})" for t in texts[0]]
    else:
        lines.append("(assert (or")
        lines += [f"    (and {' '.join(t)})" for t in texts]
        lines.append("))")
    write_bytes_atomic(path, ("\n".join(lines) + "\n").encode())


def counterexample_text(x: np.ndarray, y: np.ndarray) -> str:
    """A counterexample in the VNN-COMP result format: `((X_0 v)\\n (X_1 v) ... (Y_0 v) ...)`.

    x is flattened in row-major order (pass the ONNX layout: `nhwc_to_nchw(x)` for our images);
    values are float32 (as the network sees them) printed as the repr of their float64 value, so
    they read back exactly. A VNN-COMP result file is "sat\\n" followed by this text.
    """
    xs = np.asarray(x, np.float32).reshape(-1)
    ys = np.asarray(y, np.float32).reshape(-1)
    pairs = [f"(X_{i} {float(v)!r})" for i, v in enumerate(xs)] + [
        f"(Y_{j} {float(v)!r})" for j, v in enumerate(ys)
    ]
    return "(" + "\n ".join(pairs) + ")"


def read_counterexample(text: str) -> tuple[np.ndarray, np.ndarray]:
    """The inverse of `counterexample_text`: (x [n] float64, y [K] float64) from `((X_0 v) ... (Y_0 v)
    ...)`, also with a leading "sat" line (a whole VNN-COMP result file). Entries may come in any
    order; every X_0..X_{n-1} and Y_0..Y_{K-1} must appear once.

    Raises:
      VnnlibError: text that is not such a list (unbalanced, a missing or repeated entry, a bad number).
    """
    body = text.strip()
    if body.split("\n", 1)[0].strip() == "sat":
        body = body.split("\n", 1)[1] if "\n" in body else ""
    exprs = _parse(body, "counterexample")
    if len(exprs) != 1 or not isinstance(exprs[0], _List):
        raise VnnlibError(
            f"counterexample: expected one list ((X_0 v) ... (Y_0 v) ...), got {len(exprs)} items"
        )
    values: dict[str, dict[int, float]] = {"X": {}, "Y": {}}
    for pair in exprs[0].items:
        ok = isinstance(pair, _List) and len(pair.items) == 2 and all(isinstance(i, _Sym) for i in pair.items)
        m = _VAR.fullmatch(pair.items[0].text) if ok else None
        if m is None or not _NUMBER.fullmatch(pair.items[1].text):
            raise VnnlibError(f"counterexample: expected (X_i value) or (Y_j value), got {_show(pair)}")
        kind, index = m.group(1), int(m.group(2))
        if index in values[kind]:
            raise VnnlibError(f"counterexample: {kind}_{index} appears twice")
        values[kind][index] = float(pair.items[1].text)
    out = []
    for kind in ("X", "Y"):
        got = values[kind]
        if not got or sorted(got) != list(range(len(got))):
            missing = min(set(range(max(got, default=-1) + 2)) - set(got))
            raise VnnlibError(f"counterexample: {kind}_{missing} is missing")
        out.append(np.array([got[i] for i in range(len(got))], np.float64))
    return out[0], out[1]
