"""A teacher cache that survives augmentation (after FKD, Shen & Xing 2022).

Distilling with augmentation needs the teacher's logits on the augmented
(and mixed) image the student sees, so the teacher normally runs at every
step. This cache draws K views of every training example once, stores their
parameters and the teachers' logits on them (float16), and training replays
them: epoch ``e`` replays view ``e mod K``.

What a view is. View ``v`` is exactly epoch ``v`` of the seeded training
pipeline (``kd_keras.data.epoch_views``): its example order and, per
example, crop offsets, flip and cutout centre, and, per batch, the mixing
mode, lambda, CutMix box and partner permutation. Mixup and cutmix are
batch-level, so the view keeps the batch composition: every example's
stored logits are the teacher's on the *mixed* image it became, exactly
(not a linear mix of per-example logits, which a teacher is not). The price
is that with K views the batch order repeats every K epochs; with
``K >= epochs`` training through the cache sees the very batches of online
distillation. Without augmentation the cache is not needed (the logits of
the plain images are computed once in memory; see ``training.fit``).

Where it lives. ``<cache_dir>/teacher-<key>.npz``, keyed by the teachers'
weights digests, the training data's digest, the augmentation, batch size,
seed and K, so it is computed once per setting and shared by every run
that reads the same directory. It is written atomically.
"""

import json
import os

import numpy as np

from kd_keras import data as data_lib
from kd_keras import runs
from kd_keras.data import store
from kd_keras.keras_compat import tf

FORMAT_VERSION = 1


def data_digest(data, length=16):
    """A hash of a Dataset's training images and labels."""
    return store.digest((data.x_train, data.y_train), length)


def cache_key(teachers, data, augment, batch_size, seed, views):
    """The identity of a cache: everything its contents depend on."""
    return {
        "version": FORMAT_VERSION,
        "teachers": [runs.weights_digest(t) for t in teachers],
        "data": {"name": data.name, "digest": data_digest(data)},
        "augment": runs.spec_of(augment),
        "batch_size": int(batch_size),
        "seed": int(seed),
        "views": int(views),
    }


def draw_views(data, augment, batch_size, seed, views):
    """K views of the training split: ``epoch_views`` of epochs 0..K-1, stacked.

    Returns:
      dict of numpy arrays with a leading axis of `views`: 'order' and
      ``kd_keras.data.VIEW_KEYS``, each (K, N) indexed by example id.
    """
    if views < 1:
        raise ValueError(f"views must be >= 1, got {views}.")
    drawn = [
        data_lib.epoch_views(augment, len(data.x_train), data.input_shape, seed, v, batch_size)
        for v in range(views)
    ]
    return {k: np.stack([d[k].numpy() for d in drawn]) for k in drawn[0]}


def teacher_logits(teachers, data, augment, batch_size, views):
    """The teachers' logits on every stored view, float16 (K, N, teachers, classes).

    Each view is rebuilt batch by batch exactly as the training pipeline
    builds it (``kd_keras.data.view_batch``) and every teacher runs on it
    with ``training=False``; each example's row holds the logits of the
    image it became in that view (after mixing).
    """
    images = data_lib.gather_images(data.x_train)
    labels = tf.constant(data.y_train)
    n = len(data.x_train)
    classes = int(teachers[0].output_shape[-1])
    out = np.zeros((len(views["order"]), n, len(teachers), classes), np.float16)

    @tf.function(reduce_retracing=True)
    def forward(ids, view):
        x, _ = data_lib.view_batch(augment, images, labels, ids, view, data.num_classes)
        return tf.stack([t(x, training=False) for t in teachers], axis=1)

    for v in range(len(views["order"])):
        view = {k: tf.constant(views[k][v]) for k in data_lib.VIEW_KEYS}
        order = views["order"][v]
        for start in range(0, n, batch_size):
            ids = order[start : start + batch_size]
            out[v, ids] = forward(tf.constant(ids), view).numpy().astype(np.float16)
    return out


def load_or_build(cache_dir, teachers, data, augment, batch_size, seed, views):
    """The stored views and teacher logits of this setting, computed once.

    Args:
      cache_dir: directory of caches (created if needed).
      teachers: list of keras.Model (logits).
      data: the un-augmented ``kd_keras.data.Dataset``.
      augment: the ``AugmentConfig`` of the training pipeline.
      batch_size, seed: those of the training pipeline.
      views: K, views per example.

    Returns:
      (replay dict for ``make_datasets(replay=...)``: 'order', VIEW_KEYS
      and 'teacher_logits' with a leading axis of K; the cache file's path;
      True when it was read from disk rather than computed).
    """
    key = cache_key(teachers, data, augment, batch_size, seed, views)
    digest = runs.config_hash(key)
    path = os.path.join(cache_dir, f"teacher-{digest}.npz")
    if os.path.exists(path):
        with np.load(path) as f:
            if json.loads(str(f["key"])) == key:
                return {k: f[k] for k in f.files if k != "key"}, path, True
    replay = draw_views(data, augment, batch_size, seed, views)
    replay["teacher_logits"] = teacher_logits(teachers, data, augment, batch_size, replay)
    runs.write_npz(path, dict(replay, key=np.array(json.dumps(key, sort_keys=True))))
    return replay, path, False
