r"""The neighborhood optimizer vs the per-layer binary-search baseline, same images, same verifier.

  .venv/bin/python benchmarks/neighborhood_bench.py                 # 10 images (≤ 60 min on 2 busy cores)
  NEIGHBORHOOD_BENCH_IMAGES=20 .venv/bin/python benchmarks/neighborhood_bench.py    # (make bench)

Model: the quickstart CNN (`dmnist_small`, no defense), trained once into benchmarks/cache/quickstart
(training is excluded from the benchmark's time; data are prepared into data/ if missing).

Images: the first `--images` DOUBLE-MNIST test images whose left digit the model gets right (among
its top 2). Target = the left digit (spec top-2), non-target object = the right digit's ink; layers
by Chebyshev distance, `--layers` of them (the last holds every farther pixel).

Methods, one after the other on each image with one verifier (`lnjax.verify.make_verifier`, stages
`--stages`, `--time_limit` s per query; a time-out is not robust):
  optimizer  `lnjax.neighborhood.make_optimizer` (log-volume, fixed shrink weights, MaRVeL's λ
             schedule), at most `--opt_queries` queries;
  baseline   `lnjax.neighborhood.baseline.binary_search`, the seed's bisection of each ε_d in
             [0, `--eps_max`] to `--tol` (⌈log2(eps_max / tol)⌉ = 10 queries per layer by default;
             `--scale log`: of log ε_d in [`--eps_min`, `--eps_max`] to a ratio 1 + tol), layer by
             layer from the object outwards, earlier layers fixed, later ones at 0.
Both stop early only at their own criteria (no time budget). The final ε of both is re-verified by
an independent verifier (a fresh `make_verifier`, no PGD stage; excluded from the timing).

Per image: queries, wall time (everything the search does: queries, PGD, gradients), log-volume
Σ|l_d| log ε_d and Σ|l_d| ε_d. Ratios are baseline / optimizer per image; reported are medians
over images. The last stdout line is one JSON object.

References:
  Kabaha & Drachsler-Cohen, VMCAI 2023 (MaRVeL); Tjeng, Xiao & Tedrake, ICLR 2019 (MIPVerify).
"""

from __future__ import annotations

import argparse
import os
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
from lnjax import data, models, verify as V  # noqa: E402
from lnjax.neighborhood import layers as NL  # noqa: E402
from lnjax.neighborhood.baseline import binary_search, queries_per_layer  # noqa: E402
from lnjax.neighborhood.config import OptimizerConfig  # noqa: E402
from lnjax.neighborhood.optimizer import make_optimizer  # noqa: E402
from lnjax.neighborhood.problem import make_problem  # noqa: E402
from lnjax.verify.verdict import Status  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=int(os.environ.get("NEIGHBORHOOD_BENCH_IMAGES", 10)))
    p.add_argument("--model", default="quickstart", help="train preset, cached in benchmarks/cache/")
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--stages", default="pgd,crown")
    p.add_argument("--time_limit", type=float, default=10.0)
    p.add_argument("--opt_queries", type=int, default=6)
    p.add_argument("--scale", default="linear", choices=("linear", "log"))
    p.add_argument("--eps_min", type=float, default=1e-4, help="baseline, log scale only")
    p.add_argument("--eps_max", type=float, default=0.25)
    p.add_argument("--tol", type=float, default=0.25 / 1024, help="linear: absolute; log: ratio − 1")
    p.add_argument("--data_dir", default="data")
    return p.parse_args(argv)


def main(argv=None) -> None:
    a = parse_args(argv)
    common.ensure_double_mnist(a.data_dir)
    workdir = common.ensure_trained(a.model, get_config(a.model))
    model, params, tc = load_trained(workdir)
    view = models.layer_view(model, params)
    k = int(tc.k)
    test = data.load_dataset("double_mnist", "test", a.data_dir, limit=max(20 * a.images, 200))
    stages = tuple(s for s in a.stages.split(",") if s)
    verify = V.make_verifier(view, V.VerifierConfig(stages=stages, time_limit=a.time_limit))
    no_pgd = tuple(s for s in stages if s != "pgd")
    fresh = V.make_verifier(view, V.VerifierConfig(stages=no_pgd, time_limit=120.0))
    optimizer = make_optimizer(OptimizerConfig(max_queries=a.opt_queries, shrink="fixed"))
    per_layer = queries_per_layer(scale=a.scale, eps_max=a.eps_max, tol=a.tol, eps_min=a.eps_min)
    settings = {
        "model": a.model,
        "layers": a.layers,
        "stages": stages,
        "time_limit": a.time_limit,
        "opt_max_queries": a.opt_queries,
        "baseline": {"scale": a.scale, "eps_min": a.eps_min, "eps_max": a.eps_max, "tol": a.tol},
        "baseline_max_queries_per_image": a.layers * per_layer,
    }
    common.log(f"settings {settings}")

    indices = []
    for i in range(test.num_examples):
        spec = V.TopK(int(test.meta["digits"][i][0]), k)
        if float(spec.margin(models.apply_layers(view, jnp.asarray(test.x[i])))) > 0:
            indices.append(i)
        if len(indices) == a.images:
            break
    x0 = test.x[indices[0]]
    warm = verify.warm_up(x0, x0, V.TopK(int(test.meta["digits"][indices[0]][0]), k))
    warm += fresh.warm_up(x0, x0, V.TopK(int(test.meta["digits"][indices[0]][0]), k))
    common.log(f"warm-up (compilation, excluded) {warm:.1f} s; images {indices}")

    rows = []
    t_bench = time.perf_counter()
    for i in indices:
        digits = [int(d) for d in test.meta["digits"][i]]
        mask = data.ink_mask(test.meta["masks"][i], test.meta["offsets"][i], 1)
        layers = NL.layer_map(mask, max_layers=a.layers)
        problem = make_problem(test.x[i], layers, V.TopK(digits[0], k))
        key = jax.random.key(i)
        opt = optimizer.run(key, verify, view, problem)
        base = binary_search(
            key, verify, problem, scale=a.scale, eps_min=a.eps_min, eps_max=a.eps_max, tol=a.tol
        )
        robust = {}
        for name, r in (("optimizer", opt), ("baseline", base)):
            lo, hi = NL.neighborhood_box(problem.x, problem.layers, r.eps)
            robust[name] = (
                r.verified and fresh(jax.random.key(1), lo, hi, problem.spec).status is Status.ROBUST
            )
        row = {
            "image": i,
            "digits": digits,
            "layer_sizes": problem.sizes.tolist(),
            **{f"{n}_{f}": v for n, r in (("opt", opt), ("base", base)) for f, v in _facts(r).items()},
            "opt_reverified": robust["optimizer"],
            "base_reverified": robust["baseline"],
        }
        row["query_ratio"] = base.queries / max(opt.queries, 1)
        row["time_ratio"] = base.time_s / max(opt.time_s, 1e-9)
        rows.append(row)
        common.log(
            f"image {i}: optimizer {opt.queries} q {opt.time_s:.0f} s logvol {opt.log_volume:.0f} | "
            f"baseline {base.queries} q {base.time_s:.0f} s logvol {base.log_volume:.0f} | "
            f"ratios q {row['query_ratio']:.1f} t {row['time_ratio']:.1f} | re-verified {robust}"
        )
        common.write_json(common.OUT / "neighborhood_bench.json", {"settings": settings, "rows": rows})
    total = time.perf_counter() - t_bench

    def med(key):
        return float(np.median([r[key] for r in rows]))

    head = ("image", "opt q", "opt s", "opt logvol", "base q", "base s", "base logvol")
    print(" ".join(f"{h:>{w}}" for h, w in zip(head, (6, 6, 7, 11, 7, 7, 12), strict=True)))
    for r in rows:
        print(
            f"{r['image']:>6} {r['opt_queries']:>6} {r['opt_time_s']:>7.1f} {r['opt_log_volume']:>11.0f} "
            f"{r['base_queries']:>7} {r['base_time_s']:>7.1f} {r['base_log_volume']:>12.0f}"
        )
    summary = {
        "images": len(rows),
        "query_ratio": med("query_ratio"),
        "time_ratio": med("time_ratio"),
        "logvol_optimizer": med("opt_log_volume"),
        "logvol_baseline": med("base_log_volume"),
        "linear_optimizer": med("opt_linear_norm"),
        "linear_baseline": med("base_linear_norm"),
        "queries_optimizer": med("opt_queries"),
        "queries_baseline": med("base_queries"),
        "time_s_optimizer": med("opt_time_s"),
        "time_s_baseline": med("base_time_s"),
        "logvol_wins": int(sum(r["opt_log_volume"] >= r["base_log_volume"] for r in rows)),
        "all_final_robust": bool(all(r["opt_reverified"] and r["base_reverified"] for r in rows)),
        "bench_s": total,
        "settings": settings,
    }
    common.write_json(common.OUT / "neighborhood_bench.json", {"summary": summary, "rows": rows})
    common.last_line(summary)


def _facts(r) -> dict:
    return {
        "queries": r.queries,
        "time_s": r.time_s,
        "log_volume": r.log_volume,
        "linear_norm": r.linear_norm,
        "verified": r.verified,
        "eps": [float(e) for e in r.eps],
        "by_status": r.by_status,
        "stop_reason": r.stop_reason,
    }


if __name__ == "__main__":
    main()
