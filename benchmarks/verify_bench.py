r"""Staged verifier (with and without branch-and-bound) vs a plain interval-bounds MILP, on
layer-neighborhood boxes of DOUBLE-MNIST images.

  .venv/bin/python benchmarks/verify_bench.py            # (make bench runs every benchmark)
  .venv/bin/python benchmarks/verify_bench.py --quick    # smoke run: 2 images, 1 borderline, 2 / 5 s

Models: the quickstart CNN (`dmnist_small`, no defense) and its ReLU-stable variant (the same with
the ReLU-stability regulariser of Xiao et al. 2019), trained once into benchmarks/cache/ (training is
excluded from the benchmark's time; data are prepared into data/ if missing).

Queries: per model, the test images whose left digit the model gets right (the left digit among its
top 2), in order; target = the left digit, spec top-2; the box is a layer-neighborhood around the
right (non-target) digit's ink: Chebyshev layers d = 0..max_layers − 1 (the last holds everything
farther), ε_d = scale · (1 + growth · d), clipped to [0, 1].
  ladder      the first `--images` images (20) at each of `--scales` (chosen to give a mix of robust
              and non-robust answers): 2 × 20 × 3 = 120 queries;
  borderline  the first `--borderline` images (30) once each, at a scale just past CROWN's reach: the
              largest scale CROWN alone proves (bisection, geometric, from the model's smallest
              ladder scale; cached in benchmarks/cache/verify_bench_borderline.json) times a factor
              drawn uniformly in [1.0, 1.5] (seeded by --seed, the model and the image): 2 × 30 = 60.

Per query, side by side (the sides share one MILP worker, idle before every timed query):
  full    `lnjax.verify.make_verifier` with stages FULL_STAGES (PGD → CROWN → α-CROWN →
          branch-and-bound → MILP), at the short cap (`--short_cap`, 10 s) and the long one
          (`--long_cap`, 60 s);
  nobab   the same without branch-and-bound, at both caps;
  plain   MIPVerify without progressive tightening: interval bounds → the MILP solved to optimality
          (CBC, `optimise` mode) in the same killable worker, capped at `--plain_cap` s (default: the
          short cap); a time-out counts as the cap. Verdict from the optimum: ROBUST if CBC's proven
          bound exceeds the same safety margin, NOT_ROBUST if a solution's JAX margin is ≤ 0, else
          UNKNOWN.
A side's long-cap run is made only where its short-cap run was UNKNOWN (a decided answer is carried
over: the same stages with the same keys reach it again; `--long_all` runs every query at both caps).
Every verifier compiles before timing (excluded): `warm_up` on the first ladder box, then one query
on the first borderline box under a short budget (what the deeper stages compile or start lands
there). A wait for the worker after a staged query is charged to it, after a plain one to nobody.

The last stdout line is one JSON object: queries, unknown_share_10s / _60s (full verifier at the
short / long cap), unknown_share_nobab_10s (/ _60s), median_s and p90_s (full verifier, short cap,
all queries), bab_share (share of all queries decided by "bab", short cap), decided_by (counts per
stage, full verifier, short cap; "none" = UNKNOWN), verdict_mismatches (queries on which one side
says ROBUST and another NOT_ROBUST), speedup_vs_plain (plain total time / full short-cap total).

References:
  Tjeng, Xiao & Tedrake, Evaluating Robustness of Neural Networks with Mixed Integer Programming,
    ICLR 2019 (MIPVerify); Xiao, Tjeng, Shafiullah & Madry, Training for Faster Adversarial
    Robustness Verification via Inducing ReLU Stability, ICLR 2019; Wang et al., Beta-CROWN,
    NeurIPS 2021 (branch-and-bound over ReLU splits).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
import zlib
from pathlib import Path
from typing import Any

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
from lnjax.io import finite_or_none, read_json  # noqa: E402
from lnjax.verify import milp as M  # noqa: E402

# The full verifier (the default pipeline once the "bab" stage exists) and the same without it.
FULL_STAGES = ("pgd", "crown", "alpha_crown", "bab", "milp")
BORDERLINE_CACHE = common.CACHE / "verify_bench_borderline.json"
BORDERLINE_FACTOR = (1.0, 1.5)  # borderline scale = CROWN's largest proven scale × U(1.0, 1.5)
WARM_LIMIT = 3.0  # seconds of the short-budget warm-up query
# The staged sides: {full, nobab} × {short, long} cap (a long-cap run follows its short-cap side).
STAGED = ("full_short", "nobab_short", "full_long", "nobab_long")


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
    p.add_argument("--images", type=int, default=20, help="ladder images per model")
    p.add_argument(
        "--scales", default="", help="ε_0 of each box family, comma-separated (default: per model)"
    )
    p.add_argument("--borderline", type=int, default=30, help="borderline queries per model (one per image)")
    p.add_argument(
        "--bisect_steps", type=int, default=7, help="geometric bisection steps (2^(1/2^7): 0.5 %%)"
    )
    p.add_argument("--growth", type=float, default=0.5, help="ε_d = scale · (1 + growth · d)")
    p.add_argument("--max_layers", type=int, default=8)
    p.add_argument("--short_cap", type=float, default=10.0, help="staged verifiers: seconds per query")
    p.add_argument("--long_cap", type=float, default=60.0, help="staged verifiers: the long budget")
    p.add_argument("--long_all", action="store_true", help="run the long cap also where the short decided")
    p.add_argument("--plain_cap", type=float, default=None, help="plain MILP: seconds (default: short cap)")
    p.add_argument(
        "--full_stages",
        default=",".join(FULL_STAGES),
        help="the full verifier's stages (default FULL_STAGES; e.g. pgd,crown,alpha_crown,milp for a\n"
        "smoke run on a verifier without the bab stage); nobab = these without bab",
    )
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
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: --images 2 --borderline 1 --short_cap 2 --long_cap 5 (overrides them)",
    )
    p.add_argument("--out", default="benchmarks/out/verify_bench.json")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--from_json", default="", help="only re-print the tables of a saved run (its --out file)")
    args = p.parse_args(argv)
    if args.quick:
        args.images, args.borderline, args.short_cap, args.long_cap = 2, 1, 2.0, 5.0
    if args.plain_cap is None:
        args.plain_cap = args.short_cap
    args.models = [m for m in args.models.split(",") if m]
    bad = [m for m in args.models if m not in MODELS]
    if bad:
        p.error(f"unknown models {bad}; expected some of {list(MODELS)}")
    args.scales = [float(s) for s in args.scales.split(",") if s] or None
    args.full_stages = tuple(s for s in args.full_stages.split(",") if s)
    if args.images < 1 or args.borderline < 0 or not 0 < args.short_cap <= args.long_cap:
        p.error("--images ≥ 1, --borderline ≥ 0 and 0 < --short_cap ≤ --long_cap")
    if not args.from_json:
        try:
            V.VerifierConfig(stages=args.full_stages)
        except ValueError as e:
            if "bab" not in args.full_stages or "bab" in V.STAGES:
                raise
            p.error(
                f"this lnjax has no 'bab' stage yet ({e}); pass e.g. --full_stages "
                "pgd,crown,alpha_crown,milp for a smoke run"
            )
    return args


def nobab_stages(args) -> tuple[str, ...]:
    return tuple(s for s in args.full_stages if s != "bab")


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
        options = M.MilpOptions(mode="optimise", time_limit=max(0.9 * (deadline - time.monotonic()), 0.01))
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


def model_scales(name: str, args) -> list[float]:
    return list(args.scales or MODELS[name][1])


def crown_max_scale(crown, test, index: int, start: float, args) -> float | None:
    """The largest scale CROWN alone proves for one image (geometric bisection from `start`), or None
    if it proves nothing down to start / 4^8."""
    spec = V.TopK(int(test.meta["digits"][index][0]), 2)

    def proves(scale: float) -> bool:
        lo, hi, _ = box_for(test, index, scale, args.growth, args.max_layers)
        return crown(jax.random.key(0), lo, hi, spec).status is V.Status.ROBUST

    low = start
    for _ in range(8):
        if proves(low):
            break
        low /= 4
    else:
        return None
    high = 2 * low
    while proves(high):
        low, high = high, 2 * high
        if low >= 1.0:  # the box is the whole input space
            return low
    for _ in range(args.bisect_steps):
        mid = math.sqrt(low * high)
        low, high = (mid, high) if proves(mid) else (low, mid)
    return low


def borderline_scales(name: str, view, fp: str, test, images: list[int], args) -> dict[int, float | None]:
    """CROWN's largest proven scale per image, cached per model (params fingerprint and box settings)."""
    settings = {
        "params": fp,
        "growth": args.growth,
        "max_layers": args.max_layers,
        "bisect_steps": args.bisect_steps,
        "start": model_scales(name, args)[0],
    }
    cache = read_json(BORDERLINE_CACHE) if BORDERLINE_CACHE.is_file() else {}
    entry = cache.get(name, {})
    if entry.get("settings") != finite_or_none(settings):
        entry = {"settings": settings, "scales": {}}
    found = entry["scales"]
    missing = [i for i in images if str(i) not in found]
    if missing:
        crown = V.make_verifier(view, V.VerifierConfig(stages=("crown",), time_limit=None))
        t0 = time.monotonic()
        for index in missing:
            found[str(index)] = crown_max_scale(crown, test, index, settings["start"], args)
            cache[name] = entry
            common.write_json(BORDERLINE_CACHE, cache)
        common.log(
            f"{name}: CROWN's largest proven scales of {len(missing)} images in {time.monotonic() - t0:.0f} s"
        )
    return {i: found[str(i)] for i in images}


def borderline_factor(name: str, index: int, seed: int) -> float:
    rng = np.random.default_rng([seed, zlib.crc32(name.encode()), index])
    return float(rng.uniform(*BORDERLINE_FACTOR))


def make_queries(name: str, view, fp: str, test, args) -> list[dict[str, Any]]:
    """The model's ladder queries, then its borderline ones (dicts of image, target, kind, scale)."""
    images = select_images(view, test, max(args.images, args.borderline))
    queries = []
    for index in images[: args.images]:
        for scale in model_scales(name, args):
            queries.append({"image": index, "kind": "ladder", "scale": scale})
    chosen = images[: args.borderline]
    for index, crown_max in borderline_scales(name, view, fp, test, chosen, args).items():
        if crown_max is None:
            common.log(f"{name} img {index}: CROWN proves no scale; no borderline query")
            continue
        factor = borderline_factor(name, index, args.seed)
        queries.append(
            {
                "image": index,
                "kind": "borderline",
                "scale": crown_max * factor,
                "crown_max": crown_max,
                "factor": factor,
            }
        )
    for q in queries:
        q["target"] = int(test.meta["digits"][q["image"]][0])
    return queries


# ------------------------------------------------------------------------------------------------ runs


def json_safe(obj: Any) -> Any:
    try:
        return finite_or_none(obj)
    except TypeError:
        return repr(obj)


def staged_result(v: V.Verdict, seconds: float, wait: float) -> dict[str, Any]:
    return {
        "status": v.status.value,
        "seconds": seconds,
        "worker_wait_s": wait,
        "decided_by": v.stats.decided_by,
        "binaries": v.stats.binaries,
        "milp_status": v.stats.milp_status,
        # [[bound stage, unstable ReLUs per layer]] in the order run (the JSON file is key-sorted)
        "unstable": [[k, list(u)] for k, u in v.stats.unstable.items()],
        "time_s": v.stats.time_s,
        "proven_bound": v.proven_bound,
        "best_objective": v.best_objective,
        "bab": json_safe(getattr(v.stats, "bab", None)),  # the bab stage's facts (domains, depth, ...)
        "notes": v.stats.notes,
    }


def staged_configs(args) -> dict[str, V.VerifierConfig]:
    """The four staged sides' options: full / nobab at the short / long cap."""
    base = V.VerifierConfig(
        milp=V.MilpStageOptions(max_unstable=args.milp_max_unstable),
        bounds=V.BoundOptions(
            intermediate_steps=args.alpha_intermediate_steps, intermediate_lr=args.alpha_intermediate_lr
        ),
    )
    stages = {"full": args.full_stages, "nobab": nobab_stages(args)}
    caps = {"short": args.short_cap, "long": args.long_cap}
    return {
        f"{kind}_{cap}": dataclasses.replace(base, stages=stages[kind], time_limit=caps[cap])
        for kind in stages
        for cap in caps
    }


def run_model(name: str, args, worker: M.MilpWorker, test) -> list[dict]:
    workdir = common.ensure_trained(name, MODELS[name][0]())
    model, params, _ = load_trained(workdir)
    test_metrics = read_json(workdir / "metrics.json")["test"]
    common.log(f"{name}: test metrics {test_metrics}")
    view = models.layer_view(model, params)
    queries = make_queries(name, view, common.params_fingerprint(params), test, args)
    configs = staged_configs(args)
    staged = {side: V.make_verifier(view, config, worker=worker) for side, config in configs.items()}
    plain = None if args.no_plain else make_plain(view, cap=args.plain_cap, worker=worker)
    # Warm-up (compilation, MILP network, worker start): excluded from the timing.
    q0 = queries[0]
    lo, hi, _ = box_for(test, q0["image"], q0["scale"], args.growth, args.max_layers)
    spec0 = V.TopK(q0["target"], 2)
    t0 = time.monotonic()
    for verifier in staged.values():
        verifier.warm_up(lo, hi, spec0)
    if plain is not None:
        plain(lo, lo, spec0)  # a zero-width box: compiles and sends the network, solves at once
    # One query past CROWN's reach under a short budget per stage tuple: what the deeper stages
    # compile or start on their first real use lands here.
    deep = next((q for q in queries if q["kind"] == "borderline"), queries[len(queries) // 2])
    lo_d, hi_d, _ = box_for(test, deep["image"], deep["scale"], args.growth, args.max_layers)
    for side in ("full_short", "nobab_short"):
        config = dataclasses.replace(configs[side], time_limit=min(WARM_LIMIT, args.short_cap))
        short = V.make_verifier(view, config, worker=worker)
        short(jax.random.key(0), lo_d, hi_d, V.TopK(deep["target"], 2))
        worker.wait_ready()
    kinds = {k: sum(q["kind"] == k for q in queries) for k in ("ladder", "borderline")}
    common.log(
        f"{name}: warm-up {time.monotonic() - t0:.1f} s; queries {kinds}; scales {model_scales(name, args)}"
    )
    root = jax.random.key(args.seed)
    rows = []
    for q in queries:
        lo, hi, eps = box_for(test, q["image"], q["scale"], args.growth, args.max_layers)
        spec = V.TopK(q["target"], 2)
        key = jax.random.fold_in(root, q["image"])
        row = {"model": name, **q, "eps": eps.tolist()}
        for side in STAGED:
            kind, cap = side.split("_")
            short = row.get(f"{kind}_short")
            if cap == "long" and not args.long_all and short is not None and short["status"] != "unknown":
                row[side] = {**short, "carried": True}  # decided at the short cap: the same answer
                continue
            t0 = time.perf_counter()
            v = staged[side](key, lo, hi, spec)
            # The worker is idle before every staged query; if this query's MILP timed out, the
            # replacement worker's start-up is charged to it.
            wait = worker.wait_ready()
            row[side] = staged_result(v, time.perf_counter() - t0, wait)
        if plain is not None:
            row["plain"] = plain(lo, hi, spec)
            # A timed-out plain solve restarts the worker, which imports in the background; wait, so
            # that start-up does not compete with the next staged query (plain time-outs are counted
            # at the cap anyway).
            worker.wait_ready()
        rows.append(row)
        parts = [
            f"{s} {row[s]['status']} by {row[s].get('decided_by')} in {row[s]['seconds']:.2f} s"
            + (" (carried)" if row[s].get("carried") else "")
            for s in (*STAGED, "plain")
            if s in row
        ]
        common.log(f"{name} img {q['image']} {q['kind']} scale {q['scale']:.3g}: " + "; ".join(parts))
    return rows


# --------------------------------------------------------------------------------------------- summary


def summarize(rows, side: str):
    qs = [r[side] for r in rows if side in r]
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
        "decided_by_counts": dict(sorted(decided.items())),
        "carried": sum(bool(q.get("carried")) for q in qs),
        "milp_queries": len(milp),
        "milp_skipped": sum(any("milp not started" in n for n in q.get("notes", ())) for q in qs),
        "binaries_median": common.percentile(milp, 50),
        "binaries_max": int(max(milp)) if milp else None,
    }


def sides_of(args) -> tuple[str, ...]:
    return STAGED if args.no_plain else (*STAGED, "plain")


def mismatched(row, sides) -> bool:
    """One side says ROBUST and another NOT_ROBUST."""
    return {"robust", "not_robust"} <= {row[s]["status"] for s in sides if s in row}


def side_label(side: str, args) -> str:
    if side == "plain":
        return f"plain MILP (cap {args.plain_cap:g} s)"
    kind, cap = side.split("_")
    seconds = args.short_cap if cap == "short" else args.long_cap
    return f"{'full' if kind == 'full' else 'no bab'} ({seconds:g} s)"


def main(argv=None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.from_json:  # re-summarise a finished run (its own arguments, not today's)
        saved = read_json(args.from_json)
        args = argparse.Namespace(**{**saved["report"]["args"], "from_json": args.from_json})
        args.full_stages = tuple(args.full_stages)
        rows, wall = saved["rows"], saved["report"]["wall_s"]
    else:
        common.ensure_double_mnist("data")
        test = data.load_dataset("double_mnist", "test", "data", limit=40 * max(args.images, args.borderline))
        worker = M.MilpWorker()
        t_start = time.monotonic()
        rows = []
        try:
            for name in args.models:
                rows += run_model(name, args, worker, test)
        finally:
            worker.close()
        wall = time.monotonic() - t_start

    sides = sides_of(args)
    report = {
        "args": vars(args),
        "scales": {name: model_scales(name, args) for name in args.models},
        "machine": common.machine(),
        "wall_s": wall,
        "per_model": {},
    }
    for name in [*args.models, "all"]:
        for kind in ("ladder", "borderline", "all"):
            sel = [r for r in rows if name in ("all", r["model"]) and kind in ("all", r["kind"])]
            entry: dict[str, Any] = {side: summarize(sel, side) for side in sides}
            entry["verdict_mismatches"] = sum(mismatched(r, sides) for r in sel)
            if "plain" in sides:
                full = entry["full_short"]
                entry["both_decided"] = sum(
                    r["full_short"]["status"] != "unknown" and r["plain"]["status"] != "unknown" for r in sel
                )
                entry["speedup_total"] = entry["plain"]["total_s"] / max(full["total_s"], 1e-9)
                entry["speedup_median"] = (entry["plain"]["median_s"] or 0) / max(full["median_s"] or 0, 1e-9)
            report["per_model"][f"{name}/{kind}"] = entry
    if not args.from_json:
        common.write_json(Path(args.out), {"report": report, "rows": rows})
    print_table(report, args)
    print_sets(rows, args)
    print_unknown(rows, args)
    overall = report["per_model"]["all/all"]
    full, n = overall["full_short"], overall["full_short"]["queries"]
    common.last_line(
        {
            "queries": n,
            "unknown_share_10s": round(full["unknown"], 4),
            "unknown_share_60s": round(overall["full_long"]["unknown"], 4),
            "unknown_share_nobab_10s": round(overall["nobab_short"]["unknown"], 4),
            "unknown_share_nobab_60s": round(overall["nobab_long"]["unknown"], 4),
            "median_s": None if full["median_s"] is None else round(full["median_s"], 4),
            "p90_s": None if full["p90_s"] is None else round(full["p90_s"], 4),
            "bab_share": round(full["decided_by_counts"].get("bab", 0) / max(n, 1), 4),
            "decided_by": full["decided_by_counts"],
            "verdict_mismatches": overall["verdict_mismatches"],
            "speedup_vs_plain": round(overall["speedup_total"], 2) if "plain" in sides else None,
            "caps": [args.short_cap, args.long_cap],
            "full_stages": list(args.full_stages),
        }
    )


def _fmt(v, digits=2):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}" if not math.isinf(v) else "inf"
    return str(v)


def print_table(report, args) -> None:
    """A markdown table per query set (for benchmarks/RESULTS.md)."""
    scales = "; ".join(f"{k}: {', '.join(f'{v:g}' for v in vs)}" for k, vs in report["scales"].items())
    print(
        f"\nverify_bench: {args.images} ladder images per model, ε_0 ({scales}); {args.borderline} "
        f"borderline per model; full stages {tuple(args.full_stages)}; wall {report['wall_s']:.0f} s"
    )
    for kind in ("all", "ladder", "borderline"):
        print(f"\nqueries: {kind}")
        print(
            "| model | method | queries | median s | p90 s | total s | robust | not robust | unknown "
            "| decided by | MILPs run (skipped) | binaries per MILP (median / max) |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for name in [*args.models, "all"]:
            entry = report["per_model"][f"{name}/{kind}"]
            for side in sides_of(args):
                s = entry[side]
                if not s["queries"]:
                    continue
                decided = ", ".join(f"{k} {v:.0%}" for k, v in s["decided_by"].items())
                carried = f" ({s['carried']} carried)" if s["carried"] else ""
                cells = [
                    f"{side_label(side, args)}{carried}",
                    s["queries"],
                    _fmt(s["median_s"], 3),
                    _fmt(s["p90_s"], 3),
                    _fmt(s["total_s"], 1),
                    f"{s['robust']:.0%}",
                    f"{s['not_robust']:.0%}",
                    f"{s['unknown']:.0%}",
                    decided,
                    f"{s['milp_queries']} ({s['milp_skipped']})",
                    f"{_fmt(s['binaries_median'], 0)} / {_fmt(s['binaries_max'])}",
                ]
                print(f"| {name} | " + " | ".join(map(str, cells)) + " |")
            if "plain" in entry and entry["full_short"]["queries"]:
                print(
                    f"| {name} | speedup (plain / full {args.short_cap:g} s) | "
                    f"total {entry['speedup_total']:.1f}× | median {entry['speedup_median']:.1f}× | "
                    f"both decided {entry['both_decided']} | "
                    f"verdict mismatches (any two sides) {entry['verdict_mismatches']} |||||||"
                )
    print()


def print_sets(rows, args) -> None:
    """Answers per model and query set (a ladder scale, or the borderline queries): per side
    robust / not robust / unknown and the median seconds."""
    sides = sides_of(args)
    print(
        "| model | ε_0 | " + " | ".join(f"{side_label(s, args)} R / N / U | median s" for s in sides) + " |"
    )
    print("|---|---|" + "---|---|" * len(sides))
    groups: dict = {}
    for r in rows:
        key = (r["model"], r["scale"] if r["kind"] == "ladder" else "borderline")
        groups.setdefault(key, []).append(r)
    for (name, scale), sel in groups.items():
        cells = []
        for side in sides:
            counts = [sum(r[side]["status"] == s for r in sel) for s in ("robust", "not_robust", "unknown")]
            cells += [
                " / ".join(map(str, counts)),
                _fmt(common.percentile([r[side]["seconds"] for r in sel], 50), 3),
            ]
        label = f"{scale:g}" if isinstance(scale, float) else f"{scale} (CROWN max × {BORDERLINE_FACTOR})"
        print(f"| {name} | {label} | " + " | ".join(cells) + " |")
    print()


def print_unknown(rows, args) -> None:
    """The full verifier's UNKNOWN queries at each cap, and every verdict mismatch."""
    for side in ("full_short", "full_long"):
        unknown = [r for r in rows if r[side]["status"] == "unknown"]
        print(f"UNKNOWN under {side_label(side, args)}: {len(unknown)}")
        for r in unknown:
            q = r[side]
            unstable = q["unstable"][-1][1] if q["unstable"] else None  # after the last bound stage
            bab = f"; bab {q['bab']}" if q.get("bab") else ""
            print(
                f"  {r['model']} img {r['image']} {r['kind']} scale {r['scale']:.4g}: {q['seconds']:.1f} s, "
                f"proven bound {_fmt(q['proven_bound'], 4)}, best margin {_fmt(q['best_objective'], 4)}, "
                f"unstable {unstable}, milp {q['milp_status']} ({q['binaries']} binaries){bab}; "
                f"notes {q['notes']}"
            )
    bad = [r for r in rows if mismatched(r, sides_of(args))]
    for r in bad:
        verdicts = {s: r[s]["status"] for s in sides_of(args) if s in r}
        print(f"MISMATCH {r['model']} img {r['image']} {r['kind']} scale {r['scale']:.4g}: {verdicts}")
    print()


if __name__ == "__main__":
    main()
