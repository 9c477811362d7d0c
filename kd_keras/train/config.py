"""How one model is trained: :class:`TrainConfig` and the optimizer it names."""

import dataclasses

from kd_keras.keras_compat import keras

OPTIMIZERS = ("sgd", "adam")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How one model is trained.

    Attributes:
      epochs: passes over the training split.
      optimizer: 'sgd' (Nesterov momentum 0.9) or 'adam'.
      learning_rate: peak learning rate, reached after `warmup_epochs` of linear
        warm-up, then cosine-decayed to 0.
      warmup_epochs: epochs of linear warm-up (may be 0).
      early_stopping: patience in epochs on validation accuracy; 0 disables.
      seed: seed for weights initialization and data order.
    """

    epochs: int = 10
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    warmup_epochs: int = 0
    early_stopping: int = 0
    seed: int = 0

    def __post_init__(self):
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}.")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}.")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}.")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ValueError(
                f"warmup_epochs must lie in [0, epochs={self.epochs}), got {self.warmup_epochs}."
            )


def make_optimizer(config: TrainConfig, steps_per_epoch):
    """The optimizer of `config` with its warm-up + cosine schedule over the run."""
    total = config.epochs * steps_per_epoch
    warmup = config.warmup_epochs * steps_per_epoch
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else config.learning_rate,
        decay_steps=total - warmup,
        warmup_target=config.learning_rate if warmup else None,
        warmup_steps=warmup,
    )
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True)
    return keras.optimizers.Adam(schedule)
