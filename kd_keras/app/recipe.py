"""Defaults that scale with the data, for the settings a user did not give.

Three settings have defaults that suit a large dataset (Fashion-MNIST's 60,000
images) and fail on a few thousand: 5,000 validation images, batches of 128,
and BatchNorm momentum 0.99. When their flag is not set, they follow the size
of the training split instead (known before any image is read:
``kd_keras.data.sources.split_sizes``):

* ``--val_size``: 10% of the training split (before validation is carved out
  of it), at most 5,000 (so a dataset of 50,000 or more keeps 5,000);
* ``--batch_size``: 128, halved while an epoch has fewer than 20 steps
  (``pipeline.MIN_STEPS_PER_EPOCH``), but not below 16;
* ``bn_momentum`` of a registry teacher or student that takes it, when its
  ``--*_args`` do not set it: 0.9 when its whole training has fewer than
  2,000 optimizer steps (moving statistics of momentum 0.99 need hundreds of
  steps to forget their initial values), else the builder's own default.

A flag that is set is kept as it is. :func:`scale` returns one line per
default it changed, which the entry point prints. Settings whose split sizes
are not known without loading the data (a TFDS dataset that is not
prepared, custom TFDS split strings) keep their defaults.
"""

import dataclasses

from kd_keras import models
from kd_keras.app import pipeline
from kd_keras.data import DataError
from kd_keras.data import steps_per_epoch as _steps
from kd_keras.data.sources import split_sizes

VAL_SHARE = 0.1
VAL_CAP = 5000
BATCH_START = 128
BATCH_FLOOR = 16
SHORT_RUN_STEPS = 2000
SHORT_RUN_BN_MOMENTUM = 0.9


def val_size_for(n):
    """Validation examples carved out of a training split of `n`: 10%, at
    most VAL_CAP, at least 1 (none when `n` < 2)."""
    if n < 2:
        return 0
    return min(VAL_CAP, max(1, int(round(VAL_SHARE * n))), n - 1)


def steps_per_epoch(n, batch_size):
    """Optimizer steps of an epoch of `n` examples (the last batch partial)."""
    return max(1, _steps(n, batch_size))


def batch_size_for(n):
    """BATCH_START, halved while an epoch of `n` examples has fewer than
    ``pipeline.MIN_STEPS_PER_EPOCH`` steps, not below BATCH_FLOOR."""
    batch = BATCH_START
    while batch > BATCH_FLOOR and steps_per_epoch(n, batch) < pipeline.MIN_STEPS_PER_EPOCH:
        batch //= 2
    return batch


def bn_momentum_for(steps):
    """SHORT_RUN_BN_MOMENTUM for a training of fewer than SHORT_RUN_STEPS
    steps, else None (the builder's default)."""
    return SHORT_RUN_BN_MOMENTUM if steps < SHORT_RUN_STEPS else None


def training_pool(data):
    """Examples of a DataConfig's training split before validation is carved
    out of it, or None when not known without loading the data (or when the
    validation split is the dataset's own)."""
    if data.val_split:
        return None
    try:
        sizes = split_sizes(
            data.dataset, data.data_dir, data.test_fraction, data.train_split, data.test_split
        )
    except DataError:
        return None  # Said in one line by DataConfig.placeholder.
    return None if sizes is None else sizes[0]


def scale_data(data, present, pool):
    """The DataConfig `data` with --val_size and --batch_size scaled to a
    training split of `pool` examples unless `present` (names of flags set)
    holds them.

    Returns:
      (DataConfig, lines saying each default changed, training examples per
      epoch or None when `pool` is None).
    """
    if pool is None:
        return data, [], None
    lines = []
    val = data.val_size
    if "val_size" not in present:
        val = val_size_for(pool)
        if val != data.val_size:
            lines.append(
                f"--val_size not set: {val}, 10% of the {pool} training examples "
                f"(at most {VAL_CAP})"
            )
    n = pool - min(val, pool)
    if data.limit_train:
        n = min(n, data.limit_train)
    batch = data.batch_size
    if "batch_size" not in present:
        batch = batch_size_for(n)
        if batch != data.batch_size:
            lines.append(
                f"--batch_size not set: {batch}, so an epoch of {n} examples has "
                f"{steps_per_epoch(n, batch)} steps (at least "
                f"{pipeline.MIN_STEPS_PER_EPOCH} where batches of {BATCH_FLOOR} or more allow)"
            )
    return dataclasses.replace(data, val_size=val, batch_size=batch), lines, n


def scale_kwargs(role, model, kwargs, epochs, n, batch_size):
    """`kwargs` of registry model `model` with bn_momentum set for a short
    run (:func:`bn_momentum_for`) when the builder takes it and `kwargs`
    does not set it.

    Returns:
      (kwargs, a line saying so, or None).
    """
    if model not in models.REGISTRY or "bn_momentum" not in models.arguments(model):
        return kwargs, None
    if "bn_momentum" in kwargs:
        return kwargs, None
    steps = epochs * steps_per_epoch(n, batch_size)
    momentum = bn_momentum_for(steps)
    if momentum is None:
        return kwargs, None
    return dict(kwargs, bn_momentum=momentum), (
        f"--{role}_args without bn_momentum: {momentum:g}, as the {role}'s training has "
        f"{steps} steps (fewer than {SHORT_RUN_STEPS})"
    )


def scale(config, present):
    """A PipelineConfig with the defaults of flags not in `present` scaled to
    its data (see the module's docstring).

    Args:
      config: the PipelineConfig the flags describe.
      present: names of the flags the user set (command line or flagfile).

    Returns:
      (PipelineConfig, list of lines, one per default changed).
    """
    data, lines, n = scale_data(config.data, present, training_pool(config.data))
    if n is None:
        return config, lines
    changes = {"data": data}
    roles = ("student",) if config.teacher_paths() else ("student", "teacher")
    for role in roles:  # A teacher given by path is loaded, never built here.
        kwargs, line = scale_kwargs(
            role,
            getattr(config, role),
            getattr(config, f"{role}_kwargs"),
            getattr(config, f"{role}_train").epochs,
            n,
            data.batch_size,
        )
        changes[f"{role}_kwargs"] = kwargs
        lines += [line] if line else []
    return dataclasses.replace(config, **changes), lines
