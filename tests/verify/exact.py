"""The brute-force reference (`lnjax.verify.reference.brute_force_min`) over only the ReLU patterns a
box allows: the same exact minimum, without the LPs of patterns no point of the box has."""

import numpy as np

from lnjax.models import layers as L
from lnjax.verify import milp as M
from lnjax.verify.reference import BruteForceResult, brute_force_min


def stable_phases(view, lower, upper, slack=1e-6):
    """[#ReLUs] in op order: +1 where a ReLU's input is > `slack` on the whole box, −1 where it is
    < −`slack`, 0 otherwise. Interval arithmetic in float64 on the MILP network's own matrices (the
    ones brute force enumerates over), not lnjax.bounds: the reference stays independent of the
    bounds it checks."""
    lo = np.asarray(lower, np.float64).ravel()
    hi = np.asarray(upper, np.float64).ravel()
    phases = []
    for layer in M.network_from_view(view).layers:
        if isinstance(layer, M.AffineLayer):
            w, b = layer.w.toarray().astype(np.float64), np.asarray(layer.b, np.float64)
            centre, radius = w @ ((lo + hi) / 2) + b, np.abs(w) @ ((hi - lo) / 2)
            lo, hi = centre - radius, centre + radius
        else:
            if not isinstance(layer.op, L.ReLU):  # as in brute force: ReLU networks only
                raise TypeError(f"brute force handles ReLU networks only, not {type(layer.op).__name__}")
            phases.append(np.where(lo > slack, 1, np.where(hi < -slack, -1, 0)))
            lo, hi = np.maximum(lo, 0.0), np.maximum(hi, 0.0)
    return np.concatenate([np.zeros(0), *phases]).astype(np.int32)


def exact_min(view, lower, upper, rows, phases=None) -> BruteForceResult:
    """`brute_force_min(view, lower, upper, rows, phases=phases)`, its enumeration restricted to the
    stable ReLUs' phases. Exact all the same: a pattern with a stable ReLU in its other phase holds
    at no point of the box (its LP is infeasible), so leaving it out changes neither the minimum
    nor the minimiser. Fixed `phases` (a subdomain) win over the stable ones; where they disagree
    the subdomain is empty either way (minimum +inf)."""
    stable = stable_phases(view, lower, upper)
    fixed = stable if phases is None else np.where(np.asarray(phases).ravel() != 0, phases, stable)
    return brute_force_min(view, lower, upper, rows, phases=fixed)
