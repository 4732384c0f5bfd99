r"""The neighborhood experiment on one process vs on Ray actors: wall time, identical records, driver cost.

  .venv/bin/python benchmarks/scale_bench.py              # 8 images, workers 1 vs 2 (~10 min on 2 cores)
  SCALE_BENCH_VERBOSE=1 .venv/bin/python benchmarks/scale_bench.py    # with INFO logs (per search, workers)

Model: the quickstart CNN (`dmnist_small`), trained once into benchmarks/cache/quickstart (excluded
from the timing; data are prepared into data/ if missing).

Work: `experiments.neighborhood.run` (the quickstart preset) on DOUBLE-MNIST test images 0..7 (left
digit the target), both optimizer methods, so 16 (image, method) items (an image whose target the
model already misses is skipped at once: image 2 here, so 14 searches); 16 layers, at most 16
verifier queries per search (`--opt_queries`), stages PGD, CROWN, α-CROWN (`--stages`; no MILP,
whose CBC time limit could decide a verdict). Nothing is decided by the clock: the query time limit
(`--time_limit`, 60 s) is far above what a query needs (~1 s here) and the searches have no time
budget, so the records must be identical whatever the CPU contention. Each run starts from an
empty workdir in benchmarks/out/scale_bench/; `seconds_N` is the wall time of the whole
`run(config)` call with workers = N: loading, the verifier's warm-up (compilation: once in this
process for workers = 1, once per actor and in parallel for workers = 2), Ray's start and shutdown
(workers = 2) and all items. `identical`: every image record equal after dropping the timing fields
(`seconds`, `*_s`). `search_s_N`: median wall seconds per search (item) with workers = N (the
per-item cost on a busy machine), `load_*`: the 1/5/15-min load averages before and after.

Compilation: JAX's persistent compilation cache (`--compile_cache`, default
benchmarks/cache/jax; '' for none) as `python -m experiments.run` uses it by default. Before the
timed runs, a separate process runs both sides on one image once per settings (untimed, noted in
benchmarks/cache/scale_bench_prepared.json), so that both timed sides load their compiled programs
(each set-up then mostly loads, traces and warms up; the actors' single-threaded XLA programs are
separate entries). `--compile_cache ''` times the compilation too (every actor compiles its own:
the runs before this option).

Ceiling: what two processes can gain on this machine at all, measured first (`parallel_ceiling`):
fixed single-threaded XLA matmul loops (in cache and memory-bound), each alone and two at once;
`ceiling` holds their speedups (2 on two free cores).

Driver overhead: the same driver (`experiments.parallel.drive` with Ray actors and a RecordStore)
on `--overhead_items` trivial items (the compute returns a record of `--payload` bytes at once; also
100 B, 64 KB and 512 KB in `driver_by_payload`), two actors, as the marginal cost between a run of
n/10 and one of n items; `driver_overhead_s_per_item` is the driver's busy wall time per item (all
of its loop except blocking in `ray.wait`: submit, get, the atomic write with fsync, the progress
bar: the cost that makes the driver the bottleneck at scale), `driver_cpu_s_per_item` its process
CPU time, `driver_wall_s_per_item` the wall time per item with two actors (one item in flight each:
Ray's round trip included). BUILD.md turns these into a throughput model. The last stdout line is
one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402  (benchmarks/common.py, next to this script)

common.enter_repo()

from experiments import neighborhood as NE, parallel  # noqa: E402
from experiments.common import use_compile_cache  # noqa: E402
from experiments.configs.neighborhood import get_config  # noqa: E402
from experiments.configs.train import get_config as train_config  # noqa: E402
from experiments.records import RecordStore  # noqa: E402
from lnjax.io import read_json  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--workers", type=int, default=2, help="the parallel side (the other is 1)")
    p.add_argument("--model", default="quickstart", help="train preset, cached in benchmarks/cache/")
    p.add_argument("--layers", type=int, default=16)
    p.add_argument("--stages", default="pgd,crown,alpha_crown")
    p.add_argument("--time_limit", type=float, default=60.0)
    p.add_argument("--opt_queries", type=int, default=16)
    p.add_argument("--overhead_items", type=int, default=400)
    p.add_argument("--payload", type=int, default=8000, help="bytes per trivial record (~ a search's)")
    p.add_argument("--data_dir", default="data")
    p.add_argument("--compile_cache", default=str(common.CACHE / "jax"), help="'' for none")
    p.add_argument("--prepare_only", action="store_true", help="(internal) fill the cache and exit")
    return p.parse_args(argv)


PREPARED = common.CACHE / "scale_bench_prepared.json"


def prepare_cache(a, argv: list[str]) -> float:
    """Fills the compilation cache for both sides in a separate process (so that this process's
    in-memory caches stay empty: both timed sides start alike); seconds, 0 if done before."""
    key = json.dumps({k: v for k, v in sorted(vars(a).items()) if k not in ("images", "overhead_items")})
    done = json.loads(PREPARED.read_text()) if PREPARED.exists() else []
    if key in done and any(Path(a.compile_cache).glob("*-cache")):  # (an emptied folder: again)
        return 0.0
    common.log("filling the compilation cache (one image, both sides, in a separate process)")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, __file__, *argv, "--images", "1", "--prepare_only"], check=True)
    PREPARED.write_text(json.dumps([*done, key]))
    return time.perf_counter() - t0


def neighborhood_config(a, train_workdir: Path, workers: int):
    c = get_config("quickstart")
    c.train_workdir = str(train_workdir)
    c.data_dir = a.data_dir
    c.images = a.images
    c.figure_images = 0
    c.layers.max_layers = a.layers
    c.optimizer.max_queries = a.opt_queries
    c.optimizer.time_budget = 0.0  # unlimited: no search stops on the clock
    c.verifier.stages = a.stages
    c.verifier.time_limit = a.time_limit
    c.certificate.enabled = False  # the searches alone (a certificate is more of the same queries)
    c.layers.target_layer = False  # the layers of the runs in RESULTS.md before the preset changed
    c.workers = workers
    return c


def timed_run(c, workdir: Path) -> tuple[float, dict]:
    shutil.rmtree(workdir, ignore_errors=True)
    t0 = time.perf_counter()
    summary = NE.run(c, str(workdir), progress=False)
    return time.perf_counter() - t0, summary


def image_records(workdir: Path) -> dict[str, object]:
    return {
        f.name: parallel.comparable(read_json(f)) for f in sorted((workdir / "results").glob("img_*.json"))
    }


def search_seconds(summary: dict) -> float:
    """The mean over methods of the median wall seconds per search (per item) in a run's summary."""
    times = [v["median_time_s"] for v in summary.values() if isinstance(v, dict) and "median_time_s" in v]
    return sum(times) / len(times)


@dataclasses.dataclass(frozen=True)
class Trivial:
    """A setup whose items cost nothing: the record is `payload` bytes of text."""

    payload: int

    def __call__(self) -> parallel.ItemWorker:
        text = "x" * self.payload
        return parallel.ItemWorker(lambda key: {"item": key, "payload": text})


@dataclasses.dataclass
class TimedExecutor:
    """An executor that adds up the wall time the driver spends blocked in `wait` (the rest of the
    driver loop's time is its per-item overhead: submit, get, the atomic write with fsync, tqdm)."""

    inner: parallel.RayExecutor
    waited: float = 0.0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def wait(self, futures, timeout):
        t0 = time.perf_counter()
        try:
            return self.inner.wait(futures, timeout)
        finally:
            self.waited += time.perf_counter() - t0


def driver_overhead(items: int, payload: int, workdir: Path) -> dict[str, float]:
    """Per trivial item through `parallel.drive` on two Ray actors, as the marginal cost between a run
    of items/10 and one of `items` (actor start-up cancels out): the driver's busy wall time (outside
    `wait`), its process CPU time, and the wall time (Ray's round trip included)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning")
    try:
        costs = {}
        for n in (items // 10, items):
            shutil.rmtree(workdir, ignore_errors=True)
            store: RecordStore[int] = RecordStore(workdir, "item_{:06d}")
            executor = TimedExecutor(parallel.RayExecutor(Trivial(payload)))
            cpu0, wall0 = time.process_time(), time.perf_counter()
            parallel.drive(store, range(n), executor, workers=2)  # type: ignore[arg-type]
            wall = time.perf_counter() - wall0
            costs[n] = (wall - executor.waited, time.process_time() - cpu0, wall)
    finally:
        ray.shutdown()
    (n0, c0), (n1, c1) = sorted(costs.items())
    busy, cpu, wall = ((b - a) / (n1 - n0) for a, b in zip(c0, c1, strict=True))
    return {"busy_s_per_item": busy, "cpu_s_per_item": cpu, "wall_s_per_item": wall}


# Fixed single-threaded XLA workloads (float32 matmuls, the kind of work the verifier's bounds do),
# each timed in one process alone and in two at once: what two actors can gain on this machine. n =
# 128 stays in a core's own caches (64 KB a matrix); n = 512 (1 MB a matrix, the L2's size here) goes
# to the shared L3 and memory, as the searches' large CROWN / α-CROWN intermediates do.
KERNEL = """
import sys, time
import jax, jax.numpy as jnp
n, reps = int(sys.argv[1]), int(sys.argv[2])
f = jax.jit(lambda a: (a @ a).sum())
a = jnp.ones((n, n))
f(a).block_until_ready()
t = time.perf_counter()
for _ in range(reps):
    f(a).block_until_ready()
print(time.perf_counter() - t)
"""
KERNELS = {"in_cache": (128, 12000), "memory": (512, 800)}  # (n, repetitions): ~1.5 s alone each


def parallel_ceiling(repeats: int = 3) -> dict[str, dict[str, float]]:
    """Per kernel, the speedup two processes reach here: 2 × (seconds alone) / (seconds of the slower
    of two run at once), the round with the median alone time of `repeats`. 2 on two free cores; less
    where the two CPUs share what the work needs (memory bandwidth, a physical core's units)."""

    def timed(n: int, reps: int, procs: int) -> float:
        cmd = [sys.executable, "-c", KERNEL, str(n), str(reps)]
        env = {**os.environ, "XLA_FLAGS": parallel.SINGLE_THREADED_XLA}  # as each actor runs XLA
        ps = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env) for _ in range(procs)]
        return max(float(p.communicate()[0].strip().splitlines()[-1]) for p in ps)

    out = {}
    for name, (n, reps) in KERNELS.items():
        rounds = sorted((timed(n, reps, 1), timed(n, reps, 2)) for _ in range(repeats))
        alone, pair = rounds[len(rounds) // 2]
        out[name] = {"n": n, "s_alone": alone, "s_two_at_once": pair, "speedup": 2 * alone / pair}
    return out


def main(argv=None) -> None:
    a = parse_args(argv)
    if os.environ.get("SCALE_BENCH_VERBOSE"):
        from absl import logging

        logging.set_verbosity(logging.INFO)
    parallel.require_ray("benchmarks/scale_bench.py")
    use_compile_cache(a.compile_cache)  # before anything compiles
    common.ensure_double_mnist(a.data_dir)
    train_workdir = common.ensure_trained(a.model, train_config(a.model))
    out = common.OUT / "scale_bench"
    if a.prepare_only:
        for workers in (1, a.workers):
            timed_run(neighborhood_config(a, train_workdir, workers), out / f"prepare_{workers}")
        return
    argv = sys.argv[1:] if argv is None else list(argv)
    prepared_s = prepare_cache(a, argv) if a.compile_cache else 0.0
    load_before = os.getloadavg()
    common.log(f"load before: {load_before}")
    ceiling = parallel_ceiling()
    common.log(f"two processes at once on fixed XLA kernels: {ceiling}")
    seconds, summaries = {}, {}
    for workers in (1, a.workers):
        common.log(f"neighborhood, {a.images} images, workers = {workers}")
        seconds[workers], summaries[workers] = timed_run(
            neighborhood_config(a, train_workdir, workers), out / f"workers_{workers}"
        )
        common.log(f"workers = {workers}: {seconds[workers]:.1f} s; {summaries[workers]}")
    one, many = image_records(out / "workers_1"), image_records(out / f"workers_{a.workers}")
    identical = bool(one) and one == many
    by_payload = {}
    for payload in sorted({100, a.payload, 65536, 524288}):
        by_payload[payload] = driver_overhead(a.overhead_items, payload, out / "overhead")
        common.log(f"driver overhead per trivial item of {payload} bytes: {by_payload[payload]}")
    overhead = by_payload[a.payload]
    common.log(f"load after: {os.getloadavg()}")
    summary = {
        "items": a.images * 2,
        "images": a.images,
        "workers": a.workers,
        "seconds_1": seconds[1],
        "seconds_2": seconds[a.workers],
        "speedup": seconds[1] / seconds[a.workers],
        "ceiling": ceiling,  # what two processes can gain here on fixed kernels (`parallel_ceiling`)
        "identical": identical,
        "images_compared": len(one),
        "errors": summaries[a.workers]["errors"],
        "search_s_1": search_seconds(summaries[1]),
        "search_s_2": search_seconds(summaries[a.workers]),
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "driver_overhead_s_per_item": overhead["busy_s_per_item"],
        "driver_cpu_s_per_item": overhead["cpu_s_per_item"],
        "driver_wall_s_per_item": overhead["wall_s_per_item"],
        "payload_bytes": a.payload,
        "compile_cache": a.compile_cache or None,
        "cache_prepared_s": prepared_s,
        "driver_by_payload": by_payload,
        "settings": {
            "model": a.model,
            "layers": a.layers,
            "stages": a.stages,
            "time_limit": a.time_limit,
            "opt_queries": a.opt_queries,
        },
        "machine": common.machine(),
    }
    common.write_json(common.OUT / "scale_bench.json", summary)
    common.last_line(summary)


if __name__ == "__main__":
    main()
