"""The pipeline: teacher(s) -> baseline student and distilled student -> report.

``run(PipelineConfig(...))`` is what ``python -m kd_keras.main`` calls; it is
also usable from a notebook. Every model is a cached run (``kd_keras.runs``):
a second call with the same workdir reuses finished teachers and students and
trains only what is missing.
"""

import dataclasses
import logging
import os
from typing import Optional

from kd_keras import data as data_lib
from kd_keras import models, report, runs, training
from kd_keras.keras_compat import keras

KD_MODES = ("both", "on", "off")


@dataclasses.dataclass
class PipelineConfig:
    """Everything one pipeline run needs; `kd_keras.flags` builds it from flags."""

    workdir: str
    dataset: str = "fashion_mnist"
    data_dir: Optional[str] = None
    manual_dir: str = data_lib.DEFAULT_MANUAL_DIR
    val_size: int = 5000
    limit_train: int = 0
    limit_test: int = 0
    batch_size: int = 128
    teacher: str = "resnet"
    teacher_kwargs: dict = dataclasses.field(default_factory=dict)
    teacher_train: training.TrainConfig = training.TrainConfig()
    teacher_augment: data_lib.AugmentConfig = data_lib.AugmentConfig()
    num_teachers: int = 1
    student: str = "cnn"
    student_kwargs: dict = dataclasses.field(default_factory=dict)
    student_train: training.TrainConfig = training.TrainConfig()
    student_augment: data_lib.AugmentConfig = data_lib.AugmentConfig()
    kd: training.KDConfig = training.KDConfig()
    kd_mode: str = "both"
    verbose: int = 1

    def __post_init__(self):
        if self.kd_mode not in KD_MODES:
            raise ValueError(f"kd_mode must be one of {KD_MODES}, got {self.kd_mode!r}.")
        if self.num_teachers < 1:
            raise ValueError(f"num_teachers must be >= 1, got {self.num_teachers}.")
        if self.teacher not in models.REGISTRY or self.student not in models.REGISTRY:
            raise ValueError(
                f"teacher and student must be registered models {sorted(models.REGISTRY)}; "
                f"got {self.teacher!r} and {self.student!r}.")

    def data_spec(self):
        return {k: getattr(self, k) for k in
                ("dataset", "val_size", "limit_train", "limit_test", "batch_size")}


def _spec(obj):
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj


def train_or_load(workdir, name, spec, build_fn, datasets, train_cfg, teacher=None,
                  kd=None, callbacks=(), verbose=1, postprocess=None, **fit_kwargs):
    """Trains a model as a cached run, or loads it if that run finished.

    Args:
      workdir: pipeline workdir.
      name: short run name (e.g. 'teacher0', 'student-kd').
      spec: JSON-able dict that fully determines the run (hashed).
      build_fn: () -> fresh keras.Model.
      datasets: dict of tf.data pipelines.
      train_cfg: TrainConfig.
      teacher, kd: for distillation.
      callbacks: extra Keras callbacks.
      verbose: Keras verbosity.
      postprocess: optional fn(model) -> model applied after training and
        before saving (e.g. stripping compression wrappers).
      **fit_kwargs: passed to ``training.fit`` (offline_data, batch_size).

    Returns:
      (model, result dict). The result holds test accuracy, parameters,
      training time, history and the run directory.
    """
    directory = runs.run_dir(workdir, name, spec)
    model_path = os.path.join(directory, "model.keras")
    result = runs.load_result(directory)
    if result is not None and os.path.exists(model_path):
        logging.warning("Reusing finished run %s", directory)
        return keras.models.load_model(model_path, compile=False), result
    runs.write_json(os.path.join(directory, "spec.json"), spec)
    keras.utils.set_random_seed(train_cfg.seed)
    model = build_fn()
    fit_out = training.fit(model, datasets, train_cfg, directory, teacher=teacher, kd=kd,
                           extra_callbacks=callbacks, verbose=verbose, **fit_kwargs)
    if postprocess is not None:
        model = postprocess(model)
    runs.save_model(model, model_path)
    result = {
        "name": name,
        "model": model.name,
        "test_accuracy": training.evaluate(model, datasets["test"]),
        "params": int(model.count_params()),
        "train_time_s": round(fit_out["train_time_s"], 2),
        "epochs": len(next(iter(fit_out["history"].values()), [])),
        "history": fit_out["history"],
        "run_dir": directory,
    }
    runs.write_json(os.path.join(directory, "result.json"), result)
    return model, result


def run(config: PipelineConfig, flags_used=None):
    """Runs the whole pipeline and writes results.json / results.md.

    Returns:
      The results dict written to ``results.json``.
    """
    os.makedirs(config.workdir, exist_ok=True)
    data = data_lib.load_dataset(config.dataset, config.data_dir, config.manual_dir,
                                 config.val_size, seed=0, limit_train=config.limit_train,
                                 limit_test=config.limit_test)
    shape, classes = data.input_shape, data.num_classes
    data_spec = config.data_spec()
    teacher_ds = data_lib.make_datasets(data, config.batch_size, config.teacher_augment)
    student_ds = data_lib.make_datasets(data, config.batch_size, config.student_augment,
                                        seed=config.student_train.seed)
    offline = None if config.student_augment.enabled else data

    rows = []
    teachers, teacher_hashes = [], []
    for i in range(config.num_teachers):
        train_cfg = dataclasses.replace(config.teacher_train,
                                        seed=config.teacher_train.seed + i)
        spec = {"role": "teacher", "model": config.teacher, "kwargs": config.teacher_kwargs,
                "train": _spec(train_cfg), "augment": _spec(config.teacher_augment),
                "data": data_spec}
        model, result = train_or_load(
            config.workdir, f"teacher{i}", spec,
            lambda: models.build(config.teacher, shape, classes, **config.teacher_kwargs),
            teacher_ds, train_cfg, verbose=config.verbose)
        teachers.append(model)
        teacher_hashes.append(runs.config_hash(spec))
        rows.append(dict(result, role="teacher", kd=False))

    kd_flags = {"both": (False, True), "on": (True,), "off": (False,)}[config.kd_mode]
    for kd_on in kd_flags:
        spec = {"role": "student", "model": config.student, "kwargs": config.student_kwargs,
                "train": _spec(config.student_train), "augment": _spec(config.student_augment),
                "data": data_spec,
                "kd": _spec(config.kd) if kd_on else None,
                "teachers": teacher_hashes if kd_on else None}
        name = "student-kd" if kd_on else "student-baseline"
        _, result = train_or_load(
            config.workdir, name, spec,
            lambda: models.build(config.student, shape, classes, **config.student_kwargs),
            student_ds, config.student_train,
            teacher=teachers if kd_on else None, kd=config.kd, verbose=config.verbose,
            offline_data=offline, batch_size=config.batch_size)
        rows.append(dict(result, role="student", kd=kd_on))

    results = {"dataset": config.dataset, "models": rows, "flags": flags_used or {},
               "config": _spec(config)}
    report.write(config.workdir, results)
    return results
