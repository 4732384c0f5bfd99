"""README's decision-boundary tables and the check of the seed's claims, made from a boundary run's
summary.json (so every number README quotes is the one in the committed summary; a test compares).

  python -m experiments.boundary_readme docs/results/boundary_mnist_summary.json

Prints Markdown: Table 1 (success, RMS), Table 2 (region / point accuracy), the detector's rates,
the purity P_1..P_3 and the claims table, ours with 95 % intervals next to the seed's numbers.

How a claim is judged (stated in the table, decided by the functions below):
  - a number of the seed's: "within" when it lies inside our 95 % interval, else "higher" / "lower"
    (ours relative to the seed's);
  - a qualitative claim: by the rule written in its row, on the interval ends, never on a point
    estimate alone; "holds only with <condition>" when it holds for one OPTMARGIN objective only.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

from experiments.report import markdown, num, pct, readme_main, with_ci

# The seed's MNIST numbers (He, Li & Song 2018, Tables 1 and 2): model -> attack -> value.
# Both of our OPTMARGIN objectives are compared with the seed's OPTMARGIN row.
SEED_SUCCESS = {
    "normal": {"optbrittle": 1.00, "optmargin": 1.00, "optstrong": 1.00, "fgsm": 0.91},
    "adv_tr": {"optbrittle": 1.00, "optmargin": 1.00, "optstrong": 0.28, "fgsm": 0.06},
}
SEED_RMS = {
    "normal": {"optbrittle": 0.0732, "optmargin": 0.158, "optstrong": 0.214, "fgsm": 0.219},
    "adv_tr": {"optbrittle": 0.0879, "optmargin": 0.168, "optstrong": 0.391, "fgsm": 0.221},
}
SEED_REGION = {
    "normal": {"benign": 0.99, "fgsm": 0.16, "optbrittle": 0.95, "optmargin": 0.01},
    "adv_tr": {"benign": 1.00, "fgsm": 0.54, "optbrittle": 0.89, "optmargin": 0.10},
}
SEED_POINT = {
    "normal": {"benign": 0.99, "fgsm": 0.09, "optbrittle": 0.0, "optmargin": 0.0},
    "adv_tr": {"benign": 1.00, "fgsm": 0.94, "optbrittle": 0.0, "optmargin": 0.0},
}
NAMES = {
    "fgsm": "FGSM",
    "optbrittle": "OPTBRITTLE",
    "optmargin": "OPTMARGIN (seed's objective)",
    "optmargin_ref": "OPTMARGIN (reference weighting)",
    "optstrong": "OPTSTRONG",
    "benign": "benign",
}


def seed_key(attack: str) -> str:
    return "optmargin" if attack.startswith("optmargin") else attack


def seed_value(table: dict[str, dict[str, float]], model: str, attack: str) -> float | None:
    return table.get(model, {}).get(seed_key(attack))


def compare(seed: float | None, ci: Sequence[float | None]) -> str:
    """'within' if the seed's number lies in our interval, else 'higher' / 'lower' (ours vs the seed's)."""
    if seed is None or ci[0] is None or ci[1] is None:
        return "–"
    if ci[0] - 1e-9 <= seed <= ci[1] + 1e-9:
        return "within"
    return "higher" if ci[0] > seed else "lower"


def _rate(v: float | None, ci: Sequence[float | None]) -> str:
    return with_ci(pct(v, 1), ci, lambda x: pct(x, 1))


def _rms(v: float | None, ci: Sequence[float | None]) -> str:
    return with_ci(num(v), ci, num)


def table1(s: dict[str, Any]) -> str:
    models = list(s["models"])
    rows = []
    for a in next(iter(s["models"].values()))["attacks"]:
        cells = [NAMES.get(a, a)]
        for m in models:
            r = s["models"][m]["attacks"][a]
            seed_s, seed_r = seed_value(SEED_SUCCESS, m, a), seed_value(SEED_RMS, m, a)
            cells += [
                f"{_rate(r['success'], r['success_ci'])}, {_rms(r['rms'], r['rms_ci'])}",
                "–" if seed_s is None else f"{pct(seed_s)}, {num(seed_r, 4) if seed_r is not None else '–'}",
            ]
        rows.append(cells)
    header = ["attack", *[h for m in models for h in (f"{m}: ours", f"{m}: seed")]]
    return markdown(header, rows)


def _kinds(s: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(kind, {model: row}) for benign and every attack."""
    models = s["models"]
    first = next(iter(models.values()))
    out = [("benign", {m: models[m]["benign"] for m in models})]
    out += [(a, {m: models[m]["attacks"][a] for m in models}) for a in first["attacks"]]
    return out


def table2(s: dict[str, Any]) -> str:
    models = list(s["models"])
    rows = []
    for kind, by_model in _kinds(s):
        cells = [NAMES.get(kind, kind)]
        for what, seed in (("region", SEED_REGION), ("point", SEED_POINT)):
            for m in models:
                r = by_model[m]
                sv = seed_value(seed, m, kind)
                cells += [_rate(r[f"{what}_acc"], r[f"{what}_acc_ci"]), "–" if sv is None else pct(sv)]
        rows.append(cells)
    header = [
        "examples",
        *[f"{what} {m}: {h}" for what in ("region", "point") for m in models for h in ("ours", "seed")],
    ]
    return markdown(header, rows)


def detector_table(s: dict[str, Any]) -> str:
    models = list(s["models"])
    rows = []
    for a in next(iter(s["models"].values()))["attacks"]:
        cells = [NAMES.get(a, a)]
        for m in models:
            r = s["models"][m]["attacks"][a]
            if "detector_fpr" not in r:
                cells += ["–", "–", "–"]
                continue
            n_b, n_a = r["detector_test"]
            cells += [
                _rate(r["detector_fpr"], r["detector_fpr_ci"]),
                _rate(r["detector_fnr"], r["detector_fnr_ci"]),
                f"{n_b} / {n_a}",
            ]
        rows.append(cells)
    header = [
        "attack",
        *[f"{m}: {h}" for m in models for h in ("false pos.", "false neg.", "n benign / adv.")],
    ]
    return markdown(header, rows)


def purity_table(s: dict[str, Any]) -> str:
    models = list(s["models"])
    rows = []
    for kind, by_model in _kinds(s):
        cells = [NAMES.get(kind, kind)]
        for m in models:
            r = by_model[m]
            cells += [_rate(v, ci) for v, ci in zip(r["purity"], r["purity_ci"], strict=True)]
        rows.append(cells)
    header = ["examples", *[f"{m}: P_{k}" for m in models for k in (1, 2, 3)]]
    return markdown(header, rows)


# ----------------------------------------------------------------------------------------- claims


def _every(s: dict[str, Any], test: Callable[[dict[str, Any]], bool], kind: str) -> bool:
    rows = [(m["benign"] if kind == "benign" else m["attacks"].get(kind)) for m in s["models"].values()]
    return all(r is not None and test(r) for r in rows)


def _ci(r: dict[str, Any], key: str) -> tuple[float, float]:
    lo, hi = r[f"{key}_ci"]
    return (float("nan") if lo is None else lo, float("nan") if hi is None else hi)


def _verdict(results: dict[str, bool]) -> str:
    """results: OPTMARGIN objective (or "") -> holds?"""
    if all(results.values()):
        return "holds"
    if not any(results.values()):
        return "does not hold"
    return "holds only with " + " and ".join(NAMES[k] for k, ok in results.items() if ok)


def claims(s: dict[str, Any]) -> str:
    """The seed's qualitative claims, each decided by the rule in its row from the intervals."""
    attacks = list(next(iter(s["models"].values()))["attacks"])
    margins = [a for a in attacks if a.startswith("optmargin")]
    m = s["models"]
    rows = []

    def add(claim: str, seed: str, ours: str, rule: str, verdict: str) -> None:
        rows.append([claim, seed, ours, rule, verdict])

    def per_model(kind: str, key: str, rate: bool = True) -> str:
        fmt = _rate if rate else _rms
        parts = []
        for name, mm in m.items():
            r = mm["benign"] if kind == "benign" else mm["attacks"][kind]
            parts.append(f"{name} {fmt(r[key], r[f'{key}_ci'])}")
        return "; ".join(parts)

    if "optbrittle" in attacks:
        add(
            "Region classification undoes OPTBRITTLE",
            "95 % / 89 % region acc.",
            per_model("optbrittle", "region_acc"),
            "interval above 50 % on every model",
            _verdict({"": _every(s, lambda r: _ci(r, "region_acc")[0] > 0.5, "optbrittle")}),
        )
    if margins:
        add(
            "… but not OPTMARGIN",
            "1 % / 10 % region acc.",
            " · ".join(f"{NAMES[a]}: {per_model(a, 'region_acc')}" for a in margins),
            "interval below 20 % on every model",
            _verdict({a: _every(s, lambda r: _ci(r, "region_acc")[1] < 0.2, a) for a in margins}),
        )
        add(
            "OPTMARGIN succeeds on every image",
            "100 % / 100 %",
            " · ".join(f"{NAMES[a]}: {per_model(a, 'success')}" for a in margins),
            "interval reaches 99 % on every model",
            _verdict({a: _every(s, lambda r: _ci(r, "success")[1] >= 0.99, a) for a in margins}),
        )
    if "fgsm" in attacks and {"normal", "adv_tr"} <= set(m):
        normal, adv = m["normal"]["attacks"]["fgsm"], m["adv_tr"]["attacks"]["fgsm"]
        add(
            "FGSM is much less successful on the PGD-trained model",
            "91 % → 6 %",
            per_model("fgsm", "success"),
            "intervals disjoint, adv. tr. lower",
            _verdict({"": _ci(adv, "success")[1] < _ci(normal, "success")[0]}),
        )
    if "optstrong" in attacks and "adv_tr" in m:
        r = m["adv_tr"]["attacks"]["optstrong"]
        add(
            "OPTSTRONG partly succeeds on the PGD-trained model",
            "28 %",
            f"adv_tr {_rate(r['success'], r['success_ci'])}",
            "interval contains 28 %",
            _verdict({"": compare(0.28, r["success_ci"]) == "within"}),
        )
    for a in [x for x in attacks if x in ("optbrittle", *margins)]:

        def purer(r: dict[str, Any], model: dict[str, Any]) -> bool:
            lo = r["purity_ci"][0][0]
            hi = model["benign"]["purity_ci"][0][1]
            return lo is not None and hi is not None and lo > hi

        add(
            f"{NAMES[a]} examples have purer adjacent classes than benign inputs (Figure 5)",
            "curves above benign",
            "; ".join(
                f"{name} P_1 {_rate(r['purity'][0], r['purity_ci'][0])} vs benign "
                f"{_rate(b['purity'][0], b['purity_ci'][0])}"
                for name, r, b in ((name, mm["attacks"][a], mm["benign"]) for name, mm in m.items())
            ),
            "P_1 interval above benign's on every model",
            _verdict({"": all(purer(mm["attacks"][a], mm) for mm in m.values())}),
        )
    for a in margins:
        if all("detector_fpr" in mm["attacks"][a] for mm in m.values()):
            add(
                f"Boundary features detect {NAMES[a]} examples",
                "detector separates them",
                "; ".join(
                    f"{name} FP {_rate(r['detector_fpr'], r['detector_fpr_ci'])}, "
                    f"FN {_rate(r['detector_fnr'], r['detector_fnr_ci'])}"
                    for name, r in ((name, mm["attacks"][a]) for name, mm in m.items())
                ),
                "both rates' intervals below 20 % on every model",
                _verdict(
                    {
                        "": _every(
                            s,
                            lambda r: _ci(r, "detector_fpr")[1] < 0.2 and _ci(r, "detector_fnr")[1] < 0.2,
                            a,
                        )
                    }
                ),
            )
    return markdown(["claim", "seed", "ours (95 % interval)", "rule", "verdict"], rows)


def readme_tables(s: dict[str, Any]) -> str:
    """The Markdown README quotes (headed by the run's name and image count)."""
    parts = [
        f"<!-- generated by `python -m experiments.boundary_readme` from the summary of {s['name']} "
        f"({s['images']} images) -->",
        "",
        "Table 1 (attack success rate over the correctly classified images, mean RMS distortion of the "
        "successes; 95 % intervals in brackets):",
        "",
        table1(s),
        "",
        "Table 2 (region classification / point classification accuracy over all images):",
        "",
        table2(s),
        "",
        "Detector on the held-out half (false positives on benign, false negatives on successful attacks):",
        "",
        detector_table(s),
        "",
        "Adjacent-class purity P_1..P_3 (mean over the inputs with a boundary hit):",
        "",
        purity_table(s),
        "",
        "The seed's claims, checked:",
        "",
        claims(s),
    ]
    return "\n".join(parts) + "\n"


def main(argv: list[str]) -> int:
    return readme_main(argv, "experiments.boundary_readme", "SUMMARY.json", readme_tables)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
