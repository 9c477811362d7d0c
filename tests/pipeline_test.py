"""training.train_or_load: a cached run is found again, also after the workdir moved."""

import os
import shutil

from conftest import tiny_dataset

from kd_keras import data as data_lib
from kd_keras import models, training


def _train(workdir, datasets):
    cfg = training.TrainConfig(epochs=1, learning_rate=1e-3)
    spec = {"role": "student", "model": "cnn", "width": 0.25}
    build = lambda: models.build("cnn", (28, 28, 1), 10, width=0.25)  # noqa: E731
    return training.train_or_load(workdir, "student", spec, build, datasets, cfg, verbose=0)


def test_moved_workdir_reuses_runs_and_reports_where_they_are_now(tmp_path):
    datasets = data_lib.make_datasets(tiny_dataset(n=32), batch_size=16)
    first_dir = str(tmp_path / "first")
    model, first = _train(first_dir, datasets)
    assert not first["reused"] and first["run_dir"].startswith(first_dir)

    moved_dir = str(tmp_path / "moved")
    shutil.move(first_dir, moved_dir)
    reloaded, again = _train(moved_dir, datasets)
    assert again["reused"]
    assert again["test_accuracy"] == first["test_accuracy"]
    # Later stages write next to the run (measure.json, tflite/): it must be the moved one.
    assert again["run_dir"].startswith(moved_dir) and os.path.isdir(again["run_dir"])
    for a, b in zip(model.get_weights(), reloaded.get_weights()):
        assert (a == b).all()
