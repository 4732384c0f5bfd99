"""The verify experiment on a local Ray cluster of several worker nodes (`ray.cluster_utils.Cluster`):
the same records as one process, after a worker node is killed mid-run, and after the driver is
killed and the run resumed. Slow (a cluster, one compiling actor per node): `make test-slow`.

Records are compared without their timing fields (`parallel.comparable`). The verifier's time limit
is far above what the tiny model's queries need, so no verdict depends on the clock.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from ml_collections import ConfigDict

from experiments import neighborhood as NE, parallel, verify as VE
from experiments.configs import neighborhood as neighborhood_configs, verify as verify_configs
from lnjax.io import read_json

pytestmark = [
    pytest.mark.slow,
    # The Cluster starts Ray's processes by fork + exec from this process, where JAX runs; JAX warns
    # about any fork, but the children exec at once.
    pytest.mark.filterwarnings(r"ignore:os\.fork\(\) was called:RuntimeWarning"),
]

REPO = Path(__file__).resolve().parents[2]
IMAGES = 12


def tiny_config(train: str, *, workers: int = 1, address: str = "") -> ConfigDict:
    """Verify `IMAGES` images of the tiny run, both digits, a layered box; nothing decided by the clock."""
    c = verify_configs.get_config("quickstart")
    c.train_workdir = train
    c.images = IMAGES
    c.target = "both"
    c.only_correct = False
    c.box.eps = 0.004
    c.box.growth = 1.0
    c.box.max_layers = 4
    c.verifier.time_limit = 120.0
    c.verifier.pgd.steps = 5
    c.verifier.pgd.restarts = 1
    c.workers = workers
    c.ray_address = address
    return c


@dataclasses.dataclass(frozen=True)
class SlowImageVerifier(VE.ImageVerifier):
    """`ImageVerifier` whose items take ≥ `delay` s, so a run lasts long enough to be interrupted
    (the records are the same: the delay only adds time)."""

    delay: float = 0.5

    def __call__(self) -> parallel.ItemWorker:
        worker = super().__call__()

        def compute(index: int) -> Any:
            time.sleep(self.delay)
            return worker.compute(index)

        return parallel.ItemWorker(compute, worker.close)


def run_slow(train: str, workers: int, address: str, workdir: str) -> None:
    """The driver of the killed-driver test (run in a subprocess): slow items on the cluster."""
    VE.ImageVerifier = SlowImageVerifier  # type: ignore[misc]  (this process only)
    VE.run(tiny_config(train, workers=workers, address=address), workdir, progress=False)


def records(workdir: Path) -> dict[str, Any]:
    files = sorted((workdir / "verdicts").glob("img_*.json"))
    return {f.name: parallel.comparable(read_json(f)) for f in files if not f.name.endswith(".error.json")}


def wait_for_records(workdir: Path, n: int, timeout: float = 600.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        verdicts = workdir / "verdicts"
        found = len(list(verdicts.glob("img_?????.json"))) if verdicts.is_dir() else 0
        if found >= n:
            return found
        time.sleep(0.05)
    raise TimeoutError(f"fewer than {n} records in {workdir} after {timeout} s")


@pytest.fixture(scope="module")
def cluster():
    """A head without CPUs (the driver connects there) and three worker nodes of one CPU each."""
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    for _ in range(3):
        c.add_node(num_cpus=1)
    c.wait_for_nodes()
    yield c
    c.shutdown()


@pytest.fixture(scope="module")
def reference(tmp_path_factory, dmnist_run) -> tuple[str, dict[str, Any], Path]:
    """(train workdir, the records of an uninterrupted run in this process, its workdir)."""
    train = str(dmnist_run)
    workdir = tmp_path_factory.mktemp("cluster") / "one"
    summary = VE.run(tiny_config(train), str(workdir), progress=False)
    assert summary["images"] == IMAGES and summary["errors"] == 0
    return train, records(workdir), workdir


def test_verify_on_the_cluster_equals_one_process(cluster, reference, tmp_path):
    train, expected, one = reference
    summary = VE.run(tiny_config(train, workers=3, address=cluster.address), str(tmp_path / "three"))
    assert summary["images"] == IMAGES and summary["errors"] == 0
    assert records(tmp_path / "three") == expected
    # workers and ray_address are not recorded: the cluster run could resume the local one.
    assert read_json(tmp_path / "three" / "config.json") == read_json(one / "config.json")


def test_killing_a_worker_node_mid_run_loses_nothing(cluster, reference, tmp_path, monkeypatch):
    train, expected, _ = reference
    monkeypatch.setattr(VE, "ImageVerifier", SlowImageVerifier)
    workdir = tmp_path / "killed_node"
    result: dict[str, Any] = {}

    def drive() -> None:
        try:
            result["summary"] = VE.run(
                tiny_config(train, workers=3, address=cluster.address), str(workdir), progress=False
            )
        except BaseException as e:  # re-raised by the test below
            result["error"] = e

    thread = threading.Thread(target=drive)
    thread.start()
    at_kill = wait_for_records(workdir, 2)
    victim = next(iter(cluster.worker_nodes))
    cluster.remove_node(victim, allow_graceful=False)  # its raylet and its actor die
    thread.join(timeout=900)
    cluster.add_node(num_cpus=1)  # back to three worker nodes for the next test
    assert not thread.is_alive() and "error" not in result, result.get("error")
    assert at_kill < IMAGES, "the run finished before the node was killed"
    assert result["summary"]["errors"] == 0 and records(workdir) == expected


def test_resume_after_killing_the_driver(cluster, reference, tmp_path):
    train, expected, _ = reference
    workdir = tmp_path / "killed_driver"
    script = (
        f"import sys; sys.path.insert(0, {str(REPO)!r}); "
        "from tests.experiments.test_cluster_slow import run_slow; "
        f"run_slow({train!r}, 3, {cluster.address!r}, {str(workdir)!r})"
    )
    driver = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stderr=subprocess.DEVNULL)
    try:
        wait_for_records(workdir, 3)
    finally:
        driver.kill()
        driver.wait()
    before = {f.name: f.stat().st_mtime_ns for f in (workdir / "verdicts").glob("img_?????.json")}
    assert 3 <= len(before) < IMAGES, "the driver finished before it was killed"

    summary = VE.run(tiny_config(train, workers=2, address=cluster.address), str(workdir), progress=False)
    assert summary["images"] == IMAGES and summary["errors"] == 0
    assert records(workdir) == expected
    after = {f.name: f.stat().st_mtime_ns for f in (workdir / "verdicts").glob("img_?????.json")}
    assert all(after[name] == mtime for name, mtime in before.items()), "finished images were recomputed"


def test_neighborhood_on_the_cluster_equals_one_process(cluster, reference, tmp_path):
    """Items are (image, method) searches; the image records (assembled on the driver) and the
    figures are the same as in one process."""
    train = reference[0]

    def config(workers: int, address: str = "") -> ConfigDict:
        c = neighborhood_configs.get_config("quickstart")
        c.train_workdir = train
        c.images, c.only_correct, c.figure_images = 3, False, 1
        c.methods = "optimizer_fixed,optimizer_sensitivity,baseline"
        c.layers.max_layers = 3
        c.verifier.stages = "pgd,crown"
        c.verifier.time_limit = 120.0
        c.optimizer.max_queries, c.optimizer.time_budget = 3, 0.0
        c.baseline.max_queries = 4
        # certificates without a time budget: nothing in the records may depend on the clock
        c.certificate.restarts, c.certificate.steps, c.certificate.time_budget = 2, 3, 0.0
        c.workers, c.ray_address = workers, address
        return c

    one, many = tmp_path / "one", tmp_path / "many"
    NE.run(config(1), str(one), progress=False)
    summary = NE.run(config(3, cluster.address), str(many), progress=False)
    assert summary["images"] == 3 and summary["errors"] == 0

    def image_records(workdir: Path) -> dict[str, Any]:
        files = sorted((workdir / "results").glob("img_*.json"))
        return {f.name: parallel.comparable(read_json(f)) for f in files}

    assert len(image_records(one)) == 3 and image_records(many) == image_records(one)
    assert not list((many / "results" / "partial").glob("*.json"))  # assembled, then removed
    assert (many / "figures" / "img_00000_heatmap.png").is_file()


def test_boundary_stages_on_the_cluster_equal_one_process(cluster, mnist_run, tmp_path):
    """Items are (model, input kind) stages (npz records); the detectors run on the driver."""
    from experiments import boundary as BE
    from lnjax.data import load_npz
    from tests.experiments.test_boundary import tiny

    def config(workers: int, address: str = "") -> ConfigDict:
        c = tiny(f"normal={mnist_run},again={mnist_run}")
        c.workers, c.ray_address = workers, address
        return c

    one, many = tmp_path / "one", tmp_path / "many"
    BE.run(config(1), str(one), progress=False)
    BE.run(config(3, cluster.address), str(many), progress=False)
    files = sorted(p.relative_to(one) for p in (one / "stages").rglob("*.npz"))
    stages = {name.parent for name in files}  # stages/<model>/<kind>/<part>.npz
    assert len(stages) == 2 * 3  # two models × (benign, fgsm, optmargin)
    assert len(files) == 2 * len(stages)  # the tiny run's images make two parts per stage
    for name in files:
        a, b = load_npz(one / name), load_npz(many / name)
        assert set(a) == set(b), name
        for key in a:
            if not key.endswith("_seconds"):
                assert a[key].tobytes() == b[key].tobytes(), (name, key)
    table = ("table1", "table2", "detector")
    tables = [parallel.comparable({k: read_json(w / "metrics.json")[k] for k in table}) for w in (one, many)]
    assert tables[0] == tables[1]
