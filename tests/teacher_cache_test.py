"""The teacher cache: stored views replay the online pipeline, their logits
are the teacher's on the replayed (mixed) images, it is computed once per
setting, and training through it is deterministic and resumable."""

import os

import numpy as np
import pytest
from conftest import tiny_dataset

from kd_keras import data as data_lib
from kd_keras import distill, models
from kd_keras import train as train_lib
from kd_keras.distill import teacher_cache
from kd_keras.keras_compat import keras

AUGMENT = data_lib.AugmentConfig(crop_padding=2, flip=True, cutout=6, mixup=0.4, cutmix=1.0)
SHAPE = (28, 28, 1)


def _teacher(seed=2):
    keras.utils.set_random_seed(seed)
    return models.build("cnn", SHAPE, 10, width=0.5)


def test_cached_logits_are_the_online_teachers_on_the_replayed_view(tmp_path):
    data = tiny_dataset(40)
    teacher = _teacher()
    replay, path, reused = teacher_cache.load_or_build(
        str(tmp_path), [teacher], data, AUGMENT, 16, 5, views=2
    )
    assert not reused and os.path.exists(path)
    assert replay["teacher_logits"].shape == (2, 40, 1, 10)
    assert replay["teacher_logits"].dtype == np.float16
    cached = list(
        data_lib.make_datasets(data, 16, AUGMENT, seed=5, epochs=3, replay=replay)["train"]
    )
    online = list(data_lib.make_datasets(data, 16, AUGMENT, seed=5, epochs=2)["train"])
    assert len(cached) == 9 and len(online) == 6
    for (x, y), (xo, yo) in zip(cached, online):
        # Views 0 and 1 are epochs 0 and 1 of the online pipeline, batch for batch.
        np.testing.assert_array_equal(x.numpy(), xo.numpy())
        np.testing.assert_array_equal(y["label"].numpy(), yo.numpy())
        want = teacher(x, training=False).numpy()
        np.testing.assert_allclose(y["teacher_logits"].numpy()[:, 0], want, rtol=2e-3, atol=2e-3)
    modes = set(np.unique(replay["mode"]))
    assert modes & {1, 2}  # Mixed batches were cached.
    # Epoch 2 replays view 0.
    for (x, y), (x0, y0) in zip(cached[6:], cached[:3]):
        np.testing.assert_array_equal(x.numpy(), x0.numpy())
        np.testing.assert_array_equal(y["teacher_logits"].numpy(), y0["teacher_logits"].numpy())


def test_cache_is_computed_once_per_setting(tmp_path):
    data = tiny_dataset(24)
    teacher = _teacher()
    first, path, _ = teacher_cache.load_or_build(str(tmp_path), [teacher], data, AUGMENT, 8, 0, 2)
    again, path2, reused = teacher_cache.load_or_build(
        str(tmp_path), [teacher], data, AUGMENT, 8, 0, 2
    )
    assert reused and path2 == path
    for key, value in first.items():
        np.testing.assert_array_equal(again[key], value)
    other_aug = data_lib.AugmentConfig(flip=True)
    _, path3, reused3 = teacher_cache.load_or_build(
        str(tmp_path), [teacher], data, other_aug, 8, 0, 2
    )
    _, path4, _ = teacher_cache.load_or_build(str(tmp_path), [_teacher(9)], data, AUGMENT, 8, 0, 2)
    assert not reused3 and len({path, path3, path4}) == 3


class _StopAt(keras.callbacks.Callback):
    """Raises before batch 1 of epoch 1 (after epoch 0's checkpoint)."""

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if (self.epoch, batch) == (1, 1):
            raise KeyboardInterrupt


def _fit(run_dir, views=2, stop=False):
    data = tiny_dataset(32)
    datasets = data_lib.make_datasets(data, 16, AUGMENT, seed=3)
    keras.utils.set_random_seed(1)
    student = models.build("cnn", SHAPE, 10, width=0.25, dropout=0.3)
    kd = distill.KDConfig(losses=("kd", "dkd"), teacher_cache_views=views)
    out = train_lib.fit(
        student,
        datasets,
        train_lib.TrainConfig(epochs=3, seed=1),
        run_dir,
        teacher=_teacher(),
        kd=kd,
        extra_callbacks=[_StopAt()] if stop else [],
        verbose=0,
        teacher_cache_dir=os.path.join(os.path.dirname(run_dir), "cache"),
    )
    return student.get_weights(), out


@pytest.mark.slow(20)
def test_training_through_the_cache_is_deterministic_and_resumable(tmp_path):
    whole, out = _fit(str(tmp_path / "a"))
    again, _ = _fit(str(tmp_path / "b"))
    assert len(os.listdir(tmp_path / "cache")) == 1  # Computed once, reused by run b.
    with pytest.raises(KeyboardInterrupt):
        _fit(str(tmp_path / "c"), stop=True)
    assert train_lib.read_progress(str(tmp_path / "c"))["epochs_done"] == 1
    resumed, out_c = _fit(str(tmp_path / "c"))
    assert out_c["initial_epoch"] == 1
    for a, b, c in zip(whole, again, resumed):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    assert len(out["history"]["distillation_loss"]) == 3


def test_cache_refuses_feature_losses_and_negative_views(tmp_path):
    data = tiny_dataset(16)
    datasets = data_lib.make_datasets(data, 8, AUGMENT)
    student = models.build("cnn", SHAPE, 10, width=0.25)
    teacher = models.build("cnn", SHAPE, 10, width=0.5)
    kd = distill.KDConfig(
        losses=("hint",), teacher_layer="block2", student_layer="block2", teacher_cache_views=2
    )
    with pytest.raises(ValueError, match="read features"):
        train_lib.fit(
            student, datasets, train_lib.TrainConfig(epochs=1), str(tmp_path), teacher, kd
        )
    with pytest.raises(ValueError, match="teacher_cache_views"):
        distill.KDConfig(teacher_cache_views=-1)
