"""Flag definitions for ``kd_keras.main``. Only entry points read `.value`."""

import ast

from absl import flags

from kd_keras import data as data_lib
from kd_keras import models, pipeline, training

_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (cache, models, results).")
_DATASET = flags.DEFINE_enum("dataset", "fashion_mnist", list(data_lib.SUPPORTED_DATASETS),
                             "TFDS dataset.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data dir (default ~/tensorflow_datasets).")
_MANUAL_DIR = flags.DEFINE_string("manual_dir", data_lib.DEFAULT_MANUAL_DIR,
                                  "Directory of the Fashion-MNIST IDX .gz files.")
_VAL_SIZE = flags.DEFINE_integer("val_size", 5000, "Validation examples carved from train.",
                                 lower_bound=0)
_LIMIT_TRAIN = flags.DEFINE_integer("limit_train", 0, "Keep only N train examples (0 = all).",
                                    lower_bound=0)
_LIMIT_TEST = flags.DEFINE_integer("limit_test", 0, "Keep only N test examples (0 = all).",
                                   lower_bound=0)
_BATCH = flags.DEFINE_integer("batch_size", 128, "Batch size.", lower_bound=1)
_SHOW_LOGS = flags.DEFINE_bool("show_logs", False, "Show TensorFlow's logs and library "
                                "warnings on the console (default: the workdir/log.txt).")
_VERBOSE = flags.DEFINE_enum("verbose", "1", ["0", "1", "2"],
                             "Keras verbosity: 1 = progress bars, 2 = a line per epoch.")

_TEACHER = flags.DEFINE_enum("teacher", "resnet", sorted(models.REGISTRY), "Teacher model.")
_TEACHER_ARGS = flags.DEFINE_list("teacher_args", [], "Teacher builder kwargs, k=v,...")
_NUM_TEACHERS = flags.DEFINE_integer("num_teachers", 1, "Teachers in the ensemble.",
                                     lower_bound=1)
_STUDENT = flags.DEFINE_enum("student", "cnn", sorted(models.REGISTRY), "Student model.")
_STUDENT_ARGS = flags.DEFINE_list("student_args", [], "Student builder kwargs, k=v,...")

for _role, _epochs, _opt, _lr in (("teacher", 30, "sgd", 0.1), ("student", 10, "adam", 3e-3)):
    flags.DEFINE_integer(f"{_role}_epochs", _epochs, f"{_role} epochs.", lower_bound=1)
    flags.DEFINE_enum(f"{_role}_optimizer", _opt, list(training.OPTIMIZERS), f"{_role} optimizer.")
    flags.DEFINE_float(f"{_role}_lr", _lr, f"{_role} peak learning rate.", lower_bound=0)
    flags.DEFINE_integer(f"{_role}_warmup", 1 if _role == "teacher" else 0,
                         f"{_role} warm-up epochs.", lower_bound=0)
    flags.DEFINE_list(f"{_role}_augment", ["crop=2", "flip"] if _role == "teacher" else [],
                      f"{_role} augmentation: crop[=PADDING], flip, cutout[=SIZE], none.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the student runs (teachers use their own).")
_EARLY = flags.DEFINE_integer("early_stopping", 0, "Patience on val accuracy (0 = off).",
                              lower_bound=0)

_KD = flags.DEFINE_enum("kd", "both", list(pipeline.KD_MODES),
                        "Train the student without KD, with KD, or both.")
_KD_LOSSES = flags.DEFINE_list("kd_losses", ["kd"], "Distillation losses: kd, hint, attention.")
_KD_WEIGHTS = flags.DEFINE_list("kd_weights", [], "One weight per distillation loss.")
_ALPHA = flags.DEFINE_float("alpha", 0.1, "Weight of the label loss.", lower_bound=0,
                            upper_bound=1)
_TEMPERATURE = flags.DEFINE_float("temperature", 4.0, "KD temperature.", lower_bound=1e-3)
_ENSEMBLE = flags.DEFINE_enum("ensemble", "logits", ["logits", "probs"],
                              "How an ensemble teacher is averaged.")
_T_LAYER = flags.DEFINE_string("teacher_layer", "stage3", "Teacher layer of feature losses.")
_S_LAYER = flags.DEFINE_string("student_layer", "block3", "Student layer of feature losses.")

_TECHNIQUES = flags.DEFINE_list(
    "techniques", [], "Compression chain applied to the student, in order: prune, cluster, qat "
    "(e.g. prune,qat). Trained besides the plain student, with KD as --kd says.")
_SPARSITY = flags.DEFINE_float("sparsity", 0.5, "Pruning target sparsity in [0, 1).")
_SCHEDULE = flags.DEFINE_enum("pruning_schedule", "polynomial", ["polynomial", "constant"],
                              "Pruning schedule.")
_STRUCTURE = flags.DEFINE_enum("pruning_structure", "unstructured", ["unstructured", "2:4"],
                               "Unstructured or 2:4 structured pruning.")
_SKIP = flags.DEFINE_list("compress_skip_layers", None,
                          "Layers left unpruned/unclustered (default: first conv and "
                          "classifier for pruning, first conv for clustering).")
_CLUSTERS = flags.DEFINE_integer("clusters", 16, "Weight clusters per kernel.")
_CLUSTER_INIT = flags.DEFINE_enum("cluster_init", "kmeans++",
                                  ["kmeans++", "linear", "density-based", "random"],
                                  "Centroid initialization.")
_COMPRESS_EPOCHS = flags.DEFINE_integer("compress_epochs", 2,
                                        "Fine-tuning epochs per compression stage.",
                                        lower_bound=1)
_COMPRESS_MODE = flags.DEFINE_enum(
    "compress_mode", "finetune", ["finetune", "scratch"],
    "finetune: each technique fine-tunes the trained student; scratch: the first technique "
    "(prune or qat) wraps the fresh student for its whole training.")
_COMPRESS_TEACHER = flags.DEFINE_enum(
    "compress_teacher", "teacher", ["teacher", "student"],
    "With KD, who teaches during compression fine-tuning: the teacher, or the uncompressed "
    "trained student itself.")
_EXPORT_FORMATS = flags.DEFINE_list("export_formats", ["float32", "int8"],
                                    "TFLite formats each student is exported to "
                                    "(float32, float16, dynamic, int8); empty: no export.")
_EXPORT_THREADS = flags.DEFINE_list("export_threads", ["1"],
                                    "Interpreter thread counts for latency.")
_EXPORT_TEACHER = flags.DEFINE_bool("export_teacher", False, "Export the teacher(s) too.")
_LATENCY_RUNS = flags.DEFINE_integer("latency_runs", 200, "Timed invocations per latency.",
                                     lower_bound=1)
_NUM_CALIBRATION = flags.DEFINE_integer("num_calibration", 200,
                                        "Training images that calibrate int8.", lower_bound=1)

_MODE = flags.DEFINE_enum("mode", "pipeline", ["pipeline", "study"],
                          "pipeline: teacher + student variants; study: the orthogonality "
                          "study (every technique x KD on/off x seeds).")
_STUDY_TECHNIQUES = flags.DEFINE_list(
    "study_techniques", ["none", "dws", "prune50", "prune75", "prune90", "qat", "cluster",
                         "augment", "prune50+qat"],
    "Study techniques (add 'nas' with --nas_student).")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Study seeds.")
_NAS_STUDENT = flags.DEFINE_string("nas_student", None,
                                   "NAS result (project dir) used by the 'nas' technique.")
_BAG_MEMBERS = flags.DEFINE_integer("bagging_members", 4,
                                    "Bagging baseline members (0 = off).", lower_bound=0)
_BAG_EPOCHS = flags.DEFINE_integer("bagging_epochs", 0,
                                   "Epochs per bagging member (0 = student epochs / members).",
                                   lower_bound=0)
_EXTRA_TEACHER = flags.DEFINE_list("extra_teacher_args", [],
                                   "Builder kwargs of a second teacher for the teacher-ensemble "
                                   "experiment (empty = off).")
_EXTRA_TEACHER_EPOCHS = flags.DEFINE_integer("extra_teacher_epochs", 10,
                                             "Epochs of the second teacher.", lower_bound=1)

flags.mark_flag_as_required("workdir")


def study_config(pipeline_cfg):
    """The StudyConfig the flags describe."""
    from kd_keras.study import runner
    try:
        seeds = tuple(int(s) for s in _SEEDS.value)
    except ValueError as e:
        raise flags.ValidationError(f"--seeds must be integers: {e}") from None
    extra = parse_kwargs(_EXTRA_TEACHER.value, "extra_teacher_args") or None
    return runner.StudyConfig(
        pipeline=pipeline_cfg, techniques=tuple(_STUDY_TECHNIQUES.value), seeds=seeds,
        nas_student=_NAS_STUDENT.value, bagging_members=_BAG_MEMBERS.value,
        bagging_epochs=_BAG_EPOCHS.value, extra_teacher=extra,
        extra_teacher_epochs=_EXTRA_TEACHER_EPOCHS.value)


def mode():
    return _MODE.value


def compression_config():
    """The CompressionConfig the flags describe (validated on construction)."""
    from kd_keras import compression
    return compression.CompressionConfig(
        sparsity=_SPARSITY.value, pruning_schedule=_SCHEDULE.value,
        pruning_structure=_STRUCTURE.value, skip_layers=_SKIP.value, clusters=_CLUSTERS.value,
        cluster_init=_CLUSTER_INIT.value)


def parse_kwargs(items, flag_name):
    """Parses ``["depth=10", "width=2"]`` into {'depth': 10, 'width': 2}."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise flags.ValidationError(f"--{flag_name}: expected k=v items, got {item!r}.")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def _train_config(role):
    f = flags.FLAGS
    return training.TrainConfig(
        epochs=f[f"{role}_epochs"].value, optimizer=f[f"{role}_optimizer"].value,
        learning_rate=f[f"{role}_lr"].value, warmup_epochs=f[f"{role}_warmup"].value,
        early_stopping=_EARLY.value, seed=_SEED.value if role == "student" else 0)


def pipeline_config():
    """The PipelineConfig the flags describe."""
    try:
        weights = tuple(float(w) for w in _KD_WEIGHTS.value)
    except ValueError as e:
        raise flags.ValidationError(f"--kd_weights must be numbers: {e}") from None
    f = flags.FLAGS
    return pipeline.PipelineConfig(
        workdir=_WORKDIR.value, dataset=_DATASET.value, data_dir=_DATA_DIR.value,
        manual_dir=_MANUAL_DIR.value, val_size=_VAL_SIZE.value,
        limit_train=_LIMIT_TRAIN.value, limit_test=_LIMIT_TEST.value,
        batch_size=_BATCH.value,
        teacher=_TEACHER.value, teacher_kwargs=parse_kwargs(_TEACHER_ARGS.value, "teacher_args"),
        teacher_train=_train_config("teacher"),
        teacher_augment=data_lib.AugmentConfig.parse(f["teacher_augment"].value),
        num_teachers=_NUM_TEACHERS.value,
        student=_STUDENT.value, student_kwargs=parse_kwargs(_STUDENT_ARGS.value, "student_args"),
        student_train=_train_config("student"),
        student_augment=data_lib.AugmentConfig.parse(f["student_augment"].value),
        kd=training.KDConfig(losses=tuple(_KD_LOSSES.value), weights=weights,
                             alpha=_ALPHA.value, temperature=_TEMPERATURE.value,
                             ensemble=_ENSEMBLE.value, teacher_layer=_T_LAYER.value,
                             student_layer=_S_LAYER.value),
        kd_mode=_KD.value, techniques=tuple(_TECHNIQUES.value),
        compression=compression_config(), compress_epochs=_COMPRESS_EPOCHS.value,
        compress_mode=_COMPRESS_MODE.value, compress_teacher=_COMPRESS_TEACHER.value,
        export_formats=tuple(_EXPORT_FORMATS.value),
        export_threads=tuple(int(t) for t in _EXPORT_THREADS.value),
        export_teacher=_EXPORT_TEACHER.value, latency_runs=_LATENCY_RUNS.value,
        num_calibration=_NUM_CALIBRATION.value, verbose=int(_VERBOSE.value))
