"""train_lib.fit: deterministic across processes, resumable after a kill, and the
data order of each epoch a pure function of (seed, epoch).

The killed trainings run in subprocesses (this file is also their script):
they SIGKILL themselves at the second batch of epoch 2, after epoch 1's
checkpoint, and the same training called again on the same run directory must
end with the weights of an uninterrupted one.
"""

import dataclasses
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from conftest import tiny_dataset

from kd_keras import data as data_lib
from kd_keras import distill, models
from kd_keras import train as train_lib
from kd_keras.keras_compat import keras

EPOCHS = 3
AUGMENT = data_lib.AugmentConfig(crop_padding=2, flip=True, cutout=6)


class _KillAt(keras.callbacks.Callback):
    """SIGKILLs this process before batch `batch` of epoch `epoch` (0-based)."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.at, self.epoch = (epoch, batch), None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            os.kill(os.getpid(), signal.SIGKILL)


def train(mode, run_dir, kill=False):
    """Trains a tiny cnn (dropout on) for EPOCHS epochs; returns (weights, fit result).

    Modes: 'plain', or 'kd-aug-prune': the Distiller, augmented data and
    magnitude pruning of the classifier.
    """
    data = tiny_dataset(32)
    augment = AUGMENT if mode != "plain" else data_lib.AugmentConfig()
    datasets = data_lib.make_datasets(data, 16, augment, seed=3)
    keras.utils.set_random_seed(1)
    student = models.build("cnn", (28, 28, 1), 10, width=0.25, dropout=0.3)
    callbacks = [_KillAt(1, 1)] if kill else []
    if mode != "plain":
        from kd_keras import compression

        schedule = compression.pruning_schedule("polynomial", 0.5, 0, 4, 1)
        student = compression.prune_model(student, ["logits"], schedule)
        callbacks = compression.pruning_callbacks() + callbacks
    teacher = None
    if mode != "plain":
        keras.utils.set_random_seed(2)
        teacher = models.build("cnn", (28, 28, 1), 10, width=0.5)
    config = train_lib.TrainConfig(epochs=EPOCHS, seed=1)
    out = train_lib.fit(
        student, datasets, config, run_dir, teacher=teacher, extra_callbacks=callbacks, verbose=0
    )
    return student.get_weights(), out


def _subprocess(mode, run_dir, kill=False):
    """Runs `train` in a fresh process; returns its weights (None when killed)."""
    out = os.path.join(run_dir, "weights.npz")
    proc = subprocess.run(
        [sys.executable, __file__, mode, run_dir, out, str(int(kill))],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if kill:
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
        return None
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(out) as f:
        return [f[f"arr_{i}"] for i in range(len(f.files))]


def _assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def plain_in_two_processes(tmp_path_factory):
    root = tmp_path_factory.mktemp("plain")
    return [_subprocess("plain", str(root / name)) for name in ("a", "b")]


def _kill_and_resume(mode, run_dir):
    _subprocess(mode, run_dir, kill=True)
    progress = train_lib.read_progress(run_dir)
    assert progress["epochs_done"] == 1 and not progress["finished"]
    assert os.listdir(os.path.join(run_dir, train_lib.CHECKPOINT_DIR))  # Only epoch 1's.
    resumed, out = train(mode, run_dir)
    assert out["initial_epoch"] == 1
    assert all(len(v) == EPOCHS for v in out["history"].values()) and out["history"]
    assert out["history"]["loss"][0] == progress["history"]["loss"][0]
    assert out["train_time_s"] > progress["train_time_s"]
    return resumed, out


@pytest.mark.slow(25)
def test_two_processes_train_the_same_weights_and_a_killed_one_resumes_to_them(
    tmp_path, plain_in_two_processes
):
    """One test for both properties, so the two uninterrupted processes (a
    module fixture) run once, not once per test worker."""
    first, second = plain_in_two_processes
    _assert_same(first, second)
    resumed, _ = _kill_and_resume("plain", str(tmp_path / "killed"))
    _assert_same(resumed, first)


@pytest.mark.slow(20)
def test_killed_and_resumed_distillation_with_augmentation_and_pruning(tmp_path):
    run_dir = str(tmp_path / "killed")
    resumed, out = _kill_and_resume("kd-aug-prune", run_dir)
    whole, reference = train("kd-aug-prune", str(tmp_path / "whole"))
    _assert_same(resumed, whole)
    for key, values in reference["history"].items():
        np.testing.assert_allclose(out["history"][key], values, rtol=1e-6)
    # The pruning step counter went on from where it was: the target sparsity is reached.
    kernel = [w for w in resumed if w.ndim == 2][0]
    assert float((kernel == 0).mean()) == pytest.approx(0.5, abs=0.01)
    # A finished run is restored, not trained again.
    assert train_lib.read_progress(run_dir)["finished"]
    again, out2 = train("kd-aug-prune", run_dir)
    assert out2["initial_epoch"] == EPOCHS and out2["history"] == out["history"]
    _assert_same(again, resumed)


def _epochs(pipeline, steps):
    batches = [(x.numpy(), y) for x, y in pipeline]
    return [batches[i : i + steps] for i in range(0, len(batches), steps)]


def test_epoch_data_does_not_depend_on_the_start_epoch():
    data = tiny_dataset(40)
    steps = 3  # ceil(40 / 16), the last batch partial.
    full = _epochs(data_lib.make_datasets(data, 16, AUGMENT, seed=5, epochs=3)["train"], steps)
    assert len(full) == 3 and [len(b[0]) for b in full[0]] == [16, 16, 8]
    late = _epochs(
        data_lib.make_datasets(data, 16, AUGMENT, seed=5, epochs=3, start_epoch=2)["train"], steps
    )
    assert len(late) == 1
    for (x, y), (x2, y2) in zip(full[2], late[0]):
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(y.numpy(), y2.numpy())
    # Epochs differ in order and augmentation; another seed gives other data.
    assert not np.array_equal(full[0][0][1].numpy(), full[1][0][1].numpy())
    other = _epochs(data_lib.make_datasets(data, 16, AUGMENT, seed=6, epochs=1)["train"], steps)
    assert not np.array_equal(full[0][0][0], other[0][0][0])
    # Every epoch visits every example once.
    order = np.concatenate([y.numpy() for _, y in full[1]])
    assert sorted(order.tolist()) == sorted(data.y_train.tolist())


def test_fit_sees_a_new_order_every_epoch():
    data = tiny_dataset(32)
    datasets = data_lib.make_datasets(data, 16, seed=0)
    seen = []

    class Record(keras.Model):
        def train_step(self, batch):
            seen.append(batch[1])
            return {}

    inputs = keras.Input((28, 28, 1))
    model = Record(inputs, keras.layers.Flatten()(inputs))
    model.compile(run_eagerly=True)
    model.fit(datasets["train_epochs"](0, 3), steps_per_epoch=2, epochs=3, verbose=0)
    epochs = [np.concatenate([s.numpy() for s in seen[i : i + 2]]) for i in (0, 2, 4)]
    assert all(sorted(e) == sorted(data.y_train) for e in epochs)
    assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])


def test_teacher_logits_pipeline_has_the_plain_order():
    data = tiny_dataset(40)
    index = np.arange(40, dtype=np.float32)
    logits = np.broadcast_to(index[:, None, None], (40, 1, 10)).copy()
    plain = data_lib.make_datasets(data, 16, seed=2, epochs=2)["train"]
    offline = data_lib.make_datasets(data, 16, seed=2, epochs=2, teacher_logits=logits)["train"]
    flat = data.x_train.reshape(40, -1) / 255.0
    for (x, y), (xo, yo) in zip(plain, offline):
        np.testing.assert_array_equal(x.numpy(), xo.numpy())
        np.testing.assert_array_equal(y.numpy(), yo["label"].numpy())
        rows = yo["teacher_logits"].numpy()[:, 0, 0].astype(int)
        np.testing.assert_allclose(flat[rows], x.numpy().reshape(len(rows), -1), rtol=1e-6)


if __name__ == "__main__":
    _mode, _run_dir, _out, _kill = sys.argv[1:]
    _weights, _ = train(_mode, _run_dir, kill=_kill == "1")
    np.savez(_out, *_weights)


def _teacher_views(view, cache_views):
    """(first batch, its example ids, the teacher) of a distilled augmented train_lib."""
    from kd_keras.distill.distiller import Distiller

    data = tiny_dataset(32)
    keras.utils.set_random_seed(2)
    teacher = models.build("cnn", (28, 28, 1), 10, width=0.5)
    student = models.build("cnn", (28, 28, 1), 10, width=0.25)
    kd = distill.KDConfig(temperature=2.0, teacher_cache_views=cache_views)
    distiller = Distiller(student, teacher, kd.build_losses(), temperature=2.0)
    datasets = data_lib.make_datasets(data, 16, AUGMENT, seed=3)
    import tempfile

    fed = distill.distillation_datasets(
        distiller, datasets, kd, 3, os.path.join(tempfile.mkdtemp(), "run"), teacher_view=view
    )
    x, y = next(iter(fed["train"]))
    ids = data_lib.epoch_views(AUGMENT, 32, (28, 28, 1), 3, 0, 16)["order"].numpy()[:16]
    return data, x, y, ids, teacher


def test_inconsistent_view_feeds_the_teachers_logits_on_the_clean_images():
    data, x, y, ids, teacher = _teacher_views("clean", cache_views=0)
    fed = y["teacher_logits"].numpy()[:, 0]
    clean = data_lib.preprocess(data.x_train[ids])
    np.testing.assert_allclose(fed, teacher(clean, training=False).numpy(), rtol=1e-5, atol=1e-5)
    # The student's batch is the augmented view, which the teacher did not see.
    on_view = teacher(x, training=False).numpy()
    assert np.abs(fed - on_view).max() > 1e-2
    assert not np.allclose(x.numpy(), clean.numpy())
    # Same order and same augmented images as the training without a teacher.
    plain_x, plain_y = next(iter(data_lib.make_datasets(data, 16, AUGMENT, seed=3)["train"]))
    np.testing.assert_array_equal(x.numpy(), plain_x.numpy())
    np.testing.assert_array_equal(y["label"].numpy(), data.y_train[ids])


def test_consistent_view_feeds_the_teachers_logits_on_the_augmented_images():
    data, x, y, ids, teacher = _teacher_views("same", cache_views=2)
    fed = y["teacher_logits"].numpy()[:, 0]
    np.testing.assert_allclose(fed, teacher(x, training=False).numpy(), rtol=2e-3, atol=2e-3)
    clean = teacher(data_lib.preprocess(data.x_train[ids]), training=False).numpy()
    assert np.abs(fed - clean).max() > 1e-2
    with pytest.raises(ValueError, match="teacher_view must be one of"):
        _teacher_views("student", cache_views=0)


class _OptimizerSnapshot(keras.callbacks.Callback):
    """The optimizer's variables (iterations, Adam moments) and learning rate,
    at train begin (after fit restored a state) or train end."""

    def __init__(self, when):
        super().__init__()
        self.when = when

    def _take(self):
        opt = self.model.optimizer
        self.iterations = int(opt.iterations.numpy())
        self.variables = [v.numpy().copy() for v in opt.variables]
        schedule = opt.get_config()["learning_rate"]
        self.schedule = schedule["config"]
        self.lr = float(keras.optimizers.schedules.deserialize(schedule)(self.iterations))

    def on_train_begin(self, logs=None):
        if self.when == "begin":
            self._take()

    def on_train_end(self, logs=None):
        if self.when == "end":
            self._take()


def test_stopped_at_an_epoch_then_continued_keeps_optimizer_and_schedule(tmp_path):
    """A 3-epoch schedule stopped after 1 epoch (until_epoch) and continued from a
    copy of its state (successive halving's promotion) ends like 3 epochs in one go."""
    data = tiny_dataset(64, (8, 8, 1), 3)
    config = train_lib.TrainConfig(epochs=3, optimizer="adam", learning_rate=1e-2, warmup_epochs=1)
    datasets = data_lib.make_datasets(data, 16, seed=0)
    steps = 4  # 64 examples / 16

    def build():
        keras.utils.set_random_seed(0)
        return models.build("cnn", (8, 8, 1), 3, width=0.25)

    whole = build()
    train_lib.fit(whole, datasets, config, str(tmp_path / "whole"), verbose=0)

    first, at_stop = build(), _OptimizerSnapshot("end")
    train_lib.fit(
        first,
        datasets,
        config,
        str(tmp_path / "first"),
        verbose=0,
        until_epoch=1,
        extra_callbacks=[at_stop],
    )
    progress = train_lib.read_progress(str(tmp_path / "first"))
    assert progress["epochs_done"] == 1 and progress["finished"] is False
    assert at_stop.iterations == steps
    # The schedule is the 3-epoch one: after the 1-epoch warm-up it is at its peak.
    assert at_stop.lr == pytest.approx(1e-2)

    assert train_lib.copy_state(str(tmp_path / "first"), str(tmp_path / "second"))
    assert not train_lib.copy_state(str(tmp_path / "nothing"), str(tmp_path / "third"))
    second, at_restart = build(), _OptimizerSnapshot("begin")
    out = train_lib.fit(
        second, datasets, config, str(tmp_path / "second"), verbose=0, extra_callbacks=[at_restart]
    )
    assert out["initial_epoch"] == 1
    assert at_restart.iterations == steps
    assert at_restart.lr == pytest.approx(at_stop.lr)
    assert at_restart.schedule == at_stop.schedule
    assert at_stop.schedule["decay_steps"] + at_stop.schedule["warmup_steps"] == 3 * steps
    # iterations, then Adam's m and v of every trainable weight, in the same order.
    assert len(at_restart.variables) == len(at_stop.variables)
    assert len(at_stop.variables) == 1 + 2 * len(second.trainable_weights)
    for i, (restored, saved) in enumerate(zip(at_restart.variables, at_stop.variables)):
        np.testing.assert_array_equal(restored, saved, err_msg=f"optimizer variable {i}")
    assert any(np.abs(v).sum() > 0 for v in at_stop.variables[1:])
    assert train_lib.read_progress(str(tmp_path / "second"))["finished"] is True
    for a, b in zip(second.get_weights(), whole.get_weights()):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    # A restart from scratch (fresh Adam, fresh schedule) does not give these weights.
    restarted = build()
    restarted.set_weights(first.get_weights())
    train_lib.fit(
        restarted,
        datasets,
        dataclasses.replace(config, epochs=2, warmup_epochs=0),
        str(tmp_path / "restarted"),
        verbose=0,
    )
    assert not all(
        np.allclose(a, b, atol=1e-6) for a, b in zip(restarted.get_weights(), whole.get_weights())
    )


def _tiny_fit(run_dir, **model_kwargs):
    """A 1-epoch fit of a tiny cnn in `run_dir`: (student, fit result)."""
    data = tiny_dataset(32, (8, 8, 1), 3)
    datasets = data_lib.make_datasets(data, 16, seed=0)
    keras.utils.set_random_seed(0)
    student = models.build("cnn", (8, 8, 1), 3, **dict(dict(width=0.25), **model_kwargs))
    config = train_lib.TrainConfig(epochs=1, seed=0)
    return student, train_lib.fit(student, datasets, config, str(run_dir), verbose=0)


@pytest.fixture(scope="module")
def clean_fit(tmp_path_factory):
    student, _ = _tiny_fit(tmp_path_factory.mktemp("clean"))
    return student.get_weights()


CORRUPT_PROGRESS = {
    "unparsable": '{\n "epochs_done": 1,\n "history" {}\n}',
    "not an object": "[1, 2]",
    "a key missing": '{"epochs_done": 1, "history": {}, "finished": false}',
    "no checkpoint": json.dumps(
        {
            "epochs_done": 1,
            "history": {},
            "train_time_s": 1.0,
            "checkpoint": "checkpoints/epoch-1",
            "finished": False,
        }
    ),
}


@pytest.mark.parametrize("kind", [*CORRUPT_PROGRESS, "wider model", "model with dropout"])
def test_a_corrupt_progress_file_is_set_aside_and_the_fit_starts_again(
    tmp_path, capsys, clean_fit, kind
):
    run_dir = tmp_path / "run"
    if kind in CORRUPT_PROGRESS:
        run_dir.mkdir()
        (run_dir / train_lib.PROGRESS_FILE).write_text(CORRUPT_PROGRESS[kind])
    elif kind == "wider model":  # A complete state that does not fit this model.
        _tiny_fit(run_dir, width=0.5)
    else:  # Its weights fit, its random generator has no place: read in part, then failed.
        _tiny_fit(run_dir, dropout=0.3)
    capsys.readouterr()
    student, out = _tiny_fit(run_dir)
    assert out["initial_epoch"] == 0 and len(out["history"]["loss"]) == 1
    assert train_lib.read_progress(str(run_dir))["finished"] is True
    aside = list(run_dir.glob(f"{train_lib.PROGRESS_FILE}.corrupt-*"))
    assert len(aside) == 1
    lines = [line for line in capsys.readouterr().out.splitlines() if "corrupt" in line]
    path = str(run_dir / train_lib.PROGRESS_FILE)
    assert len(lines) == 1 and f"{path} is corrupt (" in lines[0], lines
    assert str(aside[0]) in lines[0] and "starts again from its first epoch" in lines[0]
    # Trained from its initial weights, as in a fresh run directory (a failed
    # restore put back what it had partly read).
    for a, b in zip(student.get_weights(), clean_fit):
        np.testing.assert_array_equal(a, b)


def test_a_resumed_fit_says_so(tmp_path, capsys):
    """A fit continued from progress.json prints one line naming the run, the
    epoch it continues at and the total; a fresh fit prints none."""
    data = tiny_dataset(32, (8, 8, 1), 3)
    config = train_lib.TrainConfig(epochs=2, optimizer="adam", learning_rate=1e-2)
    datasets = data_lib.make_datasets(data, 16, seed=0)
    model = models.build("cnn", (8, 8, 1), 3, width=0.25)
    run_dir = str(tmp_path / "student-a1")
    train_lib.fit(model, datasets, config, run_dir, verbose=0, until_epoch=1)
    assert "resuming" not in capsys.readouterr().out
    train_lib.fit(model, datasets, config, run_dir, verbose=0)
    lines = [line for line in capsys.readouterr().out.splitlines() if "resuming" in line]
    assert lines == ["  ... resuming student-a1 from epoch 2 of 2"]
    train_lib.fit(model, datasets, config, run_dir, verbose=0)
    assert "resuming" not in capsys.readouterr().out  # Finished: nothing to resume.
    other = str(tmp_path / "b2")
    train_lib.fit(model, datasets, config, other, verbose=0, until_epoch=1)
    train_lib.fit(model, datasets, config, other, verbose=0, name="student plain")
    assert "  ... resuming student plain from epoch 2 of 2" in capsys.readouterr().out
