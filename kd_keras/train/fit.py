"""``fit``: trains one model, plainly or through the Distiller, resuming from
its run directory; ``evaluate``: its top-1 accuracy.
"""

import os

import numpy as np

from kd_keras import console, distribute
from kd_keras.distill import losses as losses_lib
from kd_keras.distill.config import KDConfig, make_distiller
from kd_keras.distill.distiller import Distiller
from kd_keras.distill.outputs import distillation_datasets
from kd_keras.keras_compat import keras, tf
from kd_keras.train.callbacks import Progress, ResumableEarlyStopping
from kd_keras.train.config import TrainConfig, make_optimizer
from kd_keras.train.state import discard_progress, read_progress, state_variables, training_state


def even_batches(dataset, multiple=2):
    """Pads every batch of `dataset` to a multiple of `multiple` examples.

    Under oneDNN (TensorFlow's default on x86 CPUs), the gradients of a 1x1
    convolution with stride 2 (the resnet teacher's projection shortcuts)
    corrupt the heap when the batch size is odd: the process aborts or
    segfaults, intermittently. A short batch gets copies of its first
    examples appended (labels and teacher logits alike), so no example is lost
    and the number of steps per epoch does not change. Under a strategy with
    R replicas, ``multiple=2 * R`` also gives every replica an even share.
    """

    def pad(*batch):
        batch = batch if len(batch) > 1 else batch[0]
        n = tf.shape(tf.nest.flatten(batch)[0])[0]
        extra = tf.range((multiple - n % multiple) % multiple) % n
        return tf.nest.map_structure(lambda t: tf.concat([t, tf.gather(t, extra)], 0), batch)

    return dataset.map(pad)


def weighted_shares(dataset, replicas):
    """An evaluation `dataset` of (x, y) batches whose batches split into
    `replicas` equal shares, data-sharded (``distribute.shard_by_data``).

    A short batch gets copies of its first examples with sample weight 0, so
    accuracy counts every example once (losses average over the copies too).
    With one replica `dataset` is returned as it is.
    """
    if replicas == 1:
        return dataset

    def pad(x, y):
        n = tf.shape(y)[0]
        extra = tf.range((replicas - n % replicas) % replicas) % n
        weights = tf.concat([tf.ones([n]), tf.zeros(tf.shape(extra))], 0)
        grow = lambda t: tf.concat([t, tf.gather(t, extra)], 0)  # noqa: E731
        return grow(x), grow(y), weights

    return distribute.shard_by_data(dataset.map(pad))


def compile_plain(model, optimizer="adam"):
    """Compiles `model` (logits) with cross-entropy and accuracy; returns it.

    Both take integer labels or the soft labels of mixed batches (see
    ``kd_keras.distill.losses.label_crossentropy``); accuracy is then measured
    against the dominant class.
    """
    model.compile(
        optimizer=optimizer,
        loss=losses_lib.LabelCrossentropy(),
        # Weighted: the zero-weight copies of weighted_shares do not count.
        weighted_metrics=[
            keras.metrics.MeanMetricWrapper(losses_lib.label_accuracy, name="accuracy")
        ],
    )
    return model


def fit(
    student,
    datasets,
    config: TrainConfig,
    run_dir,
    teacher=None,
    kd: KDConfig = None,
    extra_callbacks=(),
    verbose=1,
    offline_data=None,
    batch_size=128,
    teacher_cache_dir=None,
    teacher_view="same",
    until_epoch=None,
    name=None,
):
    """Trains `student` in place, plainly or distilled from `teacher`; resumable.

    After every epoch the training state (weights, optimizer, compression step
    counters, random generators, early-stopping state) is checkpointed under
    ``run_dir/checkpoints`` and described by ``run_dir/progress.json`` (see
    :class:`Progress`). Called again on the same `run_dir` after being
    killed, fit restores that state and continues at the next epoch with the
    data of that epoch: with `datasets` from ``kd_keras.data.make_datasets``
    (its 'train_epochs' entry) the result has the same weights as a training
    that was never interrupted. TensorBoard logs go to ``run_dir/tensorboard``.
    A fit that had finished is not trained again; its state is restored.
    Training batches are padded to an even size, and to a multiple of twice
    the replica count under a ``tf.distribute`` strategy (see
    :func:`even_batches`). Called in a strategy's scope, the Distiller,
    optimizer and metrics are made there and every batch is split over the
    replicas; `student` and `teacher` must have been built in that scope.

    Args:
      student: functional keras.Model producing logits (possibly wrapped by
        TF-MOT).
      datasets: dict with 'train' and 'val' (may be None) tf.data pipelines,
        and optionally 'train_epochs', a function (start_epoch, epochs) -> the
        train pipeline of those epochs. Without it 'train' is used as given
        (one epoch per iteration) and a resumed run sees its data order.
      config: TrainConfig.
      run_dir: directory of this run.
      teacher: None for plain training, else a model or list of models.
      kd: KDConfig when `teacher` is given.
      extra_callbacks: more callbacks (e.g. ``UpdatePruningStep``).
      verbose: Keras verbosity (1 = progress bar).
      offline_data: optional un-augmented ``kd_keras.data.Dataset`` the train
        pipeline was built from. With it, and when every distillation loss
        reads logits only, the teachers' logits are computed once and fed with
        the labels instead of running the teachers at every step (same loss,
        fewer forward passes, same batches).
      batch_size: batch size of the rebuilt train pipeline (with offline_data).
      teacher_cache_dir: where the teacher cache of ``kd.teacher_cache_views``
        > 0 is kept (default: ``teacher_cache`` beside `run_dir`, so the runs
        of one workdir share it). The cache needs `datasets` from
        ``make_datasets`` (their 'recipe'); with augmentation the training
        replays its views (see ``kd_keras.distill.teacher_cache``), without it the
        teachers' logits are computed once in memory as with `offline_data`.
      teacher_view: with augmentation, what the teacher sees: 'same' (the
        student's augmented view, "function matching") or 'clean' (the clean
        image of the same example; see :func:`distillation_datasets`).
      until_epoch: stop after this many epochs of the `config.epochs` run
        (None: all of them). The learning-rate schedule stays the one of
        `config.epochs`, and the state is saved unfinished, so a later fit
        on the same `run_dir` (or a copy of it, see :func:`copy_state`)
        continues from the weights, the optimizer's moments and iteration
        count and the schedule's position: k epochs then the rest give the
        weights of one uninterrupted run. Successive halving promotes trials
        this way.
      name: the run's name in the console line a resumed fit prints
        (``resuming NAME from epoch N of M``); default: `run_dir`'s base name.

    Returns:
      dict: history (per-epoch metrics of all epochs, including those before
      an interruption), train_time_s (cumulative over interruptions),
      initial_epoch (the epoch this call started at).

    Length: over 100 lines with its Args and Returns; its code is 102 lines.
    """
    keras.utils.set_random_seed(config.seed)
    if teacher is not None:
        kd = kd or KDConfig()
        model = make_distiller(kd, student, teacher)
        datasets = distillation_datasets(
            model,
            datasets,
            kd,
            config.seed,
            run_dir,
            offline_data=offline_data,
            batch_size=batch_size,
            teacher_cache_dir=teacher_cache_dir,
            teacher_view=teacher_view,
        )
    else:
        model = student
    train_epochs = datasets.get("train_epochs")
    steps = datasets.get("steps_per_epoch") or int(
        (train_epochs(0, 1) if train_epochs else datasets["train"]).cardinality()
    )
    optimizer = make_optimizer(config, steps)
    if teacher is not None:
        model.compile(optimizer=optimizer, weighted_metrics=["accuracy"])
    else:
        compile_plain(model, optimizer)

    checkpoint = training_state(model)
    stop = config.epochs if until_epoch is None else int(until_epoch)
    if not 1 <= stop <= config.epochs:
        raise ValueError(f"until_epoch must lie in [1, epochs={config.epochs}], got {until_epoch}.")
    progress = read_progress(run_dir)
    initial_epoch, best_weights = 0, None
    if progress is not None:
        try:
            initial_epoch, best_weights = _restore(model, checkpoint, run_dir, progress)
        except _UnrestorableError as e:
            discard_progress(run_dir, f"its checkpoint cannot be restored: {e}")
            progress = None
    if progress is not None:
        if progress.get("finished") or initial_epoch >= stop:
            return {
                "history": progress["history"],
                "train_time_s": progress["train_time_s"],
                "initial_epoch": initial_epoch,
            }
        run_name = name or os.path.basename(os.path.normpath(run_dir))
        console.progress(f"resuming {run_name} from epoch {initial_epoch + 1} of {config.epochs}")

    callbacks = [
        keras.callbacks.TensorBoard(os.path.join(run_dir, "tensorboard"), profile_batch=0),
        *extra_callbacks,
    ]
    early_stopping = None
    if config.early_stopping and datasets.get("val") is not None:
        early_stopping = ResumableEarlyStopping(
            "val_accuracy",
            patience=config.early_stopping,
            restore_best_weights=True,
            state=(progress or {}).get("early_stopping"),
            best_weights=best_weights,
        )
        callbacks.append(early_stopping)
    tracker = Progress(
        run_dir,
        checkpoint,
        progress,
        early_stopping,
        total_epochs=None if until_epoch is None else config.epochs,
    )
    callbacks.append(tracker)  # Last: it saves what the others did at epoch end.
    if train_epochs:
        train, steps_per_epoch = train_epochs(initial_epoch, stop), steps
    else:
        train, steps_per_epoch = datasets["train"], None
    val = datasets.get("val")
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    model.fit(
        distribute.shard_by_data(even_batches(train, 2 * replicas)),
        validation_data=None if val is None else weighted_shares(val, replicas),
        epochs=stop,
        initial_epoch=initial_epoch,
        steps_per_epoch=steps_per_epoch,
        callbacks=callbacks,
        verbose=verbose,
    )
    return {
        "history": tracker.history,
        "train_time_s": getattr(tracker, "saved_train_time_s", tracker.train_time_s),
        "initial_epoch": initial_epoch,
    }


class _UnrestorableError(Exception):
    """A saved training state that cannot be read back into the model."""


def _restore(model, checkpoint, run_dir, progress):
    """Restores a run's saved state into `model` (weights, optimizer, random
    generators): (epochs done, early stopping's best weights or None).

    Raises:
      _UnrestorableError: the checkpoint or best weights cannot be read or do
        not match the model; `model` then holds the values it had before.
    """
    # Optimizer slots made now are restored now; made later, some are not.
    model.optimizer.build(
        model.trainable_variables_for_update
        if isinstance(model, Distiller)
        else model.trainable_variables
    )
    variables = state_variables(model)
    before = [variable.numpy() for variable in variables]
    try:
        status = checkpoint.read(os.path.join(run_dir, progress["checkpoint"]))
        status.assert_consumed()
        best_weights = None
        if progress.get("best_weights"):
            with np.load(os.path.join(run_dir, progress["best_weights"])) as f:
                best_weights = [f[f"arr_{i}"] for i in range(len(f.files))]
    except Exception as e:  # noqa: BLE001 - TensorFlow, numpy and zipfile errors alike.
        for variable, value in zip(variables, before):
            variable.assign(value)
        message = " ".join(str(e).split())[:200]
        raise _UnrestorableError(f"{type(e).__name__}: {message}") from e
    return int(progress["epochs_done"]), best_weights


def evaluate(model, dataset):
    """Top-1 accuracy of a logits model on a dataset."""
    compile_plain(model)
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    result = model.evaluate(weighted_shares(dataset, replicas), verbose=0, return_dict=True)
    return float(result["accuracy"])
