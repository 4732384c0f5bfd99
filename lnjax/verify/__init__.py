"""Exact verification of output properties over input boxes: specs, the MILP, verdicts, stages.

References:
  Tjeng, Xiao & Tedrake, Evaluating Robustness of Neural Networks with Mixed Integer Programming,
  ICLR 2019 (MIPVerify).
"""

from lnjax.verify.config import VerifierConfig
from lnjax.verify.milp import (
    MilpNetwork,
    MilpOptions,
    MilpQuery,
    MilpResult,
    MilpWorker,
    network_from_view,
    shared_worker,
)
from lnjax.verify.pgd_box import BoxAttackResult, make_pgd_box
from lnjax.verify.specs import Argmax, Spec, SpecRows, Threshold, TopK, kth_smallest, margin_from_rows
from lnjax.verify.verdict import Status, Verdict, VerifyStats
from lnjax.verify.verifier import STAGES, make_verifier

__all__ = [
    "STAGES",
    "Argmax",
    "BoxAttackResult",
    "MilpNetwork",
    "MilpOptions",
    "MilpQuery",
    "MilpResult",
    "MilpWorker",
    "Spec",
    "SpecRows",
    "Status",
    "Threshold",
    "TopK",
    "Verdict",
    "VerifierConfig",
    "VerifyStats",
    "kth_smallest",
    "make_pgd_box",
    "make_verifier",
    "margin_from_rows",
    "network_from_view",
    "shared_worker",
]
