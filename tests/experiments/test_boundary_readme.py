"""README's boundary tables and claim verdicts from a summary (synthetic, so each rule is pinned)."""

import json

from experiments import boundary_readme as R
from lnjax.stats import mean_interval, wilson_interval


def row(n, success, region, point, purity1, fpr=0.05, fnr=0.05):
    ci = lambda k: wilson_interval(round(k * n), n).as_list()  # noqa: E731
    return {
        "success": success,
        "success_ci": ci(success),
        "rms": 0.1,
        "rms_ci": mean_interval([0.09, 0.1, 0.11]).as_list(),
        "region_acc": region,
        "region_acc_ci": ci(region),
        "point_acc": point,
        "point_acc_ci": ci(point),
        "purity": [purity1, 0.9, 1.0],
        "purity_ci": [[purity1 - 0.02, purity1 + 0.02], [0.88, 0.92], [1.0, 1.0]],
        "detector_fpr": fpr,
        "detector_fpr_ci": ci(fpr),
        "detector_fnr": fnr,
        "detector_fnr_ci": ci(fnr),
        "detector_test": [n, n],
    }


def summary(n=1000, margin_region=0.02, ref_region=0.02, fgsm_adv=0.05, purity=0.9):
    def model(fgsm):
        attacks = {
            "fgsm": row(n, fgsm, 0.2, 0.1, 0.6),
            "optbrittle": row(n, 1.0, 0.95, 0.0, purity),
            "optmargin": row(n, 1.0, margin_region, 0.0, purity),
            "optmargin_ref": row(n, 1.0, ref_region, 0.0, purity),
            "optstrong": row(n, 0.28, 0.5, 0.5, 0.7),
        }
        benign = {
            k: v for k, v in row(n, 0, 0.99, 0.99, 0.7).items() if k.startswith(("region", "point", "pur"))
        }
        return {"images": n, "benign": benign, "attacks": attacks}

    return {
        "name": "boundary_mnist",
        "images": n,
        "models": {"normal": model(0.9), "adv_tr": model(fgsm_adv)},
    }


def verdicts(s):
    lines = R.claims(s).splitlines()[2:]
    return {line.split(" | ")[0].strip("| "): line.split(" | ")[-1].strip(" |") for line in lines}


def test_claims_hold_when_the_intervals_say_so():
    v = verdicts(summary())
    assert v["Region classification undoes OPTBRITTLE"] == "holds"
    assert v["… but not OPTMARGIN"] == "holds"
    assert v["FGSM is much less successful on the PGD-trained model"] == "holds"
    assert v["OPTSTRONG partly succeeds on the PGD-trained model"] == "holds"
    assert v["OPTBRITTLE examples have purer adjacent classes than benign inputs (Figure 5)"] == "holds"
    assert v["Boundary features detect OPTMARGIN (seed's objective) examples"] == "holds"


def test_claims_fail_or_hold_only_with_a_condition():
    v = verdicts(summary(margin_region=0.47, fgsm_adv=0.9, purity=0.7))
    assert v["… but not OPTMARGIN"] == "holds only with OPTMARGIN (reference weighting)"
    assert v["FGSM is much less successful on the PGD-trained model"] == "does not hold"
    assert (
        v["OPTBRITTLE examples have purer adjacent classes than benign inputs (Figure 5)"] == "does not hold"
    )
    # a small sample: 19 % of 20 has an interval reaching far above 20 %, so "not OPTMARGIN" is not shown
    assert (
        verdicts(summary(n=20, margin_region=0.05, ref_region=0.05))["… but not OPTMARGIN"] == "does not hold"
    )


def test_tables_quote_the_summary_and_the_seed(tmp_path, capsys):
    s = summary()
    text = R.readme_tables(s)
    assert "| OPTBRITTLE | 100.0% [99.6, 100.0], 0.100 [0.075, 0.125] | 100%, 0.0732 |" in text
    assert "boundary_mnist (1000 images)" in text
    assert R.compare(0.28, [0.25, 0.31]) == "within" and R.compare(0.5, [0.1, 0.2]) == "lower"
    f = tmp_path / "s.json"
    f.write_text(json.dumps(s))
    assert R.main(["x", str(f)]) == 0 and capsys.readouterr().out == text
    assert R.main(["x", str(tmp_path / "missing.json")]) == 2
