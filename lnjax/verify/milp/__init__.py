"""MIPVerify-style MILP encoding of a layer view, solved by CBC (python-mip) or HiGHS (highspy) in a
killable worker.

The network is turned once into `MilpNetwork`: plain numpy/scipy data (each run of linear ops —
conv, dense, flatten, average pooling — composed into one sparse matrix, built vectorised from
index arithmetic, never a Python loop per weight), with ReLU and max-pool layers in between.
A query (`MilpQuery`) adds the per-pixel input box (the verifier's checked box: clipped to its
`input_domain`, default [0, 1]), the pre-activation bounds
of every nonlinear layer (from `lnjax.bounds`) and the spec rows. The encoder then builds:

- affine layers: no variables; each value is a sparse row over the MILP columns (one row per
  emitted constraint);
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

Two modes: `sign` sets the solver's cutoff to `cutoff` and stops at the first solution (a proof when
the solver reports the model infeasible, a candidate counterexample otherwise); `optimise` runs to
optimality (within a 1e-4 relative gap) or the time limit (for the weakest points: every saved
solution is returned). `proven_range` states what a result proves about the minimum margin.

CBC's own time limit overruns (by up to 60 % measured here), so `MilpWorker` runs the solve in a
child process and kills it at the deadline (the worker is persistent, caches networks by
fingerprint, and is restarted after a kill). Nothing a timed-out solve produced is returned.

Modules (everything public is re-exported here; use `from lnjax.verify import milp as M`):

  network.py   `AffineLayer`, `NonlinearLayer`, `MilpNetwork`, `network_from_view` (and the weight
               fingerprint), `network_forward`, `nonlinear_op_indices`
  query.py     `MilpQuery`, `MilpOptions` (checks `solver` when made), `MilpResult`, `proven_range`
               and `contradict` (what a result proves; two results that cannot both hold),
               `MIP_REL_GAP`, `interval_row_lower`, `make_query`
  encoding.py  the model builders (`_Encoder`: python-mip; `_HighsEncoder`: highspy; both the
               `MilpEncoder` the op rules encode into), bound widening, LP tightening, `encode`,
               the spec objective
  solver.py    the solver seam: `solve` (one query in this process) builds, optimises and reads
               through a `Solver` backend chosen by `MilpOptions.solver` (`SOLVERS`; "cbc":
               `CbcSolver`, CBC through python-mip; "highs": `HighsSolver`, HiGHS through highspy,
               the optional `highs` extra), `check_solver`
  worker.py    `serve` (the child's loop), `MilpWorker`, `shared_worker`

References:
  Tjeng, Xiao & Tedrake, Evaluating Robustness of Neural Networks with Mixed Integer Programming,
  ICLR 2019 (MIPVerify): the ReLU and max-pool encodings and progressive bound tightening.
"""

from lnjax.verify.milp.encoding import encode
from lnjax.verify.milp.network import (
    AffineLayer,
    Layer,
    MilpNetwork,
    NonlinearLayer,
    network_forward,
    network_from_view,
    nonlinear_op_indices,
)
from lnjax.verify.milp.query import (
    MIP_REL_GAP,
    MilpOptions,
    MilpQuery,
    MilpResult,
    contradict,
    interval_row_lower,
    make_query,
    proven_range,
)
from lnjax.verify.milp.solver import SOLVERS, BuildInfo, CbcSolver, HighsSolver, Solver, check_solver, solve
from lnjax.verify.milp.worker import MilpWorker, serve, shared_worker

__all__ = [
    "MIP_REL_GAP",
    "SOLVERS",
    "AffineLayer",
    "BuildInfo",
    "CbcSolver",
    "HighsSolver",
    "Layer",
    "MilpNetwork",
    "MilpOptions",
    "MilpQuery",
    "MilpResult",
    "MilpWorker",
    "NonlinearLayer",
    "Solver",
    "check_solver",
    "contradict",
    "encode",
    "interval_row_lower",
    "make_query",
    "network_forward",
    "network_from_view",
    "nonlinear_op_indices",
    "proven_range",
    "serve",
    "shared_worker",
    "solve",
]
