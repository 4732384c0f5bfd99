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


RESULTS = README.parent / "docs" / "results"


def block(text: str, name: str) -> str:
    """README's text between `<!-- NAME: begin -->` and `<!-- NAME: end -->`."""
    begin, end = f"<!-- {name}: begin -->\n", f"<!-- {name}: end -->"
    assert begin in text and end in text, f"README.md lacks the {name!r} markers"
    return text.split(begin, 1)[1].split(end, 1)[0]


def test_readme_boundary_tables_are_the_committed_summary():
    """Every number in README's boundary tables and claim checks is the one in the committed summary."""
    from experiments.boundary_readme import readme_tables
    from lnjax.io import read_json

    summary = read_json(RESULTS / "boundary_mnist_summary.json")
    assert summary["images"] >= 1000
    assert block(README.read_text(), "boundary tables").strip() == readme_tables(summary).strip()


def test_readme_attack_curve_quotes_the_committed_points():
    from lnjax.io import read_json

    curve = read_json(RESULTS / "attack_curve_mnist_pgd.json")
    text = block(README.read_text(), "attack curve")
    for p in curve["points"]:
        assert f"{p['successes']} / {p['correct']}" in text, p


def test_readme_optstrong_evidence_quotes_the_committed_points():
    """The OPTSTRONG table and margins in README are the committed attack-curve metrics."""
    from lnjax.io import read_json

    text = block(README.read_text(), "optstrong")
    for name in ("optstrong_confidence_mnist_pgd", "optstrong_c0_mnist_pgd"):
        curve = read_json(RESULTS / f"{name}.json")
        for p in curve["points"]:
            kappa = p["settings"].get("cw.strong_confidence", 20.0)
            c0 = p["settings"].get("cw.c0", 0.001)
            row = f"| {kappa:g} | {c0:g} | {100 * p['success_rate']:.1f}% |"
            assert row in text and f"{p['successes']} / {p['correct']}" in text, (name, p)
        clean = curve["margins"]["clean"]
        assert f"median {clean['median']:.2f}" in text and f"maximum {clean['max']:.2f}" in text
    reach = read_json(RESULTS / "optstrong_confidence_mnist_pgd.json")["margins"]["reachable_confidence"]
    assert f"{100 * reach['share_reaching']['20']:.0f} %" in text and f"median {reach['median']:.1f}" in text


def test_readme_neighborhood_tables_are_the_committed_report():
    """README's neighborhood tables and claim checks are the committed defenses report, as
    `experiments.neighborhood_readme` prints them (the report itself is the panel run's report.json)."""
    from experiments.neighborhood_readme import readme_tables
    from lnjax.io import read_json

    report = read_json(RESULTS / "neighborhood_defenses.json")
    assert report["order"] == ["none", "l0", "linf"] and report["images"] >= 1
    assert block(README.read_text(), "neighborhood tables").strip() == readme_tables(report).strip()
