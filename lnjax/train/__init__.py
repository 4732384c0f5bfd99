"""Losses, defenses, jitted data-parallel steps, the host loop and checkpoints."""

from lnjax.train.checkpoint import Checkpointer, restore_params
from lnjax.train.defenses import l0_rectangle, pgd_linf
from lnjax.train.loop import TrainConfig, epoch_batches, evaluate, train
from lnjax.train.losses import LOSSES, accuracy, per_label_accuracy, sigmoid_bce, softmax_ce, topk_exact_set
from lnjax.train.stability import ibp_logit_bounds, relu_stability_loss, sabr_centre, worst_case_logits
from lnjax.train.step import DEFENSES, DefenseConfig, TrainState, make_eval_step, make_mesh, make_train_step

__all__ = [
    "DEFENSES",
    "Checkpointer",
    "DefenseConfig",
    "LOSSES",
    "TrainConfig",
    "TrainState",
    "accuracy",
    "epoch_batches",
    "evaluate",
    "ibp_logit_bounds",
    "l0_rectangle",
    "make_eval_step",
    "make_mesh",
    "make_train_step",
    "per_label_accuracy",
    "pgd_linf",
    "relu_stability_loss",
    "restore_params",
    "sabr_centre",
    "sigmoid_bce",
    "softmax_ce",
    "topk_exact_set",
    "train",
    "worst_case_logits",
]
