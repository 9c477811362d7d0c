"""Flag groups shared by the entry points: one vocabulary, one set of defaults.

``kd_keras.main``, ``nas.main`` and ``export.main`` define the flags they
share through these functions, so a flag has one name, one default, one bound
and one meaning everywhere. Each ``define_*_flags()`` defines its flags (once
per process) and returns their holders; the ``*_from`` helpers turn holder
values into plain config objects and raise ``ValueError`` naming the flag,
the value and what is allowed. Only entry points (their ``flags.py`` and
``main.py``) call these.

    from kd_keras import flag_groups
    DATA = flag_groups.define_data_flags()
    ...
    data_cfg = flag_groups.data_kwargs(DATA)
"""

import re
import sys
import types

from absl import flags

from kd_keras import data as data_lib
from kd_keras import distill, distribute, models
from kd_keras import train as train_lib
from kd_keras.data import store
from kd_keras.distill import losses as losses_lib
from kd_keras.distill import teachers
from kd_keras.literals import literal
from kd_keras.models import own

EXPORT_FORMATS = ("float32", "float16", "dynamic", "int8")
NO_DATASET = "none"
# A TFDS name: `name`, `name/config`, `name:version`, `name/config:version`.
DATASET_NAME = re.compile(r"^[a-z][a-z0-9_]*(/[\w.-]+)?(:[\d.*]+)?$")


def _holders(**kwargs):
    return types.SimpleNamespace(**kwargs)


def _validate_list(name, check, allowed):
    """Registers a parse-time validator: every item of list flag `name` passes `check`."""

    def validate(value):
        bad = [v for v in value or () if not check(v)]
        if bad:
            raise flags.ValidationError(f"{bad[0]!r} is not allowed; allowed: {allowed}.")
        return True

    flags.register_validator(name, validate)


def _is_number(kind):
    def check(value):
        try:
            kind(value)
        except ValueError:
            return False
        return True

    return check


def _is_kwarg(item):
    key, sep, _ = str(item).partition("=")
    return bool(sep and key.isidentifier())


def _check_dataset(allow_none):
    def check(value):
        if value == NO_DATASET and allow_none:
            return True
        if data_lib.is_npz(value):
            if not value[len(data_lib.NPZ_PREFIX) :].strip():
                raise flags.ValidationError(
                    f"{value!r}: give the file, --dataset={data_lib.NPZ_PREFIX}PATH."
                )
            return True
        if data_lib.is_folder(value):
            if not value[len(data_lib.FOLDER_PREFIX) :].strip():
                raise flags.ValidationError(
                    f"{value!r}: give the folder, --dataset={data_lib.FOLDER_PREFIX}PATH."
                )
            return True
        if not DATASET_NAME.match(value or ""):
            raise flags.ValidationError(
                f"{value!r} is not a dataset; allowed: {', '.join(data_lib.SUPPORTED_DATASETS)}, "
                f"another TFDS image-classification dataset name, or "
                f"{data_lib.FOLDER_PREFIX}PATH (a folder with one sub-folder per class), or "
                f"{data_lib.NPZ_PREFIX}PATH (arrays in an .npz file)"
                + (f", or '{NO_DATASET}'." if allow_none else ".")
            )
        return True

    return check


def define_run_flags(seed_help, verbose_help):
    """`--seed` and `--verbose`, shared by ``kd_keras.main`` and ``nas.main``:
    one name, default and range; `seed_help` and `verbose_help` say what they
    seed and print in that entry point."""
    return _holders(
        seed=flags.DEFINE_integer("seed", 0, seed_help, lower_bound=0),
        verbose=flags.DEFINE_enum("verbose", "1", ["0", "1", "2"], verbose_help),
    )


def define_data_flags(allow_none=False):
    """--dataset, --data_dir, --manual_dir, --val_size, --limit_train,
    --limit_test, --batch_size, --data_storage.

    Args:
      allow_none: also accept ``--dataset=none`` (no data: the exporter then
        measures sizes and latency only).
    """
    holders = _holders(
        dataset=flags.DEFINE_string(
            "dataset",
            "fashion_mnist",
            f"{', '.join(data_lib.SUPPORTED_DATASETS)}, another TFDS image-classification "
            f"dataset (features 'image' and 'label'), or {data_lib.FOLDER_PREFIX}PATH: a "
            "folder with one sub-folder per class (PNG/JPEG/BMP/GIF), or "
            f"{data_lib.NPZ_PREFIX}PATH: an .npz with x_train, y_train, x_test, y_test "
            "(optional x_val, y_val, class_names), inputs (N, H, W, C) of uint8 (images, "
            "scaled by 1/255) or float32 (used as given)."
            + (f" '{NO_DATASET}': no data (sizes and latency only)." if allow_none else ""),
        ),
        data_dir=flags.DEFINE_string(
            "data_dir", None, "TFDS data dir (default ~/tensorflow_datasets)."
        ),
        manual_dir=flags.DEFINE_string(
            "manual_dir",
            data_lib.DEFAULT_MANUAL_DIR,
            "Directory of the Fashion-MNIST IDX .gz files.",
        ),
        val_size=flags.DEFINE_integer(
            "val_size", 5000, "Validation examples carved from train.", lower_bound=0
        ),
        limit_train=flags.DEFINE_integer(
            "limit_train", 0, "Keep only N train examples (0 = all).", lower_bound=0
        ),
        limit_test=flags.DEFINE_integer(
            "limit_test", 0, "Keep only N test examples (0 = all).", lower_bound=0
        ),
        batch_size=flags.DEFINE_integer("batch_size", 128, "Training batch size.", lower_bound=1),
        data_storage=flags.DEFINE_enum(
            "data_storage",
            "auto",
            list(store.STORAGES),
            "Where the splits' images are kept: memory, disk (written once to a store "
            "under $KD_KERAS_STORE or ~/.cache/kd_keras/store and read through memmap, "
            "for data larger than memory), or auto: memory up to "
            f"{store.MEMORY_LIMIT_BYTES >> 30} GiB of images, disk beyond.",
        ),
    )
    flags.register_validator("dataset", _check_dataset(allow_none))
    return holders


def define_source_flags():
    """--test_fraction, --image_size, --train_split, --test_split, --val_split:
    how a user's dataset (an image folder or any TFDS dataset) is split and sized."""
    holders = _holders(
        test_fraction=flags.DEFINE_float(
            "test_fraction",
            data_lib.DEFAULT_TEST_FRACTION,
            f"--dataset={data_lib.FOLDER_PREFIX}PATH: share of each class held out for test.",
        ),
        image_size=flags.DEFINE_list(
            "image_size",
            [],
            "HEIGHT,WIDTH to resize every image to (default: the dataset's own size).",
        ),
        train_split=flags.DEFINE_string("train_split", "train", "TFDS split string for train_lib."),
        test_split=flags.DEFINE_string("test_split", "test", "TFDS split string for test."),
        val_split=flags.DEFINE_string(
            "val_split",
            None,
            "TFDS split string for validation (e.g. 'validation'); default: --val_size "
            "examples carved from the training split.",
        ),
    )
    flags.register_validator(
        "test_fraction",
        lambda v: 0 < v < 1,
        message="--test_fraction must lie strictly between 0 and 1.",
    )

    def check_size(value):
        try:
            image_size(value)
        except ValueError as e:
            raise flags.ValidationError(str(e)) from None
        return True

    flags.register_validator("image_size", check_size)
    return holders


def image_size(items):
    """``["H", "W"]`` (or ``["S"]`` for a square) -> (H, W); [] -> None.

    Raises:
      ValueError: not one or two positive integers.
    """
    if not items:
        return None
    try:
        size = tuple(int(v) for v in items)
    except ValueError:
        size = ()
    if len(size) == 1:
        size = size * 2
    if len(size) != 2 or min(size) < 1:
        raise ValueError(
            f"--image_size={','.join(items)}: give HEIGHT,WIDTH (positive integers) or SIZE."
        )
    return size


def data_config(data, source=None):
    """The :class:`kd_keras.data.DataConfig` of the data flags `data`
    (:func:`define_data_flags`) and, when given, the source flags `source`
    (:func:`define_source_flags`).

    Raises:
      ValueError: a malformed --image_size.
    """
    fields = dict(
        dataset=data.dataset.value,
        data_dir=data.data_dir.value,
        manual_dir=data.manual_dir.value,
        val_size=data.val_size.value,
        limit_train=data.limit_train.value,
        limit_test=data.limit_test.value,
        batch_size=data.batch_size.value,
        storage=data.data_storage.value,
    )
    if source is not None:
        fields.update(
            test_fraction=source.test_fraction.value,
            image_size=image_size(source.image_size.value),
            train_split=source.train_split.value,
            test_split=source.test_split.value,
            val_split=source.val_split.value,
        )
    return data_lib.DataConfig(**fields)


def _define_train_flags(role, epochs, optimizer, lr, warmup, augment):
    return dict(
        epochs=flags.DEFINE_integer(f"{role}_epochs", epochs, f"{role} epochs.", lower_bound=1),
        optimizer=flags.DEFINE_enum(
            f"{role}_optimizer", optimizer, list(train_lib.OPTIMIZERS), f"{role} optimizer."
        ),
        lr=flags.DEFINE_float(f"{role}_lr", lr, f"{role} peak learning rate.", lower_bound=0),
        warmup=flags.DEFINE_integer(
            f"{role}_warmup", warmup, f"{role} warm-up epochs.", lower_bound=0
        ),
        augment=_define_augment(f"{role}_augment", augment, f"{role} augmentation"),
    )


def _define_augment(name, default, what):
    holder = flags.DEFINE_list(
        name,
        default,
        f"{what}: crop[=PADDING], flip, cutout[=SIZE], mixup[=ALPHA], cutmix[=ALPHA], none "
        "(mixup and cutmix mix each batch with itself, labels too).",
    )

    def validate(value):
        try:
            data_lib.AugmentConfig.parse(value)
        except ValueError as e:
            raise flags.ValidationError(str(e)) from None
        return True

    flags.register_validator(name, validate)
    return holder


def _define_kwargs(name, help_text):
    holder = flags.DEFINE_list(name, [], help_text + " k=v,...")
    _validate_list(name, _is_kwarg, "k=v items with an identifier as k")
    return holder


def define_teacher_input_range_flag():
    """--teacher_input_range: the value range a teacher given by path expects."""
    return flags.DEFINE_enum(
        "teacher_input_range",
        teachers.DEFAULT_INPUT_RANGE,
        list(teachers.INPUT_RANGES),
        "Input value range a teacher given by path expects; kd_keras feeds images in [0, 1] "
        "and rescales them for the teacher. A teacher that plainly expects another range "
        "(much higher accuracy there on validation images) is an error naming it.",
    )


def define_teacher_flags():
    """--teacher, --teacher_args and how the teacher trains (--teacher_epochs,
    --teacher_optimizer, --teacher_lr, --teacher_warmup, --teacher_augment).

    --teacher is a registry name (trained) or one or more comma-separated
    paths of saved models (loaded, never trained; see ``kd_keras.distill.teachers``).
    """
    teacher = flags.DEFINE_string(
        "teacher",
        "resnet",
        f"Teacher: a registry name {sorted(models.REGISTRY)} (trained), or the path of a "
        "saved model (.keras or .h5 file, SavedModel directory; several comma-separated "
        "paths: an ensemble), loaded and never retrained.",
    )

    def validate(value):
        try:
            teachers.parse_teacher(value)
        except ValueError as e:
            raise flags.ValidationError(str(e)) from None
        return True

    flags.register_validator("teacher", validate)
    return _holders(
        teacher=teacher,
        teacher_args=_define_kwargs("teacher_args", "Teacher builder kwargs,"),
        **{
            f"teacher_{k}": v
            for k, v in _define_train_flags(
                "teacher", 30, "sgd", 0.1, 1, ["crop=2", "flip"]
            ).items()
        },
    )


def define_student_flags(model=True):
    """--student, --student_args (with `model`) and how the student trains
    (--student_epochs, --student_optimizer, --student_lr, --student_warmup,
    --student_augment).

    Args:
      model: define --student and --student_args too (the search builds its
        students itself and needs only how they train).
    """
    holders = {
        f"student_{k}": v
        for k, v in _define_train_flags("student", 10, "adam", 3e-3, 0, []).items()
    }
    if model:
        holders["student"] = flags.DEFINE_string(
            "student",
            "cnn",
            f"Student model: a registry name ({', '.join(sorted(models.REGISTRY))}); "
            "nas:PATH, the best architecture of a finished search (its project directory "
            "or best_hyperparameters.json); the path of a saved model (.keras or .h5 of "
            "tf_keras or Keras 3, or a tf_keras SavedModel directory), its architecture; or "
            "MODULE:FUNCTION, a builder importable from PYTHONPATH called as "
            "FUNCTION(input_shape, num_classes, **student_args). Trained from scratch "
            "unless --student_init=file.",
        )
        flags.register_validator(
            "student",
            own.looks_valid,
            message=f"--student must be {own.FORMS}.",
        )
        holders["student_init"] = flags.DEFINE_enum(
            "student_init",
            "scratch",
            list(own.INITS),
            "scratch: the student starts from fresh weights; file: a --student given as a "
            "saved model starts from the weights it holds.",
        )
        holders["student_args"] = _define_kwargs("student_args", "Student builder kwargs,")
    return _holders(**holders)


def define_kd_flags():
    """--kd_losses, --kd_weights, --alpha, --temperature, --ensemble,
    --teacher_layer, --student_layer, --dkd_alpha, --dkd_beta, --dist_beta, --dist_gamma,
    --teacher_cache_views."""
    out = _holders(
        kd_losses=flags.DEFINE_list(
            "kd_losses", ["kd"], f"Distillation losses, from {sorted(losses_lib.REGISTRY)}."
        ),
        kd_weights=flags.DEFINE_list(
            "kd_weights", [], "One weight per distillation loss (default: all 1)."
        ),
        alpha=flags.DEFINE_float(
            "alpha", 0.1, "Weight of the label loss.", lower_bound=0, upper_bound=1
        ),
        temperature=flags.DEFINE_float("temperature", 4.0, "KD temperature.", lower_bound=1e-3),
        ensemble=flags.DEFINE_enum(
            "ensemble", "logits", ["logits", "probs"], "How an ensemble teacher is averaged."
        ),
        teacher_layer=flags.DEFINE_string(
            "teacher_layer", "stage3", "Teacher layer of feature losses."
        ),
        student_layer=flags.DEFINE_string(
            "student_layer", "block3", "Student layer of feature losses."
        ),
        dkd_alpha=flags.DEFINE_float(
            "dkd_alpha", 1.0, "dkd: weight of target-class KD.", lower_bound=0
        ),
        dkd_beta=flags.DEFINE_float(
            "dkd_beta", 8.0, "dkd: weight of non-target-class KD.", lower_bound=0
        ),
        dist_beta=flags.DEFINE_float(
            "dist_beta", 1.0, "dist: weight of inter-class relations.", lower_bound=0
        ),
        dist_gamma=flags.DEFINE_float(
            "dist_gamma", 1.0, "dist: weight of intra-class relations.", lower_bound=0
        ),
        teacher_cache_views=flags.DEFINE_integer(
            "teacher_cache_views",
            0,
            "K > 0: with student augmentation, the teachers' logits on K augmented views "
            "of every example are computed once and cached (keyed by teacher, data, "
            "augmentation and K); epoch e replays view e mod K. 0: teachers run online.",
            lower_bound=0,
        ),
    )
    _validate_list("kd_losses", lambda v: v in losses_lib.REGISTRY, sorted(losses_lib.REGISTRY))
    _validate_list("kd_weights", _is_number(float), "numbers")
    return out


def define_export_flags():
    """--export_formats, --export_threads, --latency_runs, --latency_warmup,
    --num_calibration, --xnnpack, --int8_io."""
    out = _holders(
        export_formats=flags.DEFINE_list(
            "export_formats",
            ["float32", "int8"],
            f"TFLite formats to export, from {list(EXPORT_FORMATS)}; empty: no export.",
        ),
        export_threads=flags.DEFINE_list(
            "export_threads", ["1"], "Interpreter thread counts latency is timed with."
        ),
        latency_runs=flags.DEFINE_integer(
            "latency_runs",
            200,
            "Timed rounds before the latency protocol checks its stopping rule (the "
            "median's 95% CI within 2%; at most 5000 rounds).",
            lower_bound=1,
        ),
        latency_warmup=flags.DEFINE_integer(
            "latency_warmup", 10, "Untimed invocations before timing.", lower_bound=0
        ),
        num_calibration=flags.DEFINE_integer(
            "num_calibration", 200, "Training images that calibrate int8.", lower_bound=1
        ),
        xnnpack=flags.DEFINE_bool("xnnpack", True, "Run LiteRT with the XNNPack delegate."),
        int8_io=flags.DEFINE_bool("int8_io", False, "int8 inputs and outputs for the int8 format."),
    )
    _validate_list("export_formats", lambda v: v in EXPORT_FORMATS, list(EXPORT_FORMATS))
    _validate_list(
        "export_threads", lambda v: str(v).strip().isdigit() and int(v) >= 1, "integers >= 1"
    )
    return out


def define_budget_flags():
    """--max_latency_us, --max_bytes, --max_params, --max_arena_bytes: hard budgets."""
    return _holders(
        max_latency_us=flags.DEFINE_float(
            "max_latency_us",
            0.0,
            "Budget: median float32 TFLite latency, us (0 = none).",
            lower_bound=0,
        ),
        max_bytes=flags.DEFINE_integer(
            "max_bytes", 0, "Budget: .tflite bytes (0 = none).", lower_bound=0
        ),
        max_params=flags.DEFINE_integer(
            "max_params", 0, "Budget: Keras parameters (0 = none).", lower_bound=0
        ),
        max_arena_bytes=flags.DEFINE_integer(
            "max_arena_bytes",
            0,
            "Budget: TensorFlow Lite Micro tensor-arena bytes of the int8 file (0 = none).",
            lower_bound=0,
        ),
    )


def define_distribution_flags():
    """--distribution: the ``tf.distribute`` strategy that trains (see
    ``kd_keras.distribute``); --batch_size is then the global batch."""
    return _holders(
        distribution=flags.DEFINE_enum(
            "distribution",
            "default",
            list(distribute.STRATEGIES),
            "default: one device; mirrored: every GPU of this machine; multi_worker: "
            "MultiWorkerMirroredStrategy over the cluster in TF_CONFIG (start one process per "
            "worker, same flags and --workdir; the chief writes the results); tpu: "
            "TPUStrategy on the TPU TPUClusterResolver finds. --batch_size is the global "
            "batch, split over all replicas.",
        ),
        distribution_timeout=flags.DEFINE_float(
            "distribution_timeout",
            distribute.DEFAULT_TIMEOUT_S,
            "--distribution=multi_worker: seconds a task waits for the others of its cluster "
            "to start before it gives up with one line naming the addresses that are not "
            "listening (progress every 10 s, or at half the timeout when shorter).",
        ),
    )


def parse_flags(argv):
    """absl's flag parsing for an entry point (``app.run(main,
    flags_parser=parse_flags)``): an invalid flag ends the program with one
    line naming it, its value and what is allowed."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        sys.exit(f"Invalid flag: {e}")


def define_console_flags():
    """--show_logs: TensorFlow's logs and library warnings on the console
    (by default they go to log.txt in the output directory)."""
    return _holders(
        show_logs=flags.DEFINE_bool(
            "show_logs",
            False,
            "Show TensorFlow's logs and library warnings on the console "
            "(default: log.txt in the workdir / output directory).",
        )
    )


# ----------------------------------------------------------------------------
# Holder values -> plain configs. Each raises ValueError naming the flag.


def parse_kwargs(items, flag_name):
    """Parses ``["depth=10", "width=2"]`` into {'depth': 10, 'width': 2}.

    Raises:
      ValueError: an item that is not ``k=v``, naming the flag.
    """
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise ValueError(f"--{flag_name}={','.join(items)}: expected k=v items, got {item!r}.")
        out[key] = literal(value)
    return out


def model_kwargs(items, flag_name, model):
    """:func:`parse_kwargs`, then checked against registered model `model`'s
    keyword arguments (names and types; ``kd_keras.models.check_kwargs``).
    A `model` that is not a registry name (a path) is not checked.

    Raises:
      ValueError: a malformed item, an unknown name or a value of the wrong
        type, naming the flag.
    """
    kwargs = parse_kwargs(items, flag_name)
    if model in models.REGISTRY:
        try:
            models.check_kwargs(model, kwargs)
        except ValueError as e:
            raise ValueError(f"--{flag_name}={','.join(items)}: {e}") from None
    return kwargs


def numbers(items, kind, flag_name):
    """``items`` converted by `kind` (int, float).

    Raises:
      ValueError: an item that is not a `kind`, naming the flag.
    """
    try:
        return [kind(v) for v in items]
    except ValueError:
        raise ValueError(
            f"--{flag_name}={','.join(map(str, items))}: expected a list of {kind.__name__}s."
        ) from None


def train_config(holders, role, seed=0, early_stopping=0):
    """The TrainConfig of `role` ('teacher' or 'student') from its holders."""
    get = lambda k: getattr(holders, f"{role}_{k}").value  # noqa: E731
    try:
        return train_lib.TrainConfig(
            epochs=get("epochs"),
            optimizer=get("optimizer"),
            learning_rate=get("lr"),
            warmup_epochs=get("warmup"),
            early_stopping=early_stopping,
            seed=seed,
        )
    except ValueError as e:
        raise ValueError(f"--{role}_*: {e}") from None


def augment_config(holder):
    """The AugmentConfig of an augmentation list flag."""
    try:
        return data_lib.AugmentConfig.parse(holder.value)
    except ValueError as e:
        raise ValueError(f"--{holder.name}: {e}") from None


def kd_config(holders):
    """The KDConfig of the distillation flags."""
    weights = tuple(numbers(holders.kd_weights.value, float, "kd_weights"))
    if weights and len(weights) != len(holders.kd_losses.value):
        raise ValueError(
            f"--kd_weights={','.join(holders.kd_weights.value)}: one weight per "
            f"loss of --kd_losses={','.join(holders.kd_losses.value)} is needed."
        )
    return distill.KDConfig(
        losses=tuple(holders.kd_losses.value),
        weights=weights,
        alpha=holders.alpha.value,
        temperature=holders.temperature.value,
        ensemble=holders.ensemble.value,
        teacher_layer=holders.teacher_layer.value,
        student_layer=holders.student_layer.value,
        dkd_alpha=holders.dkd_alpha.value,
        dkd_beta=holders.dkd_beta.value,
        dist_beta=holders.dist_beta.value,
        dist_gamma=holders.dist_gamma.value,
        teacher_cache_views=holders.teacher_cache_views.value,
    )


def export_threads(holders):
    """The thread counts of --export_threads, as ints."""
    return tuple(numbers(holders.export_threads.value, int, "export_threads"))
