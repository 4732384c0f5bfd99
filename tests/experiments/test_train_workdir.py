"""experiments.common's workdir policy: claimed only by a run that can start; a different config is
refused only where results exist."""

import pytest
from absl import logging

from experiments.common import UsageError, check_workdir, holds_results, open_workdir


def test_holds_results_ignores_the_claim_and_empty_dirs(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "log.txt").write_text("x")
    (tmp_path / "figures").mkdir()
    (tmp_path / "checkpoints" / "tmp").mkdir(parents=True)
    assert not holds_results(tmp_path)
    (tmp_path / "checkpoints" / "tmp" / "x").write_text("")
    assert holds_results(tmp_path)


@pytest.mark.parametrize("result", ["history.jsonl", "verdicts/image_0.json"])
def test_a_different_config_is_refused_only_where_results_exist(tmp_path, result):
    open_workdir(tmp_path / "w", {"a": 1})
    assert check_workdir(tmp_path / "w", {"a": 2}) == tmp_path / "w"  # nothing produced yet
    (tmp_path / "w" / "config.json").write_text("{not json")
    assert check_workdir(tmp_path / "w", {"a": 2}) == tmp_path / "w"  # a torn claim, no results
    open_workdir(tmp_path / "w", {"a": 1})
    (tmp_path / "w" / result).parent.mkdir(exist_ok=True)
    (tmp_path / "w" / result).write_text("{}\n")
    assert check_workdir(tmp_path / "w", {"a": 1}) == tmp_path / "w"  # same config: resume
    with pytest.raises(UsageError, match=r"holds a run with a different config \(a: 1 there, 2 now\)"):
        check_workdir(tmp_path / "w", {"a": 2})
    (tmp_path / "w" / "config.json").write_text("{not json")
    with pytest.raises(UsageError, match="cannot read config.json"):
        check_workdir(tmp_path / "w", {"a": 1})


def test_open_workdir_logs_to_the_latest_workdir_only(tmp_path):
    open_workdir(tmp_path / "one", {})
    open_workdir(tmp_path / "two", {})
    logging.warning("only in two")  # absl logs INFO only once flags are parsed
    assert "only in two" not in (tmp_path / "one" / "log.txt").read_text()
    assert "only in two" in (tmp_path / "two" / "log.txt").read_text()
