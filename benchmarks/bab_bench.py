r"""Branch-and-bound vs the CBC MILP vs CROWN alone, on plainly trained MNIST MLPs.

  .venv/bin/python benchmarks/bab_bench.py            # (make bench runs every benchmark)

Models: fully connected ReLU nets 784-256x{2,4,6}-10 (`models.mlp`), plain training (no defense)
with `lnjax.train` on the full MNIST train split (inputs in [0, 1]; Adam 2e-3, cosine, batch 128,
`EPOCHS` epochs), trained once into benchmarks/cache/mnist_mlp_256x{2,4,6}/ (training is excluded
from the benchmark's time; MNIST is prepared into data/ if missing). The train experiment takes zoo
names only, so the benchmark builds the architecture itself (`common.ensure_trained_model`).

Instances: per net, the first `--images` test images it classifies correctly, at each ε of `--eps`:
box = clip(x ± ε, 0, 1), spec Argmax(label). Defaults: 3 nets × 15 images × 2 ε = 90.

Methods, side by side on every instance, each with `--time_limit` seconds per instance (default 120):
  bab    `make_verifier` with stages BAB_STAGES (PGD → CROWN → α-CROWN → branch-and-bound → MILP)
  milp   stages ("pgd", "crown", "milp"): the CBC MILP (sign question) over CROWN bounds
  crown  stages ("crown",): CROWN alone (interval bounds always come first), no PGD
Each verifier is warmed up before its timed queries (excluded): `warm_up` on a small box around the
net's first image, then one query per ε on that image under a verifier of the same options with a
short budget (so what the deeper stages compile or start lands there, not in a timed query). One
MILP worker serves all; it is idle before every timed query (a wait after a query is charged to it).
A disagreement is an instance on which one method says ROBUST and another NOT_ROBUST.

Resumable: each finished (net, image, ε, method) is appended to `--out` (JSON lines) with its
settings (time limit, stages, seed, the params' fingerprint, the library's version:
`common.code_version`); a rerun with the same settings skips it.
`--report` only re-prints the tables from that file. The last stdout line is one JSON object:
instances, decided_<method> (share of instances with ROBUST or NOT_ROBUST), median_s_<method>
(over all instances, time-outs at their wall time), disagreements.

References:
  Wang et al., Beta-CROWN: Efficient Bound Propagation with Per-neuron Split Constraints for Complete
    and Incomplete Neural Network Verification, NeurIPS 2021 (branch-and-bound over ReLU splits);
  Tjeng, Xiao & Tedrake, Evaluating Robustness of Neural Networks with Mixed Integer Programming,
    ICLR 2019 (MIPVerify); Zhang et al., Efficient Neural Network Robustness Certification with
    General Activation Functions, NeurIPS 2018 (CROWN).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402  (benchmarks/common.py, next to this script)

common.enter_repo()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from lnjax import data, models, train, verify as V  # noqa: E402
from lnjax.io import append_jsonl, finite_or_none, read_jsonl  # noqa: E402

# The full pipeline with branch-and-bound (the verifier's default once the "bab" stage exists).
BAB_STAGES = ("pgd", "crown", "alpha_crown", "bab", "milp")
METHODS = {
    "bab": BAB_STAGES,
    "milp": ("pgd", "crown", "milp"),
    "crown": ("crown",),
}
NETS = {"256x2": (256, 256), "256x4": (256,) * 4, "256x6": (256,) * 6}
INPUT_SHAPE = (28, 28, 1)
EPOCHS = 5
BATCH = 128
TRAIN_EXAMPLES = 60_000  # the full MNIST train split
WARM_EPS = 0.005  # `warm_up`'s box: small enough for the bounds to settle it at once
WARM_LIMIT = 5.0  # seconds for each of the short-budget warm-up queries


def parse_args(argv):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--nets", default=",".join(NETS), help="comma-separated, of " + ",".join(NETS))
    p.add_argument("--images", type=int, default=15, help="correctly classified test images per net")
    p.add_argument("--eps", default="0.03,0.05", help="L∞ radii, comma-separated")
    p.add_argument("--time_limit", type=float, default=120.0, help="seconds per instance and method")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated, of " + ",".join(METHODS))
    p.add_argument(
        "--bab_stages",
        default=",".join(BAB_STAGES),
        help="the bab method's stages (default BAB_STAGES; e.g. pgd,crown,alpha_crown,milp for a smoke\n"
        "run on a verifier without the bab stage)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/out/bab_bench.jsonl", help="per-instance rows (JSON lines)")
    p.add_argument("--prepare_only", action="store_true", help="prepare data and train the nets, then stop")
    p.add_argument("--report", action="store_true", help="only re-print the tables of the rows in --out")
    args = p.parse_args(argv)
    args.nets = [n for n in args.nets.split(",") if n]
    args.methods = [m for m in args.methods.split(",") if m]
    args.eps = [float(e) for e in args.eps.split(",") if e]
    args.bab_stages = tuple(s for s in args.bab_stages.split(",") if s)
    bad = [n for n in args.nets if n not in NETS] + [m for m in args.methods if m not in METHODS]
    if bad:
        p.error(f"unknown nets or methods {bad}; expected nets of {list(NETS)}, methods of {list(METHODS)}")
    if args.images < 1 or not args.eps or not args.methods or args.time_limit <= 0:
        p.error("--images ≥ 1, at least one --eps and one --methods, --time_limit > 0")
    try:
        if "bab" in args.methods and not args.prepare_only:
            V.VerifierConfig(stages=args.bab_stages)
    except ValueError as e:
        if "bab" not in args.bab_stages or "bab" in V.STAGES:
            raise
        p.error(
            f"this lnjax has no 'bab' stage yet ({e}); pass e.g. --bab_stages pgd,crown,alpha_crown,milp "
            "for a smoke run"
        )
    return args


def method_stages(method: str, args) -> tuple[str, ...]:
    return args.bab_stages if method == "bab" else METHODS[method]


# --------------------------------------------------------------------------------------- nets, images


def net_name(net: str) -> str:
    return f"mnist_mlp_{net}"


def ensure_net(net: str):
    """(model, params, metrics) of one MLP, trained once into benchmarks/cache/mnist_mlp_<net>/."""
    model = models.mlp(INPUT_SHAPE, NETS[net], 10)
    config = train.TrainConfig(
        batch_size=BATCH,
        steps=EPOCHS * (TRAIN_EXAMPLES // BATCH),
        checkpoint_every=500,
        log_every=50,
    )
    description = {"kind": "mlp", "input_shape": list(INPUT_SHAPE), "hidden": list(NETS[net]), "classes": 10}
    _, params, metrics = common.ensure_trained_model(
        net_name(net), model, description=description, train_config=config, dataset="mnist"
    )
    return model, params, metrics


def select_images(view, test, n: int) -> list[int]:
    """The first n test images the net classifies correctly (argmax = label)."""
    chosen: list[int] = []
    start = 0
    while len(chosen) < n and start < test.num_examples:
        stop = min(start + 4 * n + 16, test.num_examples)
        logits = np.asarray(jax.jit(models.apply_layers_batch)(view, jnp.asarray(test.x[start:stop])))
        for i, z in enumerate(logits, start):
            if len(chosen) < n and int(np.argmax(z)) == int(test.y[i]):
                chosen.append(i)
        start = stop
    return chosen


def box(x: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    return np.clip(x - eps, 0.0, 1.0).astype(np.float32), np.clip(x + eps, 0.0, 1.0).astype(np.float32)


# ------------------------------------------------------------------------------------------------ runs


def settings_of(method: str, args, fp: str) -> dict[str, Any]:
    """What a row's answer depends on besides the instance; rows with other settings are not reused."""
    out = {
        "time_limit": args.time_limit,
        "stages": list(method_stages(method, args)),
        "seed": args.seed,
        "params": fp,
        "code": common.code_version(),
    }
    # Every verifier option the methods share (defaults change with measurements: e.g. the MILP's own
    # time limit went from 60 % to all of the remaining budget), so a changed default reruns the rows.
    options = dataclasses.asdict(V.VerifierConfig())
    for key in ("stages", "time_limit", "input_domain"):
        options.pop(key)
    out["verifier"] = options
    return out


def row_key(row: dict[str, Any]) -> tuple:
    return (row["net"], row["image"], row["eps"], row["method"], common.settings_key(row["settings"]))


def json_safe(obj: Any) -> Any:
    try:
        return finite_or_none(obj)
    except TypeError:
        return repr(obj)


def verdict_row(v: V.Verdict, seconds: float, wait: float) -> dict[str, Any]:
    s = v.stats
    return {
        "status": v.status.value,
        "seconds": seconds,
        "worker_wait_s": wait,
        "decided_by": s.decided_by,
        "proven_bound": v.proven_bound,
        "best_objective": v.best_objective,
        "time_s": json_safe(s.time_s),
        # [[bound stage, unstable ReLUs per layer]] in the order run (rows are stored key-sorted)
        "unstable": [[k, list(u)] for k, u in s.unstable.items()],
        "margin_lower": json_safe(s.margin_lower),
        "binaries": s.binaries,
        "milp_status": s.milp_status,
        "bab": json_safe(getattr(s, "bab", None)),  # the bab stage's facts (domains, depth, ...)
        "notes": list(s.notes),
    }


def warm_up(view, config: V.VerifierConfig, verifier: V.Verifier, worker, x, spec, eps_list) -> float:
    """Compiles and starts what a timed query of `verifier` runs (see the module docstring)."""
    t0 = time.monotonic()
    lo, hi = box(x, WARM_EPS)
    verifier.warm_up(lo, hi, spec)
    limit = WARM_LIMIT if config.time_limit is None else min(config.time_limit, WARM_LIMIT)
    short = V.make_verifier(view, dataclasses.replace(config, time_limit=limit), worker=worker)
    for eps in eps_list:
        short(jax.random.key(0), *box(x, eps), spec)
        worker.wait_ready()
    return time.monotonic() - t0


def run_net(net: str, args, test, worker: V.MilpWorker | None, done: dict, out: Path) -> list[dict]:
    """The net's rows: reused from `done` (same settings), the others run now (worker None: only
    the reused ones, for `--report`)."""
    model, params, metrics = ensure_net(net)
    fp = common.params_fingerprint(params)
    view = models.layer_view(model, params)
    images = select_images(view, test, args.images)
    common.log(f"{net}: test accuracy {metrics['test']['accuracy']:.4f}; images {images}")
    instances = [(i, eps) for i in images for eps in args.eps]
    keys = {m: common.settings_key(settings_of(m, args, fp)) for m in args.methods}
    todo = {m: [(i, e) for i, e in instances if (net, i, e, m, keys[m]) not in done] for m in args.methods}
    rows = [
        done[(net, i, e, m, keys[m])] for m in args.methods for i, e in instances if (i, e) not in todo[m]
    ]
    if rows:
        common.log(f"{net}: {len(rows)} rows reused from {out}")
    if worker is None or not any(todo.values()):
        missing = sum(len(t) for t in todo.values())
        if missing:
            common.log(f"{net}: {missing} (instance, method) pairs not in {out}")
        return rows
    verifiers = {}
    x0, spec0 = test.x[images[0]], V.Argmax(int(test.y[images[0]]))
    for m in args.methods:
        if not todo[m]:
            continue
        config = V.VerifierConfig(stages=method_stages(m, args), time_limit=args.time_limit)
        verifiers[m] = V.make_verifier(view, config, worker=worker)
        seconds = warm_up(view, config, verifiers[m], worker, x0, spec0, args.eps)
        common.log(f"{net}: {m} warm-up {seconds:.1f} s (stages {config.stages})")
    root = jax.random.key(args.seed)
    for index, eps in instances:
        label = int(test.y[index])
        lo, hi = box(test.x[index], eps)
        line = []
        for m in args.methods:
            if (index, eps) not in todo[m]:
                continue
            key = jax.random.fold_in(jax.random.fold_in(root, index), round(eps * 1e6))
            t0 = time.perf_counter()
            v = verifiers[m](key, lo, hi, V.Argmax(label))
            wait = worker.wait_ready()  # a timed-out MILP's replacement worker: charged to this query
            result = verdict_row(v, time.perf_counter() - t0, wait)
            row = {
                "net": net,
                "image": index,
                "label": label,
                "eps": eps,
                "method": m,
                "settings": settings_of(m, args, fp),
                **result,
            }
            append_jsonl(out, row)
            rows.append(row)
            line.append(f"{m} {result['status']} by {result['decided_by']} in {result['seconds']:.2f} s")
        common.log(f"{net} img {index} eps {eps:g}: " + "; ".join(line))
    return rows


# --------------------------------------------------------------------------------------------- summary


def method_summary(sel: list[dict]) -> dict[str, Any]:
    """One method's rows: answers, decided share, times, decided-by counts."""
    decided: dict[str, int] = {}
    for r in sel:
        decided[r["decided_by"] or "none"] = decided.get(r["decided_by"] or "none", 0) + 1
    n = len(sel)
    times = [r["seconds"] for r in sel]
    return {
        "instances": n,
        "robust": sum(r["status"] == "robust" for r in sel),
        "not_robust": sum(r["status"] == "not_robust" for r in sel),
        "unknown": sum(r["status"] == "unknown" for r in sel),
        "decided": sum(r["status"] != "unknown" for r in sel) / max(n, 1),
        "median_s": common.percentile(times, 50),
        "p90_s": common.percentile(times, 90),
        "total_s": float(sum(times)),
        "decided_by": dict(sorted(decided.items())),
    }


def summarize(rows: list[dict], args) -> dict[str, Any]:
    by_instance: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        by_instance.setdefault((r["net"], r["image"], r["eps"]), {})[r["method"]] = r
    disagreements = [
        key
        for key, per in by_instance.items()
        if {"robust", "not_robust"} <= {r["status"] for r in per.values()}
    ]
    per_method = {m: method_summary([r for r in rows if r["method"] == m]) for m in args.methods}
    return {"instances": len(by_instance), "per_method": per_method, "disagreements": disagreements}


def _fmt(v, digits=3):
    return "–" if v is None else f"{v:.{digits}f}"


def print_tables(rows: list[dict], args, summary: dict[str, Any]) -> None:
    """Markdown tables for benchmarks/RESULTS.md: per net and method, per ε, the UNKNOWN list."""
    print(
        f"\nbab_bench: nets {', '.join(args.nets)}; {args.images} images per net; ε {args.eps}; "
        f"{args.time_limit:g} s per instance; bab stages {args.bab_stages}"
    )
    print(
        "| net | method | instances | robust | not robust | unknown | decided | median s | p90 s | total s "
        "| decided by |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for net in [*args.nets, "all"]:
        for m in args.methods:
            sel = [r for r in rows if r["method"] == m and net in ("all", r["net"])]
            if not sel:
                continue
            t = method_summary(sel)
            decided = ", ".join(f"{k} {v}" for k, v in t["decided_by"].items())
            print(
                f"| {net} | {m} | {t['instances']} | {t['robust']} | {t['not_robust']} | {t['unknown']} | "
                f"{t['decided']:.0%} | {_fmt(t['median_s'])} | {_fmt(t['p90_s'])} | {t['total_s']:.1f} | "
                f"{decided} |"
            )
    print()
    print("| net | ε | " + " | ".join(f"{m} R / N / U | {m} median s" for m in args.methods) + " |")
    print("|---|---|" + "---|---|" * len(args.methods))
    for net in args.nets:
        for eps in args.eps:
            cells = []
            for m in args.methods:
                sel = [r for r in rows if r["method"] == m and r["net"] == net and r["eps"] == eps]
                counts = [sum(r["status"] == s for r in sel) for s in ("robust", "not_robust", "unknown")]
                cells += [
                    " / ".join(map(str, counts)),
                    _fmt(common.percentile([r["seconds"] for r in sel], 50)),
                ]
            print(f"| {net} | {eps:g} | " + " | ".join(cells) + " |")
    print()
    for m in args.methods:
        unknown = [r for r in rows if r["method"] == m and r["status"] == "unknown"]
        print(f"UNKNOWN under {m}: {len(unknown)}")
        for r in unknown:
            bab = r.get("bab")
            facts = f"; bab {bab}" if bab else ""
            unstable = r["unstable"][-1][1] if r["unstable"] else None  # after the last bound stage
            print(
                f"  {r['net']} img {r['image']} eps {r['eps']:g}: {r['seconds']:.1f} s, proven bound "
                f"{_fmt(r['proven_bound'], 4)}, best margin {_fmt(r['best_objective'], 4)}, "
                f"unstable {unstable}, milp {r['milp_status']} ({r['binaries']} binaries){facts}; "
                f"notes {r['notes']}"
            )
    if summary["disagreements"]:
        print(f"DISAGREEMENTS: {summary['disagreements']}")
    print()


def main(argv=None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = {row_key(r): r for r in read_jsonl(out)}
    common.ensure_double_mnist("data")  # also prepares MNIST
    test = data.load_dataset("mnist", "test", "data")
    t_start = time.monotonic()
    rows: list[dict] = []
    if args.prepare_only:
        for net in args.nets:
            _, _, metrics = ensure_net(net)
            common.log(f"{net}: {metrics}")
        return
    if args.report:
        for net in args.nets:
            rows += run_net(net, args, test, None, done, out)
    else:
        worker = V.MilpWorker()
        try:
            for net in args.nets:
                rows += run_net(net, args, test, worker, done, out)
        finally:
            worker.close()
    wall = time.monotonic() - t_start
    summary = summarize(rows, args)
    print_tables(rows, args, summary)
    common.log(f"wall {wall:.0f} s")
    pm = summary["per_method"]
    last: dict[str, Any] = {"instances": summary["instances"]}
    for m in METHODS:
        last[f"decided_{m}"] = round(pm[m]["decided"], 4) if m in pm else None
    last["median_s_bab"] = round(pm["bab"]["median_s"], 4) if "bab" in pm and pm["bab"]["instances"] else None
    last["disagreements"] = len(summary["disagreements"])
    for m in ("milp", "crown"):
        last[f"median_s_{m}"] = round(pm[m]["median_s"], 4) if m in pm and pm[m]["instances"] else None
    last["time_limit"] = args.time_limit
    last["bab_stages"] = list(args.bab_stages)
    common.last_line(last)


if __name__ == "__main__":
    main()
