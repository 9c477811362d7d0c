"""Resumable training state: the progress file, the checkpoint of weights,
optimizer and random generators, and copying a state to another run.
"""

import os
import shutil

from kd_keras import runs
from kd_keras.distill.distiller import Distiller
from kd_keras.keras_compat import tf

PROGRESS_FILE = "progress.json"
CHECKPOINT_DIR = "checkpoints"


def random_generators(model):
    """The ``tf.random.Generator`` of every random layer (dropout, ...) of `model`.

    Keras keeps them out of the model's checkpoints; a resumed training needs
    their state to draw the same dropout masks as an uninterrupted one.
    """
    generators = []
    for layer in model._flatten_layers(include_self=False):  # noqa: SLF001 - nested too.
        rng = getattr(layer, "_random_generator", None)
        if rng is None or rng._rng_type != rng.RNG_STATEFUL:
            continue
        rng._maybe_init()
        if rng._generator is not None:
            generators.append(rng._generator)
    return generators


def training_state(model):
    """A ``tf.train.Checkpoint`` of everything fit changes in `model`.

    For a Distiller that is the student (with any compression wrappers and
    their step counters), the distillation losses' learned parts and the
    optimizer; the frozen teachers are left out. For a plain model, the model
    and its optimizer. Both with the random layers' generator states.
    """
    if isinstance(model, Distiller):
        return tf.train.Checkpoint(
            student=model.student,
            loss_layers=model.loss_layers,
            optimizer=model.optimizer,
            random=random_generators(model.student),
        )
    return tf.train.Checkpoint(
        model=model, optimizer=model.optimizer, random=random_generators(model)
    )


# What a fit does when its progress.json or checkpoint is corrupt (said on the console).
RESTARTS = "this fit starts again from its first epoch"
# The keys of progress.json (see kd_keras.train.callbacks.Progress) and their types.
PROGRESS_TYPES = {
    "epochs_done": int,
    "history": dict,
    "train_time_s": (int, float),
    "checkpoint": str,
    "finished": bool,
}
EARLY_STOPPING_KEYS = ("wait", "best", "best_epoch", "stopped_epoch")


def progress_problem(run_dir, progress):
    """None when `progress` (read from `run_dir`'s progress.json) is one a fit
    can resume from, else what is wrong with it: a key missing or of the wrong
    type, or a file it names (checkpoint, best weights) missing."""
    problem = runs.missing_keys(progress, PROGRESS_TYPES)
    if problem:
        return problem
    for key, kind in PROGRESS_TYPES.items():
        value = progress[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            return f"{key!r} is {value!r}"
    if progress["epochs_done"] < 0:
        return f"'epochs_done' is {progress['epochs_done']}"
    index = os.path.join(run_dir, progress["checkpoint"]) + ".index"
    if not os.path.exists(index):
        return f"its checkpoint {index} is missing"
    es = progress.get("early_stopping")
    if es is not None and runs.missing_keys(es, EARLY_STOPPING_KEYS):
        return f"'early_stopping': {runs.missing_keys(es, EARLY_STOPPING_KEYS)}"
    best = progress.get("best_weights")
    if best and not (isinstance(best, str) and os.path.exists(os.path.join(run_dir, best))):
        return f"its best weights {best!r} are missing"
    return None


def read_progress(run_dir):
    """The progress.json of an interrupted or finished fit in `run_dir`, or None.

    A progress.json that is not JSON, lacks a key, or names a checkpoint that
    is not there is moved aside with a line on the console
    (:func:`kd_keras.runs.read_valid_json`), and None is returned: the fit
    starts again.
    """
    return runs.read_valid_json(
        os.path.join(run_dir, PROGRESS_FILE),
        lambda progress: progress_problem(run_dir, progress),
        then=RESTARTS,
    )


def discard_progress(run_dir, reason):
    """Sets aside `run_dir`'s progress.json, whose checkpoint cannot be
    restored (`reason`), saying so on the console."""
    runs.set_aside(os.path.join(run_dir, PROGRESS_FILE), reason, RESTARTS)


def state_variables(model):
    """Every variable :func:`training_state` checkpoints (and the frozen
    teachers' too): the model's, its optimizer's and the random generators'."""
    student = model.student if isinstance(model, Distiller) else model
    optimizer = model.optimizer.variables
    optimizer = optimizer() if callable(optimizer) else optimizer
    generators = [generator.state for generator in random_generators(student)]
    return list(model.variables) + list(optimizer) + generators


def copy_state(src_dir, dst_dir):
    """Copies the resumable training state of a fit in `src_dir` to `dst_dir`.

    A fit on `dst_dir` then continues that training (same weights, optimizer
    state, schedule position and random state) instead of starting afresh.

    Returns:
      True when `src_dir` held a state (progress.json and its checkpoint),
      False when there was none to copy.
    """
    progress = read_progress(src_dir)
    if progress is None:
        return False
    os.makedirs(dst_dir, exist_ok=True)
    target = os.path.join(dst_dir, CHECKPOINT_DIR)
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(os.path.join(src_dir, CHECKPOINT_DIR), target)
    runs.write_json(os.path.join(dst_dir, PROGRESS_FILE), progress)
    return True
