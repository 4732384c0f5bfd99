r"""Branch-and-bound's batch ladder: the default 5 compiled sizes against 3, side by side.

  .venv/bin/python benchmarks/bab_batch_bench.py              # 16 boxes, 30 s per query (≤ ~20 min)
  .venv/bin/python benchmarks/bab_batch_bench.py --images 2 --cap 5   # a smoke run
  .venv/bin/python benchmarks/bab_batch_bench.py --values 3,5   # run 3 of RESULTS.md (3 first)
  .venv/bin/python benchmarks/bab_batch_bench.py --option steps --values 4,2   # any other bab option

`--option` names a `BabOptions` field and `--values` its two settings (the default's first); the
keys below are named by the values (decided_4, decided_2, ...).

Why: `lnjax.verify.bab` pads each batch of subdomains up to the next compiled size. A call's time
grows linearly with the padded size, and on the 64×64 DOUBLE-MNIST CNNs the trees are narrow (a few
to a few dozen open domains per level), so the ladder decides how much of each call is padding:
`bab.batch_ladder` 5 (the default) gives (2, 4, 10, 24, 56) for a top-2 query (9 spec rows per
domain), 3 gives (2, 10, 56) at two compilations fewer. (The ladder before, (2, batch / 8, batch) =
(2, 7, 56), is measured against a finer one in RESULTS.md's first run of this benchmark.)

Model and boxes: verify_bench's quickstart CNN (`dmnist_small`, trained once into
benchmarks/cache/quickstart) and its borderline boxes: for each of the first `--images` test images
the model gets right (left digit in its top 2), the layer-neighborhood box around the right digit
at CROWN's largest proven scale × U(`--factor`: 1.0, 1.5 by default) (`verify_bench.make_queries`;
the scales are cached in benchmarks/cache/verify_bench_borderline.json), target the left digit,
spec top-2.

Sides: the default staged verifier (`VerifierConfig()`, stages PGD → CROWN → α-CROWN → BaB → MILP)
with `bab.<--option>` at each of `--values` (default: `bab.batch_ladder` 5 and 3), each compiled by
its own `warm_up` (timed and reported, excluded from the queries; its whole query is capped at
`verifier.WARM_UP_QUERY_S`) and a first query on the first box under a 3 s budget; then every box
to both sides at `--cap` seconds, the side that goes first alternating by box. Same keys on both
sides.

Last stdout line (one JSON object), A and B the two values (5 and 3 by default): queries, decided_A,
decided_B (ROBUST or NOT_ROBUST), median_s_A, median_s_B (all queries, a time-out counts as the
cap), speedup (median over the boxes both sides decide of seconds_A / seconds_B; null if none),
bab_decided and speedup_bab (the same over those of them where branch-and-bound ran on a side: most
borderline boxes are proven by α-CROWN before it), bab_s_A, bab_s_B (total seconds in the bab
stage), domains_per_s_ratio (domains bounded per bab second, B over A, all queries), mismatches (one
side ROBUST, the other NOT_ROBUST), warm_up_s_A, warm_up_s_B.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402  (benchmarks/common.py, next to this script)

common.enter_repo()

import jax  # noqa: E402
import verify_bench as VB  # noqa: E402  (the model, the image selection and the borderline boxes)

from experiments.runs import load_trained  # noqa: E402
from lnjax import data, models, verify as V  # noqa: E402
from lnjax.io import read_json  # noqa: E402


def parse_args(argv):
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--images", type=int, default=16, help="borderline boxes (one per image)")
    p.add_argument("--cap", type=float, default=30.0, help="seconds per query")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--factor", default="1.0,1.5", help="box scale = CROWN's largest proven scale × U(lo, hi)")
    p.add_argument("--out", default="benchmarks/out/bab_batch_bench.json")
    p.add_argument("--from_json", default="", help="only re-print the summary of a saved run (its --out)")
    p.add_argument("--option", default="batch_ladder", help="the BabOptions field compared")
    p.add_argument("--values", default="5,3", help="its two values, comma-separated (the default's first)")
    args = p.parse_args(argv)
    fields = {f.name: f for f in dataclasses.fields(V.BabOptions)}
    values = [v for v in args.values.split(",") if v]
    if args.option not in fields or len(values) != 2 or values[0] == values[1]:
        p.error(f"--option: one of {sorted(fields)}; --values: two different values, e.g. 3,5")
    kind = type(getattr(V.BabOptions(), args.option))
    try:
        args.values = tuple(kind(v) for v in values)
    except ValueError:
        p.error(f"--values {args.values!r}: expected two {kind.__name__} values for bab.{args.option}")
    args.factor = tuple(float(f) for f in args.factor.split(","))
    if args.images < 1 or args.cap <= 0 or len(args.factor) != 2 or not 0 < args.factor[0] <= args.factor[1]:
        p.error("--images ≥ 1, --cap > 0, --factor LO,HI with 0 < LO ≤ HI")
    # verify_bench's box settings (its defaults), so its cached CROWN scales are reused.
    vb = VB.parse_args([])
    for name in ("growth", "max_layers", "bisect_steps", "scales"):
        setattr(args, name, getattr(vb, name))
    args.borderline = args.images
    return args


def run_side(verifier: V.Verifier, key: jax.Array, lo, hi, spec, cap: float) -> dict[str, Any]:
    t0 = time.monotonic()
    v = verifier.verify(key, lo, hi, spec, time_limit=cap)
    return {
        "status": v.status.value,
        "seconds": time.monotonic() - t0,
        "decided_by": v.stats.decided_by,
        "bab_s": v.stats.time_s.get("bab", 0.0),
        "domains": v.stats.bab.get("domains", 0),
        "batches": v.stats.bab.get("batches", 0),
    }


def decided(side: dict[str, Any]) -> bool:
    return side["status"] in ("robust", "not_robust")


def summarize(rows: list[dict[str, Any]], cap: float, values: tuple[str, ...]) -> dict[str, Any]:
    """The last line's numbers from the per-box rows (see the module docstring); `values` names the
    two sides (row keys), the default's first."""
    a, b = values
    both = [r for r in rows if decided(r[a]) and decided(r[b])]
    branched = [r for r in both if r[a]["bab_s"] > 0 or r[b]["bab_s"] > 0]

    def rate(s: str) -> float | None:  # domains bounded per second in the bab stage
        seconds = sum(r[s]["bab_s"] for r in rows)
        return sum(r[s]["domains"] for r in rows) / seconds if seconds else None

    def speedup(sel: list[dict[str, Any]]) -> float | None:
        return round(statistics.median(r[a]["seconds"] / r[b]["seconds"] for r in sel), 3) if sel else None

    ra, rb = rate(a), rate(b)
    return {
        "queries": len(rows),
        "cap_s": cap,
        **{f"decided_{s}": sum(decided(r[s]) for r in rows) for s in values},
        **{f"median_s_{s}": round(statistics.median(r[s]["seconds"] for r in rows), 3) for s in values},
        "speedup": speedup(both),
        "bab_decided": len(branched),
        "speedup_bab": speedup(branched),
        **{f"bab_s_{s}": round(sum(r[s]["bab_s"] for r in rows), 1) for s in values},
        "domains_per_s_ratio": round(rb / ra, 3) if ra and rb else None,
        "mismatches": sum({r[a]["status"], r[b]["status"]} == {"robust", "not_robust"} for r in rows),
    }


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.from_json:
        saved = read_json(args.from_json)
        kept = {k: v for k, v in saved["summary"].items() if k.startswith("warm_up_s") or k == "machine"}
        names = tuple(str(v) for v in saved["args"].get("values", (3, 5)))
        common.last_line({**summarize(saved["rows"], saved["args"]["cap"], names), **kept})
        return
    VB.BORDERLINE_FACTOR = args.factor  # read by VB.borderline_factor
    common.ensure_double_mnist()
    test = data.load_dataset("double_mnist", "test", "data")
    workdir = common.ensure_trained("quickstart", VB.MODELS["quickstart"][0]())
    model, params, _ = load_trained(workdir)
    view = models.layer_view(model, params)
    queries = [
        q
        for q in VB.make_queries("quickstart", view, common.params_fingerprint(params), test, args)
        if q["kind"] == "borderline"
    ]
    boxes = [VB.box_for(test, q["image"], q["scale"], args.growth, args.max_layers)[:2] for q in queries]
    specs = [V.TopK(q["target"], 2) for q in queries]
    worker = V.MilpWorker()
    names = tuple(str(v) for v in args.values)
    sides, warm = {}, {}
    try:
        for name, value in zip(names, args.values, strict=True):
            base = V.VerifierConfig()
            config = dataclasses.replace(base, bab=dataclasses.replace(base.bab, **{args.option: value}))
            sides[name] = V.make_verifier(view, config, worker=worker)
            t0 = time.monotonic()
            sides[name].warm_up(*boxes[0], specs[0])
            sides[name].verify(jax.random.key(0), *boxes[0], specs[0], time_limit=3.0)
            warm[name] = time.monotonic() - t0
            common.log(f"{args.option} {name}: warm-up {warm[name]:.1f} s")
        rows = []
        for i, (q, box, spec) in enumerate(zip(queries, boxes, specs, strict=True)):
            key = jax.random.fold_in(jax.random.key(args.seed), i)
            order = names if i % 2 == 0 else names[::-1]
            got = {name: run_side(sides[name], key, *box, spec, args.cap) for name in order}
            worker.wait_ready()
            rows.append({"image": q["image"], "scale": q["scale"], **{s: got[s] for s in names}})
            common.log(
                f"img {q['image']}: "
                + "; ".join(
                    f"{args.option} {s}: {got[s]['status']} in {got[s]['seconds']:.1f} s "
                    f"(bab {got[s]['bab_s']:.1f} s, {got[s]['domains']} domains, {got[s]['batches']} batches)"
                    for s in names
                )
            )
    finally:
        worker.close()

    warm_s = {f"warm_up_s_{s}": round(warm[s], 1) for s in names}
    summary = {**summarize(rows, args.cap, names), **warm_s, "machine": common.machine()}
    common.write_json(Path(args.out), {"args": vars(args), "rows": rows, "summary": summary})
    common.last_line(summary)


if __name__ == "__main__":
    main()
