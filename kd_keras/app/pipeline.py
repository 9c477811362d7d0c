"""The pipeline: teacher(s) -> baseline student and distilled student -> report.

``run(PipelineConfig(...))`` is what ``python -m kd_keras.main`` calls; it is
also usable from a notebook. Every model is a cached run (``kd_keras.runs``):
a second call with the same workdir reuses finished teachers and students and
trains only what is missing.
"""

import dataclasses
import os
import sys

import nas
from kd_keras import console, distill, models, runs
from kd_keras import data as data_lib
from kd_keras import train as train_lib
from kd_keras.app import kd_selection, report, variants
from kd_keras.distill import teachers as teachers_lib
from kd_keras.distill.config import make_distiller
from kd_keras.keras_compat import keras, tf
from kd_keras.models import own

KD_MODES = ("both", "on", "off")


@dataclasses.dataclass
class PipelineConfig:
    """Everything one pipeline run needs; `kd_keras.flags` builds it from flags."""

    workdir: str
    data: data_lib.DataConfig = data_lib.DataConfig()
    teacher: str = "resnet"  # A registry name, or comma-separated paths of saved models.
    teacher_kwargs: dict = dataclasses.field(default_factory=dict)
    teacher_train: train_lib.TrainConfig = train_lib.TrainConfig()
    teacher_augment: data_lib.AugmentConfig = data_lib.AugmentConfig()
    num_teachers: int = 1
    # The value range a teacher given by path expects (kd_keras.distill.teachers.INPUT_RANGES).
    teacher_input_range: str = teachers_lib.DEFAULT_INPUT_RANGE
    student: str = "cnn"  # Registry name, nas:PATH, model path or MODULE:FUNCTION.
    student_init: str = "scratch"  # 'file': a saved student keeps its weights.
    student_kwargs: dict = dataclasses.field(default_factory=dict)
    student_train: train_lib.TrainConfig = train_lib.TrainConfig()
    student_augment: data_lib.AugmentConfig = data_lib.AugmentConfig()
    kd: distill.KDConfig = distill.KDConfig()
    kd_mode: str = "both"
    kd_select: object = None  # kd_keras.app.kd_selection.SelectionConfig; None = use `kd` as is
    # With KD and student augmentation, what the teacher sees (distill.TEACHER_VIEWS):
    # 'same' (the student's augmented view) or 'clean' (the un-augmented image).
    teacher_view: str = "same"
    techniques: tuple = ()
    compress: variants.CompressSettings = variants.CompressSettings()
    export: variants.ExportSettings = variants.ExportSettings()
    export_teacher: bool = False
    verbose: int = 1

    def __post_init__(self):
        if self.kd_mode not in KD_MODES:
            raise ValueError(f"kd_mode must be one of {KD_MODES}, got {self.kd_mode!r}.")
        if self.teacher_view not in distill.TEACHER_VIEWS:
            raise ValueError(
                f"--teacher_view={self.teacher_view}: allowed: {', '.join(distill.TEACHER_VIEWS)}."
            )
        if self.num_teachers < 1:
            raise ValueError(f"num_teachers must be >= 1, got {self.num_teachers}.")
        if not own.looks_valid(self.student):
            raise ValueError(f"--student={self.student} is none of: {own.FORMS}.")
        if self.student_init not in own.INITS:
            raise ValueError(
                f"--student_init={self.student_init}: allowed: {', '.join(own.INITS)}."
            )
        if self.student_init == "file" and own.kind(self.student) != "file":
            try:
                own.check(self.student, self.student_init)
            except ValueError as e:
                raise ValueError(f"--student={self.student} --student_init=file: {e}") from None
        try:
            _, paths = teachers_lib.parse_teacher(self.teacher)
        except ValueError as e:
            raise ValueError(f"--teacher={self.teacher}: {e}") from None
        if paths:  # One teacher per path; they are loaded, never trained.
            if self.num_teachers not in (1, len(paths)):
                raise ValueError(
                    f"--num_teachers={self.num_teachers} with --teacher={self.teacher}: "
                    f"the ensemble is the {len(paths)} teacher path(s) given."
                )
            self.num_teachers = len(paths)
        elif self.teacher_input_range != teachers_lib.DEFAULT_INPUT_RANGE:
            raise ValueError(
                f"--teacher_input_range={self.teacher_input_range} applies to a teacher given "
                f"by path; --teacher={self.teacher} is trained here on [0, 1] inputs."
            )

    def teacher_paths(self):
        """The saved teachers' paths, or [] for a registry teacher."""
        return teachers_lib.parse_teacher(self.teacher)[1]


def train_teachers(config, data, verbose=None):
    """Trains (or loads) the configured teacher(s).

    A teacher given by path (:meth:`PipelineConfig.teacher_paths`) is loaded
    (``kd_keras.distill.teachers.load_teacher``), never trained, and evaluated once
    on the test split (the evaluation is cached by its file digest).

    Returns:
      (list of models, list of their weights digests, list of result dicts).
      Students distilled from them key their runs by the digests, so a
      retrained teacher with other weights is never mixed with students of
      the old one.
    """
    if config.teacher_paths():
        return load_teachers(config, data)
    teachers, hashes, results = [], [], []
    total = config.num_teachers + len(student_variants(config))
    for i in range(config.num_teachers):
        console.stage(i + 1, total, f"teacher{i} ({config.teacher})")
        train_cfg = dataclasses.replace(config.teacher_train, seed=config.teacher_train.seed + i)
        # Seeded before the pipeline is built: its shuffle depends on the global seed.
        keras.utils.set_random_seed(train_cfg.seed)
        datasets = data_lib.make_datasets(
            data, config.data.batch_size, config.teacher_augment, seed=train_cfg.seed
        )
        spec = {
            "role": "teacher",
            "model": config.teacher,
            "kwargs": config.teacher_kwargs,
            "train": runs.spec_of(train_cfg),
            "augment": runs.spec_of(config.teacher_augment),
            "data": dict(config.data.spec(), digest=data.content_digest),
        }
        model, result = train_lib.train_or_load(
            config.workdir,
            f"teacher{i}",
            spec,
            lambda: models.build(
                config.teacher, data.input_shape, data.num_classes, **config.teacher_kwargs
            ),
            datasets,
            train_cfg,
            verbose=config.verbose if verbose is None else verbose,
        )
        teachers.append(model)
        hashes.append(result["weights_digest"])
        results.append(dict(result, role="teacher", kd=False, techniques="", label="teacher"))
    return teachers, hashes, results


def load_checked(path, config, input_shape, num_classes, sample=None, split="validation"):
    """``kd_keras.distill.teachers.open_teacher`` (the loader of ``kd_keras.load_teacher``)
    fed as --teacher_input_range says, with errors naming the --teacher flag.

    Returns:
      (model taking [0, 1] images, report).
    """
    try:
        return teachers_lib.open_teacher(
            path,
            input_shape,
            num_classes,
            config.teacher_input_range,
            sample=sample,
            split=split,
        )
    except ValueError as e:
        raise ValueError(f"--teacher={config.teacher}: {e}") from None


def load_teachers(config, data):
    """Loads the teachers given by path, checks the input range each is fed
    on validation images (training images without a validation split), says
    its accuracy there in one line, and evaluates it on the test split.

    Returns:
      As :func:`train_teachers`; the digests are the files' sha256
      (``kd_keras.distill.teachers.file_digest``) and each row says where the teacher
      came from (source, teacher_format, softmax).
    """
    datasets = data_lib.make_datasets(data, config.data.batch_size)
    split = "validation" if len(data.y_val) else "training"
    sample = (data.x_val, data.y_val) if len(data.y_val) else (data.x_train, data.y_train)
    teachers, hashes, results = [], [], []
    paths = config.teacher_paths()
    total = len(paths) + len(student_variants(config))
    for i, path in enumerate(paths):
        console.stage(i + 1, total, f"teacher{i} (loaded from {path})")
        model, loaded = load_checked(
            path, config, data.input_shape, data.num_classes, sample, split
        )
        console.progress(teachers_lib.accuracy_line(f"teacher{i}", loaded))
        fed = loaded["input_range"]
        spec = {
            "role": "teacher",
            "source": "path",
            "digest": loaded["digest"],
            "softmax": loaded["softmax"],
            "data": dict(config.data.spec(), digest=data.content_digest),
        }
        if fed != teachers_lib.DEFAULT_INPUT_RANGE:
            spec["input_range"] = fed
        directory = runs.run_dir(config.workdir, f"teacher{i}", spec)
        result = runs.load_result(directory)
        reused = result is not None
        if reused and "val_accuracy" not in result:  # Written before teachers recorded it.
            result = dict(result, val_accuracy=train_lib.split_accuracy(model, datasets, "val"))
            runs.write_json(os.path.join(directory, "result.json"), result)
        if not reused:
            console.progress(f"evaluating teacher{i} ({loaded['format']}) on the test split")
            runs.write_json(os.path.join(directory, "spec.json"), spec)
            result = {
                "name": f"teacher{i}",
                "model": model.name,
                "source": loaded["path"],
                "teacher_format": loaded["format"],
                "softmax": loaded["softmax"],
                "layers_readable": loaded["layers_readable"],
                "val_accuracy": train_lib.split_accuracy(model, datasets, "val"),
                "test_accuracy": train_lib.evaluate(model, datasets["test"]),
                "params": loaded["params"],
                "weights_digest": loaded["digest"],
            }
            runs.write_json(os.path.join(directory, "result.json"), result)
        if loaded["softmax"] != "no":
            console.progress(f"teacher{i} ends in softmax: distilling from its {loaded['softmax']}")
        teachers.append(model)
        # A rescaled teacher teaches differently: its students' keys say so.
        hashes.append(loaded["digest"] + ("" if "input_range" not in spec else f"@{fed}"))
        results.append(
            dict(
                result,
                run_dir=directory,
                reused=reused,
                role="teacher",
                kd=False,
                techniques="",
                label="teacher",
            )
        )
    return teachers, hashes, results


def variant_context(config, data, teachers, teacher_hashes):
    """The variants.Context of a pipeline config.

    Args:
      config: the PipelineConfig.
      data: the loaded Dataset.
      teachers: trained teacher models ([] to validate variants only).
      teacher_hashes: their weights digests.
    """
    return variants.Context(
        workdir=config.workdir,
        data=data,
        teachers=teachers,
        teacher_hashes=teacher_hashes,
        student_train=config.student_train,
        kd=config.kd,
        batch_size=config.data.batch_size,
        compress=config.compress,
        export=config.export,
        verbose=config.verbose,
    )


def student_variants(config):
    """The variants the config asks for: the plain student, then the chain,
    each without and/or with KD as `kd_mode` says."""
    kd_flags = {"both": (False, True), "on": (True,), "off": (False,)}[config.kd_mode]
    common = dict(
        student=config.student,
        student_kwargs=tuple(sorted(config.student_kwargs.items())),
        student_init=config.student_init,
        augment=config.student_augment,
        seed=config.student_train.seed,
    )
    view = lambda k: config.teacher_view if k else "same"  # noqa: E731
    out = [variants.Variant(label="none", kd=k, teacher_view=view(k), **common) for k in kd_flags]
    if config.techniques:
        out += [
            variants.Variant(
                label="+".join(config.techniques),
                techniques=tuple(config.techniques),
                kd=k,
                teacher_view=view(k),
                **common,
            )
            for k in kd_flags
        ]
    return out


def build_checked(name, kwargs, flag, shape, classes):
    """Builds registry model `name`; a failure is a ValueError naming `--flag`.

    The kwargs are checked against the builder's keyword arguments first
    (``kd_keras.models.check_kwargs``): an unknown name or a value of the
    wrong type is reported as such, not as whatever the builder raises.
    """
    given = f"--{flag}={','.join(f'{k}={v}' for k, v in kwargs.items())}"
    if name in models.REGISTRY:
        try:
            models.check_kwargs(name, kwargs)
        except ValueError as e:
            raise ValueError(f"{given}: {e}") from None
    try:
        return models.build(name, shape, classes, **kwargs)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{given} does not build {name!r}: {e}") from None


def pairing_warnings(config: PipelineConfig, study=False):
    """Lines warning that the plain and distilled runs of a seed will not see
    the same batches for the whole training (empty when they will, or when
    there is no such pair: a pipeline with ``kd_mode`` 'on' or 'off'; a
    `study` always has it).

    With student augmentation and ``kd.teacher_cache_views`` K > 0, the
    distilled run replays K cached views (epoch e: view e mod K) while the
    plain run draws a fresh view every epoch: past epoch K their batches
    differ, and a paired comparison of the two is paired for K epochs only.
    """
    k, epochs = config.kd.teacher_cache_views, config.student_train.epochs
    paired = study or config.kd_mode == "both"
    if not paired or not config.student_augment.enabled or not 0 < k < epochs:
        return []
    return [
        f"--teacher_cache_views={k} < --student_epochs={epochs}: after epoch {k} the "
        f"distilled run replays its {k} cached views while the plain run draws new ones, so "
        f"they see the same batches for {k} epochs only; --teacher_cache_views={epochs} "
        "keeps them paired throughout."
    ]


def validate(config: PipelineConfig, todo=None):
    """Checks everything that can be checked without data, before any data is
    loaded or model trained: the teacher and student build with their
    arguments (a teacher given by path loads and fits the data's shapes),
    the distillation losses find their layers, and every variant's
    compression chain wraps the actual student (each technique applied, in
    chain order, to a copy of it).

    Args:
      config: the PipelineConfig.
      todo: the variants to check (default: :func:`student_variants`).

    Returns:
      The variants.

    Raises:
      ValueError: naming the flag, the value and what is wrong.
    """
    shapes = config.data.placeholder()
    shape, classes = shapes.input_shape, shapes.num_classes
    paths = config.teacher_paths()
    check_inputs(config, shapes)
    if paths:  # Loaded and checked against the data's shapes; --teacher_args do not apply.
        teacher = [load_checked(p, config, shape, classes)[0] for p in paths]
    else:
        teacher = build_checked(
            config.teacher, config.teacher_kwargs, "teacher_args", shape, classes
        )
    if config.student.startswith("nas:"):  # A search's best architecture.
        try:
            student = nas.load_student(config.student[4:], shape, classes)
        except ValueError as e:
            raise ValueError(f"--student={config.student}: {e}") from None
    elif own.kind(config.student) in ("file", "builder"):  # The user's own student.
        init = f" --student_init={config.student_init}" if config.student_init != "scratch" else ""
        try:
            student = own.build(
                config.student, shape, classes, config.student_kwargs, config.student_init
            )
        except ValueError as e:
            raise ValueError(f"--student={config.student}{init}: {e}") from None
    else:
        student = build_checked(
            config.student, config.student_kwargs, "student_args", shape, classes
        )
    todo = student_variants(config) if todo is None else todo
    if any(v.kd for v in todo):
        try:
            make_distiller(config.kd, student, teacher)
        except ValueError as e:
            raise ValueError(
                f"--kd_losses={','.join(config.kd.losses)} with "
                f"--teacher_layer={config.kd.teacher_layer} "
                f"--student_layer={config.kd.student_layer}: {e}"
            ) from None
    probe = variant_context(config, shapes, [], [])
    checked = set()  # A chain is wrapped once per student, whether or not KD is on.
    for variant in todo:
        key = (variant.student, variant.student_kwargs, variant.techniques, variant.compression)
        if key in checked:
            continue
        checked.add(key)
        try:
            variants.validate(probe, variant)
        except ValueError as e:
            if not variant.techniques:
                raise
            raise ValueError(
                f"--techniques={','.join(variant.techniques)} on --student={variant.student}: {e}"
            ) from None
    return todo


def check_inputs(config, shapes):
    """Refuses what applies to images only when the data's inputs are not
    images (``Dataset.image_like``: an npz of float32, or of other than 1 or 3
    channels): crop and flip augmentation, and rescaling a teacher's input
    range (float inputs are fed as given).

    Raises:
      ValueError: naming the flag, its value and what is allowed.
    """
    if shapes.image_like:
        return
    what = (
        f"--dataset={config.data.dataset} holds {shapes.x_train.dtype} inputs of shape "
        f"{shapes.input_shape}, not images (uint8 with 1 or 3 channels)"
    )
    augments = [("student_augment", config.student_augment)]
    if not config.teacher_paths():
        augments.append(("teacher_augment", config.teacher_augment))
    for flag, augment in augments:
        if augment.spatial:
            raise ValueError(
                f"--{flag} asks for {' and '.join(augment.spatial)}, which move pixels of "
                f"images; {what}: allowed are cutout, mixup, cutmix or none."
            )
    if config.teacher_input_range != teachers_lib.DEFAULT_INPUT_RANGE:
        raise ValueError(
            f"--teacher_input_range={config.teacher_input_range} rescales [0, 1] images; "
            f"{what}, fed to the teacher as given: leave it at "
            f"{teachers_lib.DEFAULT_INPUT_RANGE}."
        )


def prepare(config: PipelineConfig, todo=None):
    """Validates the configuration (:func:`validate`) unless `todo` (the
    variants it returned) is given, then loads the data.

    Returns:
      (Dataset, list of variants.Variant).

    Raises:
      ValueError: invalid configuration (or kd_keras.data.DataError).
    """
    todo = validate(config) if todo is None else todo
    return config.data.load(), todo


def run(config: PipelineConfig, flags_used=None, prepared=None, strategy=None):
    """Runs the whole pipeline and writes results.json / results.md.

    Args:
      config: the PipelineConfig.
      flags_used: flag values recorded in results.json.
      prepared: the output of :func:`prepare`, if already called.
      strategy: a ``tf.distribute`` strategy (``kd_keras.distribute.make_strategy``)
        in whose scope every model, optimizer and Distiller is built and
        trained; `config.data.batch_size` is then the global batch. Default: the
        current one.

    Returns:
      The results dict written to ``results.json``.
    """
    os.makedirs(config.workdir, exist_ok=True)
    data, todo = prepared or prepare(config)
    with (strategy or tf.distribute.get_strategy()).scope():
        return _run(config, flags_used, data, todo)


# Fewer optimizer steps than this per epoch train poorly (BatchNorm statistics,
# the learning-rate schedule): said before training.
MIN_STEPS_PER_EPOCH = 20


def few_steps_warning(n_train, batch_size):
    """A warning line when an epoch has fewer than MIN_STEPS_PER_EPOCH steps, else None."""
    steps = data_lib.steps_per_epoch(n_train, batch_size)
    if steps >= MIN_STEPS_PER_EPOCH:
        return None
    fitting = max(1, n_train // MIN_STEPS_PER_EPOCH)
    return (
        f"--batch_size={batch_size}: an epoch of the {n_train} training images is {steps} "
        f"step(s); with fewer than {MIN_STEPS_PER_EPOCH} students may stay near chance "
        f"(BatchNorm statistics and the schedule need steps): try --batch_size={fitting} or less."
    )


def _run(config, flags_used, data, todo):
    warning = few_steps_warning(len(data.y_train), config.data.batch_size)
    if warning:
        print(f"Warning: {warning}", file=sys.stderr, flush=True)
    probe = variant_context(config, data, [], [])

    teachers, teacher_hashes, rows = train_teachers(config, data)
    if config.export_teacher and config.export.formats:
        for teacher, row in zip(teachers, rows):
            row.update(variants.measure_variant(probe, teacher, (), row["run_dir"], data))
    ctx = variant_context(config, data, teachers, teacher_hashes)
    selection = None
    if config.kd_select is not None and any(v.kd for v in todo):
        console.stage(
            config.num_teachers,
            config.num_teachers + len(todo),
            f"choosing the KD setting on validation: {config.kd_select.size} settings",
        )
        plain = dataclasses.replace(todo[0], kd=False, techniques=(), label="none")
        chosen, selection = kd_selection.select(ctx, plain, config.student_train, config.kd_select)
        console.progress(
            "chosen: {loss}, T={temperature:g}, alpha={alpha:g}".format(**selection["chosen"])
        )
        ctx = dataclasses.replace(ctx, kd=chosen)
    for i, variant in enumerate(todo, start=config.num_teachers + 1):
        console.stage(
            i,
            config.num_teachers + len(todo),
            f"student {variant.label}, {'KD' if variant.kd else 'no KD'}",
        )
        _, row = variants.train(ctx, variant)
        rows.append(dict(row, role="student"))

    if config.export.formats:  # One clock for every row of the table.
        variants.time_together(rows, ctx)
    results = {
        "dataset": config.data.dataset,
        "class_names": list(data.class_names),
        "models": rows,
        "flags": flags_used or {},
        "config": runs.spec_of(config),
    }
    if selection is not None:
        results["kd_selection"] = selection
    report.write(config.workdir, results)
    return results
