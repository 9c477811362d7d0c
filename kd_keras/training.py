"""Training one model, plainly or through the Distiller, with the usual callbacks;
and training it as a cached run (:func:`train_or_load`)."""

import dataclasses
import logging
import os
import shutil
import time

import numpy as np

from kd_keras import console, distribute, runs, teacher_cache
from kd_keras import data as data_lib
from kd_keras import losses as losses_lib
from kd_keras.distiller import Distiller
from kd_keras.keras_compat import keras, tf

OPTIMIZERS = ("sgd", "adam")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How one model is trained.

    Attributes:
      epochs: passes over the training split.
      optimizer: 'sgd' (Nesterov momentum 0.9) or 'adam'.
      learning_rate: peak learning rate, reached after `warmup_epochs` of linear
        warm-up, then cosine-decayed to 0.
      warmup_epochs: epochs of linear warm-up (may be 0).
      early_stopping: patience in epochs on validation accuracy; 0 disables.
      seed: seed for weights initialization and data order.
    """

    epochs: int = 10
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    warmup_epochs: int = 0
    early_stopping: int = 0
    seed: int = 0

    def __post_init__(self):
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}.")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}.")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}.")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ValueError(
                f"warmup_epochs must lie in [0, epochs={self.epochs}), got {self.warmup_epochs}."
            )


@dataclasses.dataclass(frozen=True)
class KDConfig:
    """Distillation settings (see :class:`kd_keras.Distiller`).

    ``teacher_cache_views``: K > 0 distills an augmented training through a
    teacher cache of K views per example (``kd_keras.teacher_cache``): the
    teachers run once per view, not at every step; epoch ``e`` replays view
    ``e mod K``. 0 runs the teachers online.
    """

    losses: tuple = ("kd",)
    weights: tuple = ()
    alpha: float = 0.1
    temperature: float = 4.0
    ensemble: str = "logits"
    teacher_layer: str = "stage3"
    student_layer: str = "block3"
    dkd_alpha: float = 1.0
    dkd_beta: float = 8.0
    dist_beta: float = 1.0
    dist_gamma: float = 1.0
    teacher_cache_views: int = 0

    def __post_init__(self):
        if not isinstance(self.teacher_cache_views, int) or self.teacher_cache_views < 0:
            raise ValueError(
                f"teacher_cache_views must be an integer >= 0, got {self.teacher_cache_views!r}."
            )

    def build_losses(self):
        """The distillation loss objects these settings name."""
        out = []
        for name in self.losses:
            if name == "kd":
                out.append(losses_lib.LogitsKD(self.temperature))
            elif name == "lskd":
                out.append(losses_lib.StandardizedKD(self.temperature))
            elif name == "dkd":
                out.append(losses_lib.DecoupledKD(self.temperature, self.dkd_alpha, self.dkd_beta))
            elif name == "dist":
                out.append(losses_lib.DIST(self.temperature, self.dist_beta, self.dist_gamma))
            else:
                out.append(
                    losses_lib.get(
                        name, teacher_layer=self.teacher_layer, student_layer=self.student_layer
                    )
                )
        return out


def make_optimizer(config: TrainConfig, steps_per_epoch):
    """The optimizer of `config` with its warm-up + cosine schedule over the run."""
    total = config.epochs * steps_per_epoch
    warmup = config.warmup_epochs * steps_per_epoch
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else config.learning_rate,
        decay_steps=total - warmup,
        warmup_target=config.learning_rate if warmup else None,
        warmup_steps=warmup,
    )
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True)
    return keras.optimizers.Adam(schedule)


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
    ``kd_keras.losses.label_crossentropy``); accuracy is then measured
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


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """``EarlyStopping`` whose state (patience count, best value and weights) can
    be saved with a checkpoint and given back to a resumed training.

    Args:
      state: what :meth:`state` returned at the checkpoint resumed from, or None.
      best_weights: the best weights saved with that checkpoint, or None.
      **kwargs: passed to ``keras.callbacks.EarlyStopping``.
    """

    def __init__(self, *args, state=None, best_weights=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._resume = state
        self._resume_weights = best_weights

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self._resume:
            self.wait = int(self._resume["wait"])
            self.best = float(self._resume["best"])
            self.best_epoch = int(self._resume["best_epoch"])
            self.stopped_epoch = int(self._resume["stopped_epoch"])
            self.best_weights = self._resume_weights

    def state(self):
        return {
            "wait": int(self.wait),
            "best": float(self.best),
            "best_epoch": int(self.best_epoch),
            "stopped_epoch": int(self.stopped_epoch),
        }


class Progress(keras.callbacks.Callback):
    """Writes a resumable training state into `run_dir` after every epoch.

    At each epoch end: a checkpoint of `checkpoint` to
    ``run_dir/checkpoints/epoch-N`` (and the early-stopping best weights next
    to it), then ``run_dir/progress.json`` is replaced atomically, then older
    checkpoints are deleted. So progress.json always names a complete
    checkpoint. At the end of training, the final weights (e.g. restored by
    early stopping) are written the same way with ``finished: true``.

    progress.json holds ``epochs_done``, ``history`` (per-epoch metrics of all
    epochs so far), ``train_time_s`` (cumulative), ``checkpoint`` (prefix
    relative to `run_dir`), ``early_stopping`` and ``finished``.

    Must come after any callback whose epoch-end effects it should save
    (early stopping).

    With `total_epochs`, a training that ends before that many epochs (and
    was not stopped early) is saved with ``finished: false``: a later fit
    continues it (see ``fit(until_epoch=...)``).
    """

    def __init__(self, run_dir, checkpoint, progress=None, early_stopping=None, total_epochs=None):
        super().__init__()
        self.run_dir = run_dir
        self.checkpoint = checkpoint
        progress = progress or {}
        self.history = {k: list(v) for k, v in progress.get("history", {}).items()}
        self.prior_time = float(progress.get("train_time_s", 0.0))
        self.epochs_done = int(progress.get("epochs_done", 0))
        self.early_stopping = early_stopping
        self.total_epochs = total_epochs
        self.start = time.time()

    @property
    def train_time_s(self):
        return self.prior_time + time.time() - self.start

    def on_train_begin(self, logs=None):
        self.start = time.time()

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        self.epochs_done = epoch + 1
        self.save(f"epoch-{epoch + 1}", finished=False)

    def on_train_end(self, logs=None):
        es = self.early_stopping
        finished = (
            self.total_epochs is None
            or self.epochs_done >= self.total_epochs
            or bool(es is not None and es.stopped_epoch)
        )
        self.save(f"final-{self.epochs_done}", finished=finished)

    def save(self, name, finished):
        directory = os.path.join(self.run_dir, CHECKPOINT_DIR)
        prefix = self.checkpoint.write(os.path.join(directory, name))
        es = self.early_stopping
        best = None
        if es is not None and es.best_weights is not None and not finished:
            best = name + ".best.npz"
            np.savez(os.path.join(directory, best), *es.best_weights)
        runs.write_json(
            os.path.join(self.run_dir, PROGRESS_FILE),
            {
                "epochs_done": self.epochs_done,
                "history": self.history,
                "train_time_s": self.train_time_s,
                "checkpoint": os.path.relpath(prefix, self.run_dir),
                "early_stopping": es.state() if es is not None else None,
                "best_weights": best and os.path.join(CHECKPOINT_DIR, best),
                "finished": finished,
            },
        )
        for entry in os.listdir(directory):
            if entry.split(".")[0] != name:
                os.remove(os.path.join(directory, entry))


def read_progress(run_dir):
    """The progress.json of an interrupted or finished fit in `run_dir`, or None."""
    path = os.path.join(run_dir, PROGRESS_FILE)
    return runs.read_json(path) if os.path.exists(path) else None


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
        replays its views (see ``kd_keras.teacher_cache``), without it the
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

    Returns:
      dict: history (per-epoch metrics of all epochs, including those before
      an interruption), train_time_s (cumulative over interruptions),
      initial_epoch (the epoch this call started at).
    """
    keras.utils.set_random_seed(config.seed)
    if teacher is not None:
        kd = kd or KDConfig()
        model = Distiller(
            student,
            teacher,
            kd.build_losses(),
            list(kd.weights) or None,
            alpha=kd.alpha,
            temperature=kd.temperature,
            ensemble=kd.ensemble,
        )
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
    steps = int((train_epochs(0, 1) if train_epochs else datasets["train"]).cardinality())
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
    initial_epoch = 0
    best_weights = None
    if progress is not None:
        # Optimizer slots made now are restored now; made later, some are not.
        model.optimizer.build(
            model.trainable_variables_for_update
            if isinstance(model, Distiller)
            else model.trainable_variables
        )
        status = checkpoint.read(os.path.join(run_dir, progress["checkpoint"]))
        status.assert_consumed()
        initial_epoch = int(progress["epochs_done"])
        if progress.get("best_weights"):
            with np.load(os.path.join(run_dir, progress["best_weights"])) as f:
                best_weights = [f[f"arr_{i}"] for i in range(len(f.files))]
        if progress.get("finished") or initial_epoch >= stop:
            return {
                "history": progress["history"],
                "train_time_s": progress["train_time_s"],
                "initial_epoch": initial_epoch,
            }

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
        "train_time_s": tracker.train_time_s,
        "initial_epoch": initial_epoch,
    }


TEACHER_VIEWS = ("same", "clean")


def distillation_datasets(
    distiller,
    datasets,
    kd,
    seed,
    run_dir,
    offline_data=None,
    batch_size=128,
    teacher_cache_dir=None,
    teacher_view="same",
):
    """The datasets a distilled training reads: where the teacher logits come from.

    * ``teacher_view='clean'`` (augmented training): the teachers' logits on
      the clean training images are computed once and fed by example id with
      the augmented batch, so the student's view and the teacher's differ.
    * ``kd.teacher_cache_views`` > 0 with augmentation: the teacher cache's
      logits on the very augmented views the student sees.
    * `offline_data` (no augmentation): the logits of the plain images,
      computed once.
    * otherwise `datasets` unchanged: the Distiller runs the teachers on each
      batch the student sees.

    Args:
      distiller: the ``Distiller`` (its teachers and losses).
      datasets: from ``kd_keras.data.make_datasets``.
      kd: KDConfig.
      seed: the training seed (data order of an offline pipeline).
      run_dir: the run's directory (the teacher cache lives beside it).
      offline_data, batch_size, teacher_cache_dir: as in :func:`fit`.
      teacher_view: one of TEACHER_VIEWS.

    Returns:
      The datasets dict, its 'train' and 'train_epochs' replaced when the
      logits are fed.

    Raises:
      ValueError: an unknown view, or a view the losses or datasets cannot give.
    """

    def rebuilt(data, batch, **kwargs):  # `datasets` with a train pipeline that feeds logits
        out = data_lib.make_datasets(data, batch, **kwargs)
        return dict(datasets, train=out["train"], train_epochs=out["train_epochs"])

    def clean_logits(data):  # The teachers' logits on the clean training images, once.
        return distiller.precompute_teacher_logits(data_lib.image_batches(data.x_train))

    if teacher_view not in TEACHER_VIEWS:
        raise ValueError(f"teacher_view must be one of {TEACHER_VIEWS}, got {teacher_view!r}.")
    recipe = datasets.get("recipe")
    if teacher_view == "clean" and recipe is not None and recipe["augment"].enabled:
        if distiller.uses_features:
            raise ValueError(
                f"teacher_view='clean' feeds logits; the distillation losses {list(kd.losses)} "
                f"read features. Use logit losses {list(losses_lib.LOGIT_LOSSES)}."
            )
        return rebuilt(
            recipe["data"],
            recipe["batch_size"],
            augment=recipe["augment"],
            seed=recipe["seed"],
            teacher_logits=clean_logits(recipe["data"]),
            clean_teacher=True,
        )
    if kd.teacher_cache_views:
        if distiller.uses_features:
            raise ValueError(
                f"teacher_cache_views={kd.teacher_cache_views} caches logits only; the "
                f"distillation losses {list(kd.losses)} read features. Use logit losses "
                f"{list(losses_lib.LOGIT_LOSSES)} or teacher_cache_views=0."
            )
        if recipe is None:
            raise ValueError(
                "teacher_cache_views needs `datasets` from kd_keras.data.make_datasets "
                "(their 'recipe' entry)."
            )
        if not recipe["augment"].enabled:
            offline_data, batch_size = recipe["data"], recipe["batch_size"]
    if kd.teacher_cache_views and recipe["augment"].enabled:
        replay, path, reused = teacher_cache.load_or_build(
            teacher_cache_dir
            or os.path.join(os.path.dirname(os.path.abspath(run_dir)), "teacher_cache"),
            distiller.teachers,
            recipe["data"],
            recipe["augment"],
            recipe["batch_size"],
            recipe["seed"],
            kd.teacher_cache_views,
        )
        logging.info("Teacher cache %s (%s)", path, "reused" if reused else "computed")
        return rebuilt(
            recipe["data"],
            recipe["batch_size"],
            augment=recipe["augment"],
            seed=recipe["seed"],
            replay=replay,
        )
    if offline_data is not None and not distiller.uses_features:
        return rebuilt(
            offline_data, batch_size, seed=seed, teacher_logits=clean_logits(offline_data)
        )
    return datasets


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


def evaluate(model, dataset):
    """Top-1 accuracy of a logits model on a dataset."""
    compile_plain(model)
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    result = model.evaluate(weighted_shares(dataset, replicas), verbose=0, return_dict=True)
    return float(result["accuracy"])


class CorruptRunError(RuntimeError):
    """A finished run's saved model cannot be loaded."""


def _load_finished(directory, model_path, load_fn):
    load = load_fn or (lambda path: keras.models.load_model(path, compile=False))
    try:
        return load(model_path)
    except Exception as e:  # noqa: BLE001 — any failure to load means the file is bad.
        raise CorruptRunError(f"{model_path}: {type(e).__name__}: {str(e)[:200]}") from e


def train_or_load(
    workdir,
    name,
    spec,
    build_fn,
    datasets,
    train_cfg,
    teacher=None,
    kd=None,
    callbacks=(),
    verbose=1,
    postprocess=None,
    load_fn=None,
    **fit_kwargs,
):
    """Trains a model as a cached run, or loads it if that run finished.

    The run lives in ``runs.run_dir(workdir, name, spec)``. A finished run
    (``result.json`` and a saved model) is loaded, never retrained. A finished
    run whose model file cannot be loaded is moved aside to
    ``<run dir>.corrupt-<time>`` (said in the log) and trained again. The
    result records the trained weights' digest (:func:`runs.weights_digest`):
    runs that depend on this one put it in their spec.

    Args:
      workdir: pipeline workdir.
      name: short run name (e.g. 'teacher0', 'base-kd-s0').
      spec: JSON-able dict that fully determines the run (hashed), including
        the weights digest of every run it depends on.
      build_fn: () -> fresh keras.Model.
      datasets: dict of tf.data pipelines.
      train_cfg: TrainConfig.
      teacher, kd: for distillation.
      callbacks: extra Keras callbacks.
      verbose: Keras verbosity.
      postprocess: optional fn(model) -> model applied after training and
        before saving (e.g. stripping compression wrappers).
      load_fn: loads a finished run's model from its path (default
        ``keras.models.load_model`` without compiling).
      **fit_kwargs: passed to :func:`fit` (offline_data, batch_size).

    Returns:
      (model, result dict). The result holds test accuracy, parameters,
      training time, history, the weights digest, the run directory, and
      `reused` (True when the run had finished before and was loaded).
    """
    directory = runs.run_dir(workdir, name, spec)
    # Processes sharing the workdir train each run once: the others wait, then load it.
    with runs.RunLock(directory):
        model_path = runs.saved_model_path(directory)
        result = runs.load_result(directory)
        if result is not None and model_path is not None:
            try:
                model = _load_finished(directory, model_path, load_fn)
            except CorruptRunError as e:
                aside = f"{directory}.corrupt-{int(time.time())}"
                shutil.move(directory, aside)
                logging.warning(
                    "Cached run %s could not be loaded (%s); moved it to %s and training it again.",
                    directory,
                    e,
                    aside,
                )
                console.progress(
                    f"cached run {os.path.basename(directory)} is corrupt; moved to "
                    f"{aside}, training it again"
                )
            else:
                logging.info("Reusing finished run %s", directory)
                console.progress(f"reusing finished run {name} ({directory})")
                digest = result.get("weights_digest") or runs.weights_digest(model)
                # run_dir is where the run is now (the workdir may have been moved).
                return model, dict(result, run_dir=directory, reused=True, weights_digest=digest)
        runs.write_json(os.path.join(directory, "spec.json"), spec)
        console.progress(f"training {name}: {train_cfg.epochs} epoch(s)")
        keras.utils.set_random_seed(train_cfg.seed)
        model = build_fn()
        fit_out = fit(
            model,
            datasets,
            train_cfg,
            directory,
            teacher=teacher,
            kd=kd,
            extra_callbacks=callbacks,
            verbose=verbose,
            **fit_kwargs,
        )
        if postprocess is not None:
            model = postprocess(model)
        runs.save_model(model, directory)
        result = {
            "name": name,
            "model": model.name,
            "test_accuracy": evaluate(model, datasets["test"]),
            "params": int(model.count_params()),
            "train_time_s": round(fit_out["train_time_s"], 2),
            "epochs": len(next(iter(fit_out["history"].values()), [])),
            "history": fit_out["history"],
            "weights_digest": runs.weights_digest(model),
            "run_dir": directory,
        }
        runs.write_json(os.path.join(directory, "result.json"), result)
        return model, dict(result, reused=False)
