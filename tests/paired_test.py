"""Paired runs: the KD and no-KD runs of one seed see identical batches.

The study runs seed by seed, technique by technique, no-KD then KD, after
training or loading the teacher; tf.data's shuffle depends on the global seed
at the moment the pipeline is built. The test records the labels of the
first batches every `fit` sees, in the study's own order, with the teacher
trained in the process and with it loaded from the cache.
"""

import os
import shutil

import numpy as np
import pytest
from conftest import tiny_dataset, tiny_pipeline_config

from kd_keras.app.study import runner
from kd_keras.keras_compat import keras

BATCHES = 3


def _study(workdir, seeds=(0, 1)):
    p = tiny_pipeline_config(workdir, batch_size=8)
    return runner.StudyConfig(pipeline=p, techniques=("none",), seeds=seeds, bagging_members=0)


def _record(monkeypatch):
    """Replaces keras.Model.fit by one that notes the first batches' labels."""
    seen = []
    real_fit = keras.Model.fit

    def fit(self, x=None, *args, **kwargs):
        labels = []
        for _, y in x.take(BATCHES):
            labels.append(np.asarray(y["label"] if isinstance(y, dict) else y))
        seen.append((self.__class__.__name__, np.concatenate(labels)))
        return real_fit(self, x, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "fit", fit)
    return seen


def _check_pairs(seen, study, teacher_trained):
    students = seen[1:] if teacher_trained else seen
    assert len(students) == 2 * len(study.seeds)  # no-KD, KD per seed, in study order
    for i, seed in enumerate(study.seeds):
        (plain_kind, plain), (kd_kind, kd) = students[2 * i], students[2 * i + 1]
        assert (plain_kind, kd_kind) == ("Functional", "Distiller")
        np.testing.assert_array_equal(plain, kd, err_msg=f"seed {seed}: KD saw other batches")
    if len(study.seeds) > 1:  # Different seeds do see different batches (the check can fail).
        assert not np.array_equal(students[0][1], students[2][1])


@pytest.mark.slow(30)
def test_kd_and_no_kd_runs_of_a_seed_see_the_same_batches(tmp_path, monkeypatch):
    data = tiny_dataset(n=64)
    monkeypatch.setattr(runner, "load_data", lambda config: data)
    seen = _record(monkeypatch)
    first = str(tmp_path / "first")
    study = _study(first)
    runner.run(study)
    assert seen[0][0] == "Functional"  # The teacher trained here, first.
    _check_pairs(seen, study, teacher_trained=True)

    # Again in a fresh workdir whose teacher comes from the cache (seed 1 alone).
    second = str(tmp_path / "second")
    os.makedirs(os.path.join(second, "runs"))
    for name in os.listdir(os.path.join(first, "runs")):
        if name.startswith("teacher"):
            shutil.copytree(os.path.join(first, "runs", name), os.path.join(second, "runs", name))
    seen.clear()
    again = _study(second, seeds=(1,))
    runner.run(again)
    _check_pairs(seen, again, teacher_trained=False)


def test_a_teacher_cache_shorter_than_training_warns_that_pairing_stops_at_its_views(tmp_path):
    from kd_keras import data as data_lib
    from kd_keras import distill
    from kd_keras import train as train_lib
    from kd_keras.app import pipeline

    def config(views, epochs=6, crop=2, kd_mode="both"):
        return tiny_pipeline_config(
            str(tmp_path),
            student_train=train_lib.TrainConfig(epochs=epochs),
            student_augment=data_lib.AugmentConfig(crop_padding=crop),
            kd=distill.KDConfig(teacher_cache_views=views),
            kd_mode=kd_mode,
        )

    (line,) = pipeline.pairing_warnings(config(2))
    assert "--teacher_cache_views=2 < --student_epochs=6" in line
    assert "--teacher_cache_views=6" in line
    assert pipeline.pairing_warnings(config(6)) == []  # one view per epoch: paired
    assert pipeline.pairing_warnings(config(0)) == []  # online teacher: paired
    assert pipeline.pairing_warnings(config(2, crop=0)) == []  # nothing to replay
    assert pipeline.pairing_warnings(config(2, kd_mode="on")) == []  # no plain run
    assert len(pipeline.pairing_warnings(config(2, kd_mode="on"), study=True)) == 1
