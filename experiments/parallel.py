"""Per-item work on Ray: one actor per worker, the driver writes each record as it arrives.

An experiment that walks over items (verify: images; neighborhood: image × method) runs them in
this process when `config.workers` is 1 (no Ray is imported), or on `workers` Ray actors otherwise:

  settings = parallel.settings_of(c)                 # checked before the workdir is touched
  outcome = parallel.run_items(store, keys, setup, settings, desc="verify", progress=True)

`setup` is a picklable callable (a frozen dataclass holding the resolved config) that each actor
calls once: it loads the trained run, builds and warms up the verifier and returns an `ItemWorker`
whose `compute(key)` returns the item's record. So an actor compiles once, not once per item.

The driver (`drive`) keeps one item in flight per actor, saves each record atomically through the
`RecordStore` as soon as it arrives (a killed driver loses nothing finished; a restart skips it),
shows one progress bar over the items (with ETA), re-submits an item whose actor died (a node that
went away, a killed process) to a live or replacement actor, and records an error for an item that
raised (`<item>.error.json`; retried on the next run) while the other items go on.

Where Ray runs (`config.ray_address`): "" starts a local Ray instance for the run (workers > 1);
"auto" or "host:port" joins the cluster started with `ray start` on this machine's network;
"ray://host:port" connects through Ray Client. Every node must see the training run and the data at
the same paths and have the same lnjax installed (the driver's source folder is put first on the
actors' PYTHONPATH, so a shared checkout works without installing). On a cluster with GPUs each
actor asks for one GPU (one actor per device); `workers = 0` starts one actor per GPU (or per CPU
when there are none).

Records are identical to workers = 1 when an item's result depends only on its key and the
configuration (per-item PRNG keys come from `fold_in(root, item)`) and no verdict is decided by the
wall clock (time limits generous for what the stages need; see README "Running on a cluster").
"""

from __future__ import annotations

import collections
import dataclasses
import importlib.util
import os
import re
import warnings
from collections.abc import Callable, Hashable, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from absl import logging
from ml_collections import ConfigDict
from tqdm import tqdm

from experiments.common import UsageError, require
from experiments.records import RecordStore

EXTRA = "pip install 'lnjax[cluster]'"
_ADDRESS = re.compile(r"^(auto|(ray://)?[A-Za-z0-9_.\-\[\]:]+:\d+)$")


class ClusterSettings(NamedTuple):
    """How the items of a run are executed (not what they compute: not part of config.json).

    Attributes:
      workers: 1 runs in this process; n > 1 runs n Ray actors; 0 one per GPU (else CPU) of the cluster.
      address: "" (a local Ray started for the run), "auto", "host:port" or "ray://host:port".
    """

    workers: int
    address: str

    @property
    def in_process(self) -> bool:
        return self.workers == 1 and not self.address


class ItemWorker(NamedTuple):
    """What a setup returns: `compute(key) -> record` and `close()` (frees e.g. the MILP worker)."""

    compute: Callable[[Any], Any]
    close: Callable[[], None] = lambda: None


def settings_of(c: ConfigDict) -> ClusterSettings:
    """The checked `workers` and `ray_address` of an experiment config.

    Raises:
      UsageError: a negative or non-integer worker count, a malformed address, or Ray missing when
        the run needs it (the message names the `cluster` extra).
    """
    workers, address = c.get("workers", 1), str(c.get("ray_address", "")).strip()
    require(
        isinstance(workers, int) and not isinstance(workers, bool) and workers >= 0,
        f"workers = {workers!r} must be an integer ≥ 0 (1: this process; n: n Ray actors; 0: one per device)",
    )
    require(
        not address or bool(_ADDRESS.match(address)),
        f"ray_address = {address!r}; expected '' (a local Ray), 'auto', 'host:port' or 'ray://host:port'",
    )
    settings = ClusterSettings(int(workers), address)
    if not settings.in_process:
        require_ray(f"workers = {workers}" if workers != 1 else f"ray_address = {address!r}")
    return settings


def require_ray(why: str) -> None:
    """UsageError naming the extra unless Ray can be imported."""
    if importlib.util.find_spec("ray") is None:
        raise UsageError(f"{why} needs Ray, which is not installed; {EXTRA}")


def comparable(record: Any) -> Any:
    """`record` without its timing fields (`seconds` and every `*_s` key, at any depth): what must
    be identical between runs with different worker counts."""
    if isinstance(record, dict):
        return {k: comparable(v) for k, v in record.items() if not (k == "seconds" or str(k).endswith("_s"))}
    if isinstance(record, list):
        return [comparable(v) for v in record]
    return record


# ------------------------------------------------------------------------------------- the driver


class WorkerLost(Exception):
    """The worker running an item went away (process killed, node died): the item is re-submitted."""


class ItemFailed(Exception):
    """The item's computation raised; the message is recorded as the item's error."""


class SetupFailed(Exception):
    """A worker's setup raised (e.g. the training run is not at the same path on its node): the run
    stops, since every worker would fail the same way."""


class Executor(Protocol):
    """The driver's view of a pool of workers (Ray actors, or a fake in tests). Futures are hashable."""

    def start(self) -> Any:
        """A new worker; its setup runs in the background."""
        ...

    def ready(self, worker: Any) -> Hashable:
        """A future that resolves once `worker`'s setup is done (WorkerLost if it failed)."""
        ...

    def submit(self, worker: Any, key: Any) -> Hashable:
        """A future of `worker`'s record for `key`."""
        ...

    def wait(self, futures: Sequence[Hashable], timeout: float) -> list[Hashable]:
        """The futures among `futures` that are done (at least one, unless `timeout` s passed)."""
        ...

    def get(self, future: Hashable) -> Any:
        """The value of a done future; raises WorkerLost, ItemFailed or (for `ready`) SetupFailed."""
        ...

    def stop(self, workers: Sequence[Any]) -> None:
        """Ends `workers` (idempotent, also for workers that died)."""
        ...


class Outcome(NamedTuple):
    """The records of a run's items in key order (finished ones), and the error of each failed item."""

    records: dict[Any, Any]
    errors: dict[Any, str]


@dataclasses.dataclass
class _Pool:
    """The driver's state: workers starting, idle and running, items to do, losses per item."""

    executor: Executor
    store: RecordStore
    size: int  # workers wanted (at most the items left)
    desc: str
    max_lost: int
    todo: collections.deque = dataclasses.field(default_factory=collections.deque)
    starting: dict[Hashable, Any] = dataclasses.field(default_factory=dict)  # ready future -> worker
    running: dict[Hashable, tuple[Any, Any]] = dataclasses.field(default_factory=dict)  # -> (worker, key)
    idle: list[Any] = dataclasses.field(default_factory=list)
    lost: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    errors: dict[Any, str] = dataclasses.field(default_factory=dict)
    start_failures: int = 0

    def fill(self) -> None:
        """Starts workers up to `size` (never more than items left) and gives each idle one an item."""
        while len(self.idle) + len(self.running) + len(self.starting) < min(self.size, len(self.todo)):
            worker = self.executor.start()
            self.starting[self.executor.ready(worker)] = worker
        while self.todo and self.idle:
            worker, key = self.idle.pop(), self.todo.popleft()
            self.running[self.executor.submit(worker, key)] = (worker, key)

    def on_ready(self, future: Hashable) -> None:
        worker = self.starting.pop(future)
        try:
            self.executor.get(future)
        except SetupFailed:
            self.executor.stop([worker])
            raise
        except WorkerLost as e:
            self.start_failures += 1
            self.executor.stop([worker])
            logging.warning("%s: a worker was lost while starting (%s)", self.desc, e)
            if self.start_failures >= self.max_lost + self.size:
                raise SetupFailed(
                    f"workers were lost {self.start_failures} times while starting ({e})"
                ) from e
            return
        logging.info("%s: a worker is ready (%d idle)", self.desc, len(self.idle) + 1)
        self.idle.append(worker)

    def on_result(self, future: Hashable) -> bool:
        """Saves the record (or error) of a finished item; False if the item goes back to `todo`."""
        worker, key = self.running.pop(future)
        try:
            record = self.executor.get(future)
        except WorkerLost as e:
            self.executor.stop([worker])
            self.lost[key] += 1
            logging.warning(
                "%s: the worker of item %s died (%s), %d time(s)", self.desc, key, e, self.lost[key]
            )
            if self.lost[key] < self.max_lost:
                self.todo.appendleft(key)
                return False
            self.errors[key] = f"its worker died {self.lost[key]} times (last: {e})"
            self.store.save_error(key, self.errors[key])
            return True
        except ItemFailed as e:
            self.errors[key] = str(e)
            self.store.save_error(key, self.errors[key])
            logging.error("%s: item %s failed: %s", self.desc, key, e)
        else:
            self.store.save(key, record)
            logging.info("%s: item %s saved", self.desc, key)
        self.idle.append(worker)
        return True

    def stop_all(self) -> None:
        self.executor.stop([*self.idle, *(w for w, _ in self.running.values()), *self.starting.values()])


def drive(
    store: RecordStore,
    keys: Iterable[Any],
    executor: Executor,
    *,
    workers: int,
    desc: str = "items",
    progress: bool = False,
    max_lost: int = 3,
    poll_s: float = 60.0,
) -> Outcome:
    """Computes the missing items of `keys` on up to `workers` workers of `executor`.

    Args:
      store: where records are loaded from (finished items are skipped) and saved to, one atomic
        file per item as soon as it arrives.
      keys: the items, in the order they are submitted.
      executor: starts workers and runs items on them.
      workers: how many workers at most (never more than there are missing items).
      max_lost: an item whose worker died this many times gets an error record instead.
      poll_s: how often a driver waiting for workers logs that it waits.

    Returns:
      Outcome: every finished record (loaded or computed) and the errors of this run's failed items.

    Raises:
      SetupFailed: a worker's setup raised, or workers were lost while starting `max_lost + workers`
        times.
    """
    keys = list(keys)
    pool = _Pool(
        executor, store, max(workers, 1), desc, max_lost, todo=collections.deque(store.missing(keys))
    )
    bar = tqdm(
        total=len(keys), initial=len(keys) - len(pool.todo), desc=desc, disable=not progress, smoothing=0
    )
    try:
        while pool.todo or pool.running:
            pool.fill()
            done = executor.wait([*pool.running, *pool.starting], timeout=poll_s)
            if not done:
                logging.info(
                    "%s: %d running, %d workers starting", desc, len(pool.running), len(pool.starting)
                )
            for future in done:
                if future in pool.starting:
                    pool.on_ready(future)
                elif pool.on_result(future):
                    bar.update(1)
    finally:
        bar.close()
        pool.stop_all()
    records = {k: store.load(k) for k in keys if k not in pool.errors and store.done(k)}
    return Outcome(records, pool.errors)


# ------------------------------------------------------------------------------------------- Ray


class _ItemActor:
    """The Ray actor: runs `setup()` once (load, compile), then computes items."""

    def __init__(self, setup: Callable[[], ItemWorker]):
        self._worker = setup()

    def ready(self) -> int:
        return os.getpid()

    def compute(self, key: Any) -> Any:
        return self._worker.compute(key)

    def close(self) -> None:
        self._worker.close()


@dataclasses.dataclass
class RayExecutor:
    """Executor over Ray actors of `_ItemActor` (Ray must be initialised).

    Attributes:
      setup: the picklable setup every actor calls once.
      num_cpus, num_gpus: the resources each actor asks for (1 CPU; 1 GPU on clusters with GPUs).
    """

    setup: Callable[[], ItemWorker]
    num_cpus: float = 1.0
    num_gpus: float = 0.0

    def __post_init__(self) -> None:
        import ray
        import ray.exceptions

        self._ray: Any = ray
        self._errors = ray.exceptions
        self._actor_class = ray.remote(_ItemActor)

    def start(self) -> Any:
        options = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus, "max_restarts": 0}
        return self._actor_class.options(**options).remote(self.setup)  # type: ignore[attr-defined]

    def ready(self, worker: Any) -> Hashable:
        return worker.ready.remote()

    def submit(self, worker: Any, key: Any) -> Hashable:
        return worker.compute.remote(key)

    def wait(self, futures: Sequence[Hashable], timeout: float) -> list[Hashable]:
        done, _ = self._ray.wait(list(futures), num_returns=1, timeout=timeout)
        return list(done)

    def get(self, future: Hashable) -> Any:
        ex = self._errors
        try:
            return self._ray.get(future)
        except ex.RayTaskError as e:  # the item's own exception (the actor lives on)
            cause = e.cause if isinstance(e.cause, BaseException) else e
            raise ItemFailed(f"{type(cause).__name__}: {cause}".splitlines()[0]) from e
        except ex.RayActorError as e:
            if e.actor_init_failed:  # the setup raised: its exception is the message's last line
                lines = [line for line in str(e).splitlines() if line.strip()]
                raise SetupFailed(lines[-1] if lines else type(e).__name__) from e
            raise WorkerLost(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
        except ex.RayError as e:  # node died, object lost, ...
            raise WorkerLost(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e

    def stop(self, workers: Sequence[Any]) -> None:
        """Asks every actor to close (free its MILP worker), waits ≤ 10 s in all, then kills them (a
        busy or dead actor is killed at once; its MILP worker exits when its socket closes)."""
        closing = [w.close.remote() for w in workers]
        if closing:
            self._ray.wait(closing, num_returns=len(closing), timeout=10)
        for worker in workers:
            self._ray.kill(worker, no_restart=True)


# Each actor asks Ray for one CPU, so its XLA CPU client runs ops on one thread (by default every
# actor would start a thread pool over all the node's cores: n actors, n × cores threads).
SINGLE_THREADED_XLA = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def source_root() -> Path:
    """The folder holding the `experiments` and `lnjax` packages this driver runs."""
    return Path(__file__).resolve().parent.parent


def actor_env() -> dict[str, str]:
    """The environment variables the actors get: the driver's source folder first on their PYTHONPATH,
    single-threaded XLA CPU ops (`SINGLE_THREADED_XLA`: one actor per CPU; accelerators are
    unaffected) and the driver's persistent compilation cache (`experiments.common.use_compile_cache`),
    if any: the actors on a node compile each program once between them (on a cluster, a folder on a
    shared file system serves every node)."""
    import jax

    path = os.pathsep.join(p for p in (str(source_root()), os.environ.get("PYTHONPATH", "")) if p)
    xla = " ".join(f for f in (os.environ.get("XLA_FLAGS", ""), SINGLE_THREADED_XLA) if f)
    env = {"PYTHONPATH": path, "XLA_FLAGS": xla}
    cache = jax.config.jax_compilation_cache_dir  # pyright: ignore[reportAttributeAccessIssue] (not in the stubs)
    if cache:
        env["JAX_COMPILATION_CACHE_DIR"] = str(cache)
    return env


def connect(settings: ClusterSettings) -> bool:
    """Initialises Ray for the run (unless it already is), the actors' environment from `actor_env`;
    True if this call did (then shut it down)."""
    import ray

    if ray.is_initialized():
        return False
    runtime_env = {"env_vars": actor_env()}
    kwargs: dict[str, Any] = {"runtime_env": runtime_env, "logging_level": "warning"}
    with warnings.catch_warnings():
        # Ray starts its processes with fork + exec; JAX (already running in the driver) warns about
        # any fork, but nothing of JAX runs in a child that execs at once.
        warnings.filterwarnings("ignore", r"os\.fork\(\) was called", RuntimeWarning)
        if settings.address:
            ray.init(address=settings.address, **kwargs)
        else:
            cpus = settings.workers or os.cpu_count() or 1
            ray.init(num_cpus=cpus, include_dashboard=False, **kwargs)
    return True


def actor_resources(workers: int) -> tuple[int, float]:
    """(number of actors, GPUs per actor) on the connected cluster: one GPU each where there are GPUs."""
    import ray

    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    count = workers or gpus or int(resources.get("CPU", 1))
    return count, 1.0 if gpus else 0.0


def run_items(
    store: RecordStore,
    keys: Iterable[Any],
    setup: Callable[[], ItemWorker],
    settings: ClusterSettings,
    *,
    desc: str = "items",
    progress: bool = False,
) -> Outcome:
    """The records of `keys` computed on Ray actors made from `setup` (see the module docstring).

    Nothing is started when every item is finished. Ray is shut down afterwards if this call
    initialised it (a cluster given by address keeps running).
    """
    keys = list(keys)
    if not store.missing(keys):
        return Outcome(store.load_all(keys), {})
    started = connect(settings)
    try:
        count, gpus = actor_resources(settings.workers)
        logging.info("%s: %d Ray actors (%s GPU each)", desc, count, gpus)
        executor = RayExecutor(setup, num_cpus=1.0, num_gpus=gpus)
        return drive(store, keys, executor, workers=count, desc=desc, progress=progress)
    except SetupFailed as e:
        raise UsageError(f"a Ray worker could not set up the run: {e}") from e
    finally:
        if started:
            import ray

            ray.shutdown()
