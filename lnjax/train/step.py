"""Jitted, data-parallel training and evaluation steps.

One code path for 1 CPU, several forced host devices, or a GPU/TPU host: the batch is sharded
over a 1-D mesh of all local devices (axis "data"), parameters and optimiser state are
replicated, and XLA inserts the gradient all-reduce.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any, cast

import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from lnjax.models import Sequential, layer_view
from lnjax.train import defenses, losses
from lnjax.train.stability import ibp_logit_bounds, relu_stability_loss, sabr_centre, worst_case_logits
from lnjax.types import Params


class TrainState(struct.PyTreeNode):
    """step, params and optimiser state; `tx` is static."""

    step: jax.Array
    params: Any
    opt_state: Any
    tx: optax.GradientTransformation = struct.field(pytree_node=False)

    @classmethod
    def create(cls, *, params: Params, tx: optax.GradientTransformation) -> TrainState:
        return cls(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), tx=tx)


@dataclasses.dataclass(frozen=True)
class DefenseConfig:
    """What the training step does to each batch.

    name: "none", "l0" (zero one random rectangle per image, sides in [l0_min, l0_max]) or
      "linf" (PGD: eps, steps, step_size, random_start; `adv_share` of each batch is replaced by
      its adversarial examples).
      eps_warmup: the attack's ε (and the PGD step) and `ibp_eps` ramp linearly from 0 over the
      first `eps_warmup` steps (0 = full ε from the start); PGD training from scratch at full ε on
      DOUBLE-MNIST otherwise sits at the label prior for hundreds of steps, and IBP training at
      full ε from the start is known not to train (Gowal et al. 2018 ramp it too).
    rs_weight, rs_eps: weight and box radius of the ReLU-stability regulariser (0 = off).
    ibp_weight, ibp_eps: weight and box radius of the IBP worst-case loss (0 = off): the step
      minimises ℓ(z, y) + ibp_weight · ℓ(ẑ, y), ẑ the worst-case logits of the interval bounds over
      the box around each clean example (`stability.worst_case_logits`); Gowal et al. 2018's
      κ·ℓ(z) + (1 − κ)·ℓ(ẑ) up to scale, ibp_weight = (1 − κ) / κ (1: their final κ = 0.5). With
      "linf" the natural term is on the adversarial batch, the IBP term on the clean one.
    ibp_at: where the IBP box is centred: "clean" (the example: IBP, Gowal et al. 2018) or
      "attack" ("linf" only, ibp_eps ≤ eps: SABR, Müller et al. 2023, "Certified Training: Small
      Boxes are All You Need", ICLR 2023; a box of radius ibp_eps around the PGD point, shifted to lie
      inside the attack's ε-ball, so the bound is tight enough to train on while the attack finds
      where in the ball to look).

    Raises:
      ValueError: (at construction) a value out of range, naming the field and what is expected
        (every number finite; eps in [0, 1]; for "linf" eps > 0, steps ≥ 1, step_size > 0,
        adv_share in (0, 1]; eps_warmup ≥ 0, weights ≥ 0, ibp_eps in [0, 1]; for "l0"
        1 ≤ l0_min ≤ l0_max).
    """

    name: str = "none"
    l0_min: int = 4
    l0_max: int = 16
    eps: float = 0.1
    steps: int = 7
    step_size: float = 0.025
    random_start: bool = True
    adv_share: float = 1.0
    eps_warmup: int = 0
    rs_weight: float = 0.0
    rs_eps: float = 0.1
    ibp_weight: float = 0.0
    ibp_eps: float = 0.1
    ibp_at: str = "clean"

    def __post_init__(self) -> None:
        if self.name not in DEFENSES:
            raise ValueError(f"name = {self.name!r} is unknown; expected one of {DEFENSES}")
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{field.name} = {value} must be a finite number")
        checks = [
            (0 <= self.eps <= 1, f"eps = {self.eps} must be in [0, 1] (an L∞ radius in pixel units)"),
            (self.rs_weight >= 0, f"rs_weight = {self.rs_weight} must be ≥ 0"),
            (self.rs_eps >= 0, f"rs_eps = {self.rs_eps} must be ≥ 0"),
            (self.ibp_weight >= 0, f"ibp_weight = {self.ibp_weight} must be ≥ 0 (0 = off)"),
            (0 <= self.ibp_eps <= 1, f"ibp_eps = {self.ibp_eps} must be in [0, 1] (an L∞ radius)"),
            (self.eps_warmup >= 0, f"eps_warmup = {self.eps_warmup} must be ≥ 0 (steps)"),
            (self.ibp_at in IBP_AT, f"ibp_at = {self.ibp_at!r} is unknown; expected one of {IBP_AT}"),
        ]
        if self.ibp_at == "attack" and self.ibp_weight > 0:
            checks += [
                (self.name == "linf", f"ibp_at = 'attack' needs the linf defense (name = {self.name!r})"),
                (
                    self.ibp_eps <= self.eps,
                    f"ibp_eps = {self.ibp_eps} must be ≤ eps = {self.eps} with ibp_at = 'attack' "
                    "(the small box lies inside the attack's ball)",
                ),
            ]
        if self.name == "linf":
            checks += [
                (self.eps > 0, f"eps = {self.eps} must be > 0 for the linf defense"),
                (self.steps >= 1, f"steps = {self.steps} must be ≥ 1"),
                (self.step_size > 0, f"step_size = {self.step_size} must be > 0"),
                (0 < self.adv_share <= 1, f"adv_share = {self.adv_share} must be in (0, 1]"),
            ]
        if self.name == "l0":
            checks.append(
                (
                    1 <= self.l0_min <= self.l0_max,
                    f"l0_min = {self.l0_min}, l0_max = {self.l0_max}: need 1 ≤ l0_min ≤ l0_max",
                )
            )
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


DEFENSES = ("none", "l0", "linf")
IBP_AT = ("clean", "attack")


def _logits_fn(model: Sequential) -> Callable[[Any, jax.Array], jax.Array]:
    """`logits(params, x)` of `model` (flax types `apply`'s result loosely)."""
    return lambda params, x: cast(jax.Array, model.apply({"params": params}, x))


@functools.cache
def make_mesh() -> Mesh:
    """A 1-D mesh over all local devices, axis "data" (one per process, so steps built on it are
    cached by `make_train_step` / `make_eval_step`)."""
    return Mesh(jax.local_devices(), ("data",))


def _loss_of(apply_fn, loss_fn, params, x, y):
    return loss_fn(apply_fn(params, x), y)


# Built steps by their arguments, which are frozen values (models, configs and the mesh compare by
# value): a process that trains or evaluates the same architecture again (a resumed run in the same
# process, tests) reuses the jitted step and its compilation.
_STEPS: dict[tuple[Any, ...], Callable] = {}


def make_train_step(
    *,
    model: Sequential,
    task: str,
    defense: DefenseConfig,
    mesh: Mesh,
) -> Callable:
    """Returns `step(state, key, x, y) -> (state, metrics)`, jitted with shardings, state donated.

    x: [B, H, W, C] in [0, 1] (B divisible by the device count), y: [B, K] multi-hot or [B] int.
    The key is folded with the step inside, so callers pass the same root key every step.
    The step is built once per (model, task, defense, mesh) in a process.
    """
    key = ("train", model, task, defense, mesh)
    if key not in _STEPS:
        _STEPS[key] = _build_train_step(model=model, task=task, defense=defense, mesh=mesh)
    return _STEPS[key]


def _build_train_step(
    *,
    model: Sequential,
    task: str,
    defense: DefenseConfig,
    mesh: Mesh,
) -> Callable:
    """The uncached `make_train_step`."""
    loss_fn = losses.LOSSES[task]
    apply_fn = _logits_fn(model)

    def ramp(step):
        if defense.eps_warmup > 0:
            return jnp.minimum(1.0, (step + 1).astype(jnp.float32) / defense.eps_warmup)
        return 1.0

    def perturb(params, key, x, y, step):
        if defense.name == "l0":
            keys = jax.random.split(key, x.shape[0])
            return jax.vmap(
                lambda k, xi: defenses.l0_rectangle(k, xi, min_size=defense.l0_min, max_size=defense.l0_max)
            )(keys, x)
        if defense.name == "linf":
            x_adv = defenses.pgd_linf(
                key,
                lambda xa: _loss_of(apply_fn, loss_fn, params, xa, y).sum(),
                x,
                eps=defense.eps * ramp(step),  # pyright: ignore[reportArgumentType] (a traced scalar)
                steps=defense.steps,
                step_size=defense.step_size * ramp(step),  # pyright: ignore[reportArgumentType]
                random_start=defense.random_start,
            )
            x_adv = jax.lax.stop_gradient(x_adv)
            n_adv = int(round(defense.adv_share * x.shape[0]))
            take = (jnp.arange(x.shape[0]) < n_adv)[:, None, None, None]
            return jnp.where(take, x_adv, x)
        return x

    def objective(params, x, x_clean, y, step):
        logits = apply_fn(params, x)
        loss = loss_fn(logits, y).mean()
        total = loss
        rs = ibp = jnp.zeros(())
        view = layer_view(model, params) if defense.rs_weight > 0 or defense.ibp_weight > 0 else None
        if view is not None and defense.rs_weight > 0:
            rs = jax.vmap(lambda xi: relu_stability_loss(view, xi, defense.rs_eps))(x).mean()
            total = total + defense.rs_weight * rs
        if view is not None and defense.ibp_weight > 0:
            eps = defense.ibp_eps * ramp(step)
            centre = x_clean
            if defense.ibp_at == "attack":
                centre = sabr_centre(x, x_clean, defense.eps * ramp(step), eps)
            lo, hi = jax.vmap(lambda xi: ibp_logit_bounds(view, xi, eps))(centre)
            ibp = loss_fn(worst_case_logits(lo, hi, y, task), y).mean()
            total = total + defense.ibp_weight * ibp
        return total, (loss, rs, ibp, logits)

    def step(state: TrainState, key, x, y):
        key = jax.random.fold_in(key, state.step)
        x_in = perturb(state.params, key, x, y, state.step)
        grad_fn = jax.value_and_grad(objective, has_aux=True)
        (_, (loss, rs, ibp, logits)), grads = grad_fn(state.params, x_in, x, y, state.step)
        updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, "rs_loss": rs, "ibp_loss": ibp}
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

    repl = NamedSharding(mesh, P())
    data = NamedSharding(mesh, P("data"))
    return jax.jit(
        step,
        in_shardings=(repl, repl, data, data),
        out_shardings=(repl, repl),
        donate_argnums=0,
    )


def make_eval_step(
    *, model: Sequential, task: str, k: int, mesh: Mesh, pgd: DefenseConfig | None = None
) -> Callable:
    """Returns `evaluate(params, key, x, y, w) -> dict of weighted metric sums` (jitted, sharded),
    built once per (model, task, k, mesh, pgd) in a process; see `_build_eval_step`."""
    key = ("eval", model, task, k, mesh, pgd)
    if key not in _STEPS:
        _STEPS[key] = _build_eval_step(model=model, task=task, k=k, mesh=mesh, pgd=pgd)
    return _STEPS[key]


def _build_eval_step(*, model: Sequential, task: str, k: int, mesh: Mesh, pgd: DefenseConfig | None = None):
    """Returns `evaluate(params, key, x, y, w) -> dict of weighted metric sums` (jitted, sharded).

    w: [B] example weights (0 masks padding). Keys: "n" (sum of w), "correct" (top-k exact set or
    accuracy), "per_label" (multi-label), "loss", and with `pgd` given, "robust" (correct under an
    L∞ PGD attack on the loss at pgd.eps).
    """
    loss_fn = losses.LOSSES[task]
    apply_fn = _logits_fn(model)

    def evaluate(params, key, x, y, w):
        logits = apply_fn(params, x)
        out = {
            "n": w.sum(),
            "loss": (w * loss_fn(logits, y)).sum(),
            "correct": (w * losses.correct(logits, y, task=task, k=k)).sum(),
        }
        if task == "multilabel":
            out["per_label"] = (w * losses.per_label_accuracy(logits, y)).sum()
        if pgd is not None:
            x_adv = defenses.pgd_linf(
                key,
                lambda xa: _loss_of(apply_fn, loss_fn, params, xa, y).sum(),
                x,
                eps=pgd.eps,
                steps=pgd.steps,
                step_size=pgd.step_size,
                random_start=pgd.random_start,
            )
            out["robust"] = (w * losses.correct(apply_fn(params, x_adv), y, task=task, k=k)).sum()
        return out

    repl = NamedSharding(mesh, P())
    data = NamedSharding(mesh, P("data"))
    return jax.jit(evaluate, in_shardings=(repl, repl, data, data, data), out_shardings=repl)
