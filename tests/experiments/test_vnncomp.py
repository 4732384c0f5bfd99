"""The vnncomp experiment through the runner (in-process): a 2-instance CSV end to end, resumed
without rerunning anything, and bad CSVs refused in one line with exit code 2, nothing written."""

from __future__ import annotations

import csv
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lnjax import models, vnncomp

MLP = models.mlp((6,), (8,), 3)


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    """instances.csv with two instances of one exported MLP: an easy box (unsat) and one whose label
    is already wrong at its centre (sat)."""
    shapes = jax.eval_shape(MLP.init_params, jax.random.key(0))
    rng = np.random.default_rng(1)
    params = jax.tree.map(lambda v: jnp.asarray(0.5 * rng.normal(size=v.shape), jnp.float32), shapes)
    x = np.linspace(0.1, 0.9, 6, dtype=np.float32)
    z = np.asarray(MLP.apply({"params": params}, x[None]))[0]
    instances = [
        vnncomp.SuiteInstance("mlp", "easy", x, int(np.argmax(z)), 1e-3),
        vnncomp.SuiteInstance("mlp", "fails", x, int(np.argmin(z)), 1e-3),
    ]
    root = tmp_path_factory.mktemp("suite") / "tiny_mlp"
    return vnncomp.write_suite(root, {"mlp": (MLP, params)}, instances, timeout=20)


def _args(instances, workdir, *extra):
    return [
        "--flagfile=experiments/flagfiles/vnncomp.flags",
        f"--config.instances={instances}",
        f"--workdir={workdir}",
        "--config.stages=pgd,crown",  # cheap to compile; run_instance is the same with any stages
        "--progress=false",
        *extra,
    ]


def test_instances_csv_end_to_end_and_resume(cli, suite, tmp_path, monkeypatch):
    workdir = tmp_path / "run"
    result = cli(*_args(suite, workdir))
    assert result.code == 0, result.err
    summary = json.loads(result.out.strip().splitlines()[-1])
    assert (summary["instances"], summary["unsat"], summary["sat"], summary["error"]) == (2, 1, 1, 0)
    assert list(summary["prepare_s"]) == ["onnx/mlp.onnx"]
    rows = list(csv.reader((workdir / "results.csv").read_text().splitlines()))
    assert [r[0] for r in rows] == ["tiny_mlp", "tiny_mlp"]  # benchmark: the CSV's directory
    assert [r[1:3] for r in rows] == [
        ["onnx/mlp.onnx", "vnnlib/mlp_easy.vnnlib"],
        ["onnx/mlp.onnx", "vnnlib/mlp_fails.vnnlib"],
    ]
    assert [r[4] for r in rows] == ["unsat", "sat"]
    assert float(rows[0][3]) > float(rows[1][3])  # the first instance prepared the network
    assert all(0 <= float(r[5]) < 20 for r in rows)
    files = sorted((workdir / "results").iterdir())
    assert [f.name for f in files] == ["0000_mlp_mlp_easy.txt", "0001_mlp_mlp_fails.txt"]
    assert files[0].read_text() == "unsat\n" and files[1].read_text().startswith("sat\n((X_0 ")
    config = json.loads((workdir / "config.json").read_text())
    assert len(config["instances_sha256"]) == 64

    def never(*args, **kwargs):
        raise AssertionError("a finished instance was run again")

    monkeypatch.setattr(vnncomp, "run_instance", never)
    again = cli(*_args(suite, workdir))
    assert again.code == 0, again.err
    assert json.loads(again.out.strip().splitlines()[-1]) == summary
    assert list(csv.reader((workdir / "results.csv").read_text().splitlines())) == rows

    changed = tmp_path / "changed" / "instances.csv"  # another CSV in the same workdir: refused
    changed.parent.mkdir()
    changed.write_text(suite.read_text().replace(",20\n", ",30\n"))
    (changed.parent / "onnx").symlink_to(suite.parent / "onnx")
    (changed.parent / "vnnlib").symlink_to(suite.parent / "vnnlib")
    refused = cli(*_args(changed, workdir))
    assert refused.code == 2 and "holds a run with a different config" in refused.err


BAD = {
    "missing csv": (None, "no such file"),
    "two fields": ("onnx/mlp.onnx,vnnlib/mlp_easy.vnnlib\n", ":1: 2 fields"),
    "bad timeout": ("onnx/mlp.onnx,vnnlib/mlp_easy.vnnlib,-5\n", ":1: timeout '-5' is not a positive number"),
    "missing onnx": (
        "onnx/mlp.onnx,vnnlib/mlp_easy.vnnlib,5\nonnx/x.onnx,vnnlib/mlp_easy.vnnlib,5\n",
        ":2: onnx file 'onnx/x.onnx' not found",
    ),
    "empty": ("\n", "has no rows"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_instances_csv_is_one_line_exit_2_nothing_written(cli, suite, tmp_path, case):
    text, expected = BAD[case]
    instances = suite.parent / f"bad_{case.replace(' ', '_')}.csv"
    if text is not None:
        instances.write_text(text)
    workdir = tmp_path / "never"
    result = cli(*_args(instances, workdir))
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert result.code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.err
    assert expected in lines[0], lines[0]
    assert not workdir.exists() and result.out == ""
