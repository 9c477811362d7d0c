"""--kd_select: the KD setting is chosen on validation and used by the KD students."""

import glob
import os

import numpy as np
import pytest
from conftest import tiny_dataset, tiny_pipeline_config

from kd_keras import data as data_lib
from kd_keras import runs
from kd_keras.app import kd_selection, pipeline
from kd_keras.keras_compat import keras


def _config(workdir, grid):
    return tiny_pipeline_config(workdir, kd_mode="both", kd_select=grid)


@pytest.mark.slow(20)
def test_selection_scores_on_validation_and_the_kd_student_uses_the_winner(tmp_path):
    data = tiny_dataset(n=64)
    grid = kd_selection.SelectionConfig(losses=("kd", "dkd"), temperatures=(2.0,), alphas=(0.5,))
    workdir = str(tmp_path / "work")
    config = _config(workdir, grid)
    results = pipeline.run(config, prepared=(data, pipeline.validate(config)))
    selection = results["kd_selection"]
    assert [(r["loss"], r["temperature"], r["alpha"]) for r in selection["table"]] == [
        ("kd", 2.0, 0.5),
        ("dkd", 2.0, 0.5),
    ]
    best = max(selection["table"], key=lambda r: r["val_accuracy"])
    assert selection["chosen"]["loss"] == best["loss"]
    # Each point's score is its model's accuracy on the validation split.
    x_val = data_lib.preprocess(data.x_val).numpy()
    points = [p for p in glob.glob(os.path.join(workdir, "runs", "select-*")) if os.path.isdir(p)]
    assert len(points) == len(selection["table"]) + 1  # and the no-KD reference
    for path in points:
        result = runs.read_json(os.path.join(path, "result.json"))
        model = keras.models.load_model(os.path.join(path, "model.keras"), compile=False)
        val_acc = float(np.mean(np.argmax(model.predict(x_val, verbose=0), -1) == data.y_val))
        assert result["val_accuracy"] == pytest.approx(val_acc, abs=1e-6)
        assert result["test_accuracy"] is None
    # The KD student trained with the chosen loss.
    kd_row = next(r for r in results["models"] if r.get("kd") is True)
    spec = runs.read_json(os.path.join(kd_row["run_dir"], "spec.json"))
    assert spec["kd"]["losses"] == [selection["chosen"]["loss"]]
    assert spec["kd"]["temperature"] == 2.0 and spec["kd"]["alpha"] == 0.5
    assert "chosen" in open(os.path.join(workdir, "results.md")).read()

    # A rerun trains nothing: the oracle and every point are cached.
    again = pipeline.run(config, prepared=(data, pipeline.validate(config)))
    assert again["kd_selection"] == selection
    assert all(r["reused"] for r in again["models"])


def test_a_bad_grid_is_one_clear_error():
    with pytest.raises(ValueError, match="--kd_select_losses=hint"):
        kd_selection.SelectionConfig(losses=("hint",))
    with pytest.raises(ValueError, match="--kd_select_alphas"):
        kd_selection.SelectionConfig(alphas=(1.5,))


@pytest.mark.slow(20)
def test_a_study_chooses_on_the_first_seeds_validation_and_every_kd_run_uses_the_winner(
    tmp_path, monkeypatch
):
    from kd_keras.app.study import runner

    data = tiny_dataset(n=64)
    monkeypatch.setattr(runner, "load_data", lambda config: data)
    grid = kd_selection.SelectionConfig(losses=("kd", "dist"), temperatures=(2.0,), alphas=(0.3,))
    workdir = str(tmp_path / "study")
    study = runner.StudyConfig(
        pipeline=tiny_pipeline_config(workdir, batch_size=8, kd_select=grid),
        techniques=("none",),
        seeds=(1, 2),
        bagging_members=0,
    )
    runner.validate(study)
    results = runner.run(study)
    selection = results["kd_selection"]
    chosen = selection["chosen"]
    best = max(selection["table"], key=lambda r: r["val_accuracy"])
    assert chosen["loss"] == best["loss"] and chosen["alpha"] == 0.3
    # Every KD run distilled with the winner; no plain run depends on it.
    for row in results["runs"]:
        spec = runs.read_json(os.path.join(row["run_dir"], "spec.json"))
        if row["kd"]:
            assert spec["kd"]["losses"] == [chosen["loss"]] and spec["kd"]["alpha"] == 0.3
        else:
            assert spec["kd"] is None
    # The points trained the first seed's plain student, scored on validation.
    points = glob.glob(os.path.join(workdir, "runs", "select-*", "spec.json"))
    assert len(points) == 3
    for path in points:
        spec = runs.read_json(path)
        assert spec["train"]["seed"] == 1 and spec["scored_on"] == "validation"
    assert "## The KD setting" in open(os.path.join(workdir, "report.md")).read()


def test_a_distributed_study_refuses_kd_select_before_loading_data(monkeypatch):
    from kd_keras.app.study import runner

    monkeypatch.setenv("KERASTUNER_ORACLE_IP", "127.0.0.1")
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "tuner0")
    monkeypatch.setattr(runner, "load_data", lambda config: pytest.fail("data was loaded"))
    study = runner.StudyConfig(
        pipeline=tiny_pipeline_config("unused", kd_select=kd_selection.SelectionConfig()),
        techniques=("none",),
        seeds=(0,),
        bagging_members=0,
    )
    with pytest.raises(ValueError, match="--kd_select chooses the KD setting in one process"):
        runner.run(study)


@pytest.mark.slow(15)
def test_an_interrupted_sweep_resumes_to_the_whole_grid(tmp_path, monkeypatch):
    data = tiny_dataset(n=64)
    grid = kd_selection.SelectionConfig(losses=("kd",), temperatures=(1.0, 2.0, 4.0), alphas=(0.5,))
    workdir = str(tmp_path / "work")
    config = _config(workdir, grid)
    real = kd_selection.validation_accuracy
    calls = []

    def interrupted(ctx, variant, kd, train_cfg):
        calls.append(kd)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(ctx, variant, kd, train_cfg)

    monkeypatch.setattr(kd_selection, "validation_accuracy", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pipeline.run(config, prepared=(data, pipeline.validate(config)))
    monkeypatch.setattr(kd_selection, "validation_accuracy", real)
    first = glob.glob(os.path.join(workdir, "runs", "select-kd-T1-*", "result.json"))
    assert len(first) == 1
    stamp = os.path.getmtime(first[0])

    results = pipeline.run(config, prepared=(data, pipeline.validate(config)))
    table = results["kd_selection"]["table"]
    assert [r["temperature"] for r in table] == [1.0, 2.0, 4.0]
    assert os.path.getmtime(first[0]) == stamp  # The finished point was reused.
    report = open(os.path.join(workdir, "results.md")).read()
    assert report.count("| kd |") == 3 and report.count("chosen") >= 1


class _Sealed:
    """A split that has a length and nothing else: reading it fails the test."""

    def __init__(self, n):
        self._n = n

    def __len__(self):
        return self._n

    def _read(self, *args, **kwargs):
        raise AssertionError("the test split was read while choosing")

    __getitem__ = __array__ = __iter__ = _read

    def __getattr__(self, name):
        raise AssertionError(f"the test split was read while choosing (.{name})")


def _choice_data():
    """Tiny data whose validation labels favour class 2 and test labels class 0."""
    import dataclasses

    data = tiny_dataset(n=32)
    y_val = np.array([2, 2, 2, 1, 1, 0, 3, 3], np.int64)
    y_test = np.array([0] * 8 + [1] * 4 + [2] * 2 + [3] * 2, np.int64)
    return dataclasses.replace(data, y_val=y_val, y_test=y_test)


def _select(workdir, data, grid):
    from kd_keras import models
    from kd_keras.app import variants

    config = tiny_pipeline_config(workdir, kd_select=grid)
    teacher = models.build("cnn", data.input_shape, data.num_classes, width=0.25)
    ctx = pipeline.variant_context(config, data, [teacher], ["teacher"])
    plain = variants.Variant(student="cnn", student_kwargs=(("width", 0.25),), seed=0)
    return kd_selection.select(ctx, plain, config.student_train, grid)


@pytest.mark.slow(15)
def test_the_kd_setting_is_chosen_without_reading_the_test_split(tmp_path, monkeypatch):
    """Each point's "training" makes its student predict one class (T=1: class
    0, T=2: 1, T=4: 2; no KD: 3), so its real accuracy on a split is that
    class's share there: validation picks T=4, the test split would pick
    T=1. With the test images and labels sealed (reading them fails), the
    choice and every score are the clean run's."""
    import dataclasses

    from kd_keras.train import cached

    classes = {1.0: 0, 2.0: 1, 4.0: 2}

    def one_class_fit(model, datasets, config, run_dir, kd=None, **kwargs):
        c = 3 if kd is None else classes[kd.temperature]
        logits = model.get_layer("logits")
        kernel, bias = logits.get_weights()
        logits.set_weights([np.zeros_like(kernel), 10.0 * np.eye(len(bias))[c]])
        return {"history": {}, "train_time_s": 0.0, "initial_epoch": 0}

    monkeypatch.setattr(cached, "fit", one_class_fit)
    grid = kd_selection.SelectionConfig(losses=("kd",), temperatures=(1.0, 2.0, 4.0), alphas=(0.5,))
    data = _choice_data()
    chosen, selection = _select(str(tmp_path / "clean"), data, grid)
    assert [r["val_accuracy"] for r in selection["table"]] == pytest.approx([1 / 8, 2 / 8, 3 / 8])
    assert selection["no_kd_val_accuracy"] == pytest.approx(2 / 8)
    assert selection["chosen"]["temperature"] == chosen.temperature == 4.0
    # On the test split the same points rank the other way round.
    test_share = [np.mean(data.y_test == c) for c in (0, 1, 2)]
    assert int(np.argmax(test_share)) == 0
    # The points' results hold no test accuracy: they were scored on validation only.
    for path in glob.glob(os.path.join(str(tmp_path / "clean"), "runs", "select-*", "result.json")):
        assert runs.read_json(path)["test_accuracy"] is None

    sealed = dataclasses.replace(
        data, x_test=_Sealed(len(data.x_test)), y_test=_Sealed(len(data.y_test))
    )
    # The run keys hash the splits' contents (which data a run is on, not a
    # choice); the sealed data keeps the clean data's identity.
    sealed.__dict__["content_digest"] = data.content_digest
    chosen_sealed, selection_sealed = _select(str(tmp_path / "sealed"), sealed, grid)
    assert chosen_sealed == chosen
    assert selection_sealed == selection
