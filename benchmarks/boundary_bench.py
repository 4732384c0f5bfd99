r"""Boundary distances: coarse scan + bisection (our default) vs the reference's linear scan.

  .venv/bin/python benchmarks/boundary_bench.py            # (make bench runs every benchmark)

Model: the small MNIST CNN of the `mnist_normal` training preset, trained once into
benchmarks/cache/mnist_normal (training is excluded from the benchmark's time; MNIST is prepared into
data/ if missing). Inputs: the first `--images` test images the model classifies correctly.
Directions: `--directions` fixed random orthonormal directions in RMS units and their negatives (the
reference's MNIST setting: 784 → 1568), the same for both methods.

Side by side, on the same images and directions (`lnjax.boundary.make_boundary_distances`):
  linear  the reference's scan: 0.01, 0.02, …, 0.49 RMS, the first magnitude where the prediction
          changes (per direction, stopping there);
  bisect  a coarse scan (`--coarse_step`, default 0.1) to the first change, then bisection until the
          bracket is ≤ `--tol` (default 0.01 → 4 halvings, width 0.00625).
Reported: the largest absolute difference of the distances in RMS units over all directions (a
direction where only one method finds a boundary counts with the reference's "no boundary" value
1.0, the pixel range's maximum, as the detector sees it), how many directions differ by more than
the scan step, directions where only one method finds a boundary, forward passes per image as each
algorithm spends them (the reference evaluates only the directions still running), and wall time per
image of our jitted implementation (which evaluates every direction at every step, masked). Both
methods compile before timing (one warm-up batch, excluded). The last stdout line is one JSON object:
{"max_abs_diff_rms": …, "forward_pass_ratio": …} (ratio = linear passes / bisect passes).

References:
  He, Li & Song, Decision Boundary Analysis of Adversarial Examples, ICLR 2018.
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

MISS = 1.0  # the reference's value for a direction without a boundary


def parse_args(argv):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--images", type=int, default=20, help="correctly classified test images")
    p.add_argument("--directions", type=int, default=784, help="random directions (and their negatives)")
    p.add_argument("--batch", type=int, default=4, help="images per jitted call")
    p.add_argument("--max_distance", type=float, default=0.49)
    p.add_argument("--step", type=float, default=0.01, help="the linear scan's step")
    p.add_argument("--coarse_step", type=float, default=0.1, help="bisect: the coarse scan's step")
    p.add_argument("--tol", type=float, default=0.01, help="bisect: bracket width to stop at")
    p.add_argument("--out", default="benchmarks/out/boundary_bench.json")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.images < 1 or args.batch < 1 or not 1 <= args.directions <= 784:
        p.error("need --images ≥ 1, --batch ≥ 1 and 1 ≤ --directions ≤ 784")
    if not (0 < args.step <= args.max_distance and args.coarse_step > 0 and args.tol > 0):
        p.error("need 0 < --step ≤ --max_distance, --coarse_step > 0 and --tol > 0")
    return args


def run_method(distances, apply_fn, params, x, dirs, batch):
    """BoundaryDistances of all images (numpy) and seconds, after a warm-up call on the first batch."""
    jax.block_until_ready(distances(apply_fn, params, jnp.asarray(x[:batch]), dirs))
    parts, t0 = [], time.perf_counter()
    for s in range(0, len(x), batch):
        xb = x[s : s + batch]
        if len(xb) < batch:  # pad the last batch to the compiled shape
            xb = np.concatenate([xb, np.repeat(xb[-1:], batch - len(xb), axis=0)])
        parts.append(jax.device_get(distances(apply_fn, params, jnp.asarray(xb), dirs)))
    seconds = time.perf_counter() - t0
    n = len(x)
    cat = lambda name: np.concatenate([getattr(p, name) for p in parts])[:n]
    return {k: cat(k) for k in ("distance", "adjacent", "center", "forward_passes")}, seconds


def compare(linear, bisect, step):
    dl, db = linear["distance"], bisect["distance"]
    hl, hb = np.isfinite(dl), np.isfinite(db)
    diff = np.abs(np.where(hl, dl, MISS) - np.where(hb, db, MISS))
    both = hl & hb
    passes_l, passes_b = (
        linear["forward_passes"].astype(np.float64),
        bisect["forward_passes"].astype(np.float64),
    )
    return {
        "directions_per_image": int(dl.shape[1]),
        "max_abs_diff_rms": float(diff.max()),
        "max_abs_diff_both_hit_rms": float(diff[both].max()) if both.any() else None,
        "median_abs_diff_both_hit_rms": float(np.median(diff[both])) if both.any() else None,
        "share_within_step": float(np.mean(diff <= step + 1e-6)),
        "directions_beyond_step": int(np.sum(diff > step + 1e-6)),
        "hit_only_linear": int(np.sum(hl & ~hb)),
        "hit_only_bisect": int(np.sum(hb & ~hl)),
        "hit_share_linear": float(hl.mean()),
        "hit_share_bisect": float(hb.mean()),
        "adjacent_agree_share": float(np.mean(linear["adjacent"][both] == bisect["adjacent"][both]))
        if both.any()
        else None,
        "median_distance_linear": float(np.median(dl[hl])) if hl.any() else None,
        "passes_per_image_linear": float(passes_l.mean()),
        "passes_per_image_bisect": float(passes_b.mean()),
        "forward_pass_ratio": float(passes_l.sum() / passes_b.sum()),
        "centers_equal": bool(np.array_equal(linear["center"], bisect["center"])),
    }


def main(argv=None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from lnjax import boundary as B

    model, params, test = common.ensure_mnist_normal()
    apply_fn = lambda p, x: model.apply({"params": p}, x)
    predict = jax.jit(lambda p, x: jnp.argmax(apply_fn(p, x), -1))
    pool = min(test.num_examples, 4 * args.images + 100)
    correct = np.flatnonzero(np.asarray(predict(params, jnp.asarray(test.x[:pool]))) == test.y[:pool])
    indices = correct[: args.images]
    x = np.asarray(test.x[indices], np.float32)
    dirs = B.random_directions(jax.random.key(args.seed), x.shape[1:], args.directions, antipodal=True)
    common.log(f"{len(indices)} images {indices.tolist()[:10]}…, {dirs.shape[0]} directions")

    shared = dict(max_distance=args.max_distance, step=args.step, coarse_step=args.coarse_step, tol=args.tol)
    results, seconds = {}, {}
    for mode in ("linear", "bisect"):
        distances = B.make_boundary_distances(mode=mode, **shared)
        results[mode], seconds[mode] = run_method(distances, apply_fn, params, x, dirs, args.batch)
        common.log(
            f"{mode}: {seconds[mode]:.1f} s, {results[mode]['forward_passes'].mean():.0f} passes / image"
        )
    summary = compare(results["linear"], results["bisect"], args.step)
    summary.update(
        images=len(indices),
        seconds_per_image_linear=seconds["linear"] / len(indices),
        seconds_per_image_bisect=seconds["bisect"] / len(indices),
        bisection_steps=B.bisection_steps(args.coarse_step, args.tol),
    )
    report = {"args": vars(args), "machine": common.machine(), "images": indices.tolist(), "summary": summary}
    common.write_json(Path(args.out), report)
    print_table(summary, args)
    common.last_line(
        {
            "max_abs_diff_rms": round(summary["max_abs_diff_rms"], 5),
            "forward_pass_ratio": round(summary["forward_pass_ratio"], 2),
        }
    )


def _f(v, digits=4):
    return "–" if v is None else f"{v:.{digits}f}"


def print_table(s, args) -> None:
    """A markdown table (for benchmarks/RESULTS.md)."""
    print(
        f"\nboundary_bench: {s['images']} correctly classified MNIST test images (mnist_normal), "
        f"{s['directions_per_image']} directions each; linear: step {args.step:g} to {args.max_distance:g}; "
        f"bisect: coarse {args.coarse_step:g} + {s['bisection_steps']} halvings (tol {args.tol:g})"
    )
    print("| method | forward passes / image | s / image (jitted) | directions with a boundary |")
    print("|---|---|---|---|")
    for m in ("linear", "bisect"):
        print(
            f"| {m} | {s[f'passes_per_image_{m}']:.0f} | {s[f'seconds_per_image_{m}']:.2f} | "
            f"{s[f'hit_share_{m}']:.1%} |"
        )
    print(
        f"\nforward-pass ratio (linear / bisect) {s['forward_pass_ratio']:.2f}×; "
        f"max |Δ| {_f(s['max_abs_diff_rms'])} RMS (where both hit: {_f(s['max_abs_diff_both_hit_rms'])}, "
        f"median {_f(s['median_abs_diff_both_hit_rms'])}); within the step: {s['share_within_step']:.2%} "
        f"({s['directions_beyond_step']} directions beyond); a boundary found by one method only: "
        f"linear {s['hit_only_linear']}, bisect {s['hit_only_bisect']}; "
        f"same adjacent class: {_f(s['adjacent_agree_share'], 4)}\n"
    )


if __name__ == "__main__":
    main()
