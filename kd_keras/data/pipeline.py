"""``make_datasets``: batched, prefetched ``tf.data`` pipelines over a
:class:`~kd_keras.data.dataset.Dataset`; the training one shuffles and
augments as a pure function of the seed and the epoch.
"""

from kd_keras.data import store
from kd_keras.data.augment import AugmentConfig, preprocess
from kd_keras.data.dataset import Dataset
from kd_keras.data.views import (
    epoch_views,
    gather_images,
    image_batches,
    steps_per_epoch,
    view_batch,
)
from kd_keras.keras_compat import tf


def make_datasets(
    data: Dataset,
    batch_size=128,
    augment=AugmentConfig(),
    seed=0,
    shuffle_buffer=None,
    teacher_logits=None,
    epochs=None,
    start_epoch=0,
    replay=None,
    clean_teacher=False,
):
    """Builds the train / val / test ``tf.data`` pipelines.

    The training data order and augmentation are a pure function of (`seed`,
    epoch): epoch ``e`` draws ``epoch_views(augment, n, shape, seed, e,
    batch_size)`` (its order and every example's crop, flip, cutout and
    mixing parameters) and builds each batch with :func:`view_batch`
    (vectorized over the batch). So the batches of epoch ``e`` are the same
    in every process and whether the pipeline starts at epoch 0 or at ``e``
    (what resuming an interrupted training needs). Each epoch has
    ``ceil(n / batch_size)`` batches, the last one possibly partial. With
    mixup or cutmix the training labels are soft (float32, (batch,
    classes)). Validation and test are batched and prefetched, never
    shuffled or augmented; their labels stay sparse.

    Args:
      data: the Dataset.
      batch_size: examples per batch.
      augment: training augmentation.
      seed: seed of the data order and the augmentation.
      shuffle_buffer: kept for compatibility; every epoch is a full
        permutation of the training split.
      teacher_logits: optional array (N_train, teachers, classes) of
        precomputed teacher logits; the train pipeline then yields
        ``(x, {"label": y, "teacher_logits": t})`` for the Distiller. Not
        allowed with augmentation (the teacher must see the augmented image;
        see `replay`), unless `clean_teacher`.
      epochs: with it, 'train' holds epochs ``[start_epoch, epochs)`` one after
        the other (for ``Model.fit(..., steps_per_epoch=...)``, which then
        keeps one iterator across epochs). Without it, 'train' is epoch
        `start_epoch` alone.
      start_epoch: first epoch of 'train'.
      replay: optional stored views (``kd_keras.distill.teacher_cache``): a dict of
        arrays with a leading axis of K views, 'order' and VIEW_KEYS as
        ``epoch_views`` gives them, and optionally 'teacher_logits' (K, N,
        teachers, classes). Epoch ``e`` then replays view ``e mod K`` instead
        of drawing new parameters, with the stored teacher logits as above.
      clean_teacher: `teacher_logits` are the teachers' logits on the clean
        (un-augmented) images, fed by example id beside the augmented batch:
        the student sees an augmented view while the teacher saw the clean
        image ("inconsistent" distillation).

    Returns:
      dict with keys 'train', 'val' (None when the split is empty), 'test',
      'train_epochs': a function (start_epoch, epochs) -> the train pipeline
      of those epochs, which ``kd_keras.train.fit`` uses to start or
      resume at any epoch, and 'recipe': the arguments the train pipeline
      was built from (data, batch_size, augment, seed), from which fit
      builds a teacher cache.

    Raises:
      ValueError: augmentation with teacher logits, batch_size < 1, or
        epochs / start_epoch out of range.

    Length: over 100 lines with its Args and Returns; its code is 90 lines.
    """
    del shuffle_buffer  # Each epoch is a full permutation.
    if teacher_logits is not None and augment.enabled and not clean_teacher:
        raise ValueError(
            "Precomputed teacher logits need un-augmented training images (or "
            f"clean_teacher=True); got augmentation {augment}."
        )
    if batch_size <= 0:
        raise ValueError(f"batch_size must be > 0, got {batch_size}.")
    last = start_epoch + 1 if epochs is None else epochs
    if not 0 <= start_epoch < last:
        raise ValueError(
            f"Need 0 <= start_epoch < epochs; got start_epoch={start_epoch}, epochs={epochs}."
        )
    autotune = tf.data.AUTOTUNE

    def evaluation(x, y):
        if store.on_disk(x):  # Read from disk each time, never whole.
            return image_batches(x, batch_size, y)
        return (
            tf.data.Dataset.from_tensor_slices((x, y))
            .map(lambda a, b: (preprocess(a), b), num_parallel_calls=autotune)
            .cache()
            .batch(batch_size)
            .prefetch(autotune)
        )

    n = len(data.x_train)
    images = gather_images(data.x_train)
    labels = tf.constant(data.y_train)
    stored = None
    if replay is not None:
        stored = {k: tf.constant(v) for k, v in replay.items()}
        if "teacher_logits" in stored:
            stored["teacher_logits"] = tf.cast(stored["teacher_logits"], tf.float32)
    elif teacher_logits is not None:
        stored = {"teacher_logits": tf.constant(teacher_logits)[None]}

    def one_epoch(epoch):
        if replay is not None:
            k = tf.shape(stored["order"], out_type=tf.int64)[0]
            views = {key: tf.gather(v, epoch % k) for key, v in stored.items()}
        else:
            views = epoch_views(augment, n, data.input_shape, seed, epoch, batch_size)
            if stored is not None:
                views["teacher_logits"] = stored["teacher_logits"][0]

        def batch(ids):
            x, y = view_batch(augment, images, labels, ids, views, data.num_classes)
            if "teacher_logits" in views:
                y = {"label": y, "teacher_logits": tf.gather(views["teacher_logits"], ids)}
            return x, y

        return (
            tf.data.Dataset.from_tensor_slices(views["order"])
            .batch(batch_size)
            .map(batch, num_parallel_calls=autotune)
        )

    def train_epochs(first, end):
        if not 0 <= first < end:
            raise ValueError(f"Need 0 <= start_epoch < epochs; got {first}, {end}.")
        steps = steps_per_epoch(n, batch_size)
        return (
            tf.data.Dataset.range(first, end)
            .flat_map(one_epoch)
            .apply(tf.data.experimental.assert_cardinality((end - first) * steps))
            .prefetch(autotune)
        )

    val = evaluation(data.x_val, data.y_val) if len(data.x_val) else None
    items = {
        "val": val,
        "train_epochs": train_epochs,
        "steps_per_epoch": steps_per_epoch(n, batch_size),
        "recipe": {"data": data, "batch_size": batch_size, "augment": augment, "seed": seed},
    }
    # 'test' too is built on first use: what never reads it (the choice of a
    # KD setting on validation) never touches the test images.
    lazy = {
        "train": lambda: train_epochs(start_epoch, last),
        "test": lambda: evaluation(data.x_test, data.y_test),
    }
    return Pipelines(items, lazy=lazy)


class Pipelines(dict):
    """What :func:`make_datasets` returns, by name: 'train', 'val', 'test',
    'train_epochs', 'steps_per_epoch' and 'recipe'.

    'train' is built on first use: building it traces the epoch's ``tf.data``
    functions, and a fit builds the pass it needs from 'train_epochs'
    instead. Its content is a pure function of the seed and the epochs, so
    when it is built does not change it. 'test' is built on first use too,
    so code that never reads it never reads the test split.
    """

    def __init__(self, items, lazy=None):
        super().__init__(items)
        self.lazy = dict(lazy or {})

    def __missing__(self, key):
        if key not in self.lazy:
            raise KeyError(key)
        value = self[key] = self.lazy.pop(key)()
        return value

    def __contains__(self, key):
        return dict.__contains__(self, key) or key in self.lazy

    def get(self, key, default=None):
        return self[key] if key in self else default


def with_items(datasets, lazy=None, **items):
    """A copy of `datasets` (a :class:`Pipelines` or a plain dict) with
    `items` in their place, and `lazy` ({name: zero-argument builder}) built
    on first use; entries not replaced stay as they were, built or not."""
    replaced = set(items) | set(lazy or {})
    kept = {k: v for k, v in dict.items(datasets) if k not in replaced}
    pending = {k: v for k, v in getattr(datasets, "lazy", {}).items() if k not in replaced}
    return Pipelines(dict(kept, **items), lazy=dict(pending, **(lazy or {})))
