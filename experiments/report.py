"""Tables for experiment summaries: Markdown for people, CSV for programs, both written atomically.

  md = markdown(["model", "rate"], [["normal", pct(0.93)]])
  write_report(path, "tables.md", ["# Title", "", md], {"table1": csv_bytes(header, rows)})

Cells: `pct` and `num` render None (no value) as "–"; `csv_bytes` writes None as an empty field.
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lnjax.io import read_json, write_bytes_atomic


def pct(v: float | None, digits: int = 0) -> str:
    """0.931 -> "93%" (digits after the point); None -> "–"."""
    return "–" if v is None else f"{100 * v:.{digits}f}%"


def num(v: float | None, digits: int = 3) -> str:
    """A number with `digits` decimals; None -> "–"."""
    return "–" if v is None else f"{v:.{digits}f}"


def with_ci(text: str, ci: Sequence[float | None] | None, fmt=pct) -> str:
    """ "93%" and an interval [0.90, 0.95] -> "93% [90, 95]" (`fmt` formats each end, its unit
    dropped); no interval -> the text alone."""
    if not ci or ci[0] is None or ci[1] is None:
        return text
    lo, hi = (fmt(v).rstrip("%") for v in ci)
    return f"{text} [{lo}, {hi}]"


def markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown (GitHub) table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def csv_bytes(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> bytes:
    """A CSV file (header line first, "\\n" line ends, None as an empty field)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([["" if v is None else v for v in r] for r in rows])
    return buf.getvalue().encode()


def write_report(path: Path, name: str, lines: Sequence[str], tables: Mapping[str, bytes]) -> None:
    """Writes `lines` as the Markdown file `path/name` and each CSV of `tables` as `path/<key>.csv`."""
    write_bytes_atomic(path / name, "\n".join(lines).encode())
    for key, data in tables.items():
        write_bytes_atomic(path / f"{key}.csv", data)


def readme_main(argv: Sequence[str], module: str, what: str, render: Callable[[dict[str, Any]], str]) -> int:
    """`python -m MODULE JSON` (argv as sys.argv): prints `render(json)`, the README's quotes of a
    results file; usage or an unreadable file is one line on stderr and exit code 2."""
    if len(argv) != 2:
        print(f"usage: python -m {module} {what}", file=sys.stderr)
        return 2
    try:
        results = read_json(argv[1])
    except (OSError, ValueError) as e:
        print(f"error: cannot read {argv[1]}: {e}", file=sys.stderr)
        return 2
    print(render(results), end="")
    return 0
