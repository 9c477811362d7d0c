"""Flag definitions for ``kd_keras.main``. Only entry points read `.value`.

The flags shared with ``nas.main`` and ``export.main`` come from
``kd_keras.flag_groups`` (same names, defaults and bounds everywhere).
"""

from absl import flags

from kd_keras import compression, flag_groups
from kd_keras import data as data_lib
from kd_keras.app import kd_selection, pipeline, recipe, variants
from kd_keras.app.study import runner

_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (cache, models, results).")
RUN = flag_groups.define_run_flags(
    "Seed of the student runs (teachers use their own).",
    "Keras verbosity: 1 = progress bars, 2 = a line per epoch.",
)
DATA = flag_groups.define_data_flags()
SOURCE = flag_groups.define_source_flags()
TEACHER = flag_groups.define_teacher_flags()
_NUM_TEACHERS = flags.DEFINE_integer("num_teachers", 1, "Teachers in the ensemble.", lower_bound=1)
_TEACHER_INPUT_RANGE = flag_groups.define_teacher_input_range_flag()
STUDENT = flag_groups.define_student_flags()
KD = flag_groups.define_kd_flags()
EXPORT = flag_groups.define_export_flags()
CONSOLE = flag_groups.define_console_flags()
BUDGET = flag_groups.define_budget_flags()
DISTRIBUTION = flag_groups.define_distribution_flags()
_EARLY = flags.DEFINE_integer(
    "early_stopping", 0, "Patience on val accuracy (0 = off).", lower_bound=0
)

_KD = flags.DEFINE_enum(
    "kd", "both", list(pipeline.KD_MODES), "Train the student without KD, with KD, or both."
)
_TEACHER_VIEW = flags.DEFINE_enum(
    "teacher_view",
    "same",
    ["same", "clean"],
    "With KD and --student_augment, what the teacher sees: same = the student's augmented "
    "view; clean = the un-augmented image of the same example (its logits computed once), "
    "for a teacher that the augmented views mislead (e.g. zero-padded crops it never saw).",
)
_KD_SELECT = flags.DEFINE_bool(
    "kd_select",
    False,
    "Choose the KD loss, temperature and alpha on the validation split (short runs over "
    "the grid below) and train the KD students with the winner.",
)
_KD_SELECT_LOSSES = flags.DEFINE_list("kd_select_losses", ["kd"], "Losses the selection tries.")
_KD_SELECT_TEMPERATURES = flags.DEFINE_list(
    "kd_select_temperatures", ["1", "2", "4"], "Temperatures the selection tries."
)
_KD_SELECT_ALPHAS = flags.DEFINE_list(
    "kd_select_alphas", ["0.1", "0.5"], "Label-loss weights the selection tries."
)
_KD_SELECT_EPOCHS = flags.DEFINE_integer(
    "kd_select_epochs", 0, "Epochs per selection run (0 = --student_epochs).", lower_bound=0
)
_TECHNIQUES = flags.DEFINE_list(
    "techniques",
    [],
    "Compression chain applied to the student, in order: slim, prune, cluster, qat "
    "(e.g. prune,qat or slim,qat). Trained besides the plain student, with KD as --kd says.",
)
_SLIM_FRACTION = flags.DEFINE_float(
    "slim_fraction",
    0.5,
    "Share of each group of coupled channels the slim technique removes, in (0, 1).",
)
_SLIM_CRITERION = flags.DEFINE_enum(
    "slim_criterion",
    "l1",
    list(compression.SLIM_CRITERIA),
    "How slim ranks channels: l1 (L1 norm of the filters) or bn_gamma (|gamma| of the "
    "BatchNormalizations over them).",
)
_SLIM_TARGET_MACS = flags.DEFINE_float(
    "slim_target_macs",
    None,
    "If set, the share of the student's MACs slim may keep, in (0, 1): slim finds the "
    "smallest fraction reaching it (instead of --slim_fraction).",
)
_SLIM_TARGET_BYTES = flags.DEFINE_float(
    "slim_target_bytes",
    None,
    "If set, the share of the student's int8 file slim may keep, in (0, 1): slim finds the "
    "smallest fraction reaching it, converting each candidate (instead of --slim_fraction).",
)
_SLIM_TARGET_LATENCY = flags.DEFINE_float(
    "slim_target_latency",
    None,
    "If set, the share of the student's int8 latency slim may keep, in (0, 1): slim finds "
    "the smallest fraction reaching it, timing each candidate with the unslimmed file "
    "(instead of --slim_fraction).",
)
_SLIM_STEPS = flags.DEFINE_integer(
    "slim_steps",
    1,
    "Iterative slimming: slim removes --slim_fraction in this many steps, each fine-tuned for "
    "its share of --compress_epochs (1 = one shot; not with a --slim_target_*).",
    lower_bound=1,
)
_SLIM_SPARSITY = flags.DEFINE_float(
    "slim_sparsity",
    0.0,
    "Network slimming's sparsity phase: if > 0, slim first trains the unslimmed student "
    "with an L1 penalty of this weight on its BatchNormalization scales (for its share of "
    "--compress_epochs), then slims it (pair with --slim_criterion=bn_gamma); 0 = none.",
    lower_bound=0.0,
)
_SLIM_MULTIPLE = flags.DEFINE_integer(
    "slim_multiple",
    1,
    "Slim rounds each group's kept channels up to a multiple of this.",
    lower_bound=1,
)
_SPARSITY = flags.DEFINE_float("sparsity", 0.5, "Pruning target sparsity in [0, 1).")
_SCHEDULE = flags.DEFINE_enum(
    "pruning_schedule", "polynomial", ["polynomial", "constant"], "Pruning schedule."
)
_STRUCTURE = flags.DEFINE_enum(
    "pruning_structure",
    "unstructured",
    ["unstructured", "2:4"],
    "Unstructured or 2:4 structured pruning.",
)
_SKIP = flags.DEFINE_list(
    "compress_skip_layers",
    None,
    "Layers left unpruned/unclustered (default: first conv and "
    "classifier for pruning, first conv for clustering).",
)
_CLUSTERS = flags.DEFINE_integer("clusters", 16, "Weight clusters per kernel.")
_CLUSTER_INIT = flags.DEFINE_enum(
    "cluster_init",
    "kmeans++",
    ["kmeans++", "linear", "density-based", "random"],
    "Centroid initialization.",
)
_COMPRESS_EPOCHS = flags.DEFINE_integer(
    "compress_epochs", 2, "Fine-tuning epochs per compression stage.", lower_bound=1
)
_COMPRESS_LR_SCALE = flags.DEFINE_float(
    "compress_lr_scale",
    0.1,
    "Peak learning rate of a compression stage's fine-tuning, as a share of --student_lr, "
    "in (0, 1] (cosine decay, no warm-up).",
)
_COMPRESS_MODE = flags.DEFINE_enum(
    "compress_mode",
    "finetune",
    ["finetune", "scratch"],
    "finetune: each technique fine-tunes the trained student; scratch: the first technique "
    "(slim, prune or qat) is applied to the fresh student for its whole training.",
)
_COMPRESS_TEACHER = flags.DEFINE_enum(
    "compress_teacher",
    "teacher",
    ["teacher", "student"],
    "With KD, who teaches during compression fine-tuning: the teacher, or the uncompressed "
    "trained student itself.",
)
_EXPORT_TEACHER = flags.DEFINE_bool("export_teacher", False, "Export the teacher(s) too.")
_MODE = flags.DEFINE_enum(
    "mode",
    "pipeline",
    ["pipeline", "study"],
    "pipeline: teacher + student variants; study: the orthogonality "
    "study (every technique x KD on/off x seeds).",
)
_STUDY_TECHNIQUES = flags.DEFINE_list(
    "study_techniques",
    ["none", "dws", "prune50", "prune75", "prune90", "qat", "cluster", "augment", "prune50+qat"],
    "Study techniques (add 'nas' with --nas_student).",
)
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Study seeds.")
_EXTEND_SEEDS = flags.DEFINE_bool(
    "extend_seeds",
    False,
    "Let --seeds add seeds to the finished study in --workdir; the report then names the "
    "first design's seeds and the added ones (its pooled analysis is not pre-declared).",
)
_NAS_STUDENT = flags.DEFINE_string(
    "nas_student", None, "NAS result (project dir) used by the 'nas' technique."
)
_BAG_MEMBERS = flags.DEFINE_integer(
    "bagging_members", 4, "Bagging baseline members (0 = off).", lower_bound=0
)
_BAG_EPOCHS = flags.DEFINE_integer(
    "bagging_epochs", 0, "Epochs per bagging member (0 = student epochs / members).", lower_bound=0
)
_BAG_BUDGETS = flags.DEFINE_list(
    "bagging_budgets",
    list(runner.BAGGING_BUDGETS),
    "Bags to train: 'total' (members x --bagging_epochs = one student's epochs) and/or "
    "'member' (every member trains the student's epochs).",
)
_EXTRA_TEACHER = flags.DEFINE_list(
    "extra_teacher_args",
    [],
    "Builder kwargs of a second teacher for the teacher-ensemble experiment (empty = off).",
)
_EXTRA_TEACHER_PATH = flags.DEFINE_string(
    "extra_teacher_path",
    None,
    "A saved second teacher for the teacher-ensemble experiment (instead of "
    "--extra_teacher_args; loaded, never trained).",
)
_EXTRA_TEACHER_EPOCHS = flags.DEFINE_integer(
    "extra_teacher_epochs", 10, "Epochs of the second teacher.", lower_bound=1
)
_PRIMARY_METRIC = flags.DEFINE_enum(
    "primary_metric",
    "test_accuracy",
    ["test_accuracy", "int8_accuracy"],
    "The study's primary metric: Keras test accuracy or the int8 TFLite file's.",
)
_STUDY_ALPHA = flags.DEFINE_float(
    "study_alpha",
    0.05,
    "The level of the study's tests (Holm-adjusted within each family).",
    lower_bound=0.001,
    upper_bound=0.25,
)
_EQUIVALENCE_MARGIN = flags.DEFINE_float(
    "equivalence_margin",
    0.5,
    "The study's equivalence margin in accuracy points: 'additive' or 'no difference' "
    "only when two one-sided tests put the difference inside it.",
    lower_bound=0.001,
)

flags.mark_flag_as_required("workdir")
flags.register_validator(
    "seeds",
    lambda v: all(str(s).lstrip("-").isdigit() for s in v) and len(v) > 0,
    message="--seeds must be a non-empty list of integers.",
)
flags.register_validator(
    "bagging_budgets",
    lambda v: len(v) > 0 and all(b in runner.BAGGING_BUDGETS for b in v),
    message=f"--bagging_budgets items must be in {list(runner.BAGGING_BUDGETS)} (at least one).",
)
flags.register_validator(
    "techniques",
    lambda v: all(t in compression.TECHNIQUES for t in v),
    message=f"--techniques items must be in {list(compression.TECHNIQUES)}.",
)
flags.register_validator(
    "compress_lr_scale",
    lambda v: 0 < v <= 1,
    message="--compress_lr_scale must lie in (0, 1].",
)
flags.register_validator(
    "study_techniques",
    lambda v: all(t in set(runner.TECHNIQUES) | {"nas"} for t in v),
    message=f"--study_techniques items must be in {list(runner.TECHNIQUES) + ['nas']}.",
)


def mode():
    """'pipeline' or 'study'."""
    return _MODE.value


def workdir():
    """The --workdir value."""
    return _WORKDIR.value


def study_config(pipeline_cfg):
    """The StudyConfig the flags describe.

    Raises:
      ValueError: an invalid study setting, naming the flag.
    """
    if flags.FLAGS["max_params"].present:
        raise ValueError(
            "--max_params is a search budget; the study checks --max_bytes, "
            "--max_arena_bytes and --max_latency_us on its int8 files."
        )
    seeds = tuple(flag_groups.numbers(_SEEDS.value, int, "seeds"))
    extra = flag_groups.parse_kwargs(_EXTRA_TEACHER.value, "extra_teacher_args") or None
    return runner.StudyConfig(
        pipeline=pipeline_cfg,
        techniques=tuple(_STUDY_TECHNIQUES.value),
        seeds=seeds,
        nas_student=_NAS_STUDENT.value,
        bagging_members=_BAG_MEMBERS.value,
        bagging_epochs=_BAG_EPOCHS.value,
        bagging_budgets=tuple(dict.fromkeys(_BAG_BUDGETS.value)),
        extra_teacher=extra,
        extra_teacher_epochs=_EXTRA_TEACHER_EPOCHS.value,
        extra_teacher_path=_EXTRA_TEACHER_PATH.value,
        primary_metric=_PRIMARY_METRIC.value,
        alpha=_STUDY_ALPHA.value,
        equivalence_margin=_EQUIVALENCE_MARGIN.value,
        extend_seeds=_EXTEND_SEEDS.value,
        budget={
            "max_bytes": BUDGET.max_bytes.value,
            "max_arena_bytes": BUDGET.max_arena_bytes.value,
            "max_latency_us": BUDGET.max_latency_us.value,
        },
    )


def kd_select_config():
    """The SelectionConfig of --kd_select_*, or None without --kd_select."""
    if not _KD_SELECT.value:
        return None
    return kd_selection.SelectionConfig(
        losses=tuple(_KD_SELECT_LOSSES.value),
        temperatures=tuple(
            flag_groups.numbers(_KD_SELECT_TEMPERATURES.value, float, "kd_select_temperatures")
        ),
        alphas=tuple(flag_groups.numbers(_KD_SELECT_ALPHAS.value, float, "kd_select_alphas")),
        epochs=_KD_SELECT_EPOCHS.value,
    )


def compression_config():
    """The CompressionConfig the flags describe (validated on construction)."""
    return compression.CompressionConfig(
        sparsity=_SPARSITY.value,
        pruning_schedule=_SCHEDULE.value,
        pruning_structure=_STRUCTURE.value,
        skip_layers=_SKIP.value,
        clusters=_CLUSTERS.value,
        cluster_init=_CLUSTER_INIT.value,
        slim_fraction=_SLIM_FRACTION.value,
        slim_criterion=_SLIM_CRITERION.value,
        slim_multiple=_SLIM_MULTIPLE.value,
        slim_target_macs=_SLIM_TARGET_MACS.value,
        slim_target_bytes=_SLIM_TARGET_BYTES.value,
        slim_target_latency=_SLIM_TARGET_LATENCY.value,
        slim_steps=_SLIM_STEPS.value,
        slim_sparsity=_SLIM_SPARSITY.value,
    )


def teacher_augment():
    """--teacher_augment's AugmentConfig. Its default (crop and flip) is for
    images: for an npz whose inputs are not images, a default left unset
    drops crop and flip; set explicitly, they are refused (pipeline.validate).
    """
    augment = flag_groups.augment_config(TEACHER.teacher_augment)
    dataset = DATA.dataset.value
    if TEACHER.teacher_augment.present or not data_lib.is_npz(dataset):
        return augment
    try:
        shapes = data_lib.npz.placeholder(dataset)
    except data_lib.DataError:
        return augment  # Said in one line by pipeline.validate.
    return augment if shapes.image_like else augment.without_spatial()


# Flags whose defaults kd_keras.app.recipe scales to the data when they are not set.
SCALED_FLAGS = ("val_size", "batch_size")


def pipeline_config():
    """The PipelineConfig the flags describe, with the defaults of flags not
    set scaled to the data (:func:`resolved_pipeline_config`).

    Raises:
      ValueError: an invalid value or combination, naming the flag.
    """
    return resolved_pipeline_config()[0]


def resolved_pipeline_config():
    """(the PipelineConfig the flags describe, lines saying each default that
    was scaled to the data): ``kd_keras.app.recipe.scale`` applied to the
    settings whose flags were not set (on the command line or in a flagfile).

    Raises:
      ValueError: an invalid value or combination, naming the flag.
    """
    present = {name for name in SCALED_FLAGS if flags.FLAGS[name].present}
    return recipe.scale(given_pipeline_config(), present)


def given_pipeline_config():
    """The PipelineConfig of the flags' values as given (defaults unscaled).

    Raises:
      ValueError: an invalid value or combination, naming the flag.
    """
    if _MODE.value == "pipeline":
        for name in (
            "seeds",
            "extend_seeds",
            "study_techniques",
            "nas_student",
            "bagging_members",
            "bagging_epochs",
            "bagging_budgets",
            "extra_teacher_args",
            "extra_teacher_path",
            "extra_teacher_epochs",
            "primary_metric",
            "study_alpha",
            "equivalence_margin",
            "max_bytes",
            "max_arena_bytes",
            "max_latency_us",
            "max_params",
        ):
            if flags.FLAGS[name].present:
                raise ValueError(
                    f"--{name} is a study setting; it needs --mode=study "
                    "(the pipeline trains one --seed)."
                )
    return pipeline.PipelineConfig(
        workdir=_WORKDIR.value,
        data=flag_groups.data_config(DATA, SOURCE),
        teacher=TEACHER.teacher.value,
        teacher_kwargs=flag_groups.parse_kwargs(TEACHER.teacher_args.value, "teacher_args"),
        teacher_train=flag_groups.train_config(
            TEACHER, "teacher", seed=0, early_stopping=_EARLY.value
        ),
        teacher_augment=teacher_augment(),
        num_teachers=_NUM_TEACHERS.value,
        teacher_input_range=_TEACHER_INPUT_RANGE.value,
        student=STUDENT.student.value,
        student_init=STUDENT.student_init.value,
        student_kwargs=flag_groups.parse_kwargs(STUDENT.student_args.value, "student_args"),
        student_train=flag_groups.train_config(
            STUDENT, "student", seed=RUN.seed.value, early_stopping=_EARLY.value
        ),
        student_augment=flag_groups.augment_config(STUDENT.student_augment),
        kd=flag_groups.kd_config(KD),
        kd_mode=_KD.value,
        teacher_view=_TEACHER_VIEW.value,
        kd_select=kd_select_config(),
        techniques=tuple(_TECHNIQUES.value),
        compress=variants.CompressSettings(
            compression_config(),
            _COMPRESS_EPOCHS.value,
            _COMPRESS_MODE.value,
            _COMPRESS_TEACHER.value,
            _COMPRESS_LR_SCALE.value,
        ),
        export=variants.ExportSettings(
            EXPORT.export_formats.value,
            flag_groups.export_threads(EXPORT),
            EXPORT.latency_runs.value,
            EXPORT.num_calibration.value,
            EXPORT.latency_warmup.value,
            EXPORT.xnnpack.value,
            EXPORT.int8_io.value,
        ),
        export_teacher=_EXPORT_TEACHER.value,
        verbose=int(RUN.verbose.value),
    )
