"""npz datasets (``--dataset=npz:PATH``): shapes and classes read without the
inputs, validation carved or taken from the file, float32 inputs used as given
through training, teacher outputs and int8 export, and bad files refused in
one line before any data is loaded."""

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import tiny_pipeline_config, trivial_fit

from export import measure as measure_lib
from kd_keras import data as data_lib
from kd_keras.app import pipeline, variants
from kd_keras.data import npz

SHAPE = (49, 10, 1)  # MFCC frames of keyword spotting.
CLASSES = 4


def write_npz(path, n_train=48, n_test=16, dtype=np.float32, shape=SHAPE, val=0, **overrides):
    """An npz whose class is visible in the inputs' mean (float32 around
    2 * class, far outside [0, 1]; or uint8 images)."""
    rng = np.random.default_rng(0)

    def make(n):
        y = np.arange(n) % CLASSES
        x = rng.normal(size=(n,) + shape) + 2.0 * y.reshape((-1,) + (1,) * len(shape))
        if dtype == np.uint8:
            x = np.clip(40 * (x + 1), 0, 255)
        return x.astype(dtype), y.astype(np.int64)

    arrays = {}
    arrays["x_train"], arrays["y_train"] = make(n_train)
    arrays["x_test"], arrays["y_test"] = make(n_test)
    if val:
        arrays["x_val"], arrays["y_val"] = make(val)
    arrays["class_names"] = np.array(["yes", "no", "up", "down"])
    arrays.update(overrides)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(path, **arrays)
    return str(path)


def test_the_placeholder_has_the_shape_dtype_and_classes_of_the_file(tmp_path):
    path = write_npz(tmp_path / "kws.npz")
    shapes = data_lib.DataConfig(dataset=f"npz:{path}", val_size=8).placeholder()
    assert shapes.input_shape == SHAPE and shapes.num_classes == CLASSES
    assert shapes.x_train.dtype == np.float32 and not shapes.image_like
    assert shapes.class_names == ("yes", "no", "up", "down")
    images = write_npz(tmp_path / "img.npz", dtype=np.uint8, shape=(8, 8, 3))
    assert data_lib.DataConfig(dataset=f"npz:{images}", val_size=8).placeholder().image_like


def test_validation_is_carved_from_train_or_taken_from_the_file(tmp_path):
    carved = data_lib.DataConfig(dataset=f"npz:{write_npz(tmp_path / 'a.npz')}", val_size=8)
    data = carved.load()
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (40, 8, 16)
    assert data.x_train.dtype == np.float32
    own = data_lib.DataConfig(dataset=f"npz:{write_npz(tmp_path / 'b.npz', val=12)}")
    data = own.load()
    assert (len(data.x_train), len(data.x_val)) == (48, 12)


def test_float_inputs_are_used_as_given_and_uint8_images_scaled():
    floats = np.array([[[[3.5]]]], np.float32)
    assert float(data_lib.preprocess(floats)[0, 0, 0, 0]) == 3.5
    assert float(data_lib.preprocess(np.array([[[[255]]]], np.uint8))[0, 0, 0, 0]) == 1.0


def test_an_npz_runs_through_the_pipeline_and_its_int8_export_calibrates_on_it(
    tmp_path, monkeypatch
):
    """A float32 npz whose values lie far outside [0, 1]: the int8 file agrees
    with the Keras student on the test split only if calibration, like
    training and accuracy, saw the inputs as given (not divided by 255)."""
    trivial_fit(monkeypatch)
    path = write_npz(tmp_path / "kws.npz")
    config = tiny_pipeline_config(
        str(tmp_path / "work"),
        dataset=f"npz:{path}",
        data=data_lib.DataConfig(dataset=f"npz:{path}", val_size=8, batch_size=16),
        kd_mode="on",
        export=variants.ExportSettings(formats=("int8",), latency_runs=5, num_calibration=16),
    )
    data, todo = pipeline.prepare(config)
    results = pipeline.run(config, prepared=(data, todo))
    assert results["class_names"] == ["yes", "no", "up", "down"]
    (row,) = [r for r in results["models"] if r["role"] == "student"]
    (int8,) = [e for e in row["export"] if e["format"] == "int8"]
    assert "accuracy" in int8 and int8["keras_agreement"] >= 0.9, int8
    # The input's int8 quantization spans the inputs' range (about -3 to 9),
    # not the [0, 0.04] they would take divided by 255.
    interpreter = measure_lib.make_interpreter(open(int8["path"], "rb").read())
    scales = [
        d["quantization"][0]
        for d in interpreter.get_tensor_details()
        if d["dtype"] == np.int8 and tuple(d["shape"][1:]) == SHAPE
    ]
    assert scales and scales[0] * 255 > 5, scales


@pytest.mark.parametrize("flag", ["student_augment", "teacher_augment"])
def test_crop_and_flip_are_refused_on_inputs_that_are_not_images(tmp_path, flag):
    path = write_npz(tmp_path / "kws.npz")
    augment = data_lib.AugmentConfig.parse(["crop=2", "cutout=4"])
    config = tiny_pipeline_config(
        str(tmp_path / "w"),
        data=data_lib.DataConfig(dataset=f"npz:{path}", val_size=8),
        **{flag: augment},
    )
    with pytest.raises(ValueError, match=rf"^--{flag} asks for crop.*float32 inputs.*cutout"):
        pipeline.validate(config)
    fine = tiny_pipeline_config(
        str(tmp_path / "w"),
        data=data_lib.DataConfig(dataset=f"npz:{path}", val_size=8),
        **{flag: data_lib.AugmentConfig.parse(["cutout=4", "mixup"])},
    )
    pipeline.validate(fine)


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"y_test": None}, "lacks y_test"),
        ({"y_train": np.zeros(47, np.int64)}, "shape (47,) for 48 inputs"),
        ({"y_test": np.full(16, 7)}, "label 7 is out of range"),
        ({"x_test": np.zeros((16, 49, 10), np.float32)}, "every split's inputs"),
        ({"x_train": np.zeros((48, 490), np.float32)}, "must be (N, H, W, C)"),
        ({"x_train": np.zeros((48,) + SHAPE, np.float64)}, "uint8"),
    ],
)
def test_malformed_files_are_refused_naming_what_is_wrong(tmp_path, overrides, fragment):
    path = write_npz(tmp_path / "bad.npz", **overrides)
    with pytest.raises(ValueError) as e:
        data_lib.DataConfig(dataset=f"npz:{path}").placeholder()
    assert str(e.value).startswith(f"--dataset=npz:{path}: ") and fragment in str(e.value)
    assert "\n" not in str(e.value)


def test_describe_reads_no_input_array(tmp_path, monkeypatch):
    """Only headers and labels are read: loading an x_ array fails the test."""
    path = write_npz(tmp_path / "kws.npz")
    real = np.lib.npyio.NpzFile.__getitem__

    def only_labels(self, key):
        assert not key.startswith("x_"), f"{key} was loaded"
        return real(self, key)

    monkeypatch.setattr(np.lib.npyio.NpzFile, "__getitem__", only_labels)
    assert npz.describe(path)["sizes"] == {"train": 48, "test": 16}


FLAGS_CHECK = r"""
import sys
from absl import flags
from kd_keras import flags as kd_flags
from kd_keras.app import pipeline

flags.FLAGS(["check", "--flagfile=kd_keras/configs/smoke.flags", "--workdir=/nonexistent",
             f"--dataset=npz:{sys.argv[1]}", "--val_size=8"])
cfg = kd_flags.pipeline_config()
pipeline.validate(cfg)
print("TEACHER_AUGMENT", cfg.teacher_augment.spatial, cfg.teacher_augment.enabled)
"""


def test_the_default_teacher_augmentation_leaves_out_crop_and_flip_on_non_images(tmp_path):
    """--teacher_augment defaults to crop and flip, for images: left unset
    with an npz of non-image inputs, they are dropped (set, they are refused)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run(
        [sys.executable, "-c", FLAGS_CHECK, write_npz(tmp_path / "kws.npz")],
        cwd=root,
        env=dict(os.environ, PYTHONPATH=root),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "TEACHER_AUGMENT () False" in proc.stdout, proc.stderr[-2000:]
