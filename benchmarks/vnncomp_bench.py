r"""The VNN-COMP runner on a competition-style suite built from the project's own MNIST MLPs.

  .venv/bin/python benchmarks/vnncomp_bench.py            # (make bench runs every benchmark)
  .venv/bin/python benchmarks/vnncomp_bench.py --nets 256x2 --images 2 --timeout 10   # a smoke run

Suite: bab_bench's instances. Its plainly trained MNIST MLPs 784-256x{2,4,6}-10 (`bab_bench.ensure_net`,
cached in benchmarks/cache/mnist_mlp_*), per net the first `--images` test images it classifies
correctly (`select_images`), at each ε of `--eps`: the box clip(x ± ε, 0, 1) (equal to bab_bench's
`box`, checked) and argmax robustness of the label. `lnjax.vnncomp.write_suite` writes them as the
competition lays a benchmark out, into `--suite` (default benchmarks/cache/vnncomp_suite/):
onnx/mnist_mlp_<net>.onnx (`save_onnx`, NCHW input [N, 1, 28, 28]), vnnlib/<net>_img<i>_eps<ε>.vnnlib
and instances.csv (the selection of this run). Defaults: 3 nets × 15 images × 2 ε = 90 instances.

Run: every instance through `lnjax.vnncomp.run_instance` with `--timeout` seconds (default 120): ONNX
import, VNN-LIB parsing, the default staged verifier with the box as given (input_domain None), one
`VerifierCache` per benchmark run (each network loaded, its verifier built and warmed up once: the
prepare time, reported per network and not counted in the run time) and one MILP worker. Result
files go to benchmarks/out/vnncomp_results/.

Checks: every written "sat" is read back from its result file (`read_counterexample`) and checked
apart from the runner: X inside the VNN-LIB file's box (no tolerance), ONNX Runtime's outputs at X
within the competition's tolerances of the written Y (rtol 1e-3, atol 1e-4) and violating the
property (no tolerance); `invalid_counterexamples` counts failures (target 0).
`rejected_counterexamples`: counterexamples the runner's own re-check refused (written as unknown).
If `--bab_out` (bab_bench's JSON lines) holds its "bab" method's rows for the same instances at the
same time limit, the decided share there is printed next to ours, with any disagreement (one says
robust / unsat, the other not robust / sat).

Resumable: each finished instance is appended to `--out` (JSON lines) with its settings (timeout,
seed, the verifier's options, the params' fingerprint, the library's version); a rerun with the
same settings skips it.
`--report` only re-prints the tables. The last stdout line is one JSON object: instances, unsat,
sat, timeout, unknown, errors, median_s (run time over all instances), invalid_counterexamples,
rejected_counterexamples, prepare_s (per network: its largest, the instance that loaded and warmed
it up), decided (share unsat + sat), timeout_s, bab_bench (the comparison, or null).

References:
  VNN-COMP rules and scripts (e.g. https://sites.google.com/view/vnn2024): the instance contract,
    result files, the counterexample check and its tolerances.
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

import bab_bench  # noqa: E402  (the same nets, images and boxes)
import jax  # noqa: E402
import numpy as np  # noqa: E402

from lnjax import data, models, verify as V, vnncomp  # noqa: E402
from lnjax.io import append_jsonl, finite_or_none, read_jsonl  # noqa: E402
from lnjax.io.vnnlib import VnnlibError, load_vnnlib, read_counterexample, violated  # noqa: E402

RESULTS_DIR = common.OUT / "vnncomp_results"
RTOL, ATOL = 1e-3, 1e-4  # the competition's check of the written outputs against ONNX Runtime


def parse_args(argv):
    p = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    nets = ",".join(bab_bench.NETS)
    p.add_argument("--nets", default=nets, help="comma-separated, of " + nets)
    p.add_argument("--images", type=int, default=15, help="correctly classified test images per net")
    p.add_argument("--eps", default="0.03,0.05", help="L∞ radii, comma-separated")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per instance (run_instance)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--suite", default="benchmarks/cache/vnncomp_suite", help="where the suite is written")
    p.add_argument(
        "--out", default="benchmarks/out/vnncomp_bench.jsonl", help="per-instance rows (JSON lines)"
    )
    p.add_argument("--bab_out", default="benchmarks/out/bab_bench.jsonl", help="bab_bench's rows, to compare")
    p.add_argument(
        "--prepare_only", action="store_true", help="train the nets and write the suite, then stop"
    )
    p.add_argument("--report", action="store_true", help="only re-print the tables of the rows in --out")
    args = p.parse_args(argv)
    args.nets = [n for n in args.nets.split(",") if n]
    args.eps = [float(e) for e in args.eps.split(",") if e]
    bad = [n for n in args.nets if n not in bab_bench.NETS]
    if bad:
        p.error(f"unknown nets {bad}; expected some of {list(bab_bench.NETS)}")
    if args.images < 1 or not args.eps or args.timeout <= 0:
        p.error("--images ≥ 1, at least one --eps, --timeout > 0")
    return args


# ------------------------------------------------------------------------------------------------ suite


def instance_name(image: int, eps: float) -> str:
    return f"img{image:05d}_eps{eps:g}"


def build_suite(args, test) -> tuple[Path, dict[str, dict[str, Any]]]:
    """Writes the suite of this run's selection; returns instances.csv and, per net, what its rows need
    (fingerprint, instances as (image, label, eps))."""
    networks, instances, per_net = {}, [], {}
    for net in args.nets:
        model, params, metrics = bab_bench.ensure_net(net)
        view = models.layer_view(model, params)
        images = bab_bench.select_images(view, test, args.images)
        common.log(f"{net}: test accuracy {metrics['test']['accuracy']:.4f}; images {images}")
        name = bab_bench.net_name(net)
        networks[name] = (model, params)
        rows = []
        for index in images:
            for eps in args.eps:
                inst = vnncomp.SuiteInstance(
                    name, instance_name(index, eps), test.x[index], int(test.y[index]), eps
                )
                for ours, theirs in zip(
                    vnncomp.linf_box(inst.x, eps), bab_bench.box(inst.x, eps), strict=True
                ):
                    assert np.array_equal(ours, theirs), "the suite's box differs from bab_bench's"
                instances.append(inst)
                rows.append((index, inst.label, eps))
        per_net[net] = {"fingerprint": common.params_fingerprint(params), "instances": rows, "name": name}
    csv = vnncomp.write_suite(args.suite, networks, instances, timeout=args.timeout)
    common.log(f"suite: {len(instances)} instances in {csv}")
    return csv, per_net


# ------------------------------------------------------------------------------------------------- runs


def settings_of(args, fp: str) -> dict[str, Any]:
    """What a row's answer depends on besides the instance; rows with other settings are not reused."""
    options = dataclasses.asdict(dataclasses.replace(V.VerifierConfig(), input_domain=None, time_limit=None))
    return {
        "timeout": args.timeout,
        "seed": args.seed,
        "params": fp,
        "code": common.code_version(),
        "verifier": finite_or_none(options),
    }


def row_key(row: dict[str, Any]) -> tuple:
    return (row["net"], row["image"], row["eps"], common.settings_key(row["settings"]))


class Checker:
    """Reads a written "sat" result back and checks it with ONNX Runtime, apart from the runner."""

    def __init__(self):
        import onnxruntime as ort

        self.ort = ort
        self.sessions: dict[str, Any] = {}

    def __call__(self, text: str, onnx_path: Path, vnnlib_path: Path) -> str:
        """The empty string if the counterexample is valid, else why not."""
        if str(onnx_path) not in self.sessions:
            self.sessions[str(onnx_path)] = self.ort.InferenceSession(
                str(onnx_path), providers=["CPUExecutionProvider"]
            )
        sess = self.sessions[str(onnx_path)]
        shape = tuple(int(d) for d in sess.get_inputs()[0].shape[1:])
        try:
            x, y = read_counterexample(text)
            (case,) = load_vnnlib(vnnlib_path, shape, len(y)).cases  # the ONNX layout, as written
        except (VnnlibError, ValueError) as e:
            return f"unreadable: {e}"
        if x.size != int(np.prod(shape)):
            return f"{x.size} X entries for an input of {int(np.prod(shape))}"
        x = x.reshape(shape)
        if np.any(x < case.lower) or np.any(x > case.upper):
            return "X outside the box"
        feed = {sess.get_inputs()[0].name: x.astype(np.float32)[None]}
        y_ort = np.asarray(sess.run(None, feed)[0], np.float64).reshape(-1)
        if y_ort.shape != y.shape or not np.allclose(y, y_ort, rtol=RTOL, atol=ATOL):
            return f"written Y differs from ONNX Runtime's by up to {np.max(np.abs(y - y_ort)):.3g}"
        if not violated(case.disjuncts, y_ort):
            return "ONNX Runtime's outputs violate no disjunct"
        return ""


def run_net(net: str, info: dict, args, csv: Path, done: dict, out: Path, run: dict | None) -> list[dict]:
    """The net's rows: reused from `done` (same settings), the others run now (`run` None: only the
    reused ones, for `--report`). `run` holds the cache and the checker."""
    settings = settings_of(args, info["fingerprint"])
    skey = common.settings_key(settings)
    rows, todo = [], []
    for image, label, eps in info["instances"]:
        key = (net, image, eps, skey)
        if key in done:
            rows.append(done[key])
        else:
            todo.append((image, label, eps))
    if rows:
        common.log(f"{net}: {len(rows)} rows reused from {out}")
    if run is None or not todo:
        if todo:
            common.log(f"{net}: {len(todo)} instances not in {out}")
        return rows
    root = jax.random.key(args.seed)
    suite = csv.parent
    onnx_path = suite / "onnx" / f"{info['name']}.onnx"
    for image, label, eps in todo:
        vnnlib_path = suite / "vnnlib" / f"{info['name']}_{instance_name(image, eps)}.vnnlib"
        key = jax.random.fold_in(jax.random.fold_in(root, image), round(eps * 1e6))
        t0 = time.perf_counter()
        res = vnncomp.run_instance(onnx_path, vnnlib_path, args.timeout, key=key, verifier_cache=run["cache"])
        wall = time.perf_counter() - t0
        result_file = RESULTS_DIR / f"{info['name']}_{instance_name(image, eps)}.txt"
        vnncomp.write_result(result_file, res)
        invalid = run["check"](res.file_text(), onnx_path, vnnlib_path) if res.result == "sat" else ""
        row = {
            "net": net,
            "image": image,
            "label": label,
            "eps": eps,
            "settings": settings,
            "result": res.result,
            "seconds": res.seconds,
            "prepare_s": res.prepare_seconds,
            "wall_s": wall,
            "decided_by": list(res.decided_by),
            "rejected": res.rejected,
            "invalid": invalid,
            "notes": list(res.notes),
            "result_file": str(result_file.relative_to(common.ROOT)),
        }
        append_jsonl(out, row)
        rows.append(row)
        extra = f"; INVALID: {invalid}" if invalid else ""
        common.log(
            f"{net} img {image} eps {eps:g}: {res.result} in {res.seconds:.2f} s "
            f"(prepare {res.prepare_seconds:.1f} s; {'; '.join(res.notes)}){extra}"
        )
    return rows


# --------------------------------------------------------------------------------------------- summary


def counts(sel: list[dict]) -> dict[str, Any]:
    n = len(sel)
    c = {r: sum(row["result"] == r for row in sel) for r in vnncomp.RESULTS}
    times = [row["seconds"] for row in sel]
    return {
        "instances": n,
        **c,
        "decided": (c["unsat"] + c["sat"]) / max(n, 1),
        "median_s": common.percentile(times, 50),
        "p90_s": common.percentile(times, 90),
        "prepare_s": max((row["prepare_s"] for row in sel), default=None),
    }


def bab_comparison(rows: list[dict], args) -> dict[str, Any] | None:
    """bab_bench's "bab" rows for the same (net, image, ε) at the same time limit, if it has them."""
    path = Path(args.bab_out)
    theirs = {}
    for r in read_jsonl(path) if path.is_file() else []:
        if r.get("method") == "bab" and r.get("settings", {}).get("time_limit") == args.timeout:
            theirs[(r["net"], r["image"], r["eps"])] = r["status"]
    matched = [
        (r, theirs[(r["net"], r["image"], r["eps"])])
        for r in rows
        if (r["net"], r["image"], r["eps"]) in theirs
    ]
    if not matched:
        return None
    ours_for = {"unsat": "robust", "sat": "not_robust"}
    disagree = [
        (r["net"], r["image"], r["eps"])
        for r, status in matched
        if {ours_for.get(r["result"]), status} == {"robust", "not_robust"}
    ]
    return {
        "matched": len(matched),
        "decided_ours": sum(r["result"] in ours_for for r, _ in matched) / len(matched),
        "decided_bab_bench": sum(s != "unknown" for _, s in matched) / len(matched),
        "disagreements": disagree,
    }


def _fmt(v, digits=3):
    return "–" if v is None else f"{v:.{digits}f}"


def print_tables(rows: list[dict], args, comparison: dict | None) -> None:
    """Markdown tables for benchmarks/RESULTS.md: per net, per (net, ε), what stayed undecided."""
    print(
        f"\nvnncomp_bench: nets {', '.join(args.nets)}; {args.images} images per net; ε {args.eps}; "
        f"{args.timeout:g} s per instance"
    )
    print("| net | instances | unsat | sat | timeout | unknown | error | decided | median s | p90 s ", end="")
    print("| prepare s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for net in [*args.nets, "all"]:
        sel = [r for r in rows if net in ("all", r["net"])]
        if not sel:
            continue
        t = counts(sel)
        prepare = _fmt(t["prepare_s"], 1) if net != "all" else "–"
        print(
            f"| {net} | {t['instances']} | {t['unsat']} | {t['sat']} | {t['timeout']} | {t['unknown']} | "
            f"{t['error']} | {t['decided']:.0%} | {_fmt(t['median_s'])} | {_fmt(t['p90_s'])} | {prepare} |"
        )
    print()
    print("| net | ε | unsat / sat / undecided | median s |")
    print("|---|---|---|---|")
    for net in args.nets:
        for eps in args.eps:
            sel = [r for r in rows if r["net"] == net and r["eps"] == eps]
            t = counts(sel)
            undecided = t["timeout"] + t["unknown"] + t["error"]
            print(f"| {net} | {eps:g} | {t['unsat']} / {t['sat']} / {undecided} | {_fmt(t['median_s'])} |")
    print()
    for r in rows:
        if r["result"] not in ("unsat", "sat") or r["invalid"] or r["rejected"]:
            print(
                f"  {r['net']} img {r['image']} eps {r['eps']:g}: {r['result']}; {r['notes']}; {r['invalid']}"
            )
    if comparison:
        print(
            f"\nbab_bench on the same {comparison['matched']} instances ({args.timeout:g} s): decided "
            f"{comparison['decided_bab_bench']:.0%} there, {comparison['decided_ours']:.0%} here; "
            f"disagreements {comparison['disagreements']}"
        )
    print()


def main(argv=None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    done = {row_key(r): r for r in read_jsonl(out)}
    common.ensure_double_mnist("data")  # also prepares MNIST
    test = data.load_dataset("mnist", "test", "data")
    csv, per_net = build_suite(args, test)
    if args.prepare_only:
        return
    t_start = time.monotonic()
    rows: list[dict] = []
    if args.report:
        for net in args.nets:
            rows += run_net(net, per_net[net], args, csv, done, out, None)
    else:
        worker = V.MilpWorker()
        try:
            run = {"cache": vnncomp.VerifierCache(worker=worker), "check": Checker()}
            for net in args.nets:
                rows += run_net(net, per_net[net], args, csv, done, out, run)
        finally:
            worker.close()
    common.log(f"wall {time.monotonic() - t_start:.0f} s")
    comparison = bab_comparison(rows, args)
    print_tables(rows, args, comparison)
    total = counts(rows)
    prepare = {net: counts([r for r in rows if r["net"] == net])["prepare_s"] for net in args.nets}
    common.last_line(
        {
            "instances": total["instances"],
            "unsat": total["unsat"],
            "sat": total["sat"],
            "timeout": total["timeout"],
            "unknown": total["unknown"],
            "errors": total["error"],
            "median_s": None if total["median_s"] is None else round(total["median_s"], 4),
            "invalid_counterexamples": sum(bool(r["invalid"]) for r in rows),
            "rejected_counterexamples": sum(r["rejected"] for r in rows),
            "prepare_s": {k: None if v is None else round(v, 2) for k, v in prepare.items()},
            "decided": round(total["decided"], 4),
            "timeout_s": args.timeout,
            "bab_bench": comparison,
        }
    )


if __name__ == "__main__":
    main()
