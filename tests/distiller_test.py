"""The Distiller: gradients, frozen teacher, ensembles, callbacks, saving."""

import numpy as np
import pytest

from kd_keras import Distiller, models
from kd_keras.keras_compat import keras, tf

SHAPE = (12, 12, 1)


def _teacher(seed=0, width=0.5):
    keras.utils.set_random_seed(seed)
    return models.build("resnet", SHAPE, 5, depth=10, width=width)


def _student(seed=1):
    keras.utils.set_random_seed(seed)
    return models.build("cnn", SHAPE, 5, width=0.25)


def _data(n=32):
    rng = np.random.default_rng(0)
    return rng.random((n,) + SHAPE).astype("float32"), rng.integers(0, 5, n)


def _compiled(student, teacher, **kw):
    d = Distiller(student, teacher, **kw)
    d.compile(keras.optimizers.SGD(0.1), metrics=["accuracy"])
    return d


@pytest.mark.parametrize("loss_names", [["kd"], ["kd", "hint"], ["attention"]])
def test_train_step_changes_student_and_not_teacher(loss_names):
    teacher, student = _teacher(), _student()
    x, y = _data()
    teacher_before = [w.copy() for w in teacher.get_weights()]
    student_before = [w.copy() for w in student.get_weights()]
    d = _compiled(student, teacher, distillation_losses=loss_names)
    d.fit(x, y, batch_size=16, epochs=1, verbose=0)
    for a, b in zip(teacher_before, teacher.get_weights()):
        assert np.array_equal(a, b)  # bit for bit, BN statistics included
    changed = [not np.array_equal(a, b) for a, b in zip(student_before, student.get_weights())]
    assert all(changed[i] for i, w in enumerate(student.weights) if w.trainable)


def test_loss_is_the_documented_combination():
    teacher, student = _teacher(), _student()
    x, y = _data(8)
    d = _compiled(student, teacher, alpha=0.3, temperature=2.0)
    t_logits = teacher(x, training=False).numpy()
    s_logits = student(x, training=True).numpy()

    def sm(z):
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    ce = -np.mean(np.log(sm(s_logits)[np.arange(8), y]))
    p, q = sm(t_logits / 2), sm(s_logits / 2)
    kd = 4 * np.mean(np.sum(p * (np.log(p) - np.log(q)), -1))
    outs = d.teacher_outputs(x)
    got = float(d.distillation_loss(outs, [tf.constant(s_logits)]))
    np.testing.assert_allclose(got, kd, rtol=1e-4)
    # One step with lr=0 leaves weights alone and reports the same losses.
    d.compile(keras.optimizers.SGD(0.0), metrics=["accuracy"])
    logs = d.train_on_batch(x, y, return_dict=True)
    np.testing.assert_allclose(logs["student_loss"], ce, rtol=1e-4)
    np.testing.assert_allclose(logs["distillation_loss"], kd, rtol=1e-4)
    np.testing.assert_allclose(logs["loss"], 0.3 * ce + 0.7 * kd, rtol=1e-4)


def test_ensemble_teacher_averages_members():
    t1, t2 = _teacher(0), _teacher(5)
    student = _student()
    x, _ = _data(8)
    d = Distiller(student, [t1, t2], temperature=1.0, ensemble="logits")
    assert d.teacher == [t1, t2]
    s = student(x, training=False)
    single = Distiller(student, t1, temperature=1.0)
    mean_logits = (t1(x, training=False) + t2(x, training=False)) / 2
    # The ensemble's soft target is softmax of the averaged logits.
    from kd_keras.distill import losses

    want = losses.LogitsKD(1.0).compute([mean_logits], s)
    got = d.distillation_loss(d.teacher_outputs(x), [s])
    np.testing.assert_allclose(float(got), float(want), rtol=1e-5)
    assert abs(float(got) - float(single.distillation_loss(single.teacher_outputs(x), [s]))) > 1e-6


def test_test_step_evaluates_the_student():
    teacher, student = _teacher(), _student()
    x, y = _data()
    d = _compiled(student, teacher)
    logs = d.evaluate(x, y, verbose=0, return_dict=True)
    student.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    ref = student.evaluate(x, y, verbose=0, return_dict=True)
    assert logs["accuracy"] == pytest.approx(ref["accuracy"])
    assert logs["student_loss"] == pytest.approx(ref["loss"], rel=1e-5)
    assert "distillation_loss" not in logs
    np.testing.assert_allclose(d.predict(x, verbose=0), student.predict(x, verbose=0))


def test_callbacks_and_student_save_reload(tmp_path):
    teacher, student = _teacher(), _student()
    x, y = _data()
    d = _compiled(student, teacher)
    ckpt = str(tmp_path / "ckpt" / "w.{epoch}.weights.h5")
    history = d.fit(
        x,
        y,
        batch_size=16,
        epochs=3,
        validation_data=(x, y),
        verbose=0,
        callbacks=[
            keras.callbacks.ModelCheckpoint(ckpt, save_weights_only=True),
            keras.callbacks.TensorBoard(str(tmp_path / "tb")),
            keras.callbacks.EarlyStopping("val_accuracy", patience=5),
            keras.callbacks.BackupAndRestore(str(tmp_path / "bk")),
        ],
    )
    assert set(history.history) >= {
        "loss",
        "student_loss",
        "distillation_loss",
        "accuracy",
        "val_loss",
        "val_accuracy",
    }
    assert (tmp_path / "ckpt" / "w.3.weights.h5").exists()
    assert any((tmp_path / "tb").rglob("*tfevents*"))
    path = str(tmp_path / "student.keras")
    d.student.save(path)
    reloaded = keras.models.load_model(path)
    assert not isinstance(reloaded, Distiller)
    np.testing.assert_allclose(
        reloaded.predict(x, verbose=0), student.predict(x, verbose=0), rtol=1e-5, atol=1e-6
    )


def test_works_under_a_distribution_strategy():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    x, y = _data()
    with strategy.scope():
        teacher, student = _teacher(), _student()
        d = _compiled(student, teacher)
    before = [w.copy() for w in student.get_weights()]
    d.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert any(not np.array_equal(a, b) for a, b in zip(before, student.get_weights()))


def test_config_round_trip():
    d = Distiller(
        _student(),
        _teacher(),
        ["kd", "attention"],
        [1.0, 50.0],
        alpha=0.2,
        temperature=3.0,
        ensemble="probs",
    )
    clone = Distiller.from_config(d.get_config())
    assert clone.alpha == 0.2 and clone.temperature == 3.0 and clone.ensemble == "probs"
    assert [l.name for l in clone.distillation_losses] == ["kd", "attention"]
    assert clone.distillation_loss_weights == [1.0, 50.0]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(teacher=models.build("cnn", (16, 16, 1), 5)), "inputs of shape"),
        (dict(teacher=models.build("cnn", SHAPE, 7)), "number of classes"),
        (dict(teacher=[]), "non-empty"),
        (dict(alpha=1.5), "alpha"),
        (dict(ensemble="vote"), "ensemble"),
        (dict(distillation_losses=["kd", "hint"], distillation_loss_weights=[1.0]), "one weight"),
        (
            dict(distillation_losses=["hint"], teacher=models.build("cnn", SHAPE, 5)),
            "no layer named",
        ),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, match):
    args = dict(student=_student(), teacher=_teacher())
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        Distiller(**args)


@pytest.mark.parametrize("loss, n_teachers", [("kd", 1), ("dkd", 1), ("dist", 2), ("lskd", 2)])
def test_precomputed_teacher_logits_give_the_same_training(loss, n_teachers):
    from conftest import tiny_dataset

    from kd_keras import data as data_lib

    ds = tiny_dataset(32, shape=SHAPE, classes=5)
    teacher = [_teacher() for _ in range(n_teachers)]
    runs = []
    for offline in (False, True):
        student = _student(seed=3)
        d = _compiled(student, teacher, distillation_losses=loss)
        if offline:
            logits = d.precompute_teacher_logits(data_lib.preprocess(ds.x_train).numpy())
            assert logits.shape == (32, n_teachers, 5)
            train = data_lib.make_datasets(ds, 8, seed=0, teacher_logits=logits)["train"]
        else:
            train = data_lib.make_datasets(ds, 8, seed=0)["train"]
        d.fit(train, epochs=1, verbose=0)
        runs.append(student.get_weights())
    for a, b in zip(*runs):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="un-augmented"):
        data_lib.make_datasets(
            ds, 8, augment=data_lib.AugmentConfig(flip=True), teacher_logits=logits
        )
