"""MIPVerify-style MILP encoding of a layer view, solved by CBC (python-mip) in a killable worker.

The network is turned once into `MilpNetwork`: plain numpy/scipy data (each run of linear ops —
conv, dense, flatten, average pooling — composed into one sparse matrix, built vectorised from
index arithmetic, never a Python loop per weight), with ReLU and max-pool layers in between.
A query (`MilpQuery`) adds the per-pixel input box (clipped to [0, 1]), the pre-activation bounds
of every nonlinear layer (from `lnjax.bounds`) and the spec rows. The encoder then builds:

- affine layers: no variables; each value is a sparse row over the MILP columns (one `LinExpr`
  per emitted constraint);
- nonlinear layers: each op's own encoding (`lnjax.models.ops`, `MilpRules.encode`), given this
  encoder as an argument:
- ReLU with bounds [l, u]: u ≤ 0 → the constant 0; l ≥ 0 → the
  identity (a continuous column tied by one equality, or inlined when the row has ≤
  `inline_max_terms` terms); otherwise one binary a and y ≥ x, y ≥ 0, y ≤ u·a, y ≤ x − l(1 − a);
- max-pool: binaries only over the window inputs whose upper bound exceeds the largest lower
  bound in the window, plus the input attaining it (one candidate → no variable at all);
- the spec: with d = C z + c0, minimise s = the k-th smallest d_j through one binary per row
  that can be among the k smallest (Σ b_j = k, s ≥ d_j − (u_j − L)(1 − b_j)); rows that can never
  be among them are dropped, and with exactly k rows left no binary is needed.

Stability and max-pool candidates are decided on the bounds as given; every bound that constrains
the model (big-M coefficients, column bounds) is first widened by `bound_slack`·(1 + |v|), so the
float32 bounds from JAX never cut off a true point of the float64 model.

Two modes: `sign` sets CBC's cutoff to `cutoff` and stops at the first solution (a proof when
CBC reports the model infeasible, a candidate counterexample otherwise); `optimise` runs to
optimality or the time limit (for the weakest points: every saved solution is returned).

CBC's own time limit overruns (by up to 60 % measured here), so `MilpWorker` runs the solve in a
child process and kills it at the deadline (the worker is persistent, caches networks by
fingerprint, and is restarted after a kill). Nothing a timed-out solve produced is returned.

References:
  Tjeng, Xiao & Tedrake, Evaluating Robustness of Neural Networks with Mixed Integer Programming,
  ICLR 2019 (MIPVerify): the ReLU and max-pool encodings and progressive bound tightening.
"""

from __future__ import annotations

import atexit
import hashlib
import math
import os
import socket
import subprocess
import sys
import threading
import time
import traceback
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import numpy as np
import scipy.sparse as sp

from lnjax.models import layers as L
from lnjax.models.ops import MilpRules, rules_of

if TYPE_CHECKING:
    from jax.typing import ArrayLike

    from lnjax.bounds.interval import LayerBounds
    from lnjax.specs import SpecRows

# ----------------------------------------------------------------------------------------------
# The network as data.


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


# ----------------------------------------------------------------------------------------------
# A query and its answer.


class MilpQuery(NamedTuple):
    """One question about one box.

    Attributes:
      lower, upper: [n_in] float64, the input box (already clipped to [0, 1]).
      pre_bounds: per nonlinear layer (in order), (l, u) of its input, flattened float64.
      c, offset, k: the spec rows (`specs.SpecRows`): margin = k-th smallest of c @ z + offset.
      row_lower, row_upper: [M] sound bounds of c @ z + offset over the box.
    """

    lower: np.ndarray
    upper: np.ndarray
    pre_bounds: tuple[tuple[np.ndarray, np.ndarray], ...]
    c: np.ndarray
    offset: np.ndarray
    k: int
    row_lower: np.ndarray
    row_upper: np.ndarray


class MilpOptions(NamedTuple):
    """How to solve.

    Attributes:
      mode: "sign" (cutoff, stop at the first solution) or "optimise" (to optimality / time limit).
      cutoff: sign mode: solutions with objective (margin) above it are pruned; infeasible ⇒
        margin ≥ cutoff everywhere in the box (up to CBC's tolerances, ~1e-6).
      cbc_seconds: CBC's own (soft) time limit; the hard limit is the worker's deadline.
      threads: CBC threads.
      emphasis: python-mip SearchEmphasis value (0 default, 1 feasibility, 2 optimality).
      lp_tighten: tighten unstable pre-activations (beyond the first nonlinear layer) by LPs over
        the relaxation of the layers before them.
      lp_tighten_seconds: budget for LP tightening (stops early, keeping bounds found so far).
      bound_slack: bounds are widened by slack·(1 + |v|) before use (float32 bounds vs float64 MILP).
      inline_max_terms: identity ReLUs whose row has at most this many terms are inlined.
      max_solutions: at most this many saved solutions are returned (optimise mode).
      seed: CBC random seed.
    """

    mode: str = "sign"
    cutoff: float = 0.0
    cbc_seconds: float = 60.0
    threads: int = 1
    emphasis: int = 0
    lp_tighten: bool = False
    lp_tighten_seconds: float = 30.0
    bound_slack: float = 1e-5
    inline_max_terms: int = 1
    max_solutions: int = 10
    seed: int = 0


class MilpResult(NamedTuple):
    """What a solve produced. Only `infeasible` (sign mode) and `optimal` are proofs.

    Attributes:
      status: "infeasible" (no point with margin below the cutoff), "optimal", "feasible"
        (a solution, not proven optimal), "no_solution" (stopped, nothing found),
        "timeout" (killed at the hard deadline), "error".
      objective: the MILP objective of the best solution (the margin as the MILP sees it).
      bound: CBC's proven lower bound (meaningful only when `status == "optimal"`).
      solutions: [(x [n_in] float64, objective)], best first; x as CBC returned it (not clipped).
      num_binaries, num_columns, num_rows: model size.
      unstable: unstable units per nonlinear layer as encoded (after slack and LP tightening).
      build_s, tighten_s, solve_s: seconds spent in the worker.
      wall_s: seconds from submission to answer, measured by the caller.
      message: error text or notes.
    """

    status: str
    objective: float | None = None
    bound: float | None = None
    solutions: tuple[tuple[np.ndarray, float], ...] = ()
    num_binaries: int = 0
    num_columns: int = 0
    num_rows: int = 0
    unstable: tuple[int, ...] = ()
    build_s: float = 0.0
    tighten_s: float = 0.0
    solve_s: float = 0.0
    wall_s: float = 0.0
    message: str = ""


def interval_row_lower(rows: SpecRows, logit_bounds: tuple[ArrayLike, ArrayLike]) -> np.ndarray:
    """Lower bounds [M] of c @ z (without the offset) from elementwise logit bounds ([K] each)."""
    zl, zu = (np.asarray(v, np.float64).ravel() for v in logit_bounds)
    c = np.asarray(rows.c, np.float64)
    return np.maximum(c, 0.0) @ zl + np.minimum(c, 0.0) @ zu


def make_query(
    net: MilpNetwork,
    lower: ArrayLike,
    upper: ArrayLike,
    bounds: LayerBounds,
    rows: SpecRows,
    row_lower: ArrayLike | None = None,
) -> MilpQuery:
    """Host data for one query.

    Args:
      net: the network (`network_from_view`).
      lower, upper: [*input_shape] the box, already clipped to [0, 1].
      bounds: `lnjax.bounds.LayerBounds` over that box (output of every op).
      rows: the spec's `SpecRows`.
      row_lower: optional [M] proven lower bounds of c @ z (e.g. `crown_spec_lower`); combined with
        the interval bound from `bounds[-1]`.
    """
    lo64 = np.asarray(lower, np.float64).ravel()
    hi64 = np.asarray(upper, np.float64).ravel()
    pre = []
    for i in nonlinear_op_indices(net):
        if i == 0:
            pre.append((lo64, hi64))
        else:
            pre.append(tuple(np.asarray(v, np.float64).ravel() for v in bounds[i - 1]))
    zl, zu = (np.asarray(v, np.float64).ravel() for v in bounds[-1])
    c = np.asarray(rows.c, np.float64)
    off = np.asarray(rows.offset, np.float64)
    low = interval_row_lower(rows, bounds[-1])
    if row_lower is not None:
        low = np.maximum(low, np.asarray(row_lower, np.float64))
    return MilpQuery(
        lower=lo64,
        upper=hi64,
        pre_bounds=tuple(pre),
        c=c,
        offset=off,
        k=int(rows.k),
        row_lower=low + off,
        row_upper=np.maximum(c, 0.0) @ zu + np.minimum(c, 0.0) @ zl + off,
    )


# ----------------------------------------------------------------------------------------------
# The encoder (runs in the worker; plain numpy + python-mip).


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


def solve(net: MilpNetwork, query: MilpQuery, options: MilpOptions) -> MilpResult:
    """Encodes and solves in this process (no hard time limit; see `MilpWorker`)."""
    import mip

    t0 = time.monotonic()
    try:
        enc, x_cols, s_col, info = encode(net, query, options, deadline=t0 + options.cbc_seconds)
    except Exception:  # noqa: BLE001 — reported to the caller as a status, never raised in the worker
        return MilpResult(status="error", message=traceback.format_exc())
    t1 = time.monotonic()
    m = enc.model
    sizes: dict[str, Any] = dict(
        num_binaries=enc.num_binaries,
        num_columns=m.num_cols,
        num_rows=m.num_rows,
        unstable=info["unstable"],
        build_s=t1 - t0 - info["tighten_s"],
        tighten_s=info["tighten_s"],
    )
    seconds = max(options.cbc_seconds - (t1 - t0), 0.01)
    if options.mode == "sign":
        m.cutoff = float(options.cutoff)
        status = m.optimize(max_seconds=seconds, max_solutions=1)  # pyright: ignore[reportArgumentType]
    elif options.mode == "optimise":
        m.sol_pool_size = max(options.max_solutions, 1)
        status = m.optimize(max_seconds=seconds)  # pyright: ignore[reportArgumentType] (numbers.Real)
    else:
        return MilpResult(status="error", message=f"unknown mode {options.mode!r}", **sizes)
    solve_s = time.monotonic() - t1
    S = mip.OptimizationStatus
    if status in (S.INFEASIBLE, S.INT_INFEASIBLE):
        return MilpResult(status="infeasible", solve_s=solve_s, **sizes)
    if status not in (S.OPTIMAL, S.FEASIBLE):
        name = "no_solution" if status == S.NO_SOLUTION_FOUND else "error"
        return MilpResult(status=name, solve_s=solve_s, message=str(status), **sizes)
    sols = []
    for i in range(min(m.num_solutions, options.max_solutions) if options.mode == "optimise" else 1):
        x = np.asarray(query.lower, np.float64).copy()
        free = np.flatnonzero(x_cols >= 0)
        if i == 0:
            x[free] = [enc.cols[j].x for j in x_cols[free]]
            obj = float(m.objective_value)  # pyright: ignore[reportArgumentType] (a solution exists)
        else:
            x[free] = [enc.cols[j].xi(i) for j in x_cols[free]]
            obj = float(m.objective_values[i])
        sols.append((x, obj))
    return MilpResult(
        status="optimal" if status == S.OPTIMAL else "feasible",
        objective=float(m.objective_value),  # pyright: ignore[reportArgumentType] (a solution exists)
        bound=float(m.objective_bound) if m.objective_bound is not None else None,
        solutions=tuple(sols),
        solve_s=solve_s,
        **sizes,
    )


# ----------------------------------------------------------------------------------------------
# The worker: a persistent child process, killed at the deadline.


def serve(fd: int) -> None:
    """Worker loop on a socket fd: ("net", MilpNetwork) caches; ("solve", key, query, options) answers;
    ("ping",) answers ("pong",) (the worker is up and idle)."""
    conn = Connection(fd)
    cache: dict[str, MilpNetwork] = {}
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        if msg[0] == "ping":
            conn.send(("pong",))
        elif msg[0] == "net":
            net = msg[1]
            if len(cache) >= 4:
                cache.pop(next(iter(cache)))
            cache[net.key] = net
        elif msg[0] == "solve":
            _, key, query, options = msg
            if key not in cache:
                conn.send(MilpResult(status="error", message=f"network {key} not cached in the worker"))
                continue
            conn.send(solve(cache[key], query, options))


_WORKER_CMD = "import sys; from lnjax.verify.milp import serve; serve(int(sys.argv[1]))"


class MilpWorker:
    """A persistent MILP worker process with a hard wall-clock limit per solve.

    The worker is a plain `subprocess` (`python -c ... serve(fd)`) talking over a socket pair, not
    a `multiprocessing.Process`: it never re-imports the caller's `__main__` (scripts and notebooks
    need no `if __name__ == "__main__"` guard) and it is not a fork of a process running JAX.
    `solve(net, query, options, deadline=...)` returns the worker's `MilpResult`, or
    `MilpResult(status="timeout")` once `time.monotonic()` passes `deadline`: the child is killed
    (SIGKILL, by its own pid) and a fresh one started at once, importing in the background, so the
    next query rarely waits for it. Networks are sent once and cached in the worker by `net.key`.
    CBC's console output goes to /dev/null.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._conn: Connection | None = None
        self._known: set[str] = set()
        self.restarts = 0

    def _start(self) -> None:
        parent, child = socket.socketpair()
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", _WORKER_CMD, str(child.fileno())],
                pass_fds=(child.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                env=env,
            )
        finally:
            child.close()
        self._conn = Connection(parent.detach())
        self._known = set()

    def _kill(self) -> None:
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        if conn is not None:
            conn.close()
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            # Reap it in the background: waiting for a killed CBC process to exit can take a large
            # share of a second on a loaded machine, and the caller's budget is already spent.
            threading.Thread(target=proc.wait, daemon=True).start()

    def start(self) -> None:
        """Starts the process now (otherwise it starts on the first solve)."""
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._kill()
                self._start()

    def wait_ready(self, timeout: float = 60.0) -> float:
        """Blocks until the worker process is up and idle (its imports done); returns the seconds
        waited. After a time-out the replacement process imports in the background, competing for
        the cores with whatever runs next; benchmarks call this to keep that cost out of the next
        timed query (and to charge it to the query that caused it)."""
        t0 = time.monotonic()
        self.start()
        with self._lock:
            reply = self._exchange([("ping",)], t0 + timeout)
        if reply is None:
            raise TimeoutError(f"the MILP worker did not answer within {timeout} s (restarted)")
        if reply != ("pong",):
            raise RuntimeError(f"unexpected reply from the MILP worker: {reply!r}")
        return time.monotonic() - t0

    def _exchange(self, messages: list, deadline: float):
        """Sends `messages` and returns the worker's one reply, or None if `deadline` came first —
        then the worker is killed and a fresh one started (a late reply must never be read as the
        answer to a later request). Call with the lock held."""
        if self._send(messages, deadline):
            wait = None if math.isinf(deadline) else max(deadline - time.monotonic(), 0.0)
            conn = self._conn
            if conn is not None and conn.poll(wait):
                return conn.recv()
        self._kill()
        self.restarts += 1
        self._start()
        return None

    def _send(self, messages: list, deadline: float) -> bool:
        """Sends in a thread, so a worker that is still starting (it reads only once its imports are
        done) cannot hold the caller past `deadline`; False if the deadline came first."""
        conn, errors = self._conn, []

        def run():
            try:
                if conn is None:
                    raise OSError("no connection to the worker")
                for m in messages:
                    conn.send(m)
            except Exception as e:  # also the TypeError of a connection closed under it by a kill
                errors.append(e)

        sender = threading.Thread(target=run, daemon=True)
        sender.start()
        sender.join(None if math.isinf(deadline) else max(deadline - time.monotonic(), 0.0))
        if sender.is_alive():
            return False  # the caller kills the worker, which ends the send with an error
        if errors:
            raise OSError(f"sending to the MILP worker failed: {errors[0]!r}")
        return True

    def solve(
        self, net: MilpNetwork, query: MilpQuery, options: MilpOptions, *, deadline: float = math.inf
    ) -> MilpResult:
        """Solves in the worker; `deadline` is a `time.monotonic()` time (inf: no limit)."""
        t0 = time.monotonic()
        self.start()
        with self._lock:
            try:
                messages: list[tuple] = [] if net.key in self._known else [("net", net)]
                messages.append(("solve", net.key, query, options))
                # None: the deadline came first (a restarting worker did not take the query in time,
                # or CBC overran); the worker has been replaced.
                result = self._exchange(messages, deadline)
            except (EOFError, OSError) as e:
                self._kill()
                return MilpResult(
                    status="error", message=f"MILP worker died: {e!r}", wall_s=time.monotonic() - t0
                )
            if result is None:
                return MilpResult(status="timeout", wall_s=time.monotonic() - t0)
            self._known.add(net.key)
        return result._replace(wall_s=time.monotonic() - t0)

    def close(self) -> None:
        """Stops the worker process."""
        with self._lock:
            if self._conn is not None and self._proc is not None and self._proc.poll() is None:
                try:
                    self._conn.send(None)
                    self._proc.wait(timeout=1.0)
                except (OSError, subprocess.TimeoutExpired):
                    pass
            self._kill()


_SHARED: MilpWorker | None = None


def shared_worker() -> MilpWorker:
    """The process-wide default worker (started lazily, stopped at exit)."""
    global _SHARED
    if _SHARED is None:
        _SHARED = MilpWorker()
        atexit.register(_SHARED.close)
    return _SHARED
