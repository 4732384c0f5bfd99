r"""Staged verifier vs a plain interval-bounds MILP, on layer-neighborhood boxes of DOUBLE-MNIST images.

  .venv/bin/python benchmarks/verify_bench.py            # (make bench runs every benchmark)

Models: the quickstart CNN (`dmnist_small`, no defense) and its ReLU-stable variant (the same with
the ReLU-stability regulariser of Xiao et al. 2019), trained once into benchmarks/cache/ (training is
excluded from the benchmark's time; data are prepared into data/ if missing).

Queries: per model, the first `--images` test images whose left digit the model gets right (the left
digit among its top 2); target = the left digit, spec top-2; the box is a layer-neighborhood around
the right (non-target) digit's ink: Chebyshev layers d = 0..max_layers − 1 (the last holds everything
farther), ε_d = scale · (1 + growth · d), clipped to [0, 1], at each of `--scales` (chosen to give a
mix of robust and non-robust answers).

Per query, side by side:
  staged  `lnjax.verify.make_verifier`: PGD → (interval) → CROWN → α-CROWN → MILP sign question,
          one wall-clock budget per query (`--time_limit`);
  plain   MIPVerify without progressive tightening: interval bounds → the MILP solved to optimality
          (CBC, `optimise` mode) in the same killable worker, capped at `--plain_cap` s; a time-out
          counts as the cap. Verdict from the optimum: ROBUST if CBC's proven bound exceeds the same
          safety margin, NOT_ROBUST if a solution's JAX margin is ≤ 0, else UNKNOWN.
Both sides compile before timing (one warm-up per model, excluded). Both share one MILP worker; it
is idle before every timed query (a time-out restarts it, and its start-up — ~1 s of imports — would
otherwise run during the next query of the other side): the wait after a staged query is charged to
that query, the wait after a plain one to nobody (plain time-outs count at the cap). The last stdout
line is one JSON object (medians over all queries of both models; speedup = total plain time /
total staged time).

References:
  Tjeng, Xiao & Tedrake, Evaluating Robustness of Neural Networks with Mixed Integer Programming,
    ICLR 2019 (MIPVerify); Xiao, Tjeng, Shafiullah & Madry, Training for Faster Adversarial
    Robustness Verification via Inducing ReLU Stability, ICLR 2019.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402  (benchmarks/common.py, next to this script)

common.enter_repo()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from experiments.configs.train import get_config  # noqa: E402
from experiments.runs import load_trained  # noqa: E402
from lnjax import (  # noqa: E402
    bounds as B,  # noqa: E402
    data,
    models,
    neighborhood as nbh,  # noqa: E402
    verify as V,  # noqa: E402
)
from lnjax.io import read_json  # noqa: E402
from lnjax.verify import milp as M  # noqa: E402


def stable_config():
    """The ReLU-stable model of this benchmark (the dmnist_stable preset, possibly with bench overrides)."""
    c = get_config("dmnist_stable")
    return c


# name -> (training config, default scales ε_0). The quickstart CNN's robust radius is ~10× smaller
# than the stable one's, so each model gets its own ladder (low: mostly robust, high: mostly not).
MODELS = {
    "quickstart": (lambda: get_config("quickstart"), (0.0001, 0.0003, 0.006)),
    "dmnist_stable": (stable_config, (0.003, 0.01, 0.02)),
}


def parse_args(argv):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument(
        "--models", default="quickstart,dmnist_stable", help="comma-separated, of " + ",".join(MODELS)
    )
    p.add_argument("--images", type=int, default=20)
    p.add_argument(
        "--scales", default="", help="ε_0 of each box family, comma-separated (default: per model)"
    )
    p.add_argument("--growth", type=float, default=0.5, help="ε_d = scale · (1 + growth · d)")
    p.add_argument("--max_layers", type=int, default=8)
    p.add_argument("--time_limit", type=float, default=5.0, help="staged verifier: seconds per query")
    p.add_argument("--plain_cap", type=float, default=10.0, help="plain MILP: seconds per query")
    p.add_argument(
        "--milp_max_unstable", type=int, default=2000, help="staged: no MILP above this many unstable ReLUs"
    )
    p.add_argument(
        "--alpha_intermediate_steps",
        type=int,
        default=5,
        help="staged: α-CROWN steps over intermediate neurons",
    )
    p.add_argument(
        "--alpha_intermediate_lr", type=float, default=0.3, help="staged: their Adam learning rate"
    )
    p.add_argument("--no_plain", action="store_true", help="skip the plain MILP (exploration)")
    p.add_argument("--out", default="benchmarks/out/verify_bench.json")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--from_json", default="", help="only re-print the tables of a saved run (its --out file)")
    args = p.parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    bad = [m for m in args.models if m not in MODELS]
    if bad:
        p.error(f"unknown models {bad}; expected some of {list(MODELS)}")
    args.scales = [float(s) for s in args.scales.split(",") if s] or None
    return args


# ------------------------------------------------------------------------------------------ the baseline


def make_plain(view, *, cap: float, worker: M.MilpWorker, atol: float = 1e-4, rtol: float = 1e-4):
    """plain(lo, hi, spec) -> dict: interval bounds + the MILP solved to optimality, capped at `cap` s."""
    net = M.network_from_view(view)
    num_classes = net.num_classes
    interval_fn = jax.jit(B.interval_bounds)
    logits_fn = jax.jit(models.apply_layers)

    def plain(lo, hi, spec):
        t0 = time.monotonic()
        deadline = t0 + cap
        lo, hi = jnp.asarray(lo), jnp.asarray(hi)
        rows = spec.rows(num_classes)
        z = logits_fn(view, (lo + hi) / 2)
        safety = atol + rtol * max(1.0, float(jnp.max(jnp.abs(z))))
        bounds = interval_fn(view, lo, hi)
        unstable = B.unstable_counts(view, bounds)
        query = M.make_query(net, lo, hi, bounds, rows)
        options = M.MilpOptions(mode="optimise", cbc_seconds=max(0.9 * (deadline - time.monotonic()), 0.01))
        res = worker.solve(net, query, options, deadline=deadline)
        seconds = time.monotonic() - t0
        status = "unknown"
        if res.status == "optimal" and res.bound is not None:
            if res.bound > safety:
                status = "robust"
            else:
                for x, _ in res.solutions:
                    xc = jnp.clip(jnp.asarray(x, jnp.float32).reshape(lo.shape), lo, hi)
                    if float(spec.margin(logits_fn(view, xc))) <= 0:
                        status = "not_robust"
                        break
        timed_out = res.status != "optimal"
        return {
            "status": status,
            "seconds": cap if timed_out else seconds,
            "wall_s": seconds,
            "milp_status": res.status,
            # Killed solves report no sizes: then the unstable ReLUs under interval bounds (one binary
            # each; the spec adds ≤ 9 more).
            "binaries": res.num_binaries or int(sum(unstable)),
            "unstable": unstable,
            "objective": res.objective,
            "bound": res.bound,
            "build_s": res.build_s,
        }

    return plain


# ---------------------------------------------------------------------------------------------- queries


def select_images(view, test, n: int):
    """The first n test images whose left digit the model has among its top 2."""
    logits = np.asarray(jax.jit(models.apply_layers_batch)(view, jnp.asarray(test.x[: 20 * n])))
    chosen = []
    for i, z in enumerate(logits):
        left = int(test.meta["digits"][i][0])
        if float(V.TopK(left, 2).margin(jnp.asarray(z))) > 0:
            chosen.append(i)
        if len(chosen) == n:
            break
    return chosen


def box_for(test, index: int, scale: float, growth: float, max_layers: int):
    mask = data.ink_mask(test.meta["masks"][index], test.meta["offsets"][index], 1)  # the right digit
    layers = nbh.layer_map(mask, metric="chebyshev", max_layers=max_layers)
    eps = scale * (1.0 + growth * np.arange(nbh.num_layers(layers)))
    lo, hi = nbh.neighborhood_box(test.x[index], layers, eps)
    return lo, hi, eps


def summarize(rows, side: str, cap: float | None = None):
    qs = [r[side] for r in rows]
    times = [q["seconds"] for q in qs]
    n = len(qs)
    decided = {}
    for q in qs:
        key = q.get("decided_by") or ("none" if q["status"] == "unknown" else side)
        decided[key] = decided.get(key, 0) + 1
    milp = [q["binaries"] for q in qs if q.get("milp_status") is not None]
    return {
        "queries": n,
        "median_s": common.percentile(times, 50),
        "p90_s": common.percentile(times, 90),
        "total_s": float(np.sum(times)),
        "robust": sum(q["status"] == "robust" for q in qs) / max(n, 1),
        "not_robust": sum(q["status"] == "not_robust" for q in qs) / max(n, 1),
        "unknown": sum(q["status"] == "unknown" for q in qs) / max(n, 1),
        "decided_by": {k: v / max(n, 1) for k, v in sorted(decided.items())},
        "milp_queries": len(milp),
        "milp_skipped": sum(any("milp not started" in n for n in q.get("notes", ())) for q in qs),
        "binaries_median": common.percentile(milp, 50),
        "binaries_max": int(max(milp)) if milp else None,
    }


def model_scales(name: str, args) -> list[float]:
    return list(args.scales or MODELS[name][1])


def run_model(name: str, args, worker: M.MilpWorker, test) -> list[dict]:
    scales = model_scales(name, args)
    workdir = common.ensure_trained(name, MODELS[name][0]())
    model, params, _ = load_trained(workdir)
    test_metrics = read_json(workdir / "metrics.json")["test"]
    common.log(f"{name}: test metrics {test_metrics}")
    view = models.layer_view(model, params)
    images = select_images(view, test, args.images)
    config = V.VerifierConfig(
        time_limit=args.time_limit,
        milp_max_unstable=args.milp_max_unstable,
        alpha_intermediate_steps=args.alpha_intermediate_steps,
        alpha_intermediate_lr=args.alpha_intermediate_lr,
    )
    verify = V.make_verifier(view, config, worker=worker)
    plain = None if args.no_plain else make_plain(view, cap=args.plain_cap, worker=worker)
    # Warm-up (compilation, MILP network, worker start): excluded from the timing.
    lo, hi, _ = box_for(test, images[0], scales[0], args.growth, args.max_layers)
    spec0 = V.TopK(int(test.meta["digits"][images[0]][0]), 2)
    t0 = time.monotonic()
    verify.warm_up(lo, hi, spec0)
    if plain is not None:
        plain(lo, lo, spec0)  # a zero-width box: compiles and sends the network, solves at once
    worker.wait_ready()
    common.log(f"{name}: warm-up {time.monotonic() - t0:.1f} s; images {images}; scales {scales}")
    root = jax.random.key(args.seed)
    rows = []
    for index in images:
        target = int(test.meta["digits"][index][0])
        spec = V.TopK(target, 2)
        for scale in scales:
            lo, hi, eps = box_for(test, index, scale, args.growth, args.max_layers)
            t0 = time.perf_counter()
            v = verify(jax.random.fold_in(root, index), lo, hi, spec)
            # The worker is idle before every staged query (see below); if this query's MILP timed
            # out, the replacement worker's start-up is charged to it.
            wait = worker.wait_ready()
            ours = {
                "status": v.status.value,
                "seconds": time.perf_counter() - t0,
                "worker_wait_s": wait,
                "decided_by": v.stats.decided_by,
                "binaries": v.stats.binaries,
                "milp_status": v.stats.milp_status,
                "unstable": v.stats.unstable,
                "time_s": v.stats.time_s,
                "proven_bound": v.proven_bound,
                "best_objective": v.best_objective,
                "notes": v.stats.notes,
            }
            row = {
                "model": name,
                "image": index,
                "target": target,
                "scale": scale,
                "eps": eps.tolist(),
                "ours": ours,
            }
            if plain is not None:
                row["plain"] = plain(lo, hi, spec)
                # A timed-out plain solve restarts the worker, which imports in the background; wait,
                # so that start-up does not compete with the next staged query (plain time-outs are
                # counted at the cap anyway).
                worker.wait_ready()
            rows.append(row)
            p = row.get("plain", {})
            common.log(
                f"{name} img {index} scale {scale:g}: staged {ours['status']} by {ours['decided_by']} "
                f"in {ours['seconds']:.2f} s (binaries {ours['binaries']}); plain {p.get('status')} "
                f"{p.get('milp_status')} in {p.get('wall_s', 0):.1f} s (binaries {p.get('binaries')})"
            )
    return rows


def main(argv=None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.from_json:  # re-summarise a finished run (its own arguments, not today's)
        saved = read_json(args.from_json)
        args = argparse.Namespace(**{**saved["report"]["args"], "from_json": args.from_json})
        rows, wall = saved["rows"], saved["report"]["wall_s"]
    else:
        common.ensure_double_mnist("data")
        test = data.load_dataset("double_mnist", "test", "data", limit=40 * args.images)
        worker = M.MilpWorker()
        t_start = time.monotonic()
        rows = []
        try:
            for name in args.models:
                rows += run_model(name, args, worker, test)
        finally:
            worker.close()
        wall = time.monotonic() - t_start

    report = {
        "args": vars(args),
        "scales": {name: model_scales(name, args) for name in args.models},
        "machine": common.machine(),
        "wall_s": wall,
        "per_model": {},
    }
    for name in [*args.models, "all"]:
        sel = [r for r in rows if name in ("all", r["model"])]
        entry = {"ours": summarize(sel, "ours")}
        if not args.no_plain:
            entry["plain"] = summarize(sel, "plain")
            both = [r for r in sel if r["ours"]["status"] != "unknown" and r["plain"]["status"] != "unknown"]
            entry["both_decided"] = len(both)
            entry["verdict_mismatches"] = sum(r["ours"]["status"] != r["plain"]["status"] for r in both)
            entry["speedup_total"] = entry["plain"]["total_s"] / max(entry["ours"]["total_s"], 1e-9)
            entry["speedup_median"] = entry["plain"]["median_s"] / max(entry["ours"]["median_s"], 1e-9)
        report["per_model"][name] = entry
    if not args.from_json:
        common.write_json(Path(args.out), {"report": report, "rows": rows})
    print_table(report, args)
    print_scales(rows, args)
    overall = report["per_model"]["all"]
    common.last_line(
        {
            "median_s": round(overall["ours"]["median_s"], 4),
            "p90_s": round(overall["ours"]["p90_s"], 4),
            "speedup_vs_plain": None if args.no_plain else round(overall["speedup_total"], 2),
            "verdict_mismatches": None if args.no_plain else overall["verdict_mismatches"],
            "unknown_share": round(overall["ours"]["unknown"], 4),
            "queries": overall["ours"]["queries"],
        }
    )


def _fmt(v, digits=2):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}" if not math.isinf(v) else "inf"
    return str(v)


def print_table(report, args) -> None:
    """A markdown table (for benchmarks/RESULTS.md)."""
    scales = "; ".join(f"{k}: {', '.join(f'{v:g}' for v in vs)}" for k, vs in report["scales"].items())
    print(f"\nverify_bench: {args.images} images per model, ε_0 ({scales}); wall {report['wall_s']:.0f} s")
    print(
        "| model | method | queries | median s | p90 s | total s | robust | not robust | unknown "
        "| decided by | MILPs run (skipped) | binaries per MILP (median / max) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, entry in report["per_model"].items():
        for side in ("ours", "plain"):
            if side not in entry:
                continue
            s = entry[side]
            decided = ", ".join(f"{k} {v:.0%}" for k, v in s["decided_by"].items())
            label = "staged" if side == "ours" else f"plain MILP (cap {args.plain_cap:g} s)"
            print(
                f"| {name} | {label} | {s['queries']} | {_fmt(s['median_s'], 3)} | {_fmt(s['p90_s'], 3)} | "
                f"{_fmt(s['total_s'], 1)} | {s['robust']:.0%} | {s['not_robust']:.0%} | {s['unknown']:.0%} | "
                f"{decided} | {s['milp_queries']} ({s['milp_skipped']}) | "
                f"{_fmt(s['binaries_median'], 0)} / {_fmt(s['binaries_max'])} |"
            )
        if "plain" in entry:
            print(
                f"| {name} | speedup (plain / staged) | total {entry['speedup_total']:.1f}× | "
                f"median {entry['speedup_median']:.1f}× | both decided {entry['both_decided']} | "
                f"verdict mismatches {entry['verdict_mismatches']} |||||||"
            )
    print()


def print_scales(rows, args) -> None:
    """Answers per model and scale: staged (robust / not robust / unknown, median s) and plain."""
    print("| model | ε_0 | staged R / N / U | staged median s | plain R / N / U | plain median s |")
    print("|---|---|---|---|---|---|")
    for (name, scale), sel in _groups(rows).items():
        cells = []
        for side in ("ours", "plain"):
            if side not in sel[0]:
                cells += ["–", "–"]
                continue
            counts = [sum(r[side]["status"] == s for r in sel) for s in ("robust", "not_robust", "unknown")]
            cells += [
                " / ".join(map(str, counts)),
                _fmt(common.percentile([r[side]["seconds"] for r in sel], 50), 3),
            ]
        print(f"| {name} | {scale:g} | " + " | ".join(cells) + " |")
    print()


def _groups(rows):
    out: dict = {}
    for r in rows:
        out.setdefault((r["model"], r["scale"]), []).append(r)
    return out


if __name__ == "__main__":
    main()
