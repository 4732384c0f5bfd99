"""The layer view's ops, one module each, and the rule table they register in (`base.RULES`).

Importing this package registers every op. See `base` for the rules' contract and BUILD.md for a
worked example of adding an op.
"""

from lnjax.models.ops.affine import Affine, AffineSpec
from lnjax.models.ops.base import RULES, MilpRules, OpRules, PatchRules, is_linear, register, rules_of
from lnjax.models.ops.conv import Conv, ConvSpec
from lnjax.models.ops.dense import Dense, DenseSpec
from lnjax.models.ops.flatten import Flatten, FlattenSpec
from lnjax.models.ops.geometry import Padding
from lnjax.models.ops.pool import AvgPool, AvgPoolSpec, MaxPool, MaxPoolSpec
from lnjax.models.ops.relu import ReLU, ReLUSpec

Op = Affine | Conv | Dense | ReLU | Flatten | MaxPool | AvgPool
Spec = AffineSpec | ConvSpec | DenseSpec | ReLUSpec | FlattenSpec | MaxPoolSpec | AvgPoolSpec

__all__ = [
    "RULES",
    "Affine",
    "AffineSpec",
    "AvgPool",
    "AvgPoolSpec",
    "Conv",
    "ConvSpec",
    "Dense",
    "DenseSpec",
    "Flatten",
    "FlattenSpec",
    "MaxPool",
    "MaxPoolSpec",
    "MilpRules",
    "Op",
    "OpRules",
    "Padding",
    "PatchRules",
    "ReLU",
    "ReLUSpec",
    "Spec",
    "is_linear",
    "register",
    "rules_of",
]
