"""The encoders (run in the worker): a model built column by column — through python-mip for CBC
(`_Encoder`) or directly on highspy for HiGHS (`_HighsEncoder`) — bound widening, LP tightening, the
nonlinear layers through their ops' `MilpRules.encode`, and the spec objective (the k-th smallest row).

`encode` is the same for every encoder: both implement the `MilpEncoder` protocol the op rules write
into (`ncols`, `add_columns`, `resize`, `add_rows`) plus `lp_optimum` (LP tightening) and `finish`
(the objective), so CBC and HiGHS solve the same model, column for column and row for row."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, cast

import numpy as np
import scipy.sparse as sp

from lnjax.verify.milp.network import AffineLayer, MilpNetwork, _nonlinear_rules
from lnjax.verify.milp.query import MIP_REL_GAP, MilpOptions, MilpQuery


class _Encoder:
    """Builds a python-mip model column by column; values are sparse rows (A @ columns + b)."""

    def __init__(self, options: MilpOptions):
        import mip

        self.mip = mip
        self.options = options
        self.model = mip.Model(sense=mip.MINIMIZE, solver_name=mip.CBC)
        self.model.verbose = 0
        self.model.threads = options.threads
        self.model.seed = options.seed
        self.model.emphasis = mip.SearchEmphasis(options.emphasis)
        self.model.max_mip_gap = MIP_REL_GAP  # python-mip's default, stated
        self.cols: list = []
        self.num_binaries = 0

    @property
    def ncols(self) -> int:
        return len(self.cols)

    def add_columns(self, lower: np.ndarray, upper: np.ndarray, binary: bool = False) -> np.ndarray:
        """Adds len(lower) columns; returns their indices."""
        var_type = self.mip.BINARY if binary else self.mip.CONTINUOUS
        start = self.ncols
        for lo, hi in zip(np.asarray(lower, float).tolist(), np.asarray(upper, float).tolist(), strict=True):
            self.cols.append(self.model.add_var(lb=lo, ub=hi, var_type=var_type))
        if binary:
            self.num_binaries += len(lower)
        return np.arange(start, self.ncols)

    def resize(self, a: sp.csr_matrix) -> sp.csr_matrix:
        """The same rows over the current number of columns."""
        return _resize(a, self.ncols)

    def expr(self, a: sp.csr_matrix, i: int | np.integer, const: float = 0.0) -> Any:
        """Row i of `a` as a LinExpr (+ const)."""
        lo, hi = a.indptr[i], a.indptr[i + 1]
        cols = self.cols
        return self.mip.LinExpr(
            variables=[cols[j] for j in a.indices[lo:hi]],
            coeffs=a.data[lo:hi].tolist(),
            const=const,  # pyright: ignore[reportArgumentType] (python-mip annotates numbers.Real)
        )

    def add_rows(self, a: sp.csr_matrix, rhs: np.ndarray, sense: str) -> None:
        """Adds rows a @ cols (sense) rhs, sense in {"<=", ">=", "=="}."""
        a = a.tocsr()
        a.sum_duplicates()
        for i, r in enumerate(np.asarray(rhs, float).tolist()):
            e = self.expr(a, i)
            if sense == "<=":
                self.model.add_constr(e <= r)
            elif sense == ">=":
                self.model.add_constr(e >= r)
            else:
                self.model.add_constr(e == r)

    def lp_optimum(self, a: sp.csr_matrix, i: int | np.integer, maximise: bool) -> float | None:
        """min (or max) of row i of `a` over the LP relaxation built so far; None if not solved.
        The model is left minimising whatever happens."""
        mip = self.mip
        self.model.objective = self.expr(a, i)
        self.model.sense = mip.MAXIMIZE if maximise else mip.MINIMIZE
        try:
            status = self.model.optimize(relax=True)
            if status != mip.OptimizationStatus.OPTIMAL or self.model.objective_value is None:
                return None
            return float(self.model.objective_value)
        finally:
            self.model.sense = mip.MINIMIZE

    def finish(self, s_col: int) -> None:
        """The objective: minimise column `s_col` (the model is complete)."""
        self.model.objective = self.mip.LinExpr(variables=[self.cols[s_col]], coeffs=[1.0])  # pyright: ignore[reportArgumentType]


def import_highspy():
    """The highspy module, or one ImportError naming the extra that installs it."""
    try:
        import highspy
    except ImportError as e:
        raise ImportError(
            f"MilpOptions.solver='highs' needs the optional highspy package ({e}): pip install 'lnjax[highs]'"
        ) from None
    return highspy


_highs_threads: int | None = None  # the thread count of this process's HiGHS scheduler (None: not started)


def _highs_scheduler(highspy, threads: int) -> None:
    """HiGHS runs on one global scheduler per process, sized by the first run; a run asking for
    another thread count fails unless the scheduler is reset first."""
    global _highs_threads
    if _highs_threads is not None and _highs_threads != threads:
        highspy.Highs.resetGlobalScheduler(True)
    _highs_threads = threads


class _HighsEncoder:
    """Builds a HiGHS model (highspy) column by column, rows added as whole CSR blocks.

    Binaries are added as continuous [0, 1] columns and marked integer by `finish`, so LP tightening
    solves the relaxation built so far without switching integrality back and forth. Solver options
    mirror python-mip's for CBC: relative gap `MIP_REL_GAP`, absolute gap 1e-10, `threads`, `seed`
    (HiGHS has no search emphasis: `options.emphasis` is ignored).
    """

    def __init__(self, options: MilpOptions):
        highspy = import_highspy()
        self.highspy = highspy
        self.options = options
        _highs_scheduler(highspy, int(options.threads))
        self.model = h = highspy.Highs()
        for name, value in (
            ("output_flag", False),
            ("threads", int(options.threads)),
            ("random_seed", int(options.seed)),
            ("mip_rel_gap", MIP_REL_GAP),
            ("mip_abs_gap", 1e-10),
        ):
            h.setOptionValue(name, value)
        self.binaries: list[np.ndarray] = []
        self.num_binaries = 0
        self._ncols = 0

    @property
    def ncols(self) -> int:
        return self._ncols

    def add_columns(self, lower: np.ndarray, upper: np.ndarray, binary: bool = False) -> np.ndarray:
        """Adds len(lower) columns; returns their indices."""
        lower = np.asarray(lower, np.float64).ravel()
        upper = np.asarray(upper, np.float64).ravel()
        n = lower.size
        none = np.zeros(0, np.int32)
        self.model.addCols(n, np.zeros(n), lower, upper, 0, none, none, np.zeros(0))
        cols = np.arange(self._ncols, self._ncols + n)
        self._ncols += n
        if binary:
            self.binaries.append(cols)
            self.num_binaries += n
        return cols

    def resize(self, a: sp.csr_matrix) -> sp.csr_matrix:
        """The same rows over the current number of columns."""
        return _resize(a, self.ncols)

    def add_rows(self, a: sp.csr_matrix, rhs: np.ndarray, sense: str) -> None:
        """Adds rows a @ cols (sense) rhs, sense in {"<=", ">=", "=="}."""
        a = sp.csr_matrix(a)
        a.sum_duplicates()
        rhs = np.asarray(rhs, np.float64).ravel()
        inf = self.highspy.kHighsInf
        lower = np.full(rhs.size, -inf) if sense == "<=" else rhs
        upper = np.full(rhs.size, inf) if sense == ">=" else rhs
        self.model.addRows(
            rhs.size,
            lower,
            upper,
            a.nnz,
            a.indptr[:-1].astype(np.int32),
            a.indices.astype(np.int32),
            a.data.astype(np.float64),
        )

    def _set_objective(self, cols: np.ndarray, coeffs: np.ndarray, maximise: bool) -> None:
        costs = np.zeros(self._ncols)
        costs[cols] = coeffs
        self.model.changeColsCost(self._ncols, np.arange(self._ncols, dtype=np.int32), costs)
        sense = self.highspy.ObjSense
        self.model.changeObjectiveSense(sense.kMaximize if maximise else sense.kMinimize)

    def lp_optimum(self, a: sp.csr_matrix, i: int | np.integer, maximise: bool) -> float | None:
        """min (or max) of row i of `a` over the LP relaxation built so far; None if not solved."""
        lo, hi = a.indptr[i], a.indptr[i + 1]
        self._set_objective(a.indices[lo:hi], a.data[lo:hi], maximise)
        try:
            self.model.run()
            if self.model.getModelStatus() != self.highspy.HighsModelStatus.kOptimal:
                return None
            return float(self.model.getInfo().objective_function_value)
        finally:
            self.model.changeObjectiveSense(self.highspy.ObjSense.kMinimize)

    def finish(self, s_col: int) -> None:
        """The objective: minimise column `s_col`; the binaries become integer (the model is complete)."""
        self._set_objective(np.array([s_col]), np.array([1.0]), maximise=False)
        if self.binaries:
            cols = np.concatenate(self.binaries).astype(np.int32)
            kind = np.full(cols.size, self.highspy.HighsVarType.kInteger)
            self.model.changeColsIntegrality(cols.size, cols, kind)


class Encoder(Protocol):
    """What `encode` needs from a model builder (`_Encoder`, `_HighsEncoder`): the `MilpEncoder` the
    op rules write into, plus LP optima over the relaxation so far and the objective."""

    options: MilpOptions
    num_binaries: int

    @property
    def ncols(self) -> int: ...

    def add_columns(self, lower: np.ndarray, upper: np.ndarray, binary: bool = False) -> np.ndarray: ...

    def resize(self, a: sp.csr_matrix) -> sp.csr_matrix: ...

    def add_rows(self, a: Any, rhs: np.ndarray, sense: str) -> None: ...

    def lp_optimum(self, a: sp.csr_matrix, i: int | np.integer, maximise: bool) -> float | None: ...

    def finish(self, s_col: int) -> None: ...


E = TypeVar("E", bound=Encoder)


def _resize(a: sp.csr_matrix, ncols: int) -> sp.csr_matrix:
    return sp.csr_matrix((a.data, a.indices, a.indptr), shape=(len(a.indptr) - 1, ncols))


def _widen(lu, slack: float):
    lo, hi = (np.asarray(v, np.float64).ravel() for v in lu)
    return lo - slack * (1.0 + np.abs(lo)), hi + slack * (1.0 + np.abs(hi))


def _lp_tighten(enc: Encoder, a: sp.csr_matrix, b: np.ndarray, lo, hi, deadline: float):
    """Tightens [lo, hi] of unstable rows a @ cols + b by LPs over the relaxation built so far."""
    lo, hi = lo.copy(), hi.copy()
    a = enc.resize(a)
    for i in np.flatnonzero((lo < 0) & (hi > 0)):
        for maximise in (False, True):
            if time.monotonic() > deadline:
                return lo, hi
            v = enc.lp_optimum(a, i, maximise)
            if v is None:
                continue
            v += b[i]
            tol = 1e-6 * (1.0 + abs(v))
            if maximise:
                hi[i] = min(hi[i], v + tol)
            else:
                lo[i] = max(lo[i], v - tol)
            if lo[i] >= 0 or hi[i] <= 0:
                break
    return lo, hi


def encode(
    net: MilpNetwork,
    query: MilpQuery,
    options: MilpOptions,
    *,
    deadline: float = float("inf"),
    make_encoder: Callable[[MilpOptions], E] = _Encoder,
) -> tuple[E, np.ndarray, int, dict[str, Any]]:
    """Builds the MILP. Returns (encoder, input columns [n_in] (−1 = fixed pixel), s column, info).

    `make_encoder` builds the model (`_Encoder`: python-mip for CBC; `_HighsEncoder`: highspy).
    `info` holds the unstable counts per nonlinear layer and the LP-tightening time.
    """
    enc = make_encoder(options)
    slack = options.bound_slack
    lower = np.asarray(query.lower, np.float64)
    upper = np.asarray(query.upper, np.float64)
    free = upper > lower
    x_cols = np.full(net.input_size, -1)
    x_cols[free] = enc.add_columns(lower[free], upper[free])
    a = sp.csr_matrix(
        (np.ones(free.sum()), (np.flatnonzero(free), x_cols[free])), shape=(net.input_size, enc.ncols)
    )
    b = np.where(free, 0.0, lower)
    unstable: list[int] = []
    tighten_s = 0.0
    nl = 0
    first_nonlinear = True
    for layer in net.layers:
        if isinstance(layer, AffineLayer):
            a = cast(sp.csr_matrix, layer.w @ enc.resize(a)).tocsr()
            a.eliminate_zeros()
            b = layer.w @ b + layer.b
            continue
        # Stability and max-pool candidates are decided on the bounds as given (a wrong call from
        # float32 rounding changes a value by ~1e-6, covered by the safety margin); every bound
        # that constrains the model (big-M, column bounds) is widened, so no true point is cut off.
        raw = tuple(np.asarray(v, np.float64).ravel() for v in query.pre_bounds[nl])
        lo, hi = _widen(raw, slack)
        nl += 1
        rules = _nonlinear_rules(layer)
        if options.lp_tighten and not first_nonlinear and rules.lp_tighten:
            t0 = time.monotonic()
            lo, hi = _lp_tighten(enc, a, b, lo, hi, min(deadline, t0 + options.lp_tighten_seconds))
            raw = (np.maximum(raw[0], lo), np.minimum(raw[1], hi))
            tighten_s += time.monotonic() - t0
        first_nonlinear = False
        assert rules.encode is not None
        a, b, n_unstable = rules.encode(enc, enc.resize(a), b, raw, lo, hi, layer.data, options)
        unstable.append(n_unstable)
    s_col = _encode_objective(enc, enc.resize(a), b, query)
    enc.finish(s_col)
    return enc, x_cols, s_col, {"unstable": tuple(unstable), "tighten_s": tighten_s}


def _encode_objective(enc: Encoder, a, b, query: MilpQuery) -> int:
    """s = k-th smallest of d = C z + c0; returns the column of s."""
    c = sp.csr_matrix(np.asarray(query.c, np.float64))
    d_a = (c @ a).tocsr()
    d_b = c @ b + np.asarray(query.offset, np.float64)
    lo, hi = _widen((query.row_lower, query.row_upper), enc.options.bound_slack)
    k = query.k
    big_u = np.sort(hi)[k - 1]
    big_l = np.sort(lo)[k - 1]
    rows = np.flatnonzero(lo <= big_u)  # rows that can be among the k smallest
    s = enc.add_columns(np.array([big_l]), np.array([big_u]))[0]
    d_a = enc.resize(d_a[rows])
    n = len(rows)
    sel_s = sp.csr_matrix((np.ones(n), (np.arange(n), np.full(n, s))), shape=(n, enc.ncols))
    if n == k:  # every remaining row is among the k smallest: s ≥ d_j.
        enc.add_rows(sel_s - d_a, d_b[rows], ">=")
        return s
    g = enc.add_columns(np.zeros(n), np.ones(n), binary=True)
    big_m = hi[rows] - big_l
    d_a = enc.resize(d_a)
    sel_s = enc.resize(sel_s)
    sel_g = sp.csr_matrix((-big_m, (np.arange(n), g)), shape=(n, enc.ncols))
    # s ≥ d_j − M_j (1 − g_j)  ⇔  s − d_j − M_j g_j ≥ b_j − M_j
    enc.add_rows(sel_s - d_a + sel_g, d_b[rows] - big_m, ">=")
    enc.add_rows(
        sp.csr_matrix((np.ones(n), (np.zeros(n, int), g)), shape=(1, enc.ncols)), np.array([float(k)]), "=="
    )
    return s
