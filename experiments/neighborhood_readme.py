"""README's neighborhood tables and the check of the seed's claims, made from a panel run's report.json
(so every number README quotes is the one in the committed report; a test can compare).

  python -m experiments.neighborhood_readme docs/results/neighborhood_defenses.json

Prints Markdown: per run (defense) and shrink method the searches' summary, the mean log10 ε per
layer, and the claims table. The verdicts are the report's own (decided by
experiments/neighborhood_stats.py from 95 % t intervals, the rule written in each row); this module
only formats.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

from experiments.neighborhood_stats import short
from experiments.report import csv_bytes, markdown, num, pct, readme_main, with_ci

MEASURES = {  # claim measure -> (its name in the table, decimals)
    "ring_slope": ("slope of log10 ε per ring", 3),
    "log_volume": ("log-volume", 1),
    "linear_norm": ("Σ\\|l_d\\|ε_d", 2),  # "|" escaped: inside a Markdown table cell
}


def _fmt(digits: int) -> Callable[[float | None], str]:
    return lambda v: num(v, digits)


def _mean_ci(m: dict[str, Any], digits: int) -> str:
    return with_ci(num(m["mean"], digits), m["ci"], _fmt(digits))


def _pairs(report: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(run, method, summary) in the report's order (report.json's keys are sorted: `order` and
    `methods` keep the runs' and methods' own)."""
    d = report["defenses"]
    return [(name, m, d[name][m]) for name in report["order"] for m in report["methods"] if m in d[name]]


def summary_table(report: dict[str, Any]) -> str:
    rows = []
    for name, m, s in _pairs(report):
        rows.append(
            [
                name,
                short(m),
                str(s["images"]),
                str(s["verified"]),
                num(s["median_gap"], 2),
                f"{num(s.get('median_s_proved'), 2)} / {num(s.get('median_s_attack'), 2)}",
                pct(s["converged_share"]),
                pct(s["unknown_share"]),
                f"{_mean_ci(s['ring_slope'], 3)} (n {s['ring_slope']['n']})",
            ]
        )
    header = [
        "model",
        "shrink",
        "images",
        "verified",
        "median gap",
        "median s_proved / s_attack",
        "converged",
        "UNKNOWN queries",
        "slope of log10 ε per ring [95 %]",
    ]
    return markdown(header, rows)


def _layer_name(d: int, layers: dict[str, Any] | None) -> str:
    if layers is not None and d == layers["far"]:
        return f"far (≥ {d})"
    if layers is not None and d == layers.get("target"):
        return "target digit"
    return str(d)


def layers_table(report: dict[str, Any]) -> str:
    """Mean log10 ε per layer [95 % t interval] (verified searches; ε = 0 counted, not averaged)."""
    pairs = [(n, m, s) for n, m, s in _pairs(report) if s["log10_eps_per_layer"] is not None]
    if not pairs:
        return "(no verified search)"
    depth = max(len(s["log10_eps_per_layer"]["mean"]) for _, _, s in pairs)
    first = pairs[0][2]["layers"]
    rows = []
    for d in range(depth):
        cells = [_layer_name(d, first)]
        for _, _, s in pairs:
            p = s["log10_eps_per_layer"]
            if d >= len(p["mean"]):
                cells.append("–")
                continue
            zero = f" ({p['zero'][d]} at 0)" if p["zero"][d] else ""
            cells.append(with_ci(num(p["mean"][d], 2), p["ci"][d], _fmt(2)) + zero)
        rows.append(cells)
    return markdown(["layer", *[f"{n} / {short(m)}" for n, m, _ in pairs]], rows)


def _ordered(measures: dict[str, Any]) -> list[tuple[str, Any]]:
    """A row's measures in MEASURES order (report.json sorts the keys)."""
    return sorted(measures.items(), key=lambda kv: (list(MEASURES) + [kv[0]]).index(kv[0]))


def _measures(row: dict[str, Any]) -> str:
    parts = []
    for key, m in _ordered(row["measures"]):
        label, digits = MEASURES.get(key, (key, 3))
        extra = f", {m['left_out']} left out" if m.get("left_out") else ""
        parts.append(f"{label} {_mean_ci(m, digits)} (n {m['n']}{extra})")
    return "; ".join(parts)


def claims(report: dict[str, Any]) -> str:
    """The seed's claims as the report decided them, one row per run / method / pair."""
    rows = [[r["claim"], r["scope"], _measures(r), r["rule"], r["verdict"]] for r in report["claims"]]
    return markdown(["claim", "where", "ours: mean [95 % t interval]", "rule", "verdict"], rows)


def claims_csv(report: dict[str, Any]) -> bytes:
    """The claims as CSV: one line per claim row and measure."""
    header = ["claim", "where", "measure", "mean", "low", "high", "n", "verdict"]
    rows: list[Sequence[Any]] = []
    for r in report["claims"]:
        for key, m in _ordered(r["measures"]):
            rows.append([r["claim"], r["scope"], key, m["mean"], *m["ci"], m["n"], r["verdict"]])
    return csv_bytes(header, rows)


def readme_tables(report: dict[str, Any]) -> str:
    """The Markdown README quotes (headed by the report's name and image count)."""
    parts = [
        f"<!-- generated by `python -m experiments.neighborhood_readme` from the report of {report['name']} "
        f"({report['images']} images every run searched; heatmaps of image {report['image']}) -->",
        "",
        "Searches per model and shrink method (certificate: s_proved the largest scale of ε the verifier "
        "proves, s_attack the smallest a 32-restart PGD breaks, gap their ratio, medians; converged: "
        "stopped by its own criterion; UNKNOWN: share of verifier queries; slope: per image, least "
        "squares over the distance rings, 95 % t interval):",
        "",
        summary_table(report),
        "",
        "Mean log10 ε per layer over the verified searches (95 % t interval; layers at ε = 0 counted, "
        "not averaged):",
        "",
        layers_table(report),
        "",
        "The seed's claims, checked:",
        "",
        claims(report),
    ]
    return "\n".join(parts) + "\n"


def main(argv: list[str]) -> int:
    return readme_main(argv, "experiments.neighborhood_readme", "REPORT.json", readme_tables)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
