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


def read_progress(run_dir):
    """The progress.json of an interrupted or finished fit in `run_dir`, or None."""
    path = os.path.join(run_dir, PROGRESS_FILE)
    return runs.read_json(path) if os.path.exists(path) else None


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
