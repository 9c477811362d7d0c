"""The teacher a search distills every candidate from.

Either a saved model (``--teacher_model=PATH`` or ``--teacher=PATH``: a
``.keras`` / ``.h5`` file of tf_keras or Keras 3, or a SavedModel directory,
e.g. a pipeline run's ``runs/teacher0-<hash>/model.keras``), or a registry
model trained once through ``kd_keras.train.train_or_load`` and cached
under the search's project directory (``<project>/teacher/runs/teacher-<hash>/``):
rerunning or resuming the search, or starting a distributed worker, reuses it.
"""

import dataclasses

from kd_keras import data as data_lib
from kd_keras import models
from kd_keras import train as train_lib
from kd_keras.distill import teachers
from kd_keras.keras_compat import keras


def load_teacher(
    path,
    input_shape,
    num_classes,
    flag="teacher_model",
    input_range=teachers.DEFAULT_INPUT_RANGE,
    sample=None,
):
    """Loads a saved teacher (``distill.teachers.open_teacher``, the loader of
    ``kd_keras.load_teacher``), checks it fits the data and, with `sample`,
    that it is fed the input range it expects.

    Args:
      path: a ``.keras`` / ``.h5`` file (tf_keras or Keras 3) or a SavedModel
        directory (tf_keras, or Keras 3's ``model.export()``).
      input_shape: (H, W, C) the teacher must accept.
      num_classes: logits it must produce.
      flag: the flag that named `path`, for messages.
      input_range: the value range the teacher expects (--teacher_input_range).
      sample: (images, labels) of the validation split, or None.

    Returns:
      (the frozen ``keras.Model`` taking [0, 1] images and giving logits (a
      model ending in softmax gives its pre-softmax tensor or the log of its
      probabilities), the loader's report: accuracy on `sample`, ...).

    Raises:
      ValueError: naming the flag: the path is missing or unreadable, the
        model's input shape or class count differs from the data's, or it
        plainly expects another input range than `input_range`.
    """
    try:
        return teachers.open_teacher(path, input_shape, num_classes, input_range, sample=sample)
    except ValueError as e:
        raise ValueError(f"--{flag}={path}: {e}") from None


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
      train_config: ``kd_keras.train.TrainConfig``.
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
    train_config = train_config or train_lib.TrainConfig()
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
            "digest": data.content_digest,
            "batch_size": batch_size,
        },
    }
    keras.utils.set_random_seed(train_config.seed)  # Before the pipeline is built.
    datasets = data_lib.make_datasets(data, batch_size, augment, seed=train_config.seed)
    return train_lib.train_or_load(
        workdir,
        "teacher",
        spec,
        lambda: models.build(name, data.input_shape, data.num_classes, **kwargs),
        datasets,
        train_config,
        verbose=verbose,
    )
