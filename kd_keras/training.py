"""Training one model, plainly or through the Distiller, with the usual callbacks."""

import dataclasses
import os
import time

from kd_keras.distiller import Distiller
from kd_keras.keras_compat import keras, tf

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
                f"warmup_epochs must lie in [0, epochs={self.epochs}), got {self.warmup_epochs}.")


@dataclasses.dataclass(frozen=True)
class KDConfig:
    """Distillation settings (see :class:`kd_keras.Distiller`)."""

    losses: tuple = ("kd",)
    weights: tuple = ()
    alpha: float = 0.1
    temperature: float = 4.0
    ensemble: str = "logits"
    teacher_layer: str = "stage3"
    student_layer: str = "block3"

    def build_losses(self):
        from kd_keras import losses as losses_lib
        out = []
        for name in self.losses:
            if name == "kd":
                out.append(losses_lib.LogitsKD(self.temperature))
            else:
                out.append(losses_lib.get(name, teacher_layer=self.teacher_layer,
                                          student_layer=self.student_layer))
        return out


def make_optimizer(config: TrainConfig, steps_per_epoch):
    total = config.epochs * steps_per_epoch
    warmup = config.warmup_epochs * steps_per_epoch
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else config.learning_rate,
        decay_steps=total - warmup,
        warmup_target=config.learning_rate if warmup else None,
        warmup_steps=warmup)
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True)
    return keras.optimizers.Adam(schedule)


def even_batches(dataset):
    """Pads every odd-sized batch of `dataset` to an even size.

    Under oneDNN (TensorFlow's default on x86 CPUs), the gradients of a 1x1
    convolution with stride 2 (the resnet teacher's projection shortcuts)
    corrupt the heap when the batch size is odd: the process aborts or
    segfaults, intermittently. An odd batch gets a copy of its first example
    appended (labels and teacher logits alike), so no example is lost and the
    number of steps per epoch does not change.
    """

    def pad(*batch):
        batch = batch if len(batch) > 1 else batch[0]
        n = tf.shape(tf.nest.flatten(batch)[0])[0]
        return tf.nest.map_structure(lambda t: tf.concat([t, t[: n % 2]], 0), batch)

    return dataset.map(pad)


def compile_plain(model, optimizer="adam"):
    model.compile(optimizer=optimizer,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def fit(student, datasets, config: TrainConfig, run_dir, teacher=None,
        kd: KDConfig = None, extra_callbacks=(), verbose=1, offline_data=None,
        batch_size=128):
    """Trains `student` in place, plainly or distilled from `teacher`.

    Training batches of odd size are padded by one example (see
    :func:`even_batches`). Checkpoints every epoch to ``run_dir/backup`` (an interrupted fit resumes
    there) and logs to ``run_dir/tensorboard``.

    Args:
      student: functional keras.Model producing logits (possibly wrapped by
        TF-MOT).
      datasets: dict with 'train' and 'val' (may be None) tf.data pipelines.
      config: TrainConfig.
      run_dir: directory of this run.
      teacher: None for plain training, else a model or list of models.
      kd: KDConfig when `teacher` is given.
      extra_callbacks: more callbacks (e.g. ``UpdatePruningStep``).
      verbose: Keras verbosity (1 = progress bar).
      offline_data: optional un-augmented ``kd_keras.data.Dataset`` the train
        pipeline was built from. With it, and when every distillation loss
        reads logits only, the teachers' logits are computed once and fed with
        the labels instead of running the teachers at every step (same loss,
        fewer forward passes).
      batch_size: batch size of the rebuilt train pipeline (with offline_data).

    Returns:
      dict: history (per-epoch metrics), train_time_s.
    """
    keras.utils.set_random_seed(config.seed)
    steps = int(datasets["train"].cardinality())
    optimizer = make_optimizer(config, steps)
    if teacher is not None:
        kd = kd or KDConfig()
        model = Distiller(student, teacher, kd.build_losses(),
                          list(kd.weights) or None, alpha=kd.alpha,
                          temperature=kd.temperature, ensemble=kd.ensemble)
        model.compile(optimizer=optimizer, metrics=["accuracy"])
        if offline_data is not None and not model.uses_features:
            from kd_keras import data as data_lib
            logits = model.precompute_teacher_logits(
                data_lib.preprocess(offline_data.x_train).numpy())
            datasets = dict(datasets, train=data_lib.make_datasets(
                offline_data, batch_size, seed=config.seed, teacher_logits=logits)["train"])
    else:
        model = compile_plain(student, optimizer)
    callbacks = [
        keras.callbacks.BackupAndRestore(os.path.join(run_dir, "backup")),
        keras.callbacks.TensorBoard(os.path.join(run_dir, "tensorboard"), profile_batch=0),
        *extra_callbacks,
    ]
    if config.early_stopping and datasets.get("val") is not None:
        callbacks.append(keras.callbacks.EarlyStopping(
            "val_accuracy", patience=config.early_stopping, restore_best_weights=True))
    start = time.time()
    history = model.fit(even_batches(datasets["train"]), validation_data=datasets.get("val"),
                        epochs=config.epochs, callbacks=callbacks, verbose=verbose)
    elapsed = time.time() - start
    return {"history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
            "train_time_s": elapsed}


def evaluate(model, dataset):
    """Top-1 accuracy of a logits model on a dataset."""
    compile_plain(model)
    return float(model.evaluate(dataset, verbose=0, return_dict=True)["accuracy"])
