"""The train experiment (and the runner's exit codes) when things go wrong after the config is fine:
damaged checkpoints, divergence, a kill, Ctrl-C, a workdir claimed by a failed start; and what every
run leaves (file modes, strict JSON)."""

import json
import math
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from absl import logging

from experiments import run as runner, runs, train as train_experiment
from experiments.common import Interrupted, UsageError
from experiments.configs import verify as verify_configs
from lnjax.io import file_mode, read_json, read_jsonl, to_json
from lnjax.train import Checkpointer
from tests.conftest import copy_run, tiny_train_config
from tests.train.test_checkpoint import truncate_checkpoint


def cli(monkeypatch, capsys, c, workdir):
    """experiments.run.main in-process with `c` as the parsed --config: (exit code, stdout, stderr)."""
    monkeypatch.setattr(runner, "_CONFIG", SimpleNamespace(value=c))
    monkeypatch.setattr(runner, "_WORKDIR", SimpleNamespace(value=str(workdir)))
    monkeypatch.setattr(runner, "_PROGRESS", SimpleNamespace(value=False))
    try:
        runner.main(["run"])
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def same_test_metrics(a: Path, b: Path) -> None:
    ta, tb = read_json(a / "metrics.json")["test"], read_json(b / "metrics.json")["test"]
    assert ta.keys() == tb.keys()
    for key in ta:
        np.testing.assert_allclose(ta[key], tb[key], rtol=1e-5, err_msg=key)


# --------------------------------------------------------------------------------------- checkpoints


def test_finished_run_without_checkpoints_is_one_line_for_its_readers(
    dmnist_run, tmp_path, monkeypatch, capsys
):
    run = copy_run(dmnist_run, tmp_path / "run")
    shutil.rmtree(run / "checkpoints")
    with pytest.raises(UsageError, match=r"has no checkpoints .*rerun the training that made it"):
        runs.load_trained(run)
    c = verify_configs.get_config("quickstart")
    c.train_workdir = str(run)
    code, out, err = cli(monkeypatch, capsys, c, tmp_path / "verify")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "has no checkpoints" in err and not (tmp_path / "verify").exists()
    # re-running its training rebuilds them (the same model: training is deterministic)
    _, _, tc = runs.load_trained(dmnist_run)
    train_experiment.run(tc, str(run), progress=False)
    same_test_metrics(run, dmnist_run)
    runs.load_trained(run)


def test_truncated_latest_checkpoint_falls_back_for_readers_and_training(dmnist_run, tmp_path, monkeypatch):
    run = copy_run(dmnist_run, tmp_path / "run")
    truncate_checkpoint(run / "checkpoints", 4)
    warnings = []
    monkeypatch.setattr(logging, "warning", lambda msg, *a: warnings.append(msg % a))
    model, params, c = runs.load_trained(run)  # step 2's params, with a warning
    assert any("step 4" in w and "damaged" in w for w in warnings)
    assert model.input_shape == (64, 64, 1)
    # re-running the training recomputes steps 3..4 from step 2: the same model as before the damage
    train_experiment.run(c, str(run), progress=False)
    same_test_metrics(run, dmnist_run)
    assert Checkpointer(str(run / "checkpoints")).latest_step() == 4
    assert [m["step"] for m in read_json(run / "history.json")] == [2, 4]


def test_no_intact_checkpoint_is_one_line_for_readers_and_training(dmnist_run, tmp_path):
    run = copy_run(dmnist_run, tmp_path / "run")
    for step in (2, 4):
        truncate_checkpoint(run / "checkpoints", step)
    with pytest.raises(UsageError, match=r"no intact checkpoint in .*step 4: .*step 2: ") as info:
        runs.load_trained(run)
    assert "\n" not in str(info.value)
    c = tiny_train_config("quickstart", read_json(run / "config.json")["data"]["data_dir"])
    with pytest.raises(UsageError, match=r"no intact checkpoint .*to train from scratch") as info:
        train_experiment.run(c, str(run), progress=False)
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------------------------------ divergence


def test_divergence_exits_2_with_strict_json_and_the_last_good_checkpoint(
    data_dir, tmp_path, monkeypatch, capsys
):
    c = tiny_train_config(
        "quickstart", data_dir, train__learning_rate=1e38, train__schedule="constant", train__steps=6
    )
    code, out, err = cli(monkeypatch, capsys, c, tmp_path / "run")
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "training diverged at step" in err
    assert "lower train.learning_rate" in err
    assert not (tmp_path / "run" / "metrics.json").exists()
    history = read_jsonl(tmp_path / "run" / "history.jsonl")
    assert history[-1]["loss"] is None  # the non-finite loss, as strict JSON
    text = (tmp_path / "run" / "history.jsonl").read_text()
    assert "NaN" not in text and "Infinity" not in text


def test_runner_prints_strict_json(monkeypatch, capsys, tmp_path):
    c = tiny_train_config("quickstart", tmp_path)
    monkeypatch.setattr(train_experiment, "run", lambda c, w, progress: {"loss": math.nan, "x": [math.inf]})
    code, out, _ = cli(monkeypatch, capsys, c, tmp_path / "w")
    assert code == 0
    assert json.loads(out, parse_constant=lambda s: pytest.fail(s)) == {"loss": None, "x": [None]}


# --------------------------------------------------------------------------------- kill and Ctrl-C


class Killed(BaseException):
    """Stands in for SIGKILL: nothing catches it, so nothing gets to tidy up."""


def fail_at(monkeypatch, step: int, error: type[BaseException]) -> None:
    """Makes the experiment's per-log hook raise `error` right after logging `step`."""
    real = train_experiment._log_metrics

    def hook(path, m):
        real(path, m)
        if m["step"] == step:
            raise error()

    monkeypatch.setattr(train_experiment, "_log_metrics", hook)


def test_history_survives_a_kill_and_the_resumed_run_equals_an_uninterrupted_one(
    data_dir, dmnist_run, tmp_path, monkeypatch
):
    c = tiny_train_config("quickstart", data_dir, train__log_every=1)
    with monkeypatch.context() as m:
        fail_at(m, 3, Killed)
        with pytest.raises(Killed):
            train_experiment.run(c, str(tmp_path / "run"), progress=False)
    assert [m["step"] for m in read_jsonl(tmp_path / "run" / "history.jsonl")] == [1, 2, 3]
    train_experiment.run(c, str(tmp_path / "run"), progress=False)  # resumes from step 2's checkpoint
    assert [m["step"] for m in read_json(tmp_path / "run" / "history.json")] == [1, 2, 3, 4]
    assert (tmp_path / "run" / "figures" / "training.png").stat().st_size > 0
    same_test_metrics(tmp_path / "run", dmnist_run)


def test_ctrl_c_saves_a_checkpoint_and_exits_130_saying_how_to_resume(
    data_dir, dmnist_run, tmp_path, monkeypatch, capsys
):
    c = tiny_train_config("quickstart", data_dir)
    with monkeypatch.context() as m:
        fail_at(m, 2, KeyboardInterrupt)
        with pytest.raises(
            Interrupted, match=r"after step 2; step 2 is checkpointed .*rerun the same command"
        ):
            train_experiment.run(c, str(tmp_path / "run"), progress=False)
    assert Checkpointer(str(tmp_path / "run" / "checkpoints")).latest_step() == 2
    with monkeypatch.context() as m:
        fail_at(m, 4, KeyboardInterrupt)
        code, out, err = cli(m, capsys, c, tmp_path / "run")
    assert code == 130 and out == "" and len(err.strip().splitlines()) == 1
    assert "after step 4; step 4 is checkpointed" in err and "rerun the same command" in err
    train_experiment.run(c, str(tmp_path / "run"), progress=False)  # nothing left to train: evaluates
    same_test_metrics(tmp_path / "run", dmnist_run)


# ------------------------------------------------------------------------------------------- workdir


def test_a_workdir_claimed_by_a_failed_start_accepts_a_corrected_config(data_dir, tmp_path):
    bad = tiny_train_config("quickstart", data_dir, train__steps=4)
    workdir = tmp_path / "run"
    workdir.mkdir()
    # what a start that failed after claiming the workdir left: config.json, log.txt, empty dirs
    (workdir / "config.json").write_text(json.dumps({**bad.to_dict(), "seed": 99}))
    (workdir / "log.txt").write_text("an earlier failure\n")
    (workdir / "figures").mkdir()
    (workdir / "checkpoints").mkdir()
    train_experiment.run(bad, str(workdir), progress=False)
    assert read_json(workdir / "config.json")["seed"] == 0
    # a workdir with results refuses a different config
    other = tiny_train_config("quickstart", data_dir, seed=1)
    with pytest.raises(UsageError, match=r"holds a run with a different config \(seed: 0 there, 1 now\)"):
        train_experiment.run(other, str(workdir), progress=False)


def test_run_files_get_the_umask_mode(dmnist_run):
    want = file_mode()
    files = [p for p in dmnist_run.rglob("*") if p.is_file() and "checkpoints" not in p.parts]
    names = {p.name for p in files}
    assert {"config.json", "metrics.json", "history.json", "history.jsonl", "training.png"} <= names
    for p in files:
        assert p.stat().st_mode & 0o777 == want, p
    assert want == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_summary_and_metrics_are_strict_json(dmnist_run):
    metrics = read_json(dmnist_run / "metrics.json")
    assert json.loads(to_json(metrics)) == metrics
    assert "NaN" not in (dmnist_run / "metrics.json").read_text()
