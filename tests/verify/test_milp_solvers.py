"""lnjax.verify.milp backends side by side: HiGHS and CBC give the same optimum and the same sign
answers on small queries, a wrong backend is caught by the same comparison, and HiGHS's options
(time limit, threads, the missing extra)."""

import functools
import sys

import jax.numpy as jnp
import pytest

from lnjax import models, specs
from lnjax.verify import milp as M
from tests.verify.test_milp import box, query_for, tiny_mlp


@functools.cache
def small_queries():
    """(net, query) pairs on the tiny MLP of test_milp (one architecture, compiled once): 3 seeds,
    Argmax and TopK(2), boxes of radius 0.15 and 0.3 (1–9 binaries). The CNN (max-pool) is compared
    in test_milp.test_cnn_optimum_is_sound_and_attained, where its query is built anyway."""
    out = []
    for seed in range(3):
        view = tiny_mlp(seed)
        net = M.network_from_view(view)
        lo, hi, x0 = box(seed, 3, 0.15 * (1 + seed % 2))
        t = int(jnp.argmax(models.apply_layers(view, jnp.asarray(x0))))
        for spec in (specs.Argmax(t), specs.TopK(t, 2)):
            out.append((net, query_for(view, net, lo, hi, spec.rows(4))))
    return out


def sign_answer(r: M.MilpResult, cutoff: float) -> str | None:
    """ "holds" (margin ≥ cutoff on the whole box), "violated" (a point below it) or None."""
    if r.status == "infeasible" or (r.status == "optimal" and r.objective > cutoff):
        return "holds"  # optimal above the cutoff: a model without binaries (no cutoff applied)
    if r.status in ("optimal", "feasible") and r.objective <= cutoff:
        return "violated"
    return None


def compare(net, q, solver_a: str, solver_b: str) -> tuple[list[str], tuple[M.MilpResult, M.MilpResult]]:
    """Both backends in optimise mode (both optimal, the same optimum up to the MIP gap), then in
    sign mode 0.01 above the optimum ("violated") and 0.01 below ("holds"), every pair checked for
    contradicting proofs (`M.contradict`: up to the gap, since an "optimal" bound is proven only up
    to it — CBC reported 2.5e-5 above a point HiGHS found on a 42-binary CNN query). Returns the
    disagreements and the optimise results."""
    found = []
    opt = M.MilpOptions(mode="optimise")
    a, b = (M.solve(net, q, opt._replace(solver=s)) for s in (solver_a, solver_b))
    if M.contradict(a, b, opt):
        found.append(f"optimise: {a.status} {a.bound}..{a.objective} vs {b.status} {b.bound}..{b.objective}")
    if a.status != "optimal" or b.status != "optimal":
        return found + [f"optimise: not both optimal ({a.status}, {b.status})"], (a, b)
    if abs(a.objective - b.objective) > 1e-5 + M.MIP_REL_GAP * abs(a.objective):
        found.append(f"optimise: optima {a.objective} vs {b.objective}")
    for cutoff, expected in ((a.objective + 0.01, "violated"), (a.objective - 0.01, "holds")):
        sign = M.MilpOptions(mode="sign", cutoff=cutoff)
        sa, sb = (M.solve(net, q, sign._replace(solver=s)) for s in (solver_a, solver_b))
        answers = (sign_answer(sa, cutoff), sign_answer(sb, cutoff))
        if M.contradict(sa, sb, sign) or answers != (expected, expected):
            found.append(f"sign at {cutoff:.4f}: {answers} ({sa.status}, {sb.status}), expected {expected}")
    return found, (a, b)


def test_highs_and_cbc_agree_on_small_queries():
    for net, q in small_queries():
        found, (cbc, highs) = compare(net, q, "cbc", "highs")
        assert found == []
        one_encoding = (highs.num_binaries, highs.num_columns, highs.num_rows, highs.unstable)
        assert one_encoding == (cbc.num_binaries, cbc.num_columns, cbc.num_rows, cbc.unstable)


class BoundTooHigh(M.HighsSolver):
    """A broken backend: claims a proven bound 0.05 above the truth."""

    def bound(self):
        b = super().bound()
        return None if b is None else b + 0.05


class ClaimsInfeasible(M.CbcSolver):
    """A broken backend: answers every sign question with "infeasible" (a false proof)."""

    def optimise(self, seconds, **kw):
        status, detail = super().optimise(seconds, **kw)
        return ("infeasible", detail) if kw.get("first_solution") else (status, detail)


@pytest.mark.parametrize("wrong", [BoundTooHigh, ClaimsInfeasible])
def test_a_wrong_backend_is_caught_by_the_comparison(monkeypatch, wrong):
    monkeypatch.setitem(M.SOLVERS, "wrong", wrong)
    net, q = small_queries()[0]
    for right in ("cbc", "highs"):
        found, _ = compare(net, q, right, "wrong")
        assert found and all(f.startswith("optimise" if wrong is BoundTooHigh else "sign") for f in found)


def test_highs_time_limit_cutoff_and_threads_reach_highs(monkeypatch):
    seen = []

    class Recording(M.HighsSolver):
        def optimise(self, seconds, **kw):
            out = super().optimise(seconds, **kw)
            h = self._enc.model
            seen.append((seconds, h.getOptionValue("time_limit")[1], h.getOptionValue("objective_bound")[1]))
            seen.append(h.getOptionValue("threads")[1])
            return out

    monkeypatch.setitem(M.SOLVERS, "recording", Recording)
    net, q = small_queries()[0]
    for threads in (1, 2, 1):  # HiGHS's process-wide scheduler is restarted when the count changes
        r = M.solve(
            net,
            q,
            M.MilpOptions(mode="sign", cutoff=-0.5, time_limit=7.0, threads=threads, solver="recording"),
        )
        assert r.status == "infeasible"
        (seconds, limit, bound), used = seen[-2:]
        assert 6.0 < seconds < 7.0 and limit == seconds and bound == -0.5 and used == threads


def test_highs_without_highspy_is_one_error_naming_the_extra(monkeypatch):
    net, q = small_queries()[0]
    made_before = M.MilpOptions(solver="highs")
    monkeypatch.setitem(sys.modules, "highspy", None)  # import highspy now raises ImportError
    with pytest.raises(
        ImportError, match=r"needs the optional highspy package .*pip install 'lnjax\[highs\]'"
    ):
        M.MilpOptions(solver="highs")
    M.MilpOptions(solver="cbc")  # CBC needs nothing optional
    r = M.solve(net, q, made_before)  # in the worker: an error result, never a raise
    assert r.status == "error" and "pip install 'lnjax[highs]'" in r.message


def test_unknown_solver_is_a_value_error_naming_the_known_ones():
    with pytest.raises(
        ValueError, match=r"MilpOptions.solver = 'gurobi'; expected one of \('cbc', 'highs'\)"
    ):
        M.MilpOptions(solver="gurobi")
    with pytest.raises(ValueError, match="expected one of"):
        M.MilpOptions(mode="optimise")._replace(solver=None)
