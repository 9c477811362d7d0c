"""The pipeline: teacher(s) -> baseline student and distilled student -> report.

``run(PipelineConfig(...))`` is what ``python -m kd_keras.main`` calls; it is
also usable from a notebook. Every model is a cached run (``kd_keras.runs``):
a second call with the same workdir reuses finished teachers and students and
trains only what is missing.
"""

import dataclasses
import os
from typing import Optional

from kd_keras import console, models, report, runs, training, variants
from kd_keras import data as data_lib
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
    techniques: tuple = ()
    compression: object = None  # kd_keras.compression.CompressionConfig; None = defaults
    compress_epochs: int = 2
    compress_mode: str = "finetune"
    compress_teacher: str = "teacher"
    export_formats: tuple = ("float32", "int8")
    export_threads: tuple = (1,)
    export_teacher: bool = False
    latency_runs: int = 200
    num_calibration: int = 200
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

        if self.compression is None:
            from kd_keras import compression
            self.compression = compression.CompressionConfig()

    def data_spec(self):
        return {k: getattr(self, k) for k in
                ("dataset", "val_size", "limit_train", "limit_test", "batch_size")}


def _spec(obj):
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj


def train_or_load(workdir, name, spec, build_fn, datasets, train_cfg, teacher=None,
                  kd=None, callbacks=(), verbose=1, postprocess=None, load_fn=None,
                  **fit_kwargs):
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
      load_fn: loads a finished run's model from its path (default
        ``keras.models.load_model`` without compiling).
      **fit_kwargs: passed to ``training.fit`` (offline_data, batch_size).

    Returns:
      (model, result dict). The result holds test accuracy, parameters,
      training time, history, the run directory, and `reused` (True when the
      run had finished before and was loaded).
    """
    directory = runs.run_dir(workdir, name, spec)
    model_path = runs.saved_model_path(directory)
    result = runs.load_result(directory)
    if result is not None and model_path is not None:
        console.progress(f"reusing finished run {name} ({directory})")
        load = load_fn or (lambda path: keras.models.load_model(path, compile=False))
        # run_dir is where the run is now (the workdir may have been moved).
        return load(model_path), dict(result, run_dir=directory, reused=True)
    runs.write_json(os.path.join(directory, "spec.json"), spec)
    console.progress(f"training {name}: {train_cfg.epochs} epoch(s)")
    keras.utils.set_random_seed(train_cfg.seed)
    model = build_fn()
    fit_out = training.fit(model, datasets, train_cfg, directory, teacher=teacher, kd=kd,
                           extra_callbacks=callbacks, verbose=verbose, **fit_kwargs)
    if postprocess is not None:
        model = postprocess(model)
    runs.save_model(model, directory)
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
    return model, dict(result, reused=False)


def train_teachers(config, data, verbose=None):
    """Trains (or loads) the configured teacher(s).

    Returns:
      (list of models, list of spec hashes, list of result dicts).
    """
    datasets = data_lib.make_datasets(data, config.batch_size, config.teacher_augment)
    teachers, hashes, results = [], [], []
    total = config.num_teachers + len(student_variants(config))
    for i in range(config.num_teachers):
        console.stage(i + 1, total, f"teacher{i} ({config.teacher})")
        train_cfg = dataclasses.replace(config.teacher_train,
                                        seed=config.teacher_train.seed + i)
        spec = {"role": "teacher", "model": config.teacher, "kwargs": config.teacher_kwargs,
                "train": _spec(train_cfg), "augment": _spec(config.teacher_augment),
                "data": config.data_spec()}
        model, result = train_or_load(
            config.workdir, f"teacher{i}", spec,
            lambda: models.build(config.teacher, data.input_shape, data.num_classes,
                                 **config.teacher_kwargs),
            datasets, train_cfg, verbose=config.verbose if verbose is None else verbose)
        teachers.append(model)
        hashes.append(runs.config_hash(spec))
        results.append(dict(result, role="teacher", kd=False, techniques="", label="teacher"))
    return teachers, hashes, results


def variant_context(config, data, teachers, teacher_hashes):
    """The variants.Context of a pipeline config."""
    return variants.Context(
        workdir=config.workdir, data=data, teachers=teachers, teacher_hashes=teacher_hashes,
        student_train=config.student_train, kd=config.kd, batch_size=config.batch_size,
        compression=config.compression, compress_epochs=config.compress_epochs,
        compress_mode=config.compress_mode, compress_teacher=config.compress_teacher,
        export_formats=tuple(config.export_formats), export_threads=tuple(config.export_threads),
        latency_runs=config.latency_runs, num_calibration=config.num_calibration,
        verbose=config.verbose)


def student_variants(config):
    """The variants the flags ask for: the plain student, then the chain."""
    kd_flags = {"both": (False, True), "on": (True,), "off": (False,)}[config.kd_mode]
    common = dict(student=config.student, student_kwargs=tuple(sorted(
        config.student_kwargs.items())), augment=config.student_augment,
                  seed=config.student_train.seed)
    out = [variants.Variant(label="none", kd=k, **common) for k in kd_flags]
    if config.techniques:
        out += [variants.Variant(label="+".join(config.techniques),
                                 techniques=tuple(config.techniques), kd=k, **common)
                for k in kd_flags]
    return out


def prepare(config: PipelineConfig):
    """Loads the data and validates every requested variant (technique chain,
    layer names) before anything is trained.

    Returns:
      (Dataset, list of variants.Variant).

    Raises:
      ValueError: invalid configuration (or kd_keras.data.DataError).
    """
    data = data_lib.load_dataset(config.dataset, config.data_dir, config.manual_dir,
                                 config.val_size, seed=0, limit_train=config.limit_train,
                                 limit_test=config.limit_test)
    todo = student_variants(config)
    probe = variant_context(config, data, [], [])
    for variant in todo:
        variants.validate(probe, variant)
    return data, todo


def run(config: PipelineConfig, flags_used=None, prepared=None):
    """Runs the whole pipeline and writes results.json / results.md.

    Args:
      config: the PipelineConfig.
      flags_used: flag values recorded in results.json.
      prepared: the output of :func:`prepare`, if already called.

    Returns:
      The results dict written to ``results.json``.
    """
    os.makedirs(config.workdir, exist_ok=True)
    data, todo = prepared or prepare(config)
    probe = variant_context(config, data, [], [])

    teachers, teacher_hashes, rows = train_teachers(config, data)
    if config.export_teacher and config.export_formats:
        for teacher, row in zip(teachers, rows):
            row.update(variants.measure(probe, teacher, (), row["run_dir"], data))
    ctx = variant_context(config, data, teachers, teacher_hashes)
    for i, variant in enumerate(todo, start=config.num_teachers + 1):
        console.stage(i, config.num_teachers + len(todo), f"student {variant.label}, "
                      f"{'KD' if variant.kd else 'no KD'}")
        _, row = variants.train(ctx, variant)
        rows.append(dict(row, role="student"))

    results = {"dataset": config.dataset, "models": rows, "flags": flags_used or {},
               "config": _spec(config)}
    report.write(config.workdir, results)
    return results
