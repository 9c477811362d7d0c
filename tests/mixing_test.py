"""Batch augmentation: the vectorized crop/flip/cutout against a numpy
reference, mixup and cutmix against their definitions, and the label loss of
mixed batches in plain training and in the Distiller."""

import numpy as np
import pytest
from conftest import tiny_dataset

from kd_keras import Distiller, models
from kd_keras import data as data_lib
from kd_keras import train as train_lib
from kd_keras.distill import losses as losses_lib
from kd_keras.keras_compat import keras, tf

SHAPE = (28, 28, 1)


def _views(config, n=40, seed=3, batch_size=16, epoch=0):
    v = data_lib.epoch_views(config, n, SHAPE, seed, epoch, batch_size)
    return {k: t.numpy() for k, t in v.items()}


def _first_batch(config, data, seed=3, batch_size=16):
    x, y = next(iter(data_lib.make_datasets(data, batch_size, config, seed=seed)["train"]))
    return x.numpy(), y.numpy()


def test_batch_augmentation_matches_a_numpy_reference():
    config = data_lib.AugmentConfig(crop_padding=3, flip=True, cutout=6)
    data = tiny_dataset(40)
    views = _views(config)
    x, y = _first_batch(config, data)
    ids = views["order"][:16]
    np.testing.assert_array_equal(y, data.y_train[ids])  # Sparse: no mixing.
    assert views["flip"][ids].min() == 0 and views["flip"][ids].max() == 1
    p = 3
    for row, i in enumerate(ids):
        img = np.pad(data.x_train[i] / 255.0, [(p, p), (p, p), (0, 0)]).astype(np.float32)
        dy, dx = views["dy"][i], views["dx"][i]
        img = img[dy : dy + 28, dx : dx + 28]
        if views["flip"][i]:
            img = img[:, ::-1]
        cy, cx = views["cy"][i] - 3, views["cx"][i] - 3
        img = img.copy()
        img[max(cy, 0) : max(cy + 6, 0), max(cx, 0) : max(cx + 6, 0)] = 0
        np.testing.assert_allclose(x[row], img, rtol=1e-6, atol=1e-7)


def test_mixup_blends_images_and_labels_with_one_lambda_per_batch():
    config = data_lib.AugmentConfig(mixup=0.4)
    data = tiny_dataset(40)
    views = _views(config)
    ids = views["order"][:16]
    assert np.unique(views["lam"][ids]).size == 1 and np.all(views["mode"][ids] == 1)
    lam, perm = views["lam"][ids[0]], views["partner"][ids]
    assert sorted(perm) == list(range(16))  # A permutation of the batch.
    x, y = _first_batch(config, data)
    own = data.x_train[ids] / 255.0
    np.testing.assert_allclose(x, lam * own + (1 - lam) * own[perm], rtol=1e-5, atol=1e-6)
    onehot = np.eye(10)[data.y_train[ids]]
    np.testing.assert_allclose(y, lam * onehot + (1 - lam) * onehot[perm], rtol=1e-6)
    # Each batch draws its own lambda; the last, partial batch pairs within itself.
    lams = {float(views["lam"][views["order"][s]]) for s in (0, 16, 32)}
    assert len(lams) == 3
    assert sorted(views["partner"][views["order"][32:]]) == list(range(8))


def test_cutmix_pastes_the_partner_box_and_lambda_is_its_complement():
    config = data_lib.AugmentConfig(cutmix=1.0)
    data = tiny_dataset(40)
    views = _views(config)
    ids = views["order"][:16]
    i0 = ids[0]
    y0, y1, x0, x1 = (views[k][i0] for k in ("box_y0", "box_y1", "box_x0", "box_x1"))
    assert views["lam"][i0] == pytest.approx(1 - (y1 - y0) * (x1 - x0) / 28**2)
    x, y = _first_batch(config, data)
    own = data.x_train[ids] / 255.0
    want = own.copy()
    want[:, y0:y1, x0:x1] = own[views["partner"][ids]][:, y0:y1, x0:x1]
    np.testing.assert_allclose(x, want, rtol=1e-6)
    np.testing.assert_allclose(y.sum(1), 1.0, rtol=1e-6)


def test_mixup_and_cutmix_both_occur_and_evaluation_stays_sparse():
    config = data_lib.AugmentConfig(crop_padding=2, mixup=0.2, cutmix=1.0)
    views = _views(config, n=2000, batch_size=20)
    assert set(np.unique(views["mode"])) == {1, 2}
    pipes = data_lib.make_datasets(tiny_dataset(40), 16, config)
    assert next(iter(pipes["train"]))[1].shape == (16, 10)
    assert next(iter(pipes["val"]))[1].dtype == tf.int64
    assert next(iter(pipes["test"]))[1].shape.rank == 1


def test_parse_mixing_items():
    cfg = data_lib.AugmentConfig.parse(["crop=2", "flip", "mixup=0.2", "cutmix"])
    assert (cfg.mixup, cfg.cutmix) == (0.2, 1.0) and cfg.mixes and cfg.enabled
    assert data_lib.AugmentConfig.parse(["mixup"]).mixup == 0.2
    for bad in ("mixup=0", "cutmix=x", "mixup=-1"):
        with pytest.raises(ValueError, match="mixup\\[=ALPHA>0\\]"):
            data_lib.AugmentConfig.parse([bad])


def test_soft_label_cross_entropy_is_the_mix_of_the_two_cross_entropies():
    rng = np.random.default_rng(0)
    logits = tf.constant(rng.normal(size=(8, 10)), tf.float32)
    a, b = rng.integers(0, 10, 8), rng.integers(0, 10, 8)
    lam = 0.3
    soft = tf.constant(lam * np.eye(10)[a] + (1 - lam) * np.eye(10)[b], tf.float32)
    sparse = lambda y: losses_lib.label_crossentropy(tf.constant(y), logits).numpy()  # noqa: E731
    np.testing.assert_allclose(
        losses_lib.label_crossentropy(soft, logits).numpy(),
        lam * sparse(a) + (1 - lam) * sparse(b),
        rtol=1e-5,
    )
    hard = losses_lib.hard_labels(soft, logits).numpy()
    np.testing.assert_array_equal(hard, np.where(a == b, a, b))  # lam < 0.5: y_b dominates.


def _mixed_batch():
    data = tiny_dataset(16)
    config = data_lib.AugmentConfig(flip=True, mixup=1.0)
    return data, next(iter(data_lib.make_datasets(data, 16, config, seed=1)["train"]))


def test_plain_training_on_mixed_batches_uses_the_soft_cross_entropy():
    data, (x, y) = _mixed_batch()
    keras.utils.set_random_seed(0)
    model = models.build("cnn", SHAPE, 10, width=0.25)
    want = float(np.mean(losses_lib.label_crossentropy(y, model(x, training=True)).numpy()))
    train_lib.compile_plain(model, keras.optimizers.SGD(0.0))
    got = model.fit(x, y, batch_size=16, epochs=1, verbose=0).history
    assert got["loss"][0] == pytest.approx(want, rel=1e-5)
    # Evaluation with sparse labels through the same compiled model.
    assert 0.0 <= model.evaluate(data.x_test / 255.0, data.y_test, verbose=0)[1] <= 1.0


def test_distiller_on_mixed_batches_uses_soft_ce_and_the_dominant_label_for_dkd():
    _, (x, y) = _mixed_batch()
    keras.utils.set_random_seed(0)
    student = models.build("cnn", SHAPE, 10, width=0.25)
    teacher = models.build("cnn", SHAPE, 10, width=0.5)
    dkd = losses_lib.DecoupledKD(4.0, 1.0, 8.0)
    distiller = Distiller(student, teacher, [dkd], alpha=0.5)
    distiller.compile(keras.optimizers.SGD(0.0), metrics=["accuracy"])
    s, t = student(x, training=True), teacher(x, training=False)
    want_ce = float(np.mean(losses_lib.label_crossentropy(y, s).numpy()))
    want_kd = float(dkd.compute([t], s, labels=losses_lib.hard_labels(y, s)))
    got = distiller.fit(x, y, batch_size=16, epochs=1, verbose=0).history
    assert got["student_loss"][0] == pytest.approx(want_ce, rel=1e-5)
    assert got["distillation_loss"][0] == pytest.approx(want_kd, rel=1e-4)
