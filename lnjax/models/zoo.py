"""Named architectures.

References:
  DOUBLE-MNIST CNN: the MuLLoC thesis code (SPEC §2): conv 1→8 3×3 s2 → ReLU → conv 8→16 3×3 s2
    → ReLU → max-pool 4×4 → dense 256→10.
  MNIST "madry": Madry et al., Towards Deep Learning Models Resistant to Adversarial Attacks,
    ICLR 2018 (conv 5×5×32 → pool → conv 5×5×64 → pool → dense 1024 → dense 10).
"""

from __future__ import annotations

from lnjax.models.sequential import (
    ConvSpec,
    DenseSpec,
    FlattenSpec,
    MaxPoolSpec,
    ReLUSpec,
    Sequential,
    Spec,
)

R = ReLUSpec()


def dmnist_cnn(num_classes: int = 10) -> Sequential:
    """SPEC §2 net on 64×64×1: conv s2 → conv s2 → max-pool 4 → dense (8,192 + 4,096 ReLUs)."""
    return Sequential(
        specs=(
            ConvSpec(8, (3, 3), (2, 2)),
            R,
            ConvSpec(16, (3, 3), (2, 2)),
            R,
            MaxPoolSpec((4, 4)),
            FlattenSpec(),
            DenseSpec(num_classes),
        ),
        input_shape=(64, 64, 1),
    )


def dmnist_cnn_nopool(num_classes: int = 10) -> Sequential:
    """The DOUBLE-MNIST CNN without pooling: conv s2 → conv s2 → conv s2 → dense → dense."""
    return Sequential(
        specs=(
            ConvSpec(8, (3, 3), (2, 2)),
            R,
            ConvSpec(16, (3, 3), (2, 2)),
            R,
            ConvSpec(16, (3, 3), (2, 2)),
            R,
            FlattenSpec(),
            DenseSpec(64),
            R,
            DenseSpec(num_classes),
        ),
        input_shape=(64, 64, 1),
    )


def dmnist_small(num_classes: int = 10) -> Sequential:
    """The quickstart DOUBLE-MNIST CNN: conv 16 s2 → conv 32 s2 → conv 32 s2 → dense 100 → dense."""
    return Sequential(
        specs=(
            ConvSpec(16, (3, 3), (2, 2)),
            R,
            ConvSpec(32, (3, 3), (2, 2)),
            R,
            ConvSpec(32, (3, 3), (2, 2)),
            R,
            FlattenSpec(),
            DenseSpec(100),
            R,
            DenseSpec(num_classes),
        ),
        input_shape=(64, 64, 1),
    )


def dmnist_tiny(num_classes: int = 10) -> Sequential:
    """A very small DOUBLE-MNIST net for tests and smoke runs: conv 4 (4×4, s4) → dense."""
    return Sequential(
        specs=(ConvSpec(4, (4, 4), (4, 4)), R, FlattenSpec(), DenseSpec(num_classes)),
        input_shape=(64, 64, 1),
    )


def mnist_madry(num_classes: int = 10) -> Sequential:
    """Madry et al.'s MNIST CNN on 28×28×1 (3.3M parameters; GPU scale)."""
    return Sequential(
        specs=(
            ConvSpec(32, (5, 5)),
            R,
            MaxPoolSpec((2, 2)),
            ConvSpec(64, (5, 5)),
            R,
            MaxPoolSpec((2, 2)),
            FlattenSpec(),
            DenseSpec(1024),
            R,
            DenseSpec(num_classes),
        ),
        input_shape=(28, 28, 1),
    )


def mnist_small(num_classes: int = 10) -> Sequential:
    """A CPU-friendly MNIST CNN: conv 16 s2 → conv 32 s2 → dense 100 → dense 10."""
    return Sequential(
        specs=(
            ConvSpec(16, (4, 4), (2, 2)),
            R,
            ConvSpec(32, (4, 4), (2, 2)),
            R,
            FlattenSpec(),
            DenseSpec(100),
            R,
            DenseSpec(num_classes),
        ),
        input_shape=(28, 28, 1),
    )


def cifar10_cnn(num_classes: int = 10) -> Sequential:
    """A VGG-style CIFAR-10 CNN on 32×32×3 (conv 32,32 → pool → conv 64,64 → pool → dense 256)."""
    return Sequential(
        specs=(
            ConvSpec(32),
            R,
            ConvSpec(32),
            R,
            MaxPoolSpec((2, 2)),
            ConvSpec(64),
            R,
            ConvSpec(64),
            R,
            MaxPoolSpec((2, 2)),
            FlattenSpec(),
            DenseSpec(256),
            R,
            DenseSpec(num_classes),
        ),
        input_shape=(32, 32, 3),
    )


def mlp(input_shape: tuple[int, ...], hidden: tuple[int, ...], num_classes: int) -> Sequential:
    """A fully connected ReLU network (tiny ones are used to test bounds and the MILP)."""
    specs: list[Spec] = [FlattenSpec()]
    for h in hidden:
        specs += [DenseSpec(h), R]
    specs.append(DenseSpec(num_classes))
    return Sequential(specs=tuple(specs), input_shape=tuple(input_shape))


MODELS = {
    "dmnist_cnn": dmnist_cnn,
    "dmnist_cnn_nopool": dmnist_cnn_nopool,
    "dmnist_small": dmnist_small,
    "dmnist_tiny": dmnist_tiny,
    "mnist_madry": mnist_madry,
    "mnist_small": mnist_small,
    "cifar10_cnn": cifar10_cnn,
}


def get_model(name: str, num_classes: int = 10) -> Sequential:
    """A model of the zoo by name; ValueError naming the known ones otherwise."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {sorted(MODELS)}")
    return MODELS[name](num_classes)
