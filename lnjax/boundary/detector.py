"""The decision-boundary detector: benign or adversarial, from boundary distances and purity.

Architecture (SPEC §3, the reference's `classify_common.py`): the sorted distances of an input
[D] → conv1d(8 filters, kernel 8, stride 4, VALID) → ReLU → dropout 0.5 → conv1d(16, 8, 4, VALID) →
ReLU → dropout → flatten, concatenated with the top-3 purity values → dense 32 → ReLU → dropout →
dense 2 (logits of benign / adversarial). MNIST: D = 1568 → 391 × 8 → 96 × 16 → 1536 + 3 → 32 → 2.
Written as a flax.linen module like the model zoo; the two inputs do not fit the zoo's one-input
`Sequential`, and the detector is not a model the bounds or the MILP ever see.

Training (the reference's `classify.py`): Adam (lr 1e-3), every step a batch of `half_batch`
benign and `half_batch` adversarial examples (labels 0 / 1), softmax cross-entropy. Only correctly
classified benign inputs and successful adversarial examples are used: the reference masks the others
out of the loss, here they are never drawn (each half is sampled uniformly, with replacement, from the
usable rows of its side), so every batch is exactly half and half. Evaluation (`classify_test.py`):
the false-positive rate is the share of usable benign inputs flagged adversarial, the false-negative
rate the share of usable adversarial examples not flagged, both on a held-out split.

References:
  He, Li & Song, Decision Boundary Analysis of Adversarial Examples, ICLR 2018.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple, cast

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.typing import ArrayLike

from lnjax.boundary.purity import adjacent_purity
from lnjax.types import Params

PURITY_K = 3
MIN_DISTANCES = 36  # the two VALID convolutions (kernel 8, stride 4) need at least 36 inputs


class DetectorFeatures(NamedTuple):
    """distances: [N, D] float32, sorted ascending and normalised; purity: [N, P] float32 (P_1 … P_P)."""

    distances: jax.Array
    purity: jax.Array


class DetectorFit(NamedTuple):
    """params: the detector's parameters; losses: [steps] the training loss of every step."""

    params: Any
    losses: jax.Array


class DetectorRates(NamedTuple):
    """false_positive: share of the usable benign inputs flagged adversarial (NaN if none);
    false_negative: share of the usable adversarial examples not flagged (NaN if none);
    benign, adversarial: how many usable inputs of each side were evaluated."""

    false_positive: float
    false_negative: float
    benign: int
    adversarial: int


def detector_features(
    distance: jax.Array,
    adjacent: jax.Array,
    *,
    num_classes: int,
    purity_k: int = PURITY_K,
    miss_distance: float = 1.0,
    shift: float = 0.0,
    scale: float = 1.0,
) -> DetectorFeatures:
    """The detector's inputs from `BoundaryDistances.distance` / `.adjacent`.

    Args:
      distance: [N, D] RMS units, +inf where no boundary was found.
      adjacent: [N, D] int, −1 where no boundary was found.
      num_classes: K (for the purity).
      purity_k: how many purity values (P_1 … P_k) to keep.
      miss_distance: the value of a direction without a boundary; the reference stores the pixel
        range's maximum, 1.0 in [0, 1] units (MNIST 1.0; CIFAR-10 255 of [0, 255]).
      shift, scale: distances become (d − shift) / scale after sorting (the reference's CIFAR-10
        detector uses (d·255 − 16) / 127.5, i.e. shift 16/255, scale 0.5; MNIST none).

    Returns:
      DetectorFeatures(distances [N, D] ascending, purity [N, purity_k]).
    """
    d = jnp.where(jnp.isfinite(distance), distance, miss_distance)
    d = (jnp.sort(d, axis=-1) - shift) / scale
    purity = adjacent_purity(adjacent, num_classes)[..., :purity_k]
    return DetectorFeatures(distances=d.astype(jnp.float32), purity=purity)


class BoundaryDetector(nn.Module):
    """distances [N, D], purity [N, P] -> logits [N, 2] (class 1 = adversarial).

    Parameters from `init_detector` (Glorot-uniform kernels, zero biases, as the reference's
    TensorFlow defaults); `BoundaryDetector().init` works too (flax's default initialisers).
    """

    dropout: float = 0.5

    def _drop(self, x: jax.Array, train: bool) -> jax.Array:
        """Inverted dropout (as nn.Dropout) with the mask drawn flat from the 'dropout' RNG stream (an
        N-D threefry draw compiles several times slower on CPU)."""
        if not train or self.dropout == 0.0:
            return x
        keep = jax.random.uniform(self.make_rng("dropout"), (x.size,)) >= self.dropout
        return jnp.where(keep.reshape(x.shape), x / (1.0 - self.dropout), 0.0)

    @nn.compact
    def __call__(self, distances: jax.Array, purity: jax.Array, *, train: bool) -> jax.Array:
        drop = lambda x: self._drop(x, train)
        conv = lambda f, name: nn.Conv(f, (8,), (4,), padding="VALID", name=name)
        t = distances[..., None]
        t = drop(nn.relu(conv(8, "conv_0")(t)))
        t = drop(nn.relu(conv(16, "conv_1")(t)))
        t = jnp.concatenate([t.reshape(t.shape[0], -1), purity], axis=-1)
        t = drop(nn.relu(nn.Dense(32, name="dense_0")(t)))
        return nn.Dense(2, name="dense_1")(t)


def _check(features: DetectorFeatures, ok, side: str) -> np.ndarray:
    ok = np.asarray(ok, bool)
    if ok.shape != (features.distances.shape[0],):
        raise ValueError(f"{side}: mask of shape {ok.shape} for {features.distances.shape[0]} rows")
    return ok


@functools.partial(jax.jit, static_argnames=("num_distances", "purity_k"))
def init_detector(key: jax.Array, *, num_distances: int, purity_k: int = PURITY_K) -> Params:
    """Initial `BoundaryDetector` parameters: Glorot-uniform kernels, zero biases.

    The reference's (TensorFlow `tf.layers`) defaults. All kernels come from one uniform draw of `key`
    (flax's per-parameter key folding compiles to one threefry hash per parameter, slow on CPU); the
    parameter tree is the module's own.
    """
    d, p = jnp.zeros((1, num_distances)), jnp.zeros((1, purity_k))
    shapes = jax.eval_shape(lambda: BoundaryDetector().init(jax.random.key(0), d, p, train=False))["params"]
    leaves, treedef = jax.tree_util.tree_flatten_with_path(shapes)
    sizes = [leaf.size for _, leaf in leaves]
    u = jax.random.uniform(key, (sum(sizes),), jnp.float32, minval=-1.0, maxval=1.0)
    out, start = [], 0
    for (path, leaf), size in zip(leaves, sizes, strict=True):
        if jax.tree_util.keystr(path).endswith("['kernel']"):
            receptive = math.prod(leaf.shape[:-2])  # conv: kernel width; dense: 1
            fan_in, fan_out = receptive * leaf.shape[-2], receptive * leaf.shape[-1]
            limit = math.sqrt(6.0 / (fan_in + fan_out))
            out.append(limit * u[start : start + size].reshape(leaf.shape))
        else:
            out.append(jnp.zeros(leaf.shape, leaf.dtype))
        start += size
    return jax.tree_util.tree_unflatten(treedef, out)


@functools.partial(jax.jit, static_argnames=("steps", "half_batch", "learning_rate", "dropout"))
def _fit(
    key, params, benign, adversarial, p_benign, p_adversarial, *, steps, half_batch, learning_rate, dropout
):
    model = BoundaryDetector(dropout=dropout)
    tx = optax.adam(learning_rate)
    labels = jnp.concatenate([jnp.zeros(half_batch, jnp.int32), jnp.ones(half_batch, jnp.int32)])

    def loss_fn(params, d, p, dropout_key):
        out = model.apply({"params": params}, d, p, train=True, rngs={"dropout": dropout_key})
        logits = cast(jax.Array, out)  # apply returns the output alone (no mutable collections)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    def body(carry, step):
        params, opt_state = carry
        kb, ka, kd = jax.random.split(jax.random.fold_in(key, step), 3)
        ib = jax.random.choice(kb, p_benign.shape[0], (half_batch,), p=p_benign)
        ia = jax.random.choice(ka, p_adversarial.shape[0], (half_batch,), p=p_adversarial)
        d = jnp.concatenate([benign.distances[ib], adversarial.distances[ia]])
        p = jnp.concatenate([benign.purity[ib], adversarial.purity[ia]])
        loss, grads = jax.value_and_grad(loss_fn)(params, d, p, kd)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    (params, _), losses = lax.scan(body, (params, tx.init(params)), jnp.arange(steps))
    return params, losses


def train_detector(
    key: jax.Array,
    benign: DetectorFeatures,
    adversarial: DetectorFeatures,
    benign_ok: ArrayLike,
    adversarial_ok: ArrayLike,
    *,
    steps: int = 2000,
    half_batch: int = 128,
    learning_rate: float = 1e-3,
    dropout: float = 0.5,
) -> DetectorFit:
    """Trains a `BoundaryDetector` on half-benign, half-adversarial batches.

    Args:
      key: a typed PRNG key (initialisation, batches, dropout).
      benign, adversarial: features of the training inputs of each side.
      benign_ok: [N_b] bool, the benign inputs the model classifies correctly (only these are used).
      adversarial_ok: [N_a] bool, the successful adversarial examples (of correctly classified inputs;
        only these are used).
      steps, half_batch, learning_rate, dropout: Adam steps, examples of each side per step (the
        reference's MNIST settings: 2000 steps of 128 + 128, lr 1e-3, dropout 0.5).

    Returns:
      DetectorFit(params, losses [steps]); the whole loop is one jitted `lax.scan`.

    Raises:
      ValueError: a side has no usable row, or fewer than MIN_DISTANCES directions.
    """
    pb, pa = _check(benign, benign_ok, "benign"), _check(adversarial, adversarial_ok, "adversarial")
    if not pb.any() or not pa.any():
        raise ValueError(
            f"the detector needs usable rows on both sides; got {int(pb.sum())} correctly classified "
            f"benign and {int(pa.sum())} successful adversarial inputs"
        )
    if benign.distances.shape[-1] < MIN_DISTANCES:
        raise ValueError(
            f"the detector needs ≥ {MIN_DISTANCES} distances per input, got {benign.distances.shape[-1]}"
        )
    if steps < 1 or half_batch < 1 or learning_rate <= 0 or not 0 <= dropout < 1:
        raise ValueError("need steps ≥ 1, half_batch ≥ 1, learning_rate > 0 and 0 ≤ dropout < 1")
    init_key, loop_key = jax.random.split(key)
    params = init_detector(
        init_key, num_distances=benign.distances.shape[-1], purity_k=benign.purity.shape[-1]
    )
    params, losses = _fit(
        loop_key,
        params,
        benign,
        adversarial,
        jnp.asarray(pb / pb.sum(), jnp.float32),
        jnp.asarray(pa / pa.sum(), jnp.float32),
        steps=int(steps),
        half_batch=int(half_batch),
        learning_rate=float(learning_rate),
        dropout=float(dropout),
    )
    return DetectorFit(params=params, losses=losses)


@jax.jit
def _flag(params, features: DetectorFeatures) -> jax.Array:
    out = BoundaryDetector().apply({"params": params}, features.distances, features.purity, train=False)
    logits = cast(jax.Array, out)  # apply returns the output alone (no mutable collections)
    return jnp.argmax(logits, axis=-1) == 1


def detect(params: Params, features: DetectorFeatures) -> jax.Array:
    """[N] bool: the detector flags the input as adversarial (dropout off)."""
    return _flag(params, features)


def detector_rates(
    params: Params,
    benign: DetectorFeatures,
    adversarial: DetectorFeatures,
    benign_ok: ArrayLike,
    adversarial_ok: ArrayLike,
) -> DetectorRates:
    """False-positive and false-negative rates over the usable rows (see `train_detector`)."""
    pb, pa = _check(benign, benign_ok, "benign"), _check(adversarial, adversarial_ok, "adversarial")
    flagged_b = np.asarray(detect(params, benign))[pb]
    flagged_a = np.asarray(detect(params, adversarial))[pa]
    fp = float(flagged_b.mean()) if flagged_b.size else float("nan")
    fn = float(1.0 - flagged_a.mean()) if flagged_a.size else float("nan")
    return DetectorRates(
        false_positive=fp, false_negative=fn, benign=int(pb.sum()), adversarial=int(pa.sum())
    )
