"""The teacher a search distills every candidate from.

Either a saved Keras model (``--teacher_model=PATH``, e.g. a pipeline run's
``runs/teacher0-<hash>/model.keras``), or a registry model trained once through
``kd_keras.training.train_or_load`` and cached under the search's project
directory (``<project>/teacher/runs/teacher-<hash>/``): rerunning or resuming
the search, or starting a distributed worker, reuses it.
"""

import dataclasses
import os

from kd_keras import data as data_lib
from kd_keras import models, training
from kd_keras.keras_compat import keras


def load_teacher(path, input_shape, num_classes):
    """Loads a saved teacher and checks it fits the data.

    Args:
      path: a ``.keras`` / ``.h5`` file or a Keras SavedModel directory.
      input_shape: (H, W, C) the teacher must accept.
      num_classes: logits it must produce.

    Returns:
      The ``keras.Model``.

    Raises:
      ValueError: the path is missing or the model's input/output shapes differ.
    """
    if not os.path.exists(path):
        raise ValueError(f"--teacher_model={path} does not exist.")
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as e:  # noqa: BLE001 — any failure to load means an unusable file.
        raise ValueError(
            f"--teacher_model={path} cannot be loaded as a Keras model "
            f"({type(e).__name__}: {str(e)[:200]})."
        ) from None
    got_in, got_out = tuple(model.input_shape[1:]), tuple(model.output_shape[1:])
    if got_in != tuple(input_shape) or got_out != (num_classes,):
        raise ValueError(
            f"Teacher {path!r} maps {got_in} -> {got_out}, but the data needs "
            f"{tuple(input_shape)} -> ({num_classes},)."
        )
    return model


def train_or_load_teacher(
    data,
    workdir,
    name="resnet",
    kwargs=None,
    train_config=None,
    augment=data_lib.AugmentConfig(),
    batch_size=128,
    verbose=2,
):
    """Trains a registry teacher once (cached in `workdir`) or loads it.

    Args:
      data: the ``kd_keras.data.Dataset`` the search uses.
      workdir: cache directory (the run lives in ``workdir/runs/teacher-<hash>``).
      name: a ``kd_keras.models`` registry name.
      kwargs: the builder's keyword arguments.
      train_config: ``kd_keras.training.TrainConfig``.
      augment: training augmentation.
      batch_size: training batch size.
      verbose: Keras verbosity.

    Returns:
      (teacher model, result dict of the cached run: test accuracy, params...).

    Raises:
      ValueError: unknown registry name or bad builder arguments.
    """
    kwargs = dict(kwargs or {})
    if name not in models.REGISTRY:
        raise ValueError(f"Unknown teacher {name!r}; registered: {sorted(models.REGISTRY)}.")
    train_config = train_config or training.TrainConfig()
    spec = {
        "role": "teacher",
        "model": name,
        "kwargs": kwargs,
        "train": dataclasses.asdict(train_config),
        "augment": dataclasses.asdict(augment),
        "data": {
            "dataset": data.name,
            "train": len(data.x_train),
            "val": len(data.x_val),
            "test": len(data.x_test),
            "batch_size": batch_size,
        },
    }
    keras.utils.set_random_seed(train_config.seed)  # Before the pipeline is built.
    datasets = data_lib.make_datasets(data, batch_size, augment, seed=train_config.seed)
    return training.train_or_load(
        workdir,
        "teacher",
        spec,
        lambda: models.build(name, data.input_shape, data.num_classes, **kwargs),
        datasets,
        train_config,
        verbose=verbose,
    )
