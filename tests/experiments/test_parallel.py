"""experiments.parallel without Ray: settings, the missing extra, and the driver loop on a fake executor
(dying workers, failing items, resume). The Ray cluster tests are in test_cluster_slow.py."""

from __future__ import annotations

import collections
import importlib.util
import itertools
import os
from pathlib import Path
from typing import Any

import pytest
from ml_collections import ConfigDict

from experiments import parallel
from experiments.common import UsageError, use_compile_cache
from experiments.configs import (
    boundary as boundary_configs,
    neighborhood as neighborhood_configs,
    verify as verify_configs,
)
from experiments.records import RecordStore
from lnjax.io import read_json

# ----------------------------------------------------------------------------------------- settings


@pytest.mark.parametrize("address", ["", "auto", "ray://head.example:10001", "10.0.0.5:6379", "[::1]:6379"])
def test_good_settings(address):
    c = ConfigDict({"workers": 1, "ray_address": address})
    s = parallel.settings_of(c)
    assert s == parallel.ClusterSettings(1, address) and s.in_process == (address == "")


@pytest.mark.parametrize(
    "workers, address, message",
    [
        (-1, "", "workers = -1 must be an integer ≥ 0"),
        (True, "", "workers = True must be an integer"),
        (2, "http://head:8265", "ray_address = 'http://head:8265'"),
        (2, "head", "ray_address = 'head'"),
    ],
)
def test_bad_settings(workers, address, message):
    with pytest.raises(UsageError, match=message):
        parallel.settings_of(ConfigDict({"workers": workers, "ray_address": address}))


def test_the_experiments_default_to_one_process():
    configs = (
        verify_configs.get_config("quickstart"),
        neighborhood_configs.get_config("quickstart"),
        boundary_configs.get_config("boundary_mnist"),
    )
    for c in configs:
        assert parallel.settings_of(c).in_process


@pytest.fixture
def no_ray(monkeypatch):
    """Ray looks uninstalled (importlib.util.find_spec("ray") is None)."""
    real = importlib.util.find_spec
    fake = lambda name, *a: None if name == "ray" else real(name, *a)
    monkeypatch.setattr(importlib.util, "find_spec", fake)


def test_workers_without_ray_name_the_extra(no_ray, tmp_path):
    c = ConfigDict({"workers": 2, "ray_address": ""})
    with pytest.raises(UsageError, match=r"workers = 2 needs Ray.*pip install 'lnjax\[cluster\]'"):
        parallel.settings_of(c)
    c = ConfigDict({"workers": 1, "ray_address": "auto"})
    with pytest.raises(UsageError, match=r"ray_address = 'auto' needs Ray"):
        parallel.settings_of(c)
    assert parallel.settings_of(ConfigDict({"workers": 1, "ray_address": ""})).in_process  # no Ray needed


def test_cli_workers_without_ray_is_one_line_exit_2(no_ray, cli, tmp_path):
    workdir = tmp_path / "never"
    flagfile = "--flagfile=experiments/flagfiles/verify.flags"
    result = cli(flagfile, f"--workdir={workdir}", "--config.workers=4")
    assert result.code == 2, result.err
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1 and "pip install 'lnjax[cluster]'" in lines[0], result.err
    assert not workdir.exists()


def test_actors_get_the_drivers_compile_cache(tmp_path):
    import jax

    env = parallel.actor_env()
    assert "JAX_COMPILATION_CACHE_DIR" not in env  # none set in the driver: none for the actors
    assert parallel.SINGLE_THREADED_XLA in env["XLA_FLAGS"]
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(parallel.source_root())
    try:
        folder = use_compile_cache(str(tmp_path / "new" / "jax"))
        assert folder is not None and Path(folder).is_dir() and Path(folder).is_absolute()
        assert parallel.actor_env()["JAX_COMPILATION_CACHE_DIR"] == folder
    finally:
        jax.config.update("jax_compilation_cache_dir", None)  # (nothing compiled in between)
    assert use_compile_cache("") is None and jax.config.jax_compilation_cache_dir is None


def test_comparable_drops_timing_fields_only():
    record = {"a": 1, "seconds": 2.0, "stats": {"time_s": {"pgd": 1}, "binaries": 3}}
    record["q"] = [{"verify_s": 1, "b": 2}]
    assert parallel.comparable(record) == {"a": 1, "stats": {"binaries": 3}, "q": [{"b": 2}]}


# ------------------------------------------------------------------------------ the driver, faked


class FakeExecutor:
    """Workers are numbers; futures are computed at submit time and come back in submission order.

    Args:
      compute: key -> record (may raise: the item fails).
      die: {key: n}: the worker running `key` dies the first n times.
      setup_error: every worker's setup raises this (SetupFailed).
    """

    def __init__(self, compute, *, die: dict[Any, int] | None = None, setup_error: str = ""):
        self.compute, self.die, self.setup_error = compute, collections.Counter(die or {}), setup_error
        self.ids = itertools.count()
        self.started: list[int] = []
        self.stopped: set[int] = set()
        self.dead: set[int] = set()
        self.ran: list[tuple[int, Any]] = []  # (worker, key) in submission order
        self.results: dict[object, Any] = {}

    def start(self) -> int:
        worker = next(self.ids)
        self.started.append(worker)
        return worker

    def _future(self, outcome: Any) -> object:
        future = object()
        self.results[future] = outcome
        return future

    def ready(self, worker: int) -> object:
        return self._future(parallel.SetupFailed(self.setup_error) if self.setup_error else worker)

    def submit(self, worker: int, key: Any) -> object:
        assert worker not in self.dead and worker not in self.stopped, "an item went to a dead worker"
        self.ran.append((worker, key))
        if self.die[key] > 0:
            self.die[key] -= 1
            self.dead.add(worker)
            return self._future(parallel.WorkerLost("node died"))
        try:
            return self._future(self.compute(key))
        except Exception as e:
            return self._future(parallel.ItemFailed(f"{type(e).__name__}: {e}"))

    def wait(self, futures, timeout):
        return [f for f in self.results if f in set(futures)][:1]

    def get(self, future):
        outcome = self.results.pop(future)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def stop(self, workers) -> None:
        self.stopped.update(workers)


def record_of(key: int) -> dict[str, Any]:
    return {"item": key, "value": key * key}


def test_drive_computes_saves_and_resumes(tmp_path):
    store: RecordStore[int] = RecordStore(tmp_path, "item_{:03d}")
    fake = FakeExecutor(record_of)
    out = parallel.drive(store, range(5), fake, workers=2)
    assert out.records == {k: record_of(k) for k in range(5)} and out.errors == {}
    assert [read_json(store.path(k)) for k in range(5)] == [record_of(k) for k in range(5)]
    assert len(fake.started) == 2 and set(fake.stopped) == {0, 1}  # every worker ended
    assert {w for w, _ in fake.ran} == {0, 1}

    # Resume: finished items are loaded, only the missing ones run; no worker starts when none is.
    store.path(3).unlink()
    again = FakeExecutor(record_of)
    out = parallel.drive(store, range(5), again, workers=4)
    assert [k for _, k in again.ran] == [3] and len(again.started) == 1
    assert out.records == {k: record_of(k) for k in range(5)}
    idle = FakeExecutor(record_of)
    assert parallel.drive(store, range(5), idle, workers=4).records == out.records and not idle.started


def test_a_dead_worker_loses_nothing(tmp_path):
    store: RecordStore[int] = RecordStore(tmp_path, "item_{:03d}")
    fake = FakeExecutor(record_of, die={2: 1, 4: 2})
    out = parallel.drive(store, range(6), fake, workers=2)
    assert out.records == {k: record_of(k) for k in range(6)} and out.errors == {}
    assert [k for _, k in fake.ran].count(2) == 2 and [k for _, k in fake.ran].count(4) == 3
    assert 2 < len(fake.started) <= 2 + 3 and fake.dead <= fake.stopped  # replaced while work is left


def test_an_item_whose_worker_always_dies_gets_an_error(tmp_path):
    store: RecordStore[int] = RecordStore(tmp_path, "item_{:03d}")
    fake = FakeExecutor(record_of, die={1: 99})
    out = parallel.drive(store, range(3), fake, workers=2, max_lost=3)
    assert set(out.records) == {0, 2} and "worker died 3 times" in out.errors[1]
    assert read_json(store.error_path(1))["error"] == out.errors[1] and not store.done(1)


def test_a_failing_item_is_recorded_and_the_rest_go_on_then_retried(tmp_path):
    store: RecordStore[int] = RecordStore(tmp_path, "item_{:03d}")

    def flaky(key):
        if key == 1:
            raise ValueError("bad box")
        return record_of(key)

    out = parallel.drive(store, range(4), FakeExecutor(flaky), workers=2)
    assert set(out.records) == {0, 2, 3} and out.errors == {1: "ValueError: bad box"}
    assert read_json(store.error_path(1)) == {"item": 1, "error": "ValueError: bad box"}
    # The next run retries the failed item only; its error file goes once it succeeds.
    again = FakeExecutor(record_of)
    out = parallel.drive(store, range(4), again, workers=2)
    assert [k for _, k in again.ran] == [1] and out.errors == {} and len(out.records) == 4
    assert not store.error_path(1).exists()


def test_a_failing_setup_stops_the_run(tmp_path):
    store: RecordStore[int] = RecordStore(tmp_path, "item_{:03d}")
    fake = FakeExecutor(record_of, setup_error="UsageError: runs/x holds no finished training run")
    with pytest.raises(parallel.SetupFailed, match="no finished training run"):
        parallel.drive(store, range(3), fake, workers=2)
    assert not fake.ran and set(fake.started) <= fake.stopped


def test_tuple_items(tmp_path):
    store: RecordStore[tuple[int, str]] = RecordStore(tmp_path, "img_{:05d}_{}")
    keys = [(i, m) for i in range(2) for m in ("a", "b")]
    out = parallel.drive(store, keys, FakeExecutor(lambda k: {"k": list(k)}), workers=3)
    assert list(out.records) == keys and store.path((1, "b")).name == "img_00001_b.json"
