"""Statistics of layer-neighborhood searches, shared by `neighborhood` (its summary) and `panel` (the
defenses report), and the check of the seed's claims from them.

Records are the per-image JSON of a `neighborhood` run (results/img_NNNNN.json): `layer_sizes` and,
per method, a search (`eps` per layer, `verified`, `converged`, `queries`, `by_status`, `certificate`).

Layers of a record with R entries: the distance rings 0..r − 1 around the non-target digit, the far
layer r (every pixel at distance ≥ r), and, when the run's `layers.target_layer` is on, one more
layer r + 1: the target digit's own pixels (`layer_roles`).

The seed's claims (seed 000, Figures 2–3), each decided from 95 % Student t intervals
(`lnjax.stats.mean_interval`) of per-image values over the images every run searched; the rule is
stated in every claim row (`RULES`):
  (a) ε grows with distance from the non-target object: per run and method, the least-squares slope
      of log10 ε_d against d over the rings 0..r − 1 (far and target layers excluded; rings with
      ε_d = 0 or no pixels left out; images with fewer than 2 such rings left out).
  (b) defended models have larger neighborhoods: per method, each run other than `none` against
      `none`, paired per image (both verified): the difference of log-volume and of Σ|l_d|ε_d.
  (c) fixed vs sensitivity shrink: per run, paired per image (both verified): sensitivity − fixed.
Log-volume (natural log, Σ_d |l_d| log ε_d) is compared only on pairs where neither search left a
pixel at ε = 0 (otherwise the two sums run over different pixels; such pairs are counted as
`left_out`); the linear norm Σ|l_d|ε_d on every verified pair.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from lnjax.neighborhood.problem import linear_norm, log_volume, zero_pixels
from lnjax.stats import Interval, mean_interval

OPTIMIZERS = ("optimizer_fixed", "optimizer_sensitivity")  # the seed's two shrink methods
UNDEFENDED = "none"  # the run the defended ones are compared with (claim b)

CLAIMS = {
    "distance": "ε grows with distance from the non-target object",
    "defended": "defended models have larger neighborhoods",
    "shrink": "fixed vs sensitivity shrink",
}
RULES = {
    "distance": "per-image slope of log10 ε over the rings 0..r−1; holds: interval above 0; "
    "does not hold: below 0; else not shown",
    "defended": "paired per image (both verified; log-volume: neither with a pixel at ε = 0), defended − "
    "none; holds: both intervals above 0; does not hold: either below 0; else not shown",
    "shrink": "paired per image (both verified; log-volume: neither with a pixel at ε = 0), sensitivity − "
    "fixed; sensitivity larger: both intervals above 0; fixed larger: both below 0; else no difference shown",
}


# ------------------------------------------------------------------------------ per method (summary)


def per_layer_log10(rs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Per layer, over the verified searches: the mean log10 ε with its 95 % t interval (layers at
    ε = 0 left out of the mean and counted in `zero`); None when no search verified."""
    eps = [np.asarray(r["eps"], np.float64) for r in rs if r.get("verified") and r.get("eps") is not None]
    if not eps or len({e.shape for e in eps}) != 1:
        return None
    e = np.stack(eps)
    positive = e > 0
    logs = np.where(positive, np.log10(np.where(positive, e, 1.0)), np.nan)
    cis = [mean_interval(logs[:, d]) for d in range(e.shape[1])]
    return {
        "searches": len(eps),
        "mean": [None if math.isnan(i.value) else i.value for i in cis],
        "ci": [i.as_list() for i in cis],
        "zero": (~positive).sum(axis=0).astype(int).tolist(),
    }


def status_share(rs: list[dict[str, Any]], status: str) -> float | None:
    """The share of a method's verifier queries (over its searches) that ended with `status`."""
    total = sum(r["queries"] for r in rs)
    return sum(r["by_status"].get(status, 0) for r in rs) / total if total else None


def certificate_median(rs: list[dict[str, Any]], key: str = "gap") -> float | None:
    """The median of a certificate value over the searches that have one: `gap` (s_proved /
    s_attack), `s_proved` (how far the verifier proves ε scaled up: > 1 means the search stopped
    short of its own verifier), `s_attack` (where the attack first breaks it)."""
    values = [r["certificate"][key] for r in rs if r.get("certificate", {}).get(key) is not None]
    return float(np.median(values)) if values else None


def certificate_medians(rs: list[dict[str, Any]]) -> dict[str, float | None]:
    """{median_gap, median_s_proved, median_s_attack} (`certificate_median`)."""
    return {f"median_{key}": certificate_median(rs, key) for key in ("gap", "s_proved", "s_attack")}


# ------------------------------------------------------------------------------------------- layers


class Roles(NamedTuple):
    """Which layers of a record are what: rings 0..rings − 1, the far layer, the target layer."""

    rings: int  # r: the distance rings 0..r − 1
    far: int  # the layer of every pixel at distance ≥ r (index r)
    target: int | None  # the target digit's own layer (r + 1), None without `layers.target_layer`


def layer_roles(num_layers: int, *, target_layer: bool) -> Roles:
    """The roles of the layers of a record with `num_layers` entries (see the module docstring).

    Raises:
      ValueError: too few layers for the roles (1, or 2 with a target layer).
    """
    far = num_layers - 1 - int(target_layer)
    if far < 0:
        raise ValueError(f"{num_layers} layers cannot hold a far layer{' and a target layer' * target_layer}")
    return Roles(rings=far, far=far, target=num_layers - 1 if target_layer else None)


def ring_slope(eps: Sequence[float], sizes: Sequence[int], rings: int) -> float | None:
    """The least-squares slope of log10 ε_d against d over the rings d < `rings` that have pixels and
    ε_d > 0; None when fewer than 2 such rings."""
    e = np.asarray(eps, np.float64)[:rings]
    s = np.asarray(sizes, np.int64)[:rings]
    d = np.flatnonzero((e > 0) & (s > 0))
    if d.size < 2:
        return None
    y = np.log10(e[d])
    x = d - d.mean()
    return float(np.sum(x * (y - y.mean())) / np.sum(x * x))


def norms(eps: Sequence[float], sizes: Sequence[int]) -> tuple[float | None, float]:
    """(log-volume, linear norm Σ|l_d|ε_d) of a search; the log-volume is None when some pixel has
    ε = 0 (it would sum over fewer pixels than another search's)."""
    e, s = np.asarray(eps, np.float64), np.asarray(sizes, np.int64)
    lv = log_volume(e, s, floor=None) if zero_pixels(e, s) == 0 else None
    return lv, linear_norm(e, s)


# ------------------------------------------------------------------------------------------- report


def _interval(values: Sequence[float]) -> dict[str, Any]:
    i: Interval = mean_interval(list(values))
    return {"mean": None if math.isnan(i.value) else i.value, "ci": i.as_list(), "n": i.n}


def _sign(m: Mapping[str, Any]) -> int:
    """+1 / −1 when the interval lies above / below 0, else 0 (no interval: 0)."""
    lo, hi = m["ci"]
    if lo is not None and lo > 0:
        return 1
    if hi is not None and hi < 0:
        return -1
    return 0


def verdict(key: str, measures: Mapping[str, Mapping[str, Any]]) -> str:
    """The verdict of a claim row (`RULES[key]`) from its measures' intervals."""
    signs = [_sign(m) for m in measures.values()]
    if key == "shrink":
        if signs and all(s > 0 for s in signs):
            return "sensitivity larger"
        if signs and all(s < 0 for s in signs):
            return "fixed larger"
        return "no difference shown"
    if key == "defended" and any(s < 0 for s in signs):
        return "does not hold"
    if signs and all(s > 0 for s in signs):
        return "holds"
    if key == "distance" and signs and all(s < 0 for s in signs):
        return "does not hold"
    return "not shown"


def _paired(a: Mapping[int, dict[str, Any]], b: Mapping[int, dict[str, Any]]) -> dict[str, Any]:
    """b − a per image, over the images both verified: log-volume and linear norm intervals."""
    lv, lin, left_out = [], [], 0
    for i in sorted(set(a) & set(b)):
        if not (a[i]["search"]["verified"] and b[i]["search"]["verified"]):
            continue
        lv_a, lin_a = norms(a[i]["search"]["eps"], a[i]["sizes"])
        lv_b, lin_b = norms(b[i]["search"]["eps"], b[i]["sizes"])
        lin.append(lin_b - lin_a)
        if lv_a is None or lv_b is None:
            left_out += 1
        else:
            lv.append(lv_b - lv_a)
    return {
        "log_volume": {**_interval(lv), "left_out": left_out},
        "linear_norm": _interval(lin),
    }


def _searches(records: Mapping[int, dict[str, Any]], method: str) -> dict[int, dict[str, Any]]:
    """{image: {"search", "sizes"}} of the records that ran `method`."""
    return {
        i: {"search": r["methods"][method], "sizes": r["layer_sizes"]}
        for i, r in records.items()
        if method in r.get("methods", {})
    }


def method_summary(found: Mapping[int, dict[str, Any]], *, target_layer: bool) -> dict[str, Any]:
    """The summary of one run and method over its searches ({image: {"search", "sizes"}}).

    `layers` gives the roles of the layers (None when the records differ in their number of layers;
    the ring slope takes each record's own)."""
    rs = [f["search"] for f in found.values()]
    slopes = []
    for f in found.values():
        rings = layer_roles(len(f["sizes"]), target_layer=target_layer).rings
        slope = ring_slope(f["search"]["eps"], f["sizes"], rings) if f["search"]["verified"] else None
        if slope is not None:
            slopes.append(slope)
    counts = {len(f["sizes"]) for f in found.values()}
    roles = layer_roles(counts.pop(), target_layer=target_layer) if len(counts) == 1 else None
    return {
        "images": len(rs),
        "verified": sum(bool(r["verified"]) for r in rs),
        **certificate_medians(rs),
        "converged_share": sum(bool(r.get("converged")) for r in rs) / len(rs) if rs else None,
        "unknown_share": status_share(rs, "unknown") if rs else None,
        "log10_eps_per_layer": per_layer_log10(rs),
        "layers": None if roles is None else roles._asdict(),
        "ring_slope": _interval(slopes),
    }


def report(
    runs: Mapping[str, Mapping[int, dict[str, Any]]],
    target_layer: Mapping[str, bool],
    *,
    methods: Sequence[str] = OPTIMIZERS,
) -> dict[str, Any]:
    """The defenses report: per run and method the summary, and the seed's claims checked.

    Args:
      runs: {run name (e.g. defense): {image: record}}, each over the same images (those every run
        searched).
      target_layer: {run name: whether its records end with the target digit's layer}.
      methods: the shrink methods compared (both of `OPTIMIZERS` for claim c).

    Returns:
      {"images", "order" (the run names in order; JSON sorts the keys of "defenses"), "methods",
      "defenses": {run: {method: summary}}, "claims": [row, ...]}; a claim row is {"key", "claim",
      "scope", "measures": {name: {"mean", "ci", "n"}}, "rule", "verdict"}.
    """
    images = sorted(set.intersection(*(set(r) for r in runs.values()))) if runs else []
    found = {
        name: {m: _searches({i: recs[i] for i in images}, m) for m in methods} for name, recs in runs.items()
    }
    defenses: dict[str, dict[str, Any]] = {}
    for name, by_method in found.items():
        defenses[name] = {}
        for m, f in by_method.items():
            if f:
                defenses[name][m] = method_summary(f, target_layer=target_layer[name])
    claims: list[dict[str, Any]] = []

    def add(key: str, scope: str, measures: dict[str, dict[str, Any]]) -> None:
        claims.append(
            {
                "key": key,
                "claim": CLAIMS[key],
                "scope": scope,
                "measures": measures,
                "rule": RULES[key],
                "verdict": verdict(key, measures),
            }
        )

    for name, by_method in defenses.items():
        for m, s in by_method.items():
            add("distance", f"{name} / {short(m)}", {"ring_slope": s["ring_slope"]})
    if UNDEFENDED in found:
        for m in methods:
            for name in found:
                if name != UNDEFENDED and found[name][m] and found[UNDEFENDED][m]:
                    add(
                        "defended",
                        f"{name} − {UNDEFENDED} / {short(m)}",
                        _paired(found[UNDEFENDED][m], found[name][m]),
                    )
    fixed, sensitivity = OPTIMIZERS
    if fixed in methods and sensitivity in methods:
        for name, by_method in found.items():
            if by_method[fixed] and by_method[sensitivity]:
                add(
                    "shrink",
                    f"{name}: sensitivity − fixed",
                    _paired(by_method[fixed], by_method[sensitivity]),
                )
    return {
        "images": len(images),
        "order": list(runs),
        "methods": list(methods),
        "defenses": defenses,
        "claims": claims,
    }


def short(method: str) -> str:
    """optimizer_fixed -> fixed."""
    return method.removeprefix("optimizer_")
