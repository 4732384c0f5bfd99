"""The encoder (runs in the worker; plain numpy + python-mip): the python-mip model built column by
column, bound widening, LP tightening, the nonlinear layers through their ops' `MilpRules.encode`,
and the spec objective (the k-th smallest row)."""

from __future__ import annotations

import time
from typing import Any, cast

import numpy as np
import scipy.sparse as sp

from lnjax.verify.milp.network import AffineLayer, MilpNetwork, _nonlinear_rules
from lnjax.verify.milp.query import MilpOptions, MilpQuery


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
        return sp.csr_matrix((a.data, a.indices, a.indptr), shape=(len(a.indptr) - 1, self.ncols))

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


def _widen(lu, slack: float):
    lo, hi = (np.asarray(v, np.float64).ravel() for v in lu)
    return lo - slack * (1.0 + np.abs(lo)), hi + slack * (1.0 + np.abs(hi))


def _lp_tighten(enc: _Encoder, a: sp.csr_matrix, b: np.ndarray, lo, hi, deadline: float):
    """Tightens [lo, hi] of unstable rows a @ cols + b by LPs over the relaxation built so far."""
    mip = enc.mip
    lo, hi = lo.copy(), hi.copy()
    a = enc.resize(a)
    for i in np.flatnonzero((lo < 0) & (hi > 0)):
        for sense in (mip.MINIMIZE, mip.MAXIMIZE):
            if time.monotonic() > deadline:
                return lo, hi
            enc.model.objective = enc.expr(a, i)
            enc.model.sense = sense
            status = enc.model.optimize(relax=True)
            if status != mip.OptimizationStatus.OPTIMAL or enc.model.objective_value is None:
                continue
            v = enc.model.objective_value + b[i]
            tol = 1e-6 * (1.0 + abs(v))
            if sense == mip.MINIMIZE:
                lo[i] = max(lo[i], v - tol)
            else:
                hi[i] = min(hi[i], v + tol)
            if lo[i] >= 0 or hi[i] <= 0:
                break
    enc.model.sense = mip.MINIMIZE
    return lo, hi


def encode(
    net: MilpNetwork, query: MilpQuery, options: MilpOptions, *, deadline: float = float("inf")
) -> tuple[_Encoder, np.ndarray, int, dict[str, Any]]:
    """Builds the MILP. Returns (encoder, input columns [n_in] (−1 = fixed pixel), s column, info).

    `info` holds the unstable counts per nonlinear layer and the LP-tightening time.
    """
    enc = _Encoder(options)
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
    enc.model.objective = enc.mip.LinExpr(variables=[enc.cols[s_col]], coeffs=[1.0])  # pyright: ignore[reportArgumentType]
    return enc, x_cols, s_col, {"unstable": tuple(unstable), "tighten_s": tighten_s}


def _encode_objective(enc: _Encoder, a, b, query: MilpQuery) -> int:
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
