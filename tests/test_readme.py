"""README's "Using lnjax from other JAX code" snippet runs as written (it builds its own tiny model)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
HEADING = "## Using lnjax from other JAX code"


def snippet(text: str) -> str:
    """The first ```python block after HEADING (before the next "## " heading)."""
    assert HEADING in text, f"README.md has no section {HEADING!r}"
    section = text.split(HEADING, 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks, f"no python block under {HEADING!r}"
    return blocks[0]


def test_readme_library_snippet_runs_as_written():
    code = snippet(README.read_text())
    namespace: dict[str, object] = {"__name__": "readme_snippet"}
    exec(compile(code, f"{README}:{HEADING}", "exec"), namespace)  # noqa: S102 - the README's own code
    # it ends having compared the layer view with the model and bounded the logits
    assert {"model", "params", "view", "logits"} <= set(namespace)
