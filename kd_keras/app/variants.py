"""Student variants: one student, a technique chain, KD on or off, a seed.

A variant is trained in up to two parts, each a cached run
(``pipeline.train_or_load``):

1. the *base* student — registry model or NAS result, optional augmentation,
   optional bootstrap resample (bagging), with or without KD — for
   ``student_train.epochs``;
2. for a compression chain (``slim``, ``prune``, ``cluster``, ``qat`` in that
   order), one fine-tuning stage per technique, starting from the trained base
   student of the same seed and KD setting (``compress_mode='finetune'``,
   default), or with the first technique applied from scratch (``'scratch'``,
   slim/prune/qat; slim then ranks untrained weights: a narrower student).
   With KD on, the teacher during a stage is the pipeline's teacher, or the
   uncompressed trained student itself (``compress_teacher='student'``).

Wrappers are stripped before a model is saved; the result records measured
sparsity, unique values per clustered kernel, the channels, params and MACs
slimming removed, and the TFLite export figures.
"""

import dataclasses
import os
import typing
from typing import Optional

import numpy as np

import export
import nas
from export import measure as export_measure
from export import slim_target as export_slim_target
from kd_keras import compression, console, distill, models, runs
from kd_keras import data as data_lib
from kd_keras import train as train_lib
from kd_keras.data import store
from kd_keras.keras_compat import keras
from kd_keras.models import own
from nas.space import BEST_HPS_FILE

COMPRESS_MODES = ("finetune", "scratch")
COMPRESS_TEACHERS = ("teacher", "student")


@dataclasses.dataclass(frozen=True)
class Variant:
    """One student run.

    Attributes:
      label: the technique's name in tables ('none', 'prune50', 'dws', ...).
      techniques: compression chain, e.g. ('prune', 'qat').
      kd: distil from the teacher(s).
      student: registry name, 'nas:PATH', a saved model's path or
        'MODULE:FUNCTION' (``kd_keras.models.own``).
      student_kwargs: builder kwargs, as sorted (key, value) pairs.
      student_init: 'scratch' (fresh weights) or 'file' (a saved student's
        own weights).
      augment: training augmentation of the base student.
      seed: initialization and data-order seed.
      bootstrap: >= 0 trains on a bootstrap resample drawn with this seed
        (a bagging member); -1 uses the training split as is.
      epochs: overrides the base student's epochs (None: the config's).
      compression: overrides of CompressionConfig fields, as (key, value) pairs.
      teacher_view: with KD and augmentation, what the teacher sees: 'same'
        (the student's augmented view) or 'clean' (the clean image of the
        same example; ``kd_keras.train.distillation_datasets``).
    """

    label: str = "none"
    techniques: tuple = ()
    kd: bool = False
    student: str = "cnn"
    student_kwargs: tuple = ()
    student_init: str = "scratch"
    augment: data_lib.AugmentConfig = data_lib.AugmentConfig()
    seed: int = 0
    bootstrap: int = -1
    epochs: Optional[int] = None
    compression: tuple = ()
    teacher_view: str = "same"

    def __post_init__(self):
        if self.teacher_view not in distill.TEACHER_VIEWS:
            raise ValueError(
                f"teacher_view must be one of {distill.TEACHER_VIEWS}, got {self.teacher_view!r}."
            )

    @property
    def name(self):
        parts = [self.label, "kd" if self.kd else "nokd", f"s{self.seed}"]
        if self.bootstrap >= 0:
            parts.append(f"b{self.bootstrap}")
        return "-".join(parts)


@dataclasses.dataclass(frozen=True)
class CompressSettings:
    """How a technique chain is applied to a trained student.

    Attributes:
      config: the techniques' settings (``compression.CompressionConfig``;
        None: its defaults).
      epochs: fine-tuning epochs per stage of the chain.
      mode: one of COMPRESS_MODES: fine-tune the trained student, or train
        the compressed one from scratch.
      teacher: one of COMPRESS_TEACHERS: what a KD variant distils from while
        compressing, the teacher or the uncompressed student.
      lr_scale: a stage's peak learning rate as a share of the student's.
    """

    config: object = None
    epochs: int = 2
    mode: str = "finetune"
    teacher: str = "teacher"
    lr_scale: float = 0.1

    def __post_init__(self):
        if self.mode not in COMPRESS_MODES:
            raise ValueError(f"compress_mode must be one of {COMPRESS_MODES}, got {self.mode!r}.")
        if self.teacher not in COMPRESS_TEACHERS:
            raise ValueError(
                f"compress_teacher must be one of {COMPRESS_TEACHERS}, got {self.teacher!r}."
            )
        if self.epochs < 1:
            raise ValueError(f"compress_epochs must be >= 1, got {self.epochs}.")
        if not 0 < self.lr_scale <= 1:
            raise ValueError(f"compress_lr_scale must lie in (0, 1], got {self.lr_scale}.")
        if self.config is None:
            object.__setattr__(self, "config", compression.CompressionConfig())


@dataclasses.dataclass(frozen=True)
class ExportSettings:
    """What every student is exported as and how it is measured
    (``export.export_model``)."""

    formats: tuple = ("float32", "int8")
    threads: tuple = (1,)
    latency_runs: int = 200
    num_calibration: int = 200
    latency_warmup: int = 10
    xnnpack: bool = True
    int8_io: bool = False

    def __post_init__(self):
        object.__setattr__(self, "formats", tuple(self.formats))
        object.__setattr__(self, "threads", tuple(self.threads))


@dataclasses.dataclass
class Context:
    """What every variant of one pipeline or study shares."""

    workdir: str
    data: data_lib.Dataset
    teachers: list
    teacher_hashes: list
    student_train: train_lib.TrainConfig
    kd: distill.KDConfig
    batch_size: int = 128
    compress: CompressSettings = CompressSettings()
    export: ExportSettings = ExportSettings()
    verbose: int = 2


def compression_config(ctx, variant):
    """The context's CompressionConfig with the variant's overrides."""
    return dataclasses.replace(ctx.compress.config, **dict(variant.compression))


def validate(ctx, variant):
    """Raises ValueError for a variant that cannot be trained, before train_lib."""
    cfg = compression_config(ctx, variant)
    model = build_student(variant, ctx.data)
    compression.validate_chain(variant.techniques, cfg, model=model)
    if ctx.compress.mode == "scratch" and variant.techniques[:1] == ("cluster",):
        raise ValueError(
            "compress_mode='scratch' starts pruning or QAT on a fresh student; "
            "clustering needs trained weights: use compress_mode='finetune'."
        )
    if (
        ctx.compress.mode == "scratch"
        and variant.techniques[:1] == ("slim",)
        and (cfg.slim_steps > 1 or cfg.slim_sparsity)
    ):
        raise ValueError(
            f"compress_mode='scratch' slims the fresh student once; slim_steps="
            f"{cfg.slim_steps} and slim_sparsity={cfg.slim_sparsity} fine-tune a trained "
            "one: use compress_mode='finetune' or leave them at 1 and 0."
        )


def build_student(variant, data):
    """A fresh, untrained student of the variant for `data`'s shapes."""
    kwargs = dict(variant.student_kwargs)
    if variant.student.startswith("nas:"):
        return nas.load_student(variant.student[4:], data.input_shape, data.num_classes)
    if own.kind(variant.student) in ("file", "builder"):
        return own.build(
            variant.student, data.input_shape, data.num_classes, kwargs, variant.student_init
        )
    return models.build(variant.student, data.input_shape, data.num_classes, **kwargs)


def bootstrap_dataset(data, seed):
    """A copy of `data` whose training split is resampled with replacement."""
    idx = np.random.default_rng(seed).integers(0, len(data.x_train), len(data.x_train))
    return dataclasses.replace(
        data, x_train=store.take(data.x_train, idx), y_train=data.y_train[idx]
    )


def load_model(path):
    """Loads a saved student, compression wrappers' custom objects in scope."""
    with compression.quantize_scope():
        return export.load_model(path)


def _run_name(part, variant):
    """Run directory prefix. Runs are identified by their spec's hash; names
    leave out the variant's label so that equal runs (the base student of
    'none' and of 'prune50', the prune stage of 'prune' and 'prune+qat') are
    trained once."""
    name = f"{part}-{'kd' if variant.kd else 'nokd'}-s{variant.seed}"
    return name + (f"-b{variant.bootstrap}" if variant.bootstrap >= 0 else "")


def _architecture_id(student):
    """For a NAS student, a hash of its saved hyperparameters (the cache key
    must change when the search result does)."""
    if not student.startswith("nas:"):
        return None
    path = student[4:]
    path = os.path.join(path, BEST_HPS_FILE) if os.path.isdir(path) else path
    with open(path) as f:
        return runs.config_hash(f.read())


def base_spec(ctx, variant, train_cfg):
    """The run spec of a variant's base student: everything its training reads."""
    spec = {
        "role": "student",
        "model": variant.student,
        "kwargs": dict(variant.student_kwargs),
        "train": runs.spec_of(train_cfg),
        "augment": runs.spec_of(variant.augment),
        "bootstrap": variant.bootstrap,
        "data": {
            "dataset": ctx.data.name,
            "n_train": len(ctx.data.x_train),
            "n_test": len(ctx.data.x_test),
            "digest": ctx.data.content_digest,  # Which images: splits, folder contents.
            "batch_size": ctx.batch_size,
        },
        "kd": runs.spec_of(ctx.kd) if variant.kd else None,
        "teachers": ctx.teacher_hashes if variant.kd else None,
    }
    if variant.student.startswith("nas:"):
        spec["architecture"] = _architecture_id(variant.student)
    elif own.kind(variant.student) in ("file", "builder"):
        # The file's bytes (architecture and weights) or the builder's source.
        spec["architecture"] = own.digest(variant.student)
        if variant.student_init != "scratch":
            spec["init"] = variant.student_init
    if variant.kd and variant.teacher_view != "same":  # Absent by default: keys unchanged.
        spec["teacher_view"] = variant.teacher_view
    return spec


class RunInputs(typing.NamedTuple):
    """What every run of one variant trains on: its tf.data pipelines, the
    in-memory data its teacher outputs are computed from when it does not
    augment (else None), and its teacher(s) (None without KD)."""

    datasets: dict
    offline: object
    teacher: object


def _train_run(ctx, variant, part, spec, build_fn, run, train_cfg, callbacks):
    """One cached run of `variant` (its base training or a compression stage
    named `part`), through ``train_lib.train_or_load``: (model, result)."""
    return train_lib.train_or_load(
        ctx.workdir,
        _run_name(part, variant),
        spec,
        build_fn,
        run.datasets,
        train_cfg,
        teacher=run.teacher,
        kd=ctx.kd,
        callbacks=callbacks,
        verbose=ctx.verbose,
        postprocess=compression.strip,
        offline_data=run.offline,
        batch_size=ctx.batch_size,
        load_fn=load_model,
        teacher_view=variant.teacher_view,
    )


def _stage_spec(ctx, variant, parent, technique, previous, compression_spec):
    """The run spec of a compression stage. The stage fine-tunes the model the
    previous part produced (`parent`, its result): that model's weights
    digest keys the stage, so a retrained parent retrains it."""
    spec = {
        "parent": parent["weights_digest"],
        "stage": technique,
        "previous": list(previous),
        "compression": compression_spec,
        "epochs": ctx.compress.epochs,
        "kd": variant.kd,
        "compress_teacher": ctx.compress.teacher if variant.kd else None,
        "lr": ctx.student_train.learning_rate,
    }
    if ctx.compress.lr_scale != CompressSettings.lr_scale:  # Default keys unchanged.
        spec["lr_scale"] = ctx.compress.lr_scale
    return spec


def stage_config(ctx, train_cfg):
    """How a compression stage fine-tunes: `ctx.compress.epochs` epochs at
    `ctx.compress.lr_scale` of the run's learning rate (a tenth by default),
    without warm-up."""
    return dataclasses.replace(
        train_cfg,
        epochs=ctx.compress.epochs,
        warmup_epochs=0,
        learning_rate=train_cfg.learning_rate * ctx.compress.lr_scale,
    )


def _train_stages(ctx, variant, cfg, chain_done, trained, run, settings):
    """Trains (or loads) the chain's stages after the base run, each part
    fine-tuning the model the previous one produced.

    Args:
      ctx, variant, cfg: as :func:`train` has them.
      chain_done: (the chain, the techniques the base run already applied).
      trained: (the base run's model, its result).
      run: the base run's ``RunInputs`` (a stage may swap the teacher).
      settings: (the base spec, the base TrainConfig, steps per epoch, the
        variant's data).

    Returns:
      (the last model, the result of every part trained in order, the slim
      plan or None).
    """
    (chain, done), (model, result), (spec, train_cfg, steps, data) = chain_done, trained, settings
    results, slim_plan, first_plan = [], None, None
    for technique, previous in compression.stages(chain):
        if technique in done:
            continue
        stage_teacher = run.teacher
        if variant.kd and ctx.compress.teacher == "student":
            stage_teacher = keras.models.clone_model(model)
            stage_teacher.set_weights(model.get_weights())
        for step in _stage_steps(ctx, model, technique, cfg):
            stage_spec = _stage_spec(ctx, variant, result, technique, previous, cfg.spec(chain))
            stage_cfg = stage_config(ctx, train_cfg)
            keras.utils.set_random_seed(variant.seed)
            if step.sparsify:
                stage_spec.update(step.spec)
                stage_cfg = dataclasses.replace(stage_cfg, epochs=step.epochs)
                wrapped = compression.with_gamma_penalty(model, cfg.slim_sparsity)
                stage_callbacks = []
            else:
                if technique == "slim":
                    slim_plan = _slim_plan(ctx, model, cfg, data, step.counts)
                    first_plan = first_plan or slim_plan
                    stage_spec.update(_slim_spec(cfg, slim_plan), **step.spec)
                    stage_cfg = dataclasses.replace(stage_cfg, epochs=step.epochs)
                wrapped, stage_callbacks = compression.apply_stage(
                    model, technique, cfg, steps, ctx.compress.epochs, previous, slim_plan=slim_plan
                )
            model, result = _train_run(
                ctx,
                variant,
                "+".join(previous + (technique,)) + step.suffix,
                dict(stage_spec, spec=spec),
                lambda wrapped=wrapped: wrapped,
                run._replace(teacher=stage_teacher),
                stage_cfg,
                stage_callbacks,
            )
            if step.sparsify:  # The penalty ends with its phase.
                model = compression.with_gamma_penalty(model, 0.0)
            results.append(result)
    if first_plan is not None and first_plan is not slim_plan:  # Iterative: the removable
        removable = {tuple(g["layers"]): g["channels"] for g in first_plan.groups}  # channels
        groups = [dict(g, channels=removable[tuple(g["layers"])]) for g in slim_plan.groups]
        slim_plan = dataclasses.replace(slim_plan, groups=groups)  # of the unslimmed student.
    return model, results, slim_plan


def train(ctx: Context, variant: Variant):
    """Trains (or loads) a variant and measures it.

    Returns:
      (stripped keras model, result dict): validation accuracy (None
      without a validation split) and test accuracy of the last part, params,
      training time of all parts, compression measurements, export rows.
    """
    data = ctx.data if variant.bootstrap < 0 else bootstrap_dataset(ctx.data, variant.bootstrap)
    train_cfg = dataclasses.replace(
        ctx.student_train, seed=variant.seed, epochs=variant.epochs or ctx.student_train.epochs
    )
    # Seeded before any pipeline is built (tf.data's shuffle depends on the global
    # seed): the KD and no-KD runs of one seed see the same batches.
    keras.utils.set_random_seed(variant.seed)
    datasets = data_lib.make_datasets(data, ctx.batch_size, variant.augment, seed=variant.seed)
    offline = None if variant.augment.enabled else data
    teacher = ctx.teachers if variant.kd else None
    cfg = compression_config(ctx, variant)
    chain = compression.validate_chain(variant.techniques, cfg)
    steps = datasets["steps_per_epoch"]

    spec = base_spec(ctx, variant, train_cfg)
    scratch = bool(ctx.compress.mode == "scratch" and chain)
    keras.utils.set_random_seed(variant.seed)
    slim_plan = None
    if scratch:  # The first technique wraps the fresh student for the whole base run.
        spec = dict(spec, scratch_stage=chain[0], compression=cfg.spec(chain))
        fresh = build_student(variant, data)
        if chain[0] == "slim":
            slim_plan = _slim_plan(ctx, fresh, cfg, data)
            spec.update(_slim_spec(cfg, slim_plan))
        first, callbacks = compression.apply_stage(
            fresh, chain[0], cfg, steps, train_cfg.epochs, slim_plan=slim_plan
        )
        build_fn = lambda: first  # noqa: E731
    else:
        callbacks = ()
        build_fn = lambda: build_student(variant, data)  # noqa: E731
    run = RunInputs(datasets, offline, teacher)
    model, result = _train_run(ctx, variant, "base", spec, build_fn, run, train_cfg, callbacks)
    total_time = result["train_time_s"]
    parts = [result["run_dir"]]
    reused = result["reused"]
    done = chain[:1] if scratch else ()
    model, staged, stage_plan = _train_stages(
        ctx, variant, cfg, (chain, done), (model, result), run, (spec, train_cfg, steps, data)
    )
    slim_plan = stage_plan or slim_plan
    for stage_result in staged:
        total_time += stage_result["train_time_s"]
        reused = reused and stage_result["reused"]
        parts.append(stage_result["run_dir"])
        result = stage_result

    row = {
        "name": variant.name,
        "label": variant.label,
        "techniques": "+".join(chain) or "none",
        "kd": variant.kd,
        "seed": variant.seed,
        "bootstrap": variant.bootstrap,
        "model": model.name,
        "val_accuracy": result.get("val_accuracy"),  # Of the last part, as test_accuracy.
        "test_accuracy": result["test_accuracy"],
        "params": result["params"],
        "train_time_s": round(total_time, 2),
        "epochs": train_cfg.epochs,
        "run_dirs": parts,
        "run_dir": parts[-1],
        "reused": reused,
        "weights_digest": result["weights_digest"],
    }
    before = lambda: _before(variant, data, cfg)  # noqa: E731 — built only on a cache miss.
    row.update(measure_variant(ctx, model, chain, parts[-1], data, before))
    if slim_plan is not None and "slim" in row:
        plan = dict(slim_plan.summary(), steps=cfg.slim_steps, sparsity=cfg.slim_sparsity)
        row["slim"] = dict(row["slim"], plan=plan, target=_slim_target(cfg))
    return model, row


def _slim_target(cfg):
    """{'slim_target_...': share} of the slim target `cfg` sets, or None."""
    return next(
        ({n: getattr(cfg, n)} for n in compression.SLIM_TARGETS if getattr(cfg, n) is not None),
        None,
    )


class _Step(typing.NamedTuple):
    """One trained part of a compression stage: what an iterative slim step
    keeps (None: the plan of the settings), its epochs, its run name's
    suffix, what it adds to the stage's spec, and whether it is slim's
    sparsity phase (the unslimmed student trained with the gamma penalty)."""

    counts: Optional[dict]
    epochs: int
    suffix: str
    spec: dict
    sparsify: bool = False


def _stage_steps(ctx, model, technique, cfg):
    """The parts a stage trains: one; for slim, a sparsity phase first when
    ``slim_sparsity`` > 0, then one step or, with ``slim_steps`` k > 1, k
    steps along ``compression.schedule``. The parts share the stage's epochs
    (the first ``epochs % parts`` one more; each at least one)."""
    epochs = ctx.compress.epochs
    if technique != "slim" or (cfg.slim_steps == 1 and not cfg.slim_sparsity):
        return [_Step(None, epochs, "", {})]
    k, sparsify = cfg.slim_steps, bool(cfg.slim_sparsity)
    counts = compression.schedule(model, cfg.slim_fraction, k, cfg.slim_multiple) if k > 1 else None
    n = k + sparsify
    shares = [max(1, epochs // n + (1 if i < epochs % n else 0)) for i in range(n)]
    out = []
    if sparsify:
        extra = {"slim_sparsify": cfg.slim_sparsity, "epochs": shares[0]}
        out.append(_Step(None, shares[0], ".sparsify", extra, sparsify=True))
    for i in range(k):
        share = shares[i + sparsify]
        if k == 1:
            out.append(_Step(None, share, "", {"epochs": share}))
        else:
            spec = {"slim_step": [i + 1, k], "epochs": share}
            out.append(_Step(counts[i], share, f".{i + 1}of{k}", spec))
    return out


def _slim_plan(ctx, model, cfg, data, counts=None):
    """The slim plan of `model`: an iterative step's (`counts`), one meeting
    an int8 bytes or latency target (``export.slim_target``, each candidate
    converted and, for latency, timed with the unslimmed file), else
    ``compression.plan_for``'s."""
    if counts is not None:
        return compression.plan_slim(
            model, cfg.slim_fraction, cfg.slim_criterion, cfg.slim_multiple, counts=counts
        )
    if cfg.int8_slim_target is None:
        return compression.plan_for(model, cfg)
    console.progress(f"slim: finding the plan that meets {_slim_target(cfg)}")
    return export_slim_target.plan(
        model,
        cfg,
        data.x_train[:256],
        threads=ctx.export.threads[0] if ctx.export.threads else 1,
        xnnpack=ctx.export.xnnpack,
        progress=console.progress,
    )


def _slim_spec(cfg, plan):
    """What a slim stage's spec adds: the channels each group keeps when an
    int8 target chose them (a measured latency can choose differently on a
    rerun; the stage is then trained for the plan it got). Nothing otherwise,
    so the keys of fraction and MACs runs stay as they were."""
    if cfg.int8_slim_target is None:
        return {}
    return {"slim_kept": [g["kept"] for g in plan.groups]}


def _before(variant, data, cfg):
    """What `measure_variant` compares the compressed student with, read from
    one fresh student (layer names and shapes before any wrapping or
    slimming): ({technique: names of the layers it wraps} for pruning and
    clustering in the chain, the fresh student when the chain slims, else
    None). No student is built for a chain without these techniques."""
    chain = variant.techniques
    if not any(t in chain for t in ("slim", "prune", "cluster")):
        return {}, None
    fresh = build_student(variant, data)
    wrapped = {
        t: compression.select_layers(fresh, t, cfg.skip_layers, cfg.include_layers)
        for t in ("prune", "cluster")
        if t in chain
    }
    return wrapped, fresh if "slim" in chain else None


def measure_variant(ctx, model, chain, run_dir, data, before=None):
    """Compression figures and TFLite exports of a trained, stripped variant.

    `before` (None, or a zero-argument callable, called only when the
    figures are not cached) gives (the layers the chain wrapped: {'prune':
    names, 'cluster': names}, an unslimmed student or None): sparsity and
    unique values are summarized over those layers; after slimming, params,
    MACs and channels are compared with the unslimmed student. Cached in
    ``run_dir/measure.json`` under a key holding the model's weights digest and
    every export setting; a failed export is reported in the figures
    (``export_error``) but never cached, so the next run tries again.
    """
    path = os.path.join(run_dir, "measure.json")
    cached = runs.read_valid_json(
        path, lambda value: runs.missing_keys(value, ("key", "figures")), then="measured again"
    )
    key = {
        "formats": list(ctx.export.formats),
        "threads": list(ctx.export.threads),
        "latency_runs": ctx.export.latency_runs,
        "num_calibration": ctx.export.num_calibration,
        # The settings added later enter the key only when not their default,
        # so measurements cached before them stay valid.
        **{
            k: getattr(ctx.export, k)
            for k in ("latency_warmup", "xnnpack", "int8_io")
            if getattr(ctx.export, k) != getattr(ExportSettings, k)
        },
        "weights": runs.weights_digest(model),
        "data": {
            "dataset": ctx.data.name,
            "n_train": len(ctx.data.x_train),
            "n_test": len(ctx.data.x_test),
            "digest": ctx.data.content_digest,
        },
    }
    if cached is not None and cached.get("key") == key:
        return cached["figures"]
    figures = {}
    wrapped, unslimmed = before() if before is not None else ({}, None)
    if "slim" in chain and unslimmed is not None:
        figures["slim"] = compression.slim_report(unslimmed, model)
    if "prune" in chain:
        figures["sparsity"] = compression.sparsity_report(model, wrapped.get("prune"))
    if "cluster" in chain:
        figures["unique_values"] = compression.unique_values_report(model, wrapped.get("cluster"))
    if "qat" in chain:
        figures["qat_layers"] = bool(compression.has_quantize_layers(model))
    if ctx.export.formats:
        console.progress(f"exporting to TFLite: {', '.join(ctx.export.formats)}")
        try:
            figures["export"] = export.export_model(
                model,
                os.path.join(run_dir, "tflite"),
                ctx.export.formats,
                data=ctx.data,
                num_calibration=ctx.export.num_calibration,
                threads=ctx.export.threads,
                latency_runs=ctx.export.latency_runs,
                name="student",
                warmup=ctx.export.latency_warmup,
                xnnpack=ctx.export.xnnpack,
                int8_io=ctx.export.int8_io,
            )
        except export.ExportError as e:
            console.progress(f"export of {os.path.basename(run_dir)} failed: {e}")
            figures["export_error"] = str(e)
            return figures  # Not cached: the next run tries the export again.
    runs.write_json(path, {"key": key, "figures": figures})
    return figures


def time_together(rows, ctx):
    """Times every TFLite file of a run's rows together, at the end of the run.

    Each export timed its own files when it ran, on a machine whose load
    changes over a run; the rows of one table compare only when timed in the
    same rounds. For every thread count, all files are timed interleaved in
    one process (``export.measure.latency_together``), and each export row's
    latency figures are replaced by these, with ``latency_us_median_alone``
    keeping the figure of its own export and ``latency_timed_with`` the
    number of files timed together. Rows without exports are left as they
    are; a failed timing leaves every row's own figures and is said on the
    console.

    Args:
      rows: result rows (dicts) whose ``export`` lists hold ``path``,
        ``threads`` and the latency figures.
      ctx: the ``Context`` (its export settings and data).
    """
    by_threads = {}
    for i, row in enumerate(rows):
        for j, e in enumerate(row.get("export") or []):
            if e.get("path") and os.path.exists(e["path"]) and "latency_us_median" in e:
                by_threads.setdefault(e["threads"], {})[f"{i}/{j}"] = e
    example = ctx.data.x_test[0] if len(ctx.data.x_test) else None
    for threads, entries in sorted(by_threads.items()):
        if len(entries) < 2:
            continue
        console.progress(
            f"timing the run's {len(entries)} TFLite files together ({threads} thread(s))"
        )
        try:
            timed = export_measure.latency_together(
                {key: e["path"] for key, e in entries.items()},
                example,
                num_runs=ctx.export.latency_runs,
                warmup=ctx.export.latency_warmup,
                threads=threads,
                xnnpack=ctx.export.xnnpack,
            )
        except export.ExportError as err:
            console.progress(f"joint timing failed; each file keeps its own timing: {err}")
            continue
        for key, e in entries.items():
            e["latency_us_median_alone"] = e["latency_us_median"]
            e.update(
                {k: v for k, v in timed[key].items() if k.startswith(("latency_", "overhead_"))}
            )
            e["latency_timed_with"] = len(entries)
