"""Cached runs: found again after the workdir moved, a corrupt one retrained, and
a parent with other weights retrains its dependents."""

import dataclasses
import json
import os
import shutil
import types

import pytest
from conftest import tiny_dataset, tiny_pipeline_config, trivial_fit

from kd_keras import data as data_lib
from kd_keras import models, runs
from kd_keras import train as train_lib
from kd_keras.app import pipeline, variants
from kd_keras.keras_compat import keras


def _train(workdir, datasets):
    cfg = train_lib.TrainConfig(epochs=1, learning_rate=1e-3)
    spec = {"role": "student", "model": "cnn", "width": 0.25}
    build = lambda: models.build("cnn", (28, 28, 1), 10, width=0.25)  # noqa: E731
    return train_lib.train_or_load(workdir, "student", spec, build, datasets, cfg, verbose=0)


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


def test_a_corrupt_cached_model_is_moved_aside_and_retrained(tmp_path, capsys):
    datasets = data_lib.make_datasets(tiny_dataset(n=32), batch_size=16)
    workdir = str(tmp_path / "work")
    _, first = _train(workdir, datasets)
    with open(os.path.join(first["run_dir"], "model.keras"), "wb") as f:
        f.write(b"not a zip archive")
    _, again = _train(workdir, datasets)
    assert not again["reused"] and again["run_dir"] == first["run_dir"]
    aside = [d for d in os.listdir(os.path.join(workdir, "runs")) if ".corrupt-" in d]
    assert len(aside) == 1
    out = capsys.readouterr().out
    assert os.path.basename(first["run_dir"]) in out and "corrupt" in out


def test_a_corrupt_result_is_set_aside_and_the_run_made_again_from_its_state(tmp_path, capsys):
    datasets = data_lib.make_datasets(tiny_dataset(n=32), batch_size=16)
    workdir = str(tmp_path / "work")
    _, first = _train(workdir, datasets)
    path = os.path.join(first["run_dir"], "result.json")
    with open(path, "w") as f:
        f.write('{"name": "student", "test_accuracy": ')
    capsys.readouterr()
    _, again = _train(workdir, datasets)
    assert not again["reused"] and again["run_dir"] == first["run_dir"]
    # Its finished training state was restored, not trained again.
    assert again["train_time_s"] == first["train_time_s"]
    assert again["weights_digest"] == first["weights_digest"]
    assert runs.load_result(first["run_dir"])["test_accuracy"] == first["test_accuracy"]
    aside = [n for n in os.listdir(first["run_dir"]) if n.startswith("result.json.corrupt-")]
    assert len(aside) == 1
    lines = [line for line in capsys.readouterr().out.splitlines() if "corrupt" in line]
    assert len(lines) == 1 and f"{path} is corrupt (not JSON: " in lines[0], lines


def _variants(workdir, data):
    config = tiny_pipeline_config(
        workdir,
        dataset="tiny",
        teacher_augment=data_lib.AugmentConfig(),
        kd_mode="on",
        techniques=("prune",),
        compress=variants.CompressSettings(epochs=1),
    )
    teachers, digests, teacher_rows = pipeline.train_teachers(config, data)
    ctx = pipeline.variant_context(config, data, teachers, digests)
    rows = [variants.train(ctx, v)[1] for v in pipeline.student_variants(config)]
    return teacher_rows[0], rows


@pytest.mark.slow(20)
def test_a_parent_with_other_weights_retrains_its_dependents(tmp_path):
    data = tiny_dataset(n=32)
    workdir = str(tmp_path / "work")
    teacher, rows = _variants(workdir, data)
    assert [r["label"] for r in rows] == ["none", "prune"]
    assert not any(r["reused"] for r in rows)
    _, again = _variants(workdir, data)
    assert all(r["reused"] for r in again)  # Unchanged: all reused.
    assert [r["run_dirs"] for r in again] == [r["run_dirs"] for r in rows]

    # The teacher's run now holds other weights (as a non-deterministic
    # retrain would leave it): every student and stage distilled from it
    # must be trained again, into new run directories.
    path = os.path.join(teacher["run_dir"], "model.keras")
    model = keras.models.load_model(path, compile=False)
    model.set_weights([w + 0.01 for w in model.get_weights()])
    model.save(path)
    result = runs.read_json(os.path.join(teacher["run_dir"], "result.json"))
    del result["weights_digest"]
    runs.write_json(os.path.join(teacher["run_dir"], "result.json"), result)
    new_teacher, retrained = _variants(workdir, data)
    assert new_teacher["weights_digest"] != teacher["weights_digest"]
    assert not any(r["reused"] for r in retrained)
    for old, new in zip(rows, retrained):
        assert not set(old["run_dirs"]) & set(new["run_dirs"])


def test_other_images_with_the_same_counts_retrain_every_run(tmp_path, monkeypatch):
    """A run's key holds the data's content digest: another validation split
    (same counts), a changed folder or limit retrains the teacher and every
    student instead of reusing runs trained on other images."""
    trivial_fit(monkeypatch)
    data = tiny_dataset(n=32)
    workdir = str(tmp_path / "work")
    config = tiny_pipeline_config(workdir, kd_mode="both")
    first = pipeline.run(config, prepared=(data, pipeline.validate(config)))["models"]
    again = pipeline.run(config, prepared=(data, pipeline.validate(config)))["models"]
    assert all(r["reused"] for r in again) and len(again) == len(first) == 3
    # One training image and one validation image trade places.
    x_train, x_val = data.x_train.copy(), data.x_val.copy()
    x_train[0], x_val[0] = data.x_val[0], data.x_train[0]
    y_train, y_val = data.y_train.copy(), data.y_val.copy()
    y_train[0], y_val[0] = data.y_val[0], data.y_train[0]
    other = data_lib.Dataset(
        "tiny", x_train, y_train, x_val, y_val, data.x_test, data.y_test, num_classes=10
    )
    moved = pipeline.run(config, prepared=(other, pipeline.validate(config)))["models"]
    assert not any(r["reused"] for r in moved)


def test_a_chain_that_cannot_wrap_the_student_is_refused_before_any_data(tmp_path, monkeypatch):
    """A searched student with squeeze-excite (a Multiply layer) and
    --techniques=prune,qat: validation applies the chain to a copy of the
    student and refuses it in one line naming the layer and the technique;
    the data is never loaded. Without squeeze-excite the same chain passes."""
    from nas import space as search_space

    def searched(se):
        space = search_space.StudentSpace(
            (28, 28, 1),
            10,
            min_stages=2,
            max_stages=2,
            max_blocks=1,
            filters=(4,),
            kernel_sizes=(3,),
            conv_types=("standard",),
            downsampling=("maxpool",),
            se_ratios=(se,),
            activations=("relu",),
            head_units=(0,),
            dropouts=(0.0,),
        )
        values = {"stages": 2, "stage1_filters": 4, "stage1_blocks": 1, "stage2_filters": 4}
        values.update(stage2_blocks=1, conv="standard", kernel_size=3, downsample="maxpool")
        values.update(se=se, activation="relu", head_units=0, dropout=0.0)
        path = tmp_path / f"se{se}.json"
        path.write_text(json.dumps({"values": values, "search_space": space.get_config()}))
        return f"nas:{path}"

    def no_data(*args, **kwargs):
        raise AssertionError("data loaded before the configuration was validated")

    monkeypatch.setattr(data_lib.DataConfig, "load", no_data)
    config = tiny_pipeline_config(
        str(tmp_path / "work"), student=searched(4), student_kwargs={}, techniques=("prune", "qat")
    )
    with pytest.raises(ValueError) as raised:
        pipeline.prepare(config)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("--techniques=prune,qat on --student=nas:"), message
    assert "qat (its 'prune_preserve' scheme) cannot wrap layer 'block2' (Multiply)" in message
    plain = dataclasses.replace(config, student=searched(0))
    assert [v.label for v in pipeline.validate(plain)] == ["none", "none", "prune+qat", "prune+qat"]


def test_every_row_carries_its_validation_accuracy_and_old_runs_get_it_on_reuse(
    tmp_path, monkeypatch
):
    """Teacher and students report accuracy on the validation split beside
    the test split's (results.json and the results.md table); a run cached
    before it was kept gets it when reused; without a validation split it is
    None, a dash in the table."""
    import glob

    import numpy as np

    trivial_fit(monkeypatch)
    data = tiny_dataset(n=32)
    workdir = str(tmp_path / "work")
    config = tiny_pipeline_config(workdir, kd_mode="both")
    first = pipeline.run(config, prepared=(data, pipeline.validate(config)))["models"]
    x_val = data_lib.preprocess(data.x_val).numpy()
    for row in first:
        model = keras.models.load_model(runs.saved_model_path(row["run_dir"]), compile=False)
        expected = float(np.mean(np.argmax(model.predict(x_val, verbose=0), -1) == data.y_val))
        assert row["val_accuracy"] == pytest.approx(expected, abs=1e-6)
    assert "| Keras val acc | Keras test acc |" in open(os.path.join(workdir, "results.md")).read()

    # Runs written before val_accuracy was kept: computed on reuse, and stored.
    for path in glob.glob(os.path.join(workdir, "runs", "*", "result.json")):
        result = runs.read_json(path)
        del result["val_accuracy"]
        runs.write_json(path, result)
    again = pipeline.run(config, prepared=(data, pipeline.validate(config)))["models"]
    assert all(r["reused"] for r in again)
    assert [r["val_accuracy"] for r in again] == pytest.approx([r["val_accuracy"] for r in first])
    for path in glob.glob(os.path.join(workdir, "runs", "*", "result.json")):
        assert runs.read_json(path)["val_accuracy"] is not None

    no_val = dataclasses.replace(data, x_val=data.x_val[:0], y_val=data.y_val[:0])
    other = tiny_pipeline_config(str(tmp_path / "no_val"), kd_mode="off")
    rows = pipeline.run(other, prepared=(no_val, pipeline.validate(other)))["models"]
    assert [r["val_accuracy"] for r in rows] == [None, None]
    table = open(os.path.join(str(tmp_path / "no_val"), "results.md")).read()
    assert table.splitlines()[4].split(" | ")[3] == "–"


def test_a_stage_fine_tunes_at_its_share_of_the_students_learning_rate():
    run = train_lib.TrainConfig(epochs=30, learning_rate=3e-3, warmup_epochs=2)
    for scale, lr in ((None, 3e-4), (1.0, 3e-3), (0.5, 1.5e-3)):
        settings = variants.CompressSettings(
            epochs=4, **({} if scale is None else {"lr_scale": scale})
        )
        stage = variants.stage_config(types.SimpleNamespace(compress=settings), run)
        assert (stage.epochs, stage.warmup_epochs) == (4, 0)
        assert stage.learning_rate == pytest.approx(lr)
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(
            ValueError, match=f"compress_lr_scale must lie in \\(0, 1\\], got {bad}"
        ):
            variants.CompressSettings(lr_scale=bad)


def test_the_export_flags_reach_every_export_and_the_joint_timing(tmp_path, monkeypatch):
    calls = []

    def fake_export(model, out_dir, formats, **kwargs):
        calls.append(("export", kwargs))
        os.makedirs(out_dir, exist_ok=True)
        path = os.path.join(out_dir, "student.int8.tflite")
        open(path, "wb").close()
        return [{"format": "int8", "path": path, "threads": 1, "latency_us_median": 1.0}]

    def fake_together(files, example=None, **kwargs):
        calls.append(("together", kwargs))
        return {key: {"latency_us_median": 2.0} for key in files}

    monkeypatch.setattr(variants.export, "export_model", fake_export)
    monkeypatch.setattr(variants.export_measure, "latency_together", fake_together)
    data = tiny_dataset(n=16)
    model = models.build("cnn", (28, 28, 1), 10, width=0.25)
    settings = variants.ExportSettings(
        formats=("int8",), latency_warmup=3, xnnpack=False, int8_io=True
    )
    ctx = types.SimpleNamespace(export=settings, data=data)
    rows = [
        variants.measure_variant(ctx, model, (), str(tmp_path / f"run{i}"), data) for i in (0, 1)
    ]
    variants.time_together(rows, ctx)
    exports = [k for what, k in calls if what == "export"]
    assert len(exports) == 2
    assert all((k["warmup"], k["xnnpack"], k["int8_io"]) == (3, False, True) for k in exports)
    [joint] = [k for what, k in calls if what == "together"]
    assert (joint["warmup"], joint["xnnpack"]) == (3, False)
    # The settings key the cached measurement: the default-XNNPack figures are not reused.
    default = types.SimpleNamespace(export=variants.ExportSettings(formats=("int8",)), data=data)
    variants.measure_variant(default, model, (), str(tmp_path / "run0"), data)
    assert [what for what, _ in calls].count("export") == 3
    assert calls[-1][1]["xnnpack"] is True
