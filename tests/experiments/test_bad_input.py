"""Bad options of verify and neighborhood through the runner, in-process: one `error:` line naming
the field, exit code 2, nothing written (the library configs are built before the workdir)."""

from __future__ import annotations

import pytest

CASES = {
    "verify, verifier.pgd.restarts=0": (
        "verify",
        "--config.verifier.pgd.restarts=0",
        "verifier.pgd.restarts = 0",
    ),
    "neighborhood, verifier.pgd.restarts=0": (
        "neighborhood_quickstart",
        "--config.verifier.pgd.restarts=0",
        "verifier.pgd.restarts = 0",
    ),
    "neighborhood, optimizer.pgd_restarts=0": (
        "neighborhood_quickstart",
        "--config.optimizer.pgd_restarts=0",
        "optimizer.pgd_restarts = 0",
    ),
    "neighborhood, optimizer.lr=nan": (
        "neighborhood_quickstart",
        "--config.optimizer.lr=nan",
        "optimizer.lr = nan",
    ),
    "neighborhood, optimizer.lam_decay=1.5": (
        "neighborhood_quickstart",
        "--config.optimizer.lam_decay=1.5",
        "optimizer.lam_decay = 1.5",
    ),
    "neighborhood, optimizer.pgd_step_size=-1": (
        "neighborhood_quickstart",
        "--config.optimizer.pgd_step_size=-1",
        "optimizer.pgd_step_size = -1",
    ),
    "neighborhood, optimizer.time_budget=-1": (
        "neighborhood_quickstart",
        "--config.optimizer.time_budget=-1",
        "optimizer.time_budget = -1",
    ),
    "verify, workers=-2": ("verify", "--config.workers=-2", "workers = -2 must be an integer ≥ 0"),
    "neighborhood, ray_address=http://head": (
        "neighborhood_quickstart",
        "--config.ray_address=http://head:8265",
        "ray_address = 'http://head:8265'",
    ),
    "attack, cw.lr=0": ("attack_mnist", "--config.cw.lr=0", "cw.lr = 0"),
    "attack_curve, grid cw.steps=0": (
        "attack_curve_mnist_pgd",
        "--config.grid=cw.steps=0,10",
        "grid point {'cw.steps': 0}: cw.steps = 0",
    ),
    "boundary, optmargin.steps=0": ("boundary_mnist", "--config.optmargin.steps=0", "optmargin.steps = 0"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_option_is_one_line_exit_2_nothing_written(cli, tmp_path, request, case):
    flagfile, override, expected = CASES[case]
    workdir = tmp_path / "never"
    args = [f"--flagfile=experiments/flagfiles/{flagfile}.flags", f"--workdir={workdir}", override]
    if flagfile.startswith(("verify", "neighborhood")):
        run = request.getfixturevalue("dmnist_run")  # a finished run: only the option is wrong
        args.append(f"--config.train_workdir={run}")
    result = cli(*args)
    assert result.code == 2, result.err
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], result.err
    assert result.out == ""
    assert not workdir.exists()
