"""lnjax.io: atomic writes with the umask's mode, strict JSON, append-only JSON lines."""

import json
import math
import os

import numpy as np
import pytest

from lnjax import io


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_writes_get_the_umask_mode_not_owner_only(tmp_path, umask):
    old = os.umask(umask)
    try:
        io.write_json_atomic(tmp_path / "a.json", {"x": 1})
        io.write_bytes_atomic(tmp_path / "b.bin", b"xy")
        io.append_jsonl(tmp_path / "c.jsonl", {"x": 1})
        plain = tmp_path / "plain"
        plain.write_text("")  # what open() gives, the reference
    finally:
        os.umask(old)
    want = plain.stat().st_mode & 0o777
    assert want == 0o666 & ~umask
    for name in ("a.json", "b.bin", "c.jsonl"):
        assert (tmp_path / name).stat().st_mode & 0o777 == want, name
    assert sorted(os.listdir(tmp_path)) == ["a.json", "b.bin", "c.jsonl", "plain"]  # no temporaries


def test_json_is_strict_non_finite_floats_become_null(tmp_path):
    obj = {
        "loss": float("nan"),
        "b": [np.float32(np.inf), -math.inf, 1.5],
        "c": np.array([np.nan, 2.0]),
        "d": (1,),
    }
    text = io.to_json(obj)
    assert "NaN" not in text and "Infinity" not in text
    parsed = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict constant {c}"))
    assert parsed == {"loss": None, "b": [None, None, 1.5], "c": [None, 2.0], "d": [1]}
    io.write_json_atomic(tmp_path / "m.json", obj)
    assert io.read_json(tmp_path / "m.json") == parsed
    with pytest.raises(TypeError, match="not JSON serialisable"):
        io.to_json({"x": object()})


def test_jsonl_appends_and_ignores_a_torn_last_line(tmp_path):
    path = tmp_path / "h.jsonl"
    assert io.read_jsonl(path) == []
    for step in (1, 2):
        io.append_jsonl(path, {"step": step, "loss": float("nan") if step == 2 else 0.5})
    with open(path, "a") as f:
        f.write('{"step": 3, "lo')  # killed mid-append
    assert io.read_jsonl(path) == [{"loss": 0.5, "step": 1}, {"loss": None, "step": 2}]
    # The resumed run appends: the torn fragment is cut off, not glued to the new line.
    io.append_jsonl(path, {"step": 3})
    assert [r["step"] for r in io.read_jsonl(path)] == [1, 2, 3]
    only_torn = tmp_path / "t.jsonl"
    only_torn.write_text('{"st')
    io.append_jsonl(only_torn, {"step": 1})
    assert io.read_jsonl(only_torn) == [{"step": 1}]
    path.write_text('{"step": 1}\nnot json\n')
    with pytest.raises(ValueError, match="h.jsonl:2 is not a JSON line"):
        io.read_jsonl(path)
