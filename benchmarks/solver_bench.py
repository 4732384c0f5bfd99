r"""MILP backends side by side: CBC (python-mip) vs HiGHS (highspy) on the same MILPs.

  .venv/bin/python benchmarks/solver_bench.py            # (make bench runs every benchmark)

Model: the small MNIST CNN of the `mnist_normal` training preset (conv 16 s2 → conv 32 s2 → dense 100
→ dense 10, 4,804 ReLUs), trained once into benchmarks/cache/mnist_normal (training is excluded from
the benchmark's time; MNIST is prepared into data/ if missing).

Queries (built once, shared by both backends): the `--images` correctly classified test images with
the smallest logit margins among the first `--pool`; spec Argmax(label); the box perturbs one
`--patch`×`--patch` pixel patch by ±ε (clipped to [0, 1]), placed where the margin's gradient is
largest (|∂margin/∂x| summed over the patch), at each ε of `--eps`. An L∞ ball over the whole
image has thousands of unstable ReLUs here (ε 0.002: ~500), which neither solver settles in
minutes; a patch keeps the MILPs at tens to a few hundred binaries, with robust and non-robust
boxes. Pre-activation bounds: CROWN (over interval bounds), spec rows: CROWN's row bounds.

Each MILP is solved by each backend in the same killable worker (`MilpWorker`), in both modes,
with the same cap (`--cap` s; the solver's own limit 0.9 × cap, the worker kills at the cap):
  optimise  to optimality (relative gap 1e-4): decided = "optimal";
  sign      cutoff = the verifier's safety margin (1e-4 + 1e-4 · max(1, ‖z(centre)‖∞)), stop at the
            first solution: decided = "infeasible" (holds) or a solution below the cutoff (violated;
            also checked in JAX: the margin at the point clipped into the box).
Seconds are the worker's wall time per solve (encoding + solving + transfer; the cap for a solve
killed at the cap). The worker is idle before every timed solve, and after a kill the replacement
solves a one-pixel query with both backends untimed (its imports, the network's transfer).
Disagreements: solves of one MILP in one mode whose results cannot both be right
(`milp.contradict`: disjoint proven ranges beyond 1e-5 + the MIP gap), or both decided with
different answers (sign) or optima further apart than the gap (optimise); 0 expected.

The last stdout line is one JSON object: {"queries", "decided_cbc", "decided_highs" (decided solves
of the 2 × queries), "median_s_cbc", "median_s_highs" (over those solves), "disagreements"}.

References:
  Tjeng, Xiao & Tedrake, Evaluating Robustness of Neural Networks with Mixed Integer Programming,
    ICLR 2019 (MIPVerify); Huangfu & Hall, Parallelizing the dual revised simplex method, Math.
    Prog. Comp. 2018 (HiGHS); Forrest et al., COIN-OR Branch-and-Cut (CBC).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402  (benchmarks/common.py, next to this script)

common.enter_repo()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from lnjax import bounds as B, models, specs  # noqa: E402
from lnjax.verify import milp as M  # noqa: E402

BACKENDS = ("cbc", "highs")
MODES = ("optimise", "sign")


def parse_args(argv):
    p = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--images", type=int, default=10, help="lowest-margin correctly classified images")
    p.add_argument("--pool", type=int, default=300, help="chosen among the first POOL test images")
    p.add_argument("--patch", type=int, default=3, help="side of the perturbed pixel patch")
    p.add_argument("--eps", default="0.1,0.2,0.3", help="ε of the patch boxes, comma-separated")
    p.add_argument("--cap", type=float, default=10.0, help="seconds per solve (both backends)")
    p.add_argument("--out", default="benchmarks/out/solver_bench.json")
    args = p.parse_args(argv)
    args.eps = [float(e) for e in args.eps.split(",") if e]
    if args.images < 1 or not 1 <= args.patch <= 28 or args.cap <= 0 or not args.eps:
        p.error("need --images ≥ 1, 1 ≤ --patch ≤ 28, --cap > 0 and at least one --eps")
    return args


def build_queries(view, net, test, args):
    """[{image, label, eps, patch (row, col), lo, hi, query, safety}] and the CROWN seconds."""
    n = min(args.pool, test.num_examples)
    logits = np.asarray(jax.jit(models.apply_layers_batch)(view, jnp.asarray(test.x[:n])))
    y = np.asarray(test.y[:n])
    others = np.where(np.eye(logits.shape[1], dtype=bool)[y], -np.inf, logits)
    margin = logits[np.arange(n), y] - others.max(1)
    correct = np.flatnonzero(margin > 0)
    images = correct[np.argsort(margin[correct])][: args.images]
    grad = jax.jit(
        jax.grad(lambda x, t: specs.Argmax(t).margin(models.apply_layers(view, x))), static_argnums=1
    )
    crown = jax.jit(lambda lo, hi: B.crown_bounds(view, lo, hi, base=B.interval_bounds(view, lo, hi)))
    row_lower = jax.jit(lambda lo, hi, c, b: B.crown_spec_lower(view, lo, hi, c, bounds=b))
    s = args.patch
    out, crown_s = [], 0.0
    for i in images:
        x, t = np.asarray(test.x[i], np.float32), int(y[i])
        g = np.abs(np.asarray(grad(jnp.asarray(x), t))).sum(-1)  # [H, W]
        windows = np.lib.stride_tricks.sliding_window_view(g, (s, s)).sum((-1, -2))
        r0, c0 = (int(v) for v in np.unravel_index(np.argmax(windows), windows.shape))
        mask = np.zeros(x.shape, bool)
        mask[r0 : r0 + s, c0 : c0 + s] = True
        rows = specs.Argmax(t).rows(logits.shape[1])
        safety = 1e-4 + 1e-4 * max(1.0, float(np.max(np.abs(logits[i]))))
        for eps in args.eps:
            lo = jnp.asarray(np.where(mask, np.clip(x - eps, 0, 1), x))
            hi = jnp.asarray(np.where(mask, np.clip(x + eps, 0, 1), x))
            t0 = time.perf_counter()
            b = jax.block_until_ready(crown(lo, hi))
            rl = row_lower(lo, hi, jnp.asarray(rows.c), b)
            crown_s += time.perf_counter() - t0
            query = M.make_query(net, lo, hi, b, rows, rl)
            unstable = B.unstable_counts(view, b)
            out.append(
                dict(
                    image=int(i),
                    label=t,
                    eps=eps,
                    patch=(r0, c0),
                    lo=lo,
                    hi=hi,
                    query=query,
                    safety=safety,
                    unstable=unstable,
                    margin=float(margin[i]),
                )
            )
    return out, crown_s


def solve_one(worker, net, q, mode: str, solver: str, cap: float, margin_fn):
    """One capped solve in the worker: a row of the results."""
    options = M.MilpOptions(mode=mode, cutoff=q["safety"], time_limit=0.9 * cap, solver=solver)
    t0 = time.monotonic()
    r = worker.solve(net, q["query"], options, deadline=t0 + cap)
    wall = time.monotonic() - t0
    answer, confirmed = None, None
    if mode == "optimise" and r.status == "optimal":
        answer = "optimal"
    elif mode == "sign" and r.status == "infeasible":
        answer = "holds"
    elif mode == "sign" and r.status in ("optimal", "feasible") and r.objective is not None:
        if r.objective <= q["safety"]:
            answer = "violated"
            xc = jnp.clip(
                jnp.asarray(r.solutions[0][0], jnp.float32).reshape(q["lo"].shape), q["lo"], q["hi"]
            )
            confirmed = bool(float(margin_fn(xc)) <= 0)
        elif r.status == "optimal":  # as the verifier reads it (e.g. an LP: solved without the cutoff)
            answer = "holds"
    return {
        "status": r.status,
        "answer": answer,
        "confirmed": confirmed,
        "seconds": cap if r.status == "timeout" else min(wall, cap),
        "wall_s": wall,
        "build_s": r.build_s,
        "solve_s": r.solve_s,
        "objective": r.objective,
        "bound": r.bound,
        "binaries": r.num_binaries,
        "result": r._replace(solutions=r.solutions[:1]),
    }


def disagreement(q, mode: str, a: dict, b: dict, options: M.MilpOptions) -> str | None:
    if M.contradict(a["result"], b["result"], options):
        return "contradicting proofs"
    if a["answer"] is None or b["answer"] is None:
        return None
    if mode == "sign" and a["answer"] != b["answer"]:
        return f"sign answers {a['answer']} vs {b['answer']}"
    if mode == "optimise" and abs(a["objective"] - b["objective"]) > 1e-5 + M.MIP_REL_GAP * abs(
        a["objective"]
    ):
        return f"optima {a['objective']:.6g} vs {b['objective']:.6g}"
    return None


def main(argv=None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    t_start = time.monotonic()
    model, params, test = common.ensure_mnist_normal()
    view = models.layer_view(model, params)
    net = M.network_from_view(view)
    queries, crown_s = build_queries(view, net, test, args)
    common.log(
        f"{len(queries)} MILPs built (CROWN {crown_s:.1f} s), images {sorted({q['image'] for q in queries})}"
    )

    worker = M.MilpWorker()
    # Warm-up (untimed): a one-pixel query sends the network and loads both solvers in the worker.
    q0 = queries[0]
    one = dict(
        q0,
        query=M.make_query(
            net,
            q0["lo"],
            q0["lo"],
            B.interval_bounds(view, q0["lo"], q0["lo"]),
            specs.Argmax(q0["label"]).rows(10),
        ),
    )

    warm_after = [-1]  # the worker's restart count when both solvers were last loaded

    def ready():
        worker.wait_ready()
        if warm_after[0] != worker.restarts:
            for s in BACKENDS:
                solve_one(worker, net, one, "optimise", s, 60.0, lambda x: 0.0)
            warm_after[0] = worker.restarts

    margin_fns = {}
    rows = []
    try:
        for k, q in enumerate(queries):
            fn = margin_fns.setdefault(
                q["label"],
                jax.jit(lambda x, t=q["label"]: specs.Argmax(t).margin(models.apply_layers(view, x))),
            )
            row = {key: q[key] for key in ("image", "label", "eps", "patch", "safety", "unstable", "margin")}
            for mode in MODES:
                for s in BACKENDS:
                    ready()
                    row[f"{mode}_{s}"] = solve_one(worker, net, q, mode, s, args.cap, fn)
                options = M.MilpOptions(mode=mode, cutoff=q["safety"])
                row[f"{mode}_disagreement"] = disagreement(
                    q, mode, row[f"{mode}_cbc"], row[f"{mode}_highs"], options
                )
            rows.append(row)
            common.log(
                f"[{k + 1}/{len(queries)}] image {q['image']} ε {q['eps']:g}: "
                f"{binaries_of(row)} binaries; "
                + "; ".join(
                    f"{m} "
                    + " / ".join(
                        f"{s} {row[f'{m}_{s}']['status']} {row[f'{m}_{s}']['seconds']:.2f} s"
                        for s in BACKENDS
                    )
                    for m in MODES
                )
            )
    finally:
        worker.close()
    wall = time.monotonic() - t_start

    summary = summarize(rows, args)
    saved_rows = [dict(r) for r in rows]
    for r in saved_rows:
        for m in MODES:
            for s in BACKENDS:
                r[f"{m}_{s}"] = {k: v for k, v in r[f"{m}_{s}"].items() if k != "result"}
    common.write_json(
        Path(args.out),
        {
            "args": vars(args),
            "machine": common.machine(),
            "wall_s": wall,
            "summary": summary,
            "rows": saved_rows,
        },
    )
    print_table(summary, rows, args, wall)
    common.last_line(
        {
            "queries": summary["queries"],
            "decided_cbc": summary["cbc"]["decided"],
            "decided_highs": summary["highs"]["decided"],
            "median_s_cbc": round(summary["cbc"]["median_s"], 3),
            "median_s_highs": round(summary["highs"]["median_s"], 3),
            "disagreements": summary["disagreements"],
        }
    )


def binaries_of(row) -> int:
    """The MILP's binaries (a solve killed at the cap reports none; the others built the same model)."""
    return max(row[f"{m}_{s}"]["binaries"] for m in MODES for s in BACKENDS)


def summarize(rows, args) -> dict:
    out: dict = {"queries": len(rows), "cap_s": args.cap}
    for s in BACKENDS:
        solves = [r[f"{m}_{s}"] for r in rows for m in MODES]
        entry = {
            "decided": sum(x["answer"] is not None for x in solves),
            "median_s": common.percentile([x["seconds"] for x in solves], 50),
            "total_s": float(sum(x["seconds"] for x in solves)),
            "killed": sum(x["status"] == "timeout" for x in solves),
            "median_build_s": common.percentile(
                [x["build_s"] for x in solves if x["status"] != "timeout"], 50
            ),
        }
        for m in MODES:
            ms = [r[f"{m}_{s}"] for r in rows]
            entry[m] = {
                "decided": sum(x["answer"] is not None for x in ms),
                "holds": sum(x["answer"] == "holds" for x in ms),
                "violated": sum(x["answer"] == "violated" for x in ms),
                "confirmed": sum(bool(x["confirmed"]) for x in ms),
                "median_s": common.percentile([x["seconds"] for x in ms], 50),
                "total_s": float(sum(x["seconds"] for x in ms)),
                "killed": sum(x["status"] == "timeout" for x in ms),
                "statuses": {k: sum(x["status"] == k for x in ms) for k in sorted({x["status"] for x in ms})},
            }
        out[s] = entry
    out["disagreements"] = sum(r[f"{m}_disagreement"] is not None for r in rows for m in MODES)
    out["both_decided"] = {
        m: sum(r[f"{m}_cbc"]["answer"] is not None and r[f"{m}_highs"]["answer"] is not None for r in rows)
        for m in MODES
    }
    out["only_decided"] = {
        f"{m}_{s}": sum(r[f"{m}_{s}"]["answer"] is not None and r[f"{m}_{o}"]["answer"] is None for r in rows)
        for m in MODES
        for s, o in (("cbc", "highs"), ("highs", "cbc"))
    }
    binaries = [binaries_of(r) for r in rows]
    out["binaries_median"] = common.percentile(binaries, 50)
    out["binaries_max"] = int(max(binaries)) if binaries else None
    return out


def _f(v, digits=2):
    return "–" if v is None else f"{v:.{digits}f}"


def print_table(s, rows, args, wall) -> None:
    """Markdown tables (for benchmarks/RESULTS.md)."""
    print(
        f"\nsolver_bench: {s['queries']} MILPs (mnist_normal, {args.images} images × ε {args.eps}, "
        f"{args.patch}×{args.patch} patch; binaries median {_f(s['binaries_median'], 0)}, max "
        f"{s['binaries_max']}), cap {args.cap:g} s per solve; wall {wall:.0f} s"
    )
    print(
        "| backend | mode | decided | holds / violated (confirmed) | median s | total s | killed | statuses |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for b in BACKENDS:
        for m in MODES:
            e = s[b][m]
            hv = f"{e['holds']} / {e['violated']} ({e['confirmed']})" if m == "sign" else "–"
            statuses = ", ".join(f"{k} {v}" for k, v in e["statuses"].items())
            print(
                f"| {b} | {m} | {e['decided']} / {s['queries']} | {hv} | {_f(e['median_s'], 3)} | "
                f"{_f(e['total_s'], 1)} | {e['killed']} | {statuses} |"
            )
        e = s[b]
        print(
            f"| **{b}** | **both** | **{e['decided']} / {2 * s['queries']}** | | "
            f"**{_f(e['median_s'], 3)}** | {_f(e['total_s'], 1)} | {e['killed']} | "
            f"median build {_f(e['median_build_s'], 3)} s |"
        )
    print(
        f"\nboth decided: optimise {s['both_decided']['optimise']}, sign {s['both_decided']['sign']}; "
        f"decided by one only: {', '.join(f'{k} {v}' for k, v in s['only_decided'].items())}; "
        f"disagreements {s['disagreements']}"
    )
    print(
        "\n| ε | binaries (median) | CBC decided (opt / sign) | HiGHS decided (opt / sign) "
        "| sign holds / violated (CBC) |"
    )
    print("|---|---|---|---|---|")
    for eps in args.eps:
        sel = [r for r in rows if r["eps"] == eps]
        bins = common.percentile([binaries_of(r) for r in sel], 50)
        dec = {
            b: " / ".join(str(sum(r[f"{m}_{b}"]["answer"] is not None for r in sel)) for m in MODES)
            for b in BACKENDS
        }
        hv = " / ".join(str(sum(r["sign_cbc"]["answer"] == a for r in sel)) for a in ("holds", "violated"))
        print(f"| {eps:g} | {_f(bins, 0)} | {dec['cbc']} | {dec['highs']} | {hv} |")
    print()


if __name__ == "__main__":
    main()
