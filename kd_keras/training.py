"""Training one model, plainly or through the Distiller, with the usual callbacks;
and training it as a cached run (:func:`train_or_load`)."""

import dataclasses
import logging
import os
import shutil
import time

from kd_keras import data as data_lib
from kd_keras import losses as losses_lib
from kd_keras import runs
from kd_keras.distiller import Distiller
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
    dkd_alpha: float = 1.0
    dkd_beta: float = 8.0
    dist_beta: float = 1.0
    dist_gamma: float = 1.0

    def build_losses(self):
        """The distillation loss objects these settings name."""
        out = []
        for name in self.losses:
            if name == "kd":
                out.append(losses_lib.LogitsKD(self.temperature))
            elif name == "lskd":
                out.append(losses_lib.StandardizedKD(self.temperature))
            elif name == "dkd":
                out.append(losses_lib.DecoupledKD(self.temperature, self.dkd_alpha,
                                                  self.dkd_beta))
            elif name == "dist":
                out.append(losses_lib.DIST(self.temperature, self.dist_beta, self.dist_gamma))
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


def compile_plain(model, optimizer="adam"):
    model.compile(optimizer=optimizer,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def fit(student, datasets, config: TrainConfig, run_dir, teacher=None,
        kd: KDConfig = None, extra_callbacks=(), verbose=1, offline_data=None,
        batch_size=128):
    """Trains `student` in place, plainly or distilled from `teacher`.

    Checkpoints every epoch to ``run_dir/backup`` (an interrupted fit resumes
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
    history = model.fit(datasets["train"], validation_data=datasets.get("val"),
                        epochs=config.epochs, callbacks=callbacks, verbose=verbose)
    elapsed = time.time() - start
    return {"history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
            "train_time_s": elapsed}


def evaluate(model, dataset):
    """Top-1 accuracy of a logits model on a dataset."""
    compile_plain(model)
    return float(model.evaluate(dataset, verbose=0, return_dict=True)["accuracy"])


class CorruptRunError(RuntimeError):
    """A finished run's saved model cannot be loaded."""


def _load_finished(directory, model_path, load_fn):
    load = load_fn or (lambda path: keras.models.load_model(path, compile=False))
    try:
        return load(model_path)
    except Exception as e:  # noqa: BLE001 — any failure to load means the file is bad.
        raise CorruptRunError(f"{model_path}: {type(e).__name__}: {str(e)[:200]}") from e


def train_or_load(workdir, name, spec, build_fn, datasets, train_cfg, teacher=None,
                  kd=None, callbacks=(), verbose=1, postprocess=None, load_fn=None,
                  **fit_kwargs):
    """Trains a model as a cached run, or loads it if that run finished.

    The run lives in ``runs.run_dir(workdir, name, spec)``. A finished run
    (``result.json`` and a saved model) is loaded, never retrained. A finished
    run whose model file cannot be loaded is moved aside to
    ``<run dir>.corrupt-<time>`` (said in the log) and trained again. The
    result records the trained weights' digest (:func:`runs.weights_digest`):
    runs that depend on this one put it in their spec.

    Args:
      workdir: pipeline workdir.
      name: short run name (e.g. 'teacher0', 'base-kd-s0').
      spec: JSON-able dict that fully determines the run (hashed), including
        the weights digest of every run it depends on.
      build_fn: () -> fresh keras.Model.
      datasets: dict of tf.data pipelines.
      train_cfg: TrainConfig.
      teacher, kd: for distillation.
      callbacks: extra Keras callbacks.
      verbose: Keras verbosity.
      postprocess: optional fn(model) -> model applied after training and
        before saving (e.g. stripping compression wrappers).
      load_fn: loads a finished run's model from its path (default
        ``keras.models.load_model`` without compiling).
      **fit_kwargs: passed to :func:`fit` (offline_data, batch_size).

    Returns:
      (model, result dict). The result holds test accuracy, parameters,
      training time, history, the weights digest, the run directory, and
      `reused` (True when the run had finished before and was loaded).
    """
    directory = runs.run_dir(workdir, name, spec)
    model_path = runs.saved_model_path(directory)
    result = runs.load_result(directory)
    if result is not None and model_path is not None:
        try:
            model = _load_finished(directory, model_path, load_fn)
        except CorruptRunError as e:
            aside = f"{directory}.corrupt-{int(time.time())}"
            shutil.move(directory, aside)
            logging.warning("Cached run %s could not be loaded (%s); moved it to %s and "
                            "training it again.", directory, e, aside)
            print(f"Cached run {os.path.basename(directory)} is corrupt; moved to {aside}, "
                  "training it again.", flush=True)
        else:
            logging.warning("Reusing finished run %s", directory)
            digest = result.get("weights_digest") or runs.weights_digest(model)
            # run_dir is where the run is now (the workdir may have been moved).
            return model, dict(result, run_dir=directory, reused=True, weights_digest=digest)
    runs.write_json(os.path.join(directory, "spec.json"), spec)
    keras.utils.set_random_seed(train_cfg.seed)
    model = build_fn()
    fit_out = fit(model, datasets, train_cfg, directory, teacher=teacher, kd=kd,
                  extra_callbacks=callbacks, verbose=verbose, **fit_kwargs)
    if postprocess is not None:
        model = postprocess(model)
    runs.save_model(model, directory)
    result = {
        "name": name,
        "model": model.name,
        "test_accuracy": evaluate(model, datasets["test"]),
        "params": int(model.count_params()),
        "train_time_s": round(fit_out["train_time_s"], 2),
        "epochs": len(next(iter(fit_out["history"].values()), [])),
        "history": fit_out["history"],
        "weights_digest": runs.weights_digest(model),
        "run_dir": directory,
    }
    runs.write_json(os.path.join(directory, "result.json"), result)
    return model, dict(result, reused=False)
