"""README's neighborhood tables from a report (synthetic): the numbers and verdicts are the report's."""

import json
import re

from experiments import neighborhood_readme as R, neighborhood_stats as S


def summary(slope, slope_ci):
    return {
        "images": 30,
        "verified": 28,
        "median_gap": 0.93,
        "median_s_proved": 1.5,
        "median_s_attack": 1.6125,
        "converged_share": 0.9,
        "unknown_share": 0.125,
        "log10_eps_per_layer": {
            "searches": 28,
            "mean": [-3.0, -2.5, -1.25, -0.5],
            "ci": [[-3.1, -2.9], [-2.6, -2.4], [None, None], [-0.6, -0.4]],
            "zero": [0, 0, 27, 0],
        },
        "layers": {"rings": 2, "far": 2, "target": 3},
        "ring_slope": {"mean": slope, "ci": slope_ci, "n": 28},
    }


def report():
    defenses = {
        "none": {
            "optimizer_fixed": summary(0.5, [0.4, 0.6]),
            "optimizer_sensitivity": summary(0.1, [-0.1, 0.3]),
        },
        "linf": {"optimizer_fixed": summary(0.5, [0.4, 0.6])},
    }
    claims = [
        {
            "key": "distance",
            "claim": S.CLAIMS["distance"],
            "scope": "none / fixed",
            "measures": {"ring_slope": {"mean": 0.5, "ci": [0.4, 0.6], "n": 28}},
            "rule": S.RULES["distance"],
            "verdict": "holds",
        },
        {
            "key": "defended",
            "claim": S.CLAIMS["defended"],
            "scope": "linf − none / fixed",
            "measures": {
                "log_volume": {"mean": 812.25, "ci": [700.0, 924.5], "n": 26, "left_out": 2},
                "linear_norm": {"mean": 12.5, "ci": [-1.0, 26.0], "n": 28},
            },
            "rule": S.RULES["defended"],
            "verdict": "not shown",
        },
    ]
    return {
        "name": "panel_defenses",
        "image": 3,
        "images": 30,
        "order": ["none", "linf"],
        "methods": ["optimizer_fixed", "optimizer_sensitivity"],
        "defenses": defenses,
        "claims": claims,
    }


def test_tables_quote_the_report(tmp_path, capsys):
    rep = report()
    text = R.readme_tables(rep)
    assert "panel_defenses (30 images every run searched; heatmaps of image 3)" in text
    assert "| none | fixed | 30 | 28 | 0.93 | 1.50 / 1.61 | 90% | 12% | 0.500 [0.400, 0.600] (n 28) |" in text
    assert "| linf | fixed |" in text and "| linf | sensitivity |" not in text
    # per layer: the rings by index, then the far and target layers; ε = 0 counted, no interval: mean alone
    assert "| 0 | -3.00 [-3.10, -2.90] |" in text
    assert "| far (≥ 2) | -1.25 (27 at 0) |" in text
    assert "| target digit | -0.50 [-0.60, -0.40] |" in text
    row = (
        "| defended models have larger neighborhoods | linf − none / fixed | log-volume 812.2 [700.0, 924.5] "
        "(n 26, 2 left out); Σ\\|l_d\\|ε_d 12.50 [-1.00, 26.00] (n 28) | "
        + S.RULES["defended"]
        + " | not shown |"
    )
    assert row in text
    pipes = [len(re.findall(r"(?<!\\)\|", line)) for line in text.split("The seed's claims")[1].splitlines()]
    assert len(set(p for p in pipes if p)) == 1  # every claims row has its header's cells ("\|" escaped)
    csv = R.claims_csv(rep).decode().splitlines()
    assert csv[0] == "claim,where,measure,mean,low,high,n,verdict" and len(csv) == 4
    assert csv[3].endswith(",linear_norm,12.5,-1.0,26.0,28,not shown")
    f = tmp_path / "report.json"
    f.write_text(json.dumps(rep))
    assert R.main(["x", str(f)]) == 0 and capsys.readouterr().out == text
    assert R.main(["x", str(tmp_path / "missing.json")]) == 2
    assert R.main(["x"]) == 2


def test_tables_of_a_computed_report_show_its_verdicts():
    eps = [1e-3, 1e-2, 1e-1, 1e-4]
    records = {
        i: {
            "layer_sizes": [10, 20, 30, 40],
            "methods": {
                m: {"eps": [e * (1 + 0.1 * i) for e in eps], "verified": True, "queries": 4, "by_status": {}}
                for m in S.OPTIMIZERS
            },
        }
        for i in range(5)
    }
    rep = {"name": "r", "image": 0, **S.report({"none": records}, {"none": True})}
    text = R.readme_tables(rep)
    for row in rep["claims"]:
        assert f"| {row['scope']} |" in text and f"| {row['verdict']} |" in text
    assert "| far (≥ 2) |" in text
    # nothing verified: the tables still print
    for r in records.values():
        for m in r["methods"].values():
            m["verified"] = False
    rep = {"name": "r", "image": 0, **S.report({"none": records}, {"none": True})}
    assert "(no verified search)" in R.readme_tables(rep)
