"""experiments.run: one subprocess smoke test of the CLI end to end; every bad-input case in-process
(exit 2, one line, no files); missing data and workdir checks on the train experiment."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ml_collections import ConfigDict

from experiments import train as train_experiment
from experiments.common import UsageError
from experiments.configs import train as train_configs
from lnjax.io import read_json

ROOT = Path(__file__).resolve().parents[2]


def tiny_overrides(data_dir):
    return [
        f"--config.data.data_dir={data_dir}",
        "--config.train.steps=4",
        "--config.train.batch_size=16",
        "--config.train.checkpoint_every=2",
        "--config.eval.batch_size=10",
        "--config.model=dmnist_tiny",
        "--noprogress",
    ]


def tiny_config(data_dir, preset="quickstart") -> ConfigDict:
    c = train_configs.get_config(preset)
    c.data.data_dir = str(data_dir)
    c.train.steps, c.train.batch_size, c.train.checkpoint_every, c.eval.batch_size = 4, 16, 2, 10
    c.eval.robust_n, c.eval.robust_steps = 8, 2
    c.model = "dmnist_tiny"
    c.train.log_every = 1
    return c


def run_cli(*args, cwd=ROOT, env=None):
    return subprocess.run(
        [sys.executable, "-m", "experiments.run", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "JAX_PLATFORMS": "cpu", **(env or {})},
    )


def test_quickstart_cli_end_to_end(data_dir, tmp_path, cli):
    """The one subprocess test: `python -m experiments.run` trains, writes its files, prints JSON, and
    stores its compiled programs in the persistent compilation cache (every one: min time 0 here)."""
    workdir = tmp_path / "qs"
    out = run_cli(
        "--flagfile=experiments/flagfiles/quickstart.flags",
        f"--workdir={workdir}",
        f"--compile_cache={tmp_path / 'jax'}",
        *tiny_overrides(data_dir),
        env={"JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert any((tmp_path / "jax").glob("jit_*")), "nothing in the compilation cache"
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(summary) >= {"top2_exact", "per_label", "workdir"}
    assert 0 <= summary["top2_exact"] <= 1 and 0 <= summary["per_label"] <= 1
    assert Path(summary["workdir"]) == workdir
    for name in ("config.json", "metrics.json", "history.json", "log.txt", "figures/training.png"):
        assert (workdir / name).is_file(), name
    metrics = read_json(workdir / "metrics.json")
    assert metrics["test"]["n"] == 32 and metrics["test"]["top2_exact"] == summary["top2_exact"]
    assert read_json(workdir / "config.json")["train"]["steps"] == 4
    # the same command again (in-process) reuses the finished run and reports the same metrics
    again = cli(
        "--flagfile=experiments/flagfiles/quickstart.flags", f"--workdir={workdir}", *tiny_overrides(data_dir)
    )
    assert again.code == 0, again.err[-2000:]
    assert json.loads(again.out.strip().splitlines()[-1]) == summary
    assert read_json(workdir / "metrics.json")["train"] == metrics["train"]  # training stats kept


def _bad(cli, data_dir, tmp_path, *extra, flagfile="quickstart"):
    workdir = tmp_path / "never"
    out = cli(
        f"--flagfile=experiments/flagfiles/{flagfile}.flags",
        f"--workdir={workdir}",
        *tiny_overrides(data_dir),
        *extra,
    )
    return out, workdir


BAD_CASES = {
    "unknown flagfile": ([], "nope", "nope.flags"),
    "unknown preset": (
        ["--config=experiments/configs/train.py:nope"],
        "quickstart",
        "unknown training preset",
    ),
    "unknown experiment": (["--config.experiment=dance"], "quickstart", "unknown experiment 'dance'"),
    "negative eps": (["--config.defense.eps=-0.1"], "dmnist_linf", "defense.eps = -0.1 must be in [0, 1]"),
    "k too large": (["--config.k=11"], "quickstart", "k = 11 must be between 1 and the class count 10"),
    "unknown defense": (["--config.defense.name=l2"], "quickstart", "'l2'"),
    "wrong model for data": (["--config.model=mnist_small"], "quickstart", "takes inputs of shape"),
    "bad value type": (["--config.train.steps=lots"], "quickstart", "invalid literal for int()"),
    "unknown field": (["--config.train.stepz=3"], "quickstart", "stepz"),
    "missing config file": (["--config=experiments/configs/nofile.py:x"], "quickstart", "No such file"),
    "stray argument": (["extra"], "quickstart", "unexpected arguments"),
    "cache under a file": (["--compile_cache=README.md/x"], "quickstart", "--compile_cache='README.md/x'"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_is_one_line_exit_2_nothing_written(cli, data_dir, tmp_path, case):
    extra, flagfile, expected = BAD_CASES[case]
    out, workdir = _bad(cli, data_dir, tmp_path, *extra, flagfile=flagfile)
    assert out.code == 2, (out.code, out.err[-1500:])
    lines = [line for line in out.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], out.err
    assert "Traceback" not in out.err and out.out == ""
    assert not workdir.exists()


def test_missing_data_and_unusable_workdirs(tmp_path, data_dir):
    c = tiny_config(tmp_path / "empty")
    with pytest.raises(UsageError, match="missing data: .*make data"):
        train_experiment.run(c, str(tmp_path / "w1"), progress=False)
    assert not (tmp_path / "w1").exists()
    c = tiny_config(data_dir)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UsageError, match="is not a directory"):
        train_experiment.run(c, str(blocker), progress=False)
    with pytest.raises(UsageError, match="cannot be created"):
        train_experiment.run(c, str(blocker / "sub"), progress=False)
    # a workdir holding only an unreadable config.json: see test_train_failures.py


def test_missing_data_cli(tmp_path, cli):
    out = cli(
        "--flagfile=experiments/flagfiles/quickstart.flags",
        f"--workdir={tmp_path / 'w'}",
        f"--config.data.data_dir={tmp_path / 'nodata'}",
    )
    assert out.code == 2 and "missing data" in out.err and "make data" in out.err
    assert not (tmp_path / "w").exists()


def test_a_workdir_with_another_config_is_refused(data_dir, tmp_path):
    c = tiny_config(data_dir)
    train_experiment.run(c, str(tmp_path / "w"), progress=False)
    before = sorted(p.name for p in (tmp_path / "w").rglob("*"))
    c.train.learning_rate = 0.5
    with pytest.raises(UsageError, match="different config .*train.learning_rate"):
        train_experiment.run(c, str(tmp_path / "w"), progress=False)
    assert sorted(p.name for p in (tmp_path / "w").rglob("*")) == before
