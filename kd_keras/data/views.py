"""Epoch views: each epoch's order and each example's augmentation draws, a
pure function of the seed and the epoch, so a teacher's outputs can be cached
per view and a resumed run sees the same batches.
"""

import numpy as np

from kd_keras.data import store
from kd_keras.data.augment import (
    MIX_CUTMIX,
    MIX_MIXUP,
    MIX_NONE,
    AugmentConfig,
    augment_batch,
    mix_batch,
    preprocess,
)
from kd_keras.keras_compat import tf


def steps_per_epoch(n, batch_size):
    """Batches of an epoch of `n` examples, the last one possibly partial
    (``ceil(n / batch_size)``)."""
    return -(-int(n) // int(batch_size))


def epoch_key(seed, epoch):
    """The stateless random key (shape [2], int64) of one epoch of a seeded pipeline."""
    return tf.random.experimental.stateless_fold_in(
        tf.stack([tf.constant(seed, tf.int64), tf.constant(0, tf.int64)]), tf.cast(epoch, tf.int64)
    )


def epoch_order(n, seed, epoch):
    """The order (a permutation of range(n), int64) of the examples in one epoch.

    A pure function of (n, seed, epoch): the same in every process, whichever
    epoch the pipeline starts at.
    """
    key = tf.random.experimental.stateless_fold_in(epoch_key(seed, epoch), 0)
    return tf.cast(tf.argsort(tf.random.stateless_uniform([n], key), stable=True), tf.int64)


# The parameters of one epoch's views, one entry per training example (indexed
# by example id). Per example: crop offsets, flip, cutout centre. Per batch
# (the same for every example of a batch): mixing mode, lambda and CutMix box;
# `partner` is the position, within its batch, of the example mixed into it.
VIEW_KEYS = (
    "dy",
    "dx",
    "flip",
    "cy",
    "cx",
    "partner",
    "mode",
    "lam",
    "box_y0",
    "box_y1",
    "box_x0",
    "box_x1",
)


def epoch_views(config: AugmentConfig, n, image_shape, seed, epoch, batch_size):
    """The order and the augmentation parameters of one epoch, drawn at once.

    A pure function of its arguments (stateless random ops keyed by
    ``epoch_key(seed, epoch)``), so every process, and a training resumed at
    `epoch`, draws the same views. Position ``p`` of the epoch holds example
    ``order[p]``; batch ``b`` is positions ``[b * batch_size, (b + 1) *
    batch_size)``; each batch draws its mixing mode, lambda ~ Beta(alpha,
    alpha), CutMix box and a partner permutation of its positions.

    Args:
      config: the augmentation.
      n: training examples.
      image_shape: (H, W, C).
      seed: seed of the pipeline.
      epoch: epoch (int or int64 scalar tensor).
      batch_size: examples per batch (mixing pairs examples of one batch).

    Returns:
      dict: 'order' (n,) int64 and each of VIEW_KEYS, (n,) tensors indexed by
      example id (int32, lam float32).
    """
    h, w = int(image_shape[0]), int(image_shape[1])
    fold = tf.random.experimental.stateless_fold_in
    aug = fold(epoch_key(seed, epoch), 1)  # 0 is the order's key.
    key = lambda tag: fold(aug, tag)  # noqa: E731
    order = epoch_order(n, seed, epoch)

    def ints(tag, high, size=n):
        return tf.random.stateless_uniform([size], key(tag), 0, high, dtype=tf.int32)

    zeros = tf.zeros([n], tf.int32)
    p = config.crop_padding
    views = {
        "dy": ints(0, 2 * p + 1) if p else zeros,
        "dx": ints(1, 2 * p + 1) if p else zeros,
        "flip": ints(2, 2) if config.flip else zeros,
        "cy": ints(3, h) if config.cutout else zeros,
        "cx": ints(4, w) if config.cutout else zeros,
    }
    steps = steps_per_epoch(n, batch_size)
    if config.mixup and config.cutmix:
        mode = tf.where(ints(5, 2, steps) == 0, MIX_MIXUP, MIX_CUTMIX)
    else:
        mode = tf.fill([steps], MIX_MIXUP if config.mixup else MIX_CUTMIX if config.cutmix else 0)
    alpha = tf.where(mode == MIX_MIXUP, config.mixup or 1.0, config.cutmix or 1.0)
    g1 = tf.random.stateless_gamma([steps], key(6), alpha)
    g2 = tf.random.stateless_gamma([steps], key(7), alpha)
    lam = g1 / tf.maximum(g1 + g2, 1e-12)
    # CutMix: a box of side sqrt(1 - lam) times the image's, clipped at the
    # border; lambda becomes the share of the image left outside it.
    ratio = tf.sqrt(1.0 - lam)
    ch = tf.cast(h * ratio, tf.int32) // 2
    cw = tf.cast(w * ratio, tf.int32) // 2
    by, bx = ints(8, h, steps), ints(9, w, steps)
    y0, y1 = tf.clip_by_value(by - ch, 0, h), tf.clip_by_value(by + ch, 0, h)
    x0, x1 = tf.clip_by_value(bx - cw, 0, w), tf.clip_by_value(bx + cw, 0, w)
    lam = tf.where(
        mode == MIX_CUTMIX, 1.0 - tf.cast((y1 - y0) * (x1 - x0), tf.float32) / (h * w), lam
    )
    lam = tf.where(mode == MIX_NONE, 1.0, lam)
    # Partners: sorting (batch, uniform) permutes the positions within each batch.
    batch_of = tf.range(n, dtype=tf.int32) // batch_size
    u = tf.random.stateless_uniform([n], key(10), dtype=tf.float64)
    partner = tf.cast(tf.argsort(tf.cast(batch_of, tf.float64) + u, stable=True), tf.int32)
    per_position = {
        "partner": partner - batch_of * batch_size,
        **{
            k: tf.gather(v, batch_of)
            for k, v in (
                ("mode", mode),
                ("lam", lam),
                ("box_y0", y0),
                ("box_y1", y1),
                ("box_x0", x0),
                ("box_x1", x1),
            )
        },
    }
    position_of = tf.argsort(order)  # example id -> its position this epoch
    views.update({k: tf.gather(v, position_of) for k, v in per_position.items()})
    return dict(views, order=order)


def gather_images(images):
    """A function ids -> the images (uint8, or an npz's float32 inputs) of
    those example ids, as a tensor.

    For images in memory, a ``tf.gather`` from a constant; for images on
    disk (a memmap, see :mod:`kd_keras.data.store`), a read of just those rows
    (``tf.numpy_function``), so the split is never loaded whole.
    """
    if not store.on_disk(images):
        constant = tf.constant(images)
        return lambda ids: tf.gather(constant, ids)
    shape = tuple(images.shape[1:])

    dtype = np.dtype(images.dtype)

    def read(ids):
        return np.asarray(images[np.asarray(ids, np.int64)], dtype)

    def gather(ids):
        out = tf.numpy_function(read, [ids], tf.as_dtype(dtype), stateful=False)
        out.set_shape((None,) + shape)
        return out

    return gather


def image_batches(images, batch_size=1024, labels=None):
    """``tf.data`` batches of preprocessed `images` (in memory or on disk), in
    order, with their labels when given: what ``Model.predict`` and
    ``evaluate`` read instead of a whole split in memory."""
    n = len(images)
    gather = gather_images(images)
    label_tensor = None if labels is None else tf.constant(np.asarray(labels))

    def batch(start):
        ids = tf.range(start, tf.minimum(start + batch_size, n))
        x = preprocess(gather(ids))
        return x if label_tensor is None else (x, tf.gather(label_tensor, ids))

    return (
        tf.data.Dataset.range(0, n, batch_size)
        .map(batch, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )


def view_batch(config: AugmentConfig, images, labels, ids, views, num_classes):
    """One training batch: examples `ids` of the training split, augmented and
    mixed with their view parameters.

    Args:
      config: the augmentation.
      images: function ids -> uint8 (B, H, W, C) images of the training split
        (:func:`gather_images`).
      labels: int64 (N,) tensor.
      ids: (B,) example ids of this batch, in batch order.
      views: dict of VIEW_KEYS tensors (N,) indexed by example id.
      num_classes: classes (for the soft labels of a mixing config).

    Returns:
      (images float32 (B, H, W, C), labels: int64 (B,), or float32 (B,
      classes) when `config` mixes).
    """
    x = preprocess(images(ids))
    y = tf.gather(labels, ids)
    if not config.enabled:
        return x, y
    v = {k: tf.gather(views[k], ids) for k in VIEW_KEYS}
    x = augment_batch(config, x, v)
    if config.mixes:
        x, y = mix_batch(x, tf.one_hot(y, num_classes, dtype=tf.float32), v)
    return x, y
