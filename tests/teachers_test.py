"""Teachers a user already has: every saved format loads as a logits model.

The test saves small teachers itself (tf_keras ``.keras`` and ``.h5``, Keras 3
``.keras``, a Keras 3 ``model.export()`` SavedModel, models ending in
softmax) and checks that the loaded teacher gives the original logits (or
log-probabilities), that shape mismatches name both sides, that feature
losses refuse an opaque teacher, and that ``kd_keras.main`` distils from
teachers given by path.
"""

import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from conftest import run_python

from kd_keras import data as data_lib
from kd_keras import runs
from kd_keras.distill import losses, teachers
from kd_keras.distill.distiller import Distiller
from kd_keras.keras_compat import keras, keras3, tf
from nas import teacher as nas_teacher

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAVE_DATA = (
    not data_lib.missing_idx_files(data_lib.DEFAULT_MANUAL_DIR)
    or os.environ.get("KD_KERAS_REQUIRE_DATA") == "1"
)
SHAPE, CLASSES = (28, 28, 1), 10


def tf_keras_model(softmax=False, shape=SHAPE, classes=CLASSES, seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape)
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu", name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(classes, activation="softmax" if softmax else None)(x)
    return keras.Model(inputs, outputs)


def keras3_model(softmax=False, shape=SHAPE, classes=CLASSES, seed=1):
    k3 = keras3()
    k3.utils.set_random_seed(seed)
    inputs = k3.Input(shape)
    x = k3.layers.Conv2D(4, 3, strides=2, activation="relu")(inputs)
    x = k3.layers.GlobalAveragePooling2D()(x)
    outputs = k3.layers.Dense(classes, activation="softmax" if softmax else None)(x)
    return k3.Model(inputs, outputs)


def images(n=16, seed=0):
    return np.random.default_rng(seed).random((n,) + SHAPE, dtype=np.float32)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """{name: (path, expected logits on images())} for every supported format."""
    d = tmp_path_factory.mktemp("teachers")
    x = images()
    out = {}
    plain = tf_keras_model()
    plain.save(d / "tf_keras.keras")
    plain.save(d / "tf_keras.h5")
    out["tf_keras.keras"] = (str(d / "tf_keras.keras"), plain.predict(x, verbose=0))
    out["tf_keras.h5"] = (str(d / "tf_keras.h5"), plain.predict(x, verbose=0))
    probs = tf_keras_model(softmax=True, seed=2)
    probs.save(d / "softmax.keras")
    out["softmax.keras"] = (str(d / "softmax.keras"), np.log(probs.predict(x, verbose=0)))
    k3 = keras3_model()
    k3.save(d / "keras3.keras")
    out["keras3.keras"] = (str(d / "keras3.keras"), np.asarray(k3(x, training=False)))
    k3.export(str(d / "keras3_export"), verbose=False)
    out["keras3_export"] = (str(d / "keras3_export"), np.asarray(k3(x, training=False)))
    k3_probs = keras3_model(softmax=True, seed=3)
    k3_probs.export(str(d / "keras3_softmax_export"), verbose=False)
    out["keras3_softmax_export"] = (
        str(d / "keras3_softmax_export"),
        np.log(np.asarray(k3_probs(x, training=False))),
    )
    return out


EXPECTED = {  # name: (format, softmax, layers readable)
    "tf_keras.keras": ("tf_keras", "no", True),
    "tf_keras.h5": ("tf_keras", "no", True),
    "softmax.keras": ("tf_keras", "pre-softmax tensor", True),
    "keras3.keras": ("keras3", "no", False),
    "keras3_export": ("saved_model", "no", False),
    "keras3_softmax_export": ("saved_model", "log of probabilities", False),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_format_loads_as_the_original_logits(saved, name):
    path, expected = saved[name]
    model, report = teachers.load_teacher(path, SHAPE, CLASSES)
    assert isinstance(model, keras.Model) and not model.trainable
    assert tuple(model.input_shape[1:]) == SHAPE and tuple(model.output_shape[1:]) == (CLASSES,)
    got = model.predict(images(), verbose=0)
    if EXPECTED[name][1] == "pre-softmax tensor":  # Logits up to a constant per row.
        got = tf.nn.log_softmax(got).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert (report["format"], report["softmax"], report["layers_readable"]) == EXPECTED[name]
    assert report["digest"] == teachers.file_digest(path) and report["params"] > 0


def test_a_foreign_teacher_distils_and_stays_frozen(saved):
    teacher, _ = teachers.load_teacher(saved["keras3.keras"][0], SHAPE, CLASSES)
    before = teacher.predict(images(), verbose=0)
    student = tf_keras_model(seed=5)
    distiller = Distiller(student, teacher, "kd", alpha=0.5)
    distiller.compile(optimizer=keras.optimizers.SGD(0.5))
    student_before = student.get_weights()[0].copy()
    distiller.fit(images(), np.arange(16) % CLASSES, batch_size=8, epochs=1, verbose=0)
    assert not np.allclose(student.get_weights()[0], student_before)
    np.testing.assert_array_equal(teacher.predict(images(), verbose=0), before)


def test_feature_losses_refuse_an_opaque_teacher(saved):
    teacher, _ = teachers.load_teacher(saved["keras3_export"][0], SHAPE, CLASSES)
    with pytest.raises(ValueError, match="opaque layer.*feature losses"):
        Distiller(tf_keras_model(seed=5), teacher, losses.HintLoss("conv", "conv"))
    # A tf_keras teacher keeps its layers: the same loss finds them.
    readable, _ = teachers.load_teacher(saved["tf_keras.keras"][0], SHAPE, CLASSES)
    Distiller(tf_keras_model(seed=5), readable, losses.HintLoss("conv", "conv"))


@pytest.mark.parametrize("name", ["tf_keras.h5", "keras3.keras", "keras3_export"])
def test_a_shape_or_class_mismatch_names_both(saved, name):
    path = saved[name][0]
    with pytest.raises(ValueError) as e:
        teachers.load_teacher(path, (32, 32, 3), CLASSES)
    assert "(28, 28, 1)" in str(e.value) and "(32, 32, 3)" in str(e.value)
    with pytest.raises(ValueError) as e:
        teachers.load_teacher(path, SHAPE, 7)
    assert "gives 10 classes" in str(e.value) and "7 classes" in str(e.value)
    with pytest.raises(ValueError, match="--teacher_model="):
        nas_teacher.load_teacher(path, SHAPE, 7)


def test_parse_teacher_and_file_digest(saved, tmp_path):
    assert teachers.parse_teacher("resnet") == ("resnet", [])
    paths = [saved["keras3.keras"][0], saved["keras3_export"][0]]
    assert teachers.parse_teacher(",".join(paths)) == (None, paths)
    with pytest.raises(ValueError, match="does not exist"):
        teachers.parse_teacher("/no/such/teacher.keras")
    with pytest.raises(ValueError, match="neither a registered model"):
        teachers.parse_teacher("resnet50")
    with pytest.raises(ValueError, match="not a .keras archive"):
        (tmp_path / "bad.keras").write_bytes(b"not a zip")
        teachers.load_teacher(str(tmp_path / "bad.keras"), SHAPE, CLASSES)
    # A directory's digest covers every file: one changed byte changes it.
    copy = tmp_path / "export"
    subprocess.run(["cp", "-r", saved["keras3_export"][0], str(copy)], check=True)
    digest = teachers.file_digest(str(copy))
    assert digest == teachers.file_digest(saved["keras3_export"][0])
    (copy / "fingerprint.pb").write_bytes(b"changed")
    assert teachers.file_digest(str(copy)) != digest


def _main(workdir, teacher):
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "kd_keras.main",
            "--flagfile=kd_keras/configs/smoke.flags",
            f"--teacher={teacher}",
            "--techniques=",
            "--export_formats=",
            "--kd=on",
            "--limit_train=128",
            "--val_size=64",
            "--limit_test=64",
            f"--workdir={workdir}",
        ],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=ROOT),
        capture_output=True,
        text=True,
        timeout=600,
    )


def _check_distilled(workdir, proc, paths):
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r["name"]: r for r in json.load(open(os.path.join(workdir, "results.json")))["models"]}
    digests = [teachers.file_digest(p) for p in paths]
    for i, (path, digest) in enumerate(zip(paths, digests)):
        row = rows[f"teacher{i}"]
        assert row["role"] == "teacher" and row["source"] == os.path.abspath(path)
        assert 0.0 <= row["test_accuracy"] <= 1.0 and row["weights_digest"] == digest
        assert runs.saved_model_path(row["run_dir"]) is None  # Loaded, never trained.
    assert "training teacher" not in proc.stdout
    kd = rows["none-kd-s0"]
    assert kd["kd"] and 0.0 <= kd["test_accuracy"] <= 1.0
    # Students key their runs by the teachers' file digests.
    assert runs.read_json(os.path.join(kd["run_dir"], "spec.json"))["teachers"] == digests
    return rows


@pytest.mark.skipif(not HAVE_DATA, reason="needs `apt-get install dataset-fashion-mnist`")
@pytest.mark.slow(20)
def test_main_distils_from_an_ensemble_of_every_format(saved, tmp_path):
    """One run of the entry point distils from teachers saved in every format
    (a Keras 3 .keras file among them), loaded, never trained."""
    names = ["keras3.keras", "tf_keras.keras", "tf_keras.h5", "softmax.keras"]
    names.append("keras3_softmax_export")
    paths = [saved[n][0] for n in names]
    proc = _main(tmp_path / "work", ",".join(paths))
    rows = _check_distilled(str(tmp_path / "work"), proc, paths)
    assert [rows[f"teacher{i}"]["softmax"] for i in range(len(paths))] == [
        EXPECTED[n][1] for n in names
    ]
    assert rows["teacher0"]["teacher_format"] == "keras3"
    assert "ends in softmax" in proc.stdout


def brightness_teacher(centers, shape):
    """A saved-model-like teacher that classifies by mean pixel value, for
    inputs in the units of `centers`: logit_k = 2 c_k m - c_k^2, so the
    nearest centre wins."""
    centers = np.asarray(centers, np.float32)
    inputs = keras.Input(shape)
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    x = keras.layers.Lambda(lambda t: tf.reduce_mean(t, -1, keepdims=True))(x)
    dense = keras.layers.Dense(len(centers), name="logits")
    model = keras.Model(inputs, dense(x))
    dense.set_weights([2 * centers[None, :], -(centers**2)])
    return model


def test_a_teacher_expecting_0_255_is_caught_and_rescaled():
    classes = 10
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (200, 8, 8, 1)).astype(np.uint8)
    y = (x.reshape(200, -1).mean(1) * classes / 256).astype(np.int64)
    model = brightness_teacher((np.arange(classes) + 0.5) * 25.6, (8, 8, 1))
    acc = teachers.range_accuracies(model, x, y)
    assert acc["0,255"] > 0.9 and acc["0,1"] < 0.3, acc
    message = teachers.input_range_error("t.keras", acc, "0,1", classes, 200)
    assert "expects inputs in [0, 255]" in message and "--teacher_input_range=0,255" in message
    assert teachers.input_range_error("t.keras", acc, "0,255", classes, 200) is None
    rescaled = teachers.with_input_range(model, "0,255")
    fed = rescaled.predict(x.astype(np.float32) / 255, verbose=0).argmax(-1)
    assert np.mean(fed == y) == acc["0,255"]
    assert teachers.with_input_range(model, "0,1") is model
    # A teacher at chance everywhere is no evidence of a range mismatch.
    flat = {"0,1": 0.10, "0,255": 0.12, "-1,1": 0.09}
    assert teachers.input_range_error("t.keras", flat, "0,1", classes, 200) is None


@pytest.mark.slow(20)
@pytest.mark.parametrize("kind", ["tf_keras.h5", "keras3.keras"])
def test_main_names_the_range_a_teacher_expects(tmp_path, kind, request):
    """A teacher by path that expects [0, 255] (a tf_keras .h5 file, or a
    Keras 3 .keras file trained on brightness) stops the run before training
    with one line naming both ranges and the flag; the flag makes it run and
    one line gives the teacher's validation accuracy."""
    from tests.conftest import write_image_folder

    folder = write_image_folder(str(tmp_path / "images"), per_class=8, size=(8, 8))
    if kind == "keras3.keras":
        path = request.getfixturevalue("keras3_0_255")[0]
    else:
        path = str(tmp_path / "bright.h5")
        brightness_teacher([15.0, 55.0, 95.0], (8, 8, 1)).save(path)
    base = [
        sys.executable,
        "-m",
        "kd_keras.main",
        "--flagfile=kd_keras/configs/smoke.flags",
        f"--dataset=dir:{folder}",
        "--val_size=3",
        "--limit_test=0",
        f"--teacher={path}",
        "--techniques=",
        "--export_formats=",
        "--kd=on",
        "--student_epochs=1",
    ]
    env = dict(os.environ, PYTHONPATH=ROOT)
    run = lambda extra: subprocess.run(  # noqa: E731
        base + extra, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    proc = run([f"--workdir={tmp_path / 'a'}"])
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert "expects inputs in [0, 255]" in last and "--teacher_input_range=0,255" in last, last
    assert "in [0, 1] (what it is fed)" in last
    assert not list((tmp_path / "a").glob("runs/*kd*"))  # no student was trained
    proc = run([f"--workdir={tmp_path / 'b'}", "--teacher_input_range=0,255"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "b" / "results.json").read_text())
    (teacher,) = [r for r in result["models"] if r.get("role") == "teacher"]
    assert teacher["test_accuracy"] >= 0.9
    (line,) = [line for line in proc.stdout.splitlines() if "validation accuracy" in line]
    assert "teacher0 (" in line and "on 3 images, fed inputs rescaled to [0, 255]" in line


def test_unregistered_custom_layer_is_named_with_the_fix(tmp_path):
    """A Keras 3 teacher with a custom layer class Keras 3 does not know: the
    error names the file, the class and both fixes, whole; with the class
    given as custom_objects the teacher loads."""
    k3 = keras3()

    class Doubling(k3.layers.Layer):  # Defined here, never registered.
        def call(self, x):
            return x * 2.0

    inputs = k3.Input(SHAPE)
    x = k3.layers.GlobalAveragePooling2D()(Doubling()(inputs))
    path = str(tmp_path / "custom.keras")
    k3.Model(inputs, k3.layers.Dense(CLASSES)(x)).save(path)
    with pytest.raises(ValueError) as raised:
        teachers.load_teacher(path, SHAPE, CLASSES)
    message = str(raised.value)
    assert path in message and "Doubling" in message, message
    assert "@keras.saving.register_keras_serializable()" in message
    assert "custom_objects={'Doubling': Doubling}" in message
    assert message.endswith(".") and "\n" not in message
    model, report = teachers.load_teacher(
        path, SHAPE, CLASSES, custom_objects={"Doubling": Doubling}
    )
    assert report["format"] == "keras3" and model.output_shape == (None, CLASSES)


def test_missing_classes_from_the_archive_config(tmp_path):
    """Without a class name in the error, the archive's config.json lists the
    classes that come from no Keras module."""
    path = tmp_path / "m.keras"
    config = {
        "module": "keras.src.models.functional",
        "class_name": "Functional",
        "config": {
            "layers": [
                {"module": "keras.layers", "class_name": "Dense", "config": {}},
                {"module": None, "class_name": "Scale", "registered_name": "mine>Scale"},
                {"class_name": "__keras_tensor__", "config": {}},
            ]
        },
    }
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("config.json", json.dumps(config))
    error = TypeError("could not be deserialized; use register_keras_serializable")
    assert teachers.missing_classes(str(path), error) == ["mine>Scale"]
    assert teachers.missing_classes(str(path), TypeError("something else")) == []


def test_truncated_h5_teacher_says_so(tmp_path):
    path = str(tmp_path / "teacher.h5")
    tf_keras_model().save(path)
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(ValueError) as raised:
        teachers.load_teacher(path, SHAPE, CLASSES)
    message = str(raised.value)
    assert path in message and "truncated" in message, message
    assert f"{len(data) // 2} of the {len(data)} bytes" in message
    assert "Keras 3 model" not in message


# -- one loader and one input-range check at every entry point ---------------------------------


def brightness_data(n, size=(8, 8), seed=0):
    """uint8 images whose class is their brightness bucket, like
    conftest.write_image_folder's: class i's pixels in [40 i, 40 i + 30)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = 40 * y[:, None, None, None] + rng.integers(0, 30, (n,) + size + (1,))
    return x.astype(np.uint8), y.astype(np.int64)


@pytest.fixture(scope="module")
def keras3_0_255(tmp_path_factory):
    """A Keras 3 teacher expecting [0, 255] (a Rescaling(1/255) layer first,
    a RandomFlip that inference skips) trained a few steps on brightness
    buckets, saved to .keras: (path, its accuracy on [0, 255] images)."""
    k3 = keras3()
    k3.utils.set_random_seed(0)
    inputs = k3.Input((8, 8, 1))
    x = k3.layers.RandomFlip("horizontal")(inputs)
    x = k3.layers.Rescaling(1 / 255)(x)
    x = k3.layers.Conv2D(4, 3, activation="relu")(x)
    x = k3.layers.GlobalAveragePooling2D()(x)
    model = k3.Model(inputs, k3.layers.Dense(3)(x))
    model.compile(k3.optimizers.Adam(0.05), k3.losses.SparseCategoricalCrossentropy(True))
    x_train, y_train = brightness_data(192, seed=1)
    model.fit(x_train.astype(np.float32), y_train, batch_size=32, epochs=15, verbose=0)
    x_val, y_val = brightness_data(96, seed=2)
    logits = model.predict(x_val.astype(np.float32), verbose=0)
    accuracy = float(np.mean(logits.argmax(-1) == y_val))
    assert accuracy > 0.9, accuracy  # Clearly better than chance (1/3).
    path = str(tmp_path_factory.mktemp("k3") / "bright.keras")
    model.save(path)
    return path, accuracy


def test_load_teacher_checks_the_range_and_feeds_0_1(keras3_0_255):
    import kd_keras

    path, accuracy = keras3_0_255
    sample = brightness_data(96, seed=2)
    with pytest.raises(
        ValueError, match=r"expects inputs in \[0, 255\]; pass input_range=\"0,255\""
    ):
        kd_keras.load_teacher(path, (8, 8, 1), 3, sample=sample)
    for given in ("0,255", (0, 255)):
        model = kd_keras.load_teacher(path, (8, 8, 1), 3, input_range=given, sample=sample)
        predicted = model.predict(sample[0] / np.float32(255), verbose=0).argmax(-1)
        assert np.mean(predicted == sample[1]) == accuracy
    with pytest.raises(ValueError, match="low < high"):
        kd_keras.load_teacher(path, (8, 8, 1), 3, input_range="255,0")


def test_the_search_refuses_the_wrong_range_and_says_the_teachers_accuracy(keras3_0_255, tmp_path):
    """nas.main: the teacher is loaded and its range checked on validation
    images before any trial; with --teacher_input_range one line gives its
    validation accuracy."""
    from tests.conftest import write_image_folder

    folder = write_image_folder(str(tmp_path / "images"), per_class=12, size=(8, 8))
    # Both cases in one process: absl flags are process-global, so each case
    # starts from unparsed flags.
    script = (
        "import json, sys\n"
        "from absl import flags\n"
        "from nas import main\n"
        "for extra in ([], ['--teacher_input_range=0,255']):\n"
        "    flags.FLAGS.unparse_flags()\n"
        "    main.parse_flags(sys.argv + extra)\n"
        "    cfg = main.configure()\n"
        "    data = cfg['data'].load()\n"
        "    print('CASE', json.dumps(extra), flush=True)\n"
        "    try:\n"
        "        main._teacher_fn(data, sys.argv[0], 0, cfg['data'].batch_size)()\n"
        "    except ValueError as e:\n"
        "        print('REFUSED', e, flush=True)\n"
    )
    proc = run_python(
        script,
        f"--project_dir={tmp_path / 'nas'}",
        f"--dataset=dir:{folder}",
        "--val_size=12",
        "--stem_paddings=same",
        f"--teacher_model={keras3_0_255[0]}",
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    without, with_range = proc.stdout.split("CASE ")[1:]
    (refused,) = [line for line in without.splitlines() if line.startswith("REFUSED")]
    assert "expects inputs in [0, 255]; pass --teacher_input_range=0,255." in refused
    assert "on 12 validation images" in refused
    assert "REFUSED" not in with_range
    (line,) = [line for line in with_range.splitlines() if line.startswith("Teacher (")]
    assert "validation accuracy 1.0000 on 12 images, fed inputs rescaled to [0, 255]" in line


def test_export_converts_a_keras3_file_fed_its_range(keras3_0_255, tmp_path):
    """export: a Keras 3 .keras file (with a RandomFlip layer) converts; fed
    [0, 255] its TFLite accuracy is the Keras model's, and without the range
    the check refuses it, naming --input_range."""
    import export

    x_train, y_train = brightness_data(64, seed=1)
    x_test, y_test = brightness_data(96, seed=2)
    empty = np.zeros((0, 8, 8, 1), np.uint8)
    data = data_lib.Dataset("bright", x_train, y_train, empty, y_train[:0], x_test, y_test, 3)
    path, accuracy = keras3_0_255
    with pytest.raises(export.ExportError, match="pass --input_range=0,255"):
        export.check_input_range(path, data, "0,1")
    assert export.check_input_range(path, data, "0,255")["accuracy"] > 0.9
    rows = export.export_model(
        path,
        str(tmp_path / "out"),
        ["float32", "int8"],
        data=data,
        latency_runs=5,
        warmup=1,
        max_latency_runs=5,
        tflm=False,
        input_range="0,255",
    )
    for row in rows:
        assert row["keras_accuracy"] == accuracy, row
        assert abs(row["accuracy"] - accuracy) <= 0.02, row
