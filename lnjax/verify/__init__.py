"""Exact verification of output properties over input boxes: the MILP, verdicts, the staged verifier
(specs re-exported from `lnjax.specs`).

References:
  Tjeng, Xiao & Tedrake, Evaluating Robustness of Neural Networks with Mixed Integer Programming,
  ICLR 2019 (MIPVerify).
"""

from lnjax.specs import Argmax, Linear, Spec, SpecRows, Threshold, TopK, kth_smallest, margin_from_rows
from lnjax.types import VerifyFn
from lnjax.verify.config import (
    MILP_MODES,
    STAGES,
    BabOptions,
    BoundOptions,
    MilpStageOptions,
    PgdOptions,
    VerifierConfig,
)
from lnjax.verify.milp import (
    MilpNetwork,
    MilpOptions,
    MilpQuery,
    MilpResult,
    MilpWorker,
    network_from_view,
    shared_worker,
)
from lnjax.verify.verdict import Status, Verdict, VerifyStats
from lnjax.verify.verifier import Verifier, make_verifier

__all__ = [
    "MILP_MODES",
    "STAGES",
    "Argmax",
    "BabOptions",
    "BoundOptions",
    "MilpNetwork",
    "MilpOptions",
    "MilpQuery",
    "MilpResult",
    "MilpStageOptions",
    "MilpWorker",
    "PgdOptions",
    "Spec",
    "SpecRows",
    "Status",
    "Linear",
    "Threshold",
    "TopK",
    "Verdict",
    "Verifier",
    "VerifierConfig",
    "VerifyFn",
    "VerifyStats",
    "kth_smallest",
    "make_verifier",
    "margin_from_rows",
    "network_from_view",
    "shared_worker",
]
