"""Own students: a saved model file (tf_keras or Keras 3) or a MODULE:FUNCTION
builder, checked against the data before any data is loaded, trained from
scratch (or from the file's weights) through the pipeline, and keyed in the
run cache by the file's digest or the builder's name, arguments and source."""

import numpy as np
import pytest
from conftest import tiny_dataset, tiny_pipeline_config, trivial_fit

from kd_keras.app import pipeline, variants
from kd_keras.keras_compat import keras, keras3
from kd_keras.models import own

BUILDER_MODULE = """
from kd_keras.keras_compat import keras


def tiny(input_shape, num_classes, width=4):
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(width, 3, name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes)(x))
"""


def _saved(path, classes=10, softmax=True, seed=0):
    """A tiny tf_keras functional model saved at `path`; returns it."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(3, 3, name="conv")(inputs)
    x = keras.layers.Flatten()(x)
    out = keras.layers.Dense(classes, activation="softmax" if softmax else None, name="head")(x)
    model = keras.Model(inputs, out)
    model.save(path)
    return model


def _student_rows(results):
    return [r for r in results["models"] if r["role"] == "student"]


@pytest.mark.parametrize("init", ["scratch", "file"])
def test_a_saved_student_trains_its_architecture_from_scratch_or_its_weights(
    tmp_path, monkeypatch, init
):
    trivial_fit(monkeypatch)  # Weights stay as built: what the student started from.
    path = str(tmp_path / "student.keras")
    saved = _saved(path)
    config = tiny_pipeline_config(
        str(tmp_path / "work"), student=path, student_kwargs={}, student_init=init, kd_mode="off"
    )
    todo = pipeline.validate(config)
    assert todo[0].student == path and todo[0].student_init == init
    results = pipeline.run(config, prepared=(tiny_dataset(n=32), todo))
    (row,) = _student_rows(results)
    assert row["params"] == saved.count_params()
    trained = variants.load_model(f"{row['run_dir']}/model.keras")
    kernel = trained.get_layer("conv").get_weights()[0]
    same = np.array_equal(kernel, saved.get_layer("conv").get_weights()[0])
    assert same == (init == "file")
    assert trained.layers[-1].activation is keras.activations.linear  # Softmax removed.
    spec = variants.base_spec(
        pipeline.variant_context(config, tiny_dataset(n=32), [], []), todo[0], config.student_train
    )
    assert spec["architecture"] == own.digest(path)
    assert spec.get("init") == (None if init == "scratch" else "file")


def test_another_file_at_the_same_path_retrains(tmp_path, monkeypatch):
    trivial_fit(monkeypatch)
    path = str(tmp_path / "student.h5")
    _saved(path, seed=0)
    config = tiny_pipeline_config(
        str(tmp_path / "work"), student=path, student_kwargs={}, kd_mode="off"
    )
    data = tiny_dataset(n=32)
    first = _student_rows(pipeline.run(config, prepared=(data, pipeline.validate(config))))
    again = _student_rows(pipeline.run(config, prepared=(data, pipeline.validate(config))))
    assert again[0]["reused"] and again[0]["run_dir"] == first[0]["run_dir"]
    _saved(path, seed=1)  # Other weights in the same file: another digest.
    other = _student_rows(pipeline.run(config, prepared=(data, pipeline.validate(config))))
    assert not other[0]["reused"] and other[0]["run_dir"] != first[0]["run_dir"]


def test_a_builder_is_imported_and_called_with_the_student_args(tmp_path, monkeypatch):
    trivial_fit(monkeypatch)
    (tmp_path / "my_students.py").write_text(BUILDER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    config = tiny_pipeline_config(
        str(tmp_path / "work"),
        student="my_students:tiny",
        student_kwargs={"width": 3},
        kd_mode="both",
    )
    todo = pipeline.validate(config)
    results = pipeline.run(config, prepared=(tiny_dataset(n=32), todo))
    rows = _student_rows(results)
    assert [r["kd"] for r in rows] == [False, True]
    trained = variants.load_model(f"{rows[0]['run_dir']}/model.keras")
    assert trained.get_layer("conv").filters == 3
    ctx = pipeline.variant_context(config, tiny_dataset(n=32), [], [])
    spec = variants.base_spec(ctx, todo[0], config.student_train)
    assert spec["model"] == "my_students:tiny" and spec["kwargs"] == {"width": 3}
    assert spec["architecture"] == own.digest("my_students:tiny")
    wider = pipeline.PipelineConfig(**dict(vars(config), student_kwargs={"width": 5}))
    wider_spec = variants.base_spec(ctx, pipeline.validate(wider)[0], config.student_train)
    assert wider_spec != spec


def test_a_keras3_student_is_rebuilt_as_tf_keras(tmp_path):
    k3 = keras3()
    inputs = k3.Input((28, 28, 1))
    a = k3.layers.Conv2D(4, 3, padding="same")(inputs)
    b = k3.layers.Conv2D(4, 1)(inputs)
    x = k3.layers.BatchNormalization()(k3.layers.Add()([a, b]))
    x = k3.layers.Dense(10)(k3.layers.GlobalAveragePooling2D()(x))
    original = k3.Model(inputs, x)
    path = str(tmp_path / "k3.keras")
    original.save(path)
    images = np.random.default_rng(0).random((2, 28, 28, 1), dtype=np.float32)
    kept = own.build(path, (28, 28, 1), 10, init="file")
    assert isinstance(kept, keras.Model)
    np.testing.assert_allclose(kept(images), original(images), atol=1e-5)
    fresh = own.build(path, (28, 28, 1), 10)
    assert fresh.count_params() == original.count_params()
    assert not np.allclose(fresh(images), original(images), atol=1e-3)


@pytest.mark.parametrize(
    "value, init, fragments",
    [
        ("/no/such/student.keras", "scratch", ["does not exist"]),
        ("no_such_module:build", "scratch", ["cannot import module 'no_such_module'"]),
        ("kd_keras.models.own:no_such_function", "scratch", ["has no function"]),
        ("cnn", "file", ["needs a saved model file"]),
    ],
)
def test_bad_own_students_are_refused_in_one_line_naming_the_flag(value, init, fragments):
    with pytest.raises(ValueError) as e:
        config = tiny_pipeline_config(
            "/tmp/unused", student=value, student_kwargs={}, student_init=init
        )
        pipeline.validate(config)
    message = str(e.value)
    assert message.startswith(f"--student={value}") and "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_a_student_of_the_wrong_output_size_is_refused(tmp_path):
    path = str(tmp_path / "five.keras")
    _saved(path, classes=5)
    config = tiny_pipeline_config(str(tmp_path / "w"), student=path, student_kwargs={})
    with pytest.raises(ValueError, match=r"--student=.*gives outputs of shape \(5,\).*10 classes"):
        pipeline.validate(config)


def test_a_keras3_student_tf_keras_cannot_rebuild_is_refused_saying_what_to_do(tmp_path):
    k3 = keras3()

    @k3.saving.register_keras_serializable(package="own_student_test")
    class Halving(k3.layers.Layer):
        def call(self, x):
            return x * 0.5

    inputs = k3.Input((28, 28, 1))
    outputs = k3.layers.Dense(10)(k3.layers.Flatten()(Halving()(inputs)))
    path = str(tmp_path / "custom3.keras")
    k3.Model(inputs, outputs).save(path)
    with pytest.raises(ValueError) as e:
        own.build(path, (28, 28, 1), 10)
    message = str(e.value)
    assert "Keras 3 model that tf_keras cannot rebuild" in message and "Halving" in message
    assert "save it with tf_keras" in message and "MODULE:FUNCTION" in message
    assert "\n" not in message
