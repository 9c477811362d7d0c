"""Shared pytest fixtures: tiny data, written by the tests themselves."""

import gzip
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kd_keras import data as data_lib  # noqa: E402
from kd_keras import train as train_lib  # noqa: E402
from kd_keras.app import pipeline, variants  # noqa: E402
from kd_keras.train import cached  # noqa: E402

# Fixtures of the search tests (the `searched` search), shared by several files.
pytest_plugins = ("nas_helpers",)


def pytest_collection_modifyitems(items):
    """Runs the tests marked ``slow(seconds)`` first, longest first, so that
    with several workers (``-n 2``, pytest-xdist) no long test starts last
    and holds the run up while the other worker idles. The stable sort keeps
    the file order of the rest."""

    def cost(item):
        marker = item.get_closest_marker("slow")
        return -(marker.args[0] if marker and marker.args else 0)

    items.sort(key=cost)


def write_idx(path, array):
    """Writes `array` (uint8) as a gzip-compressed IDX file."""
    array = np.asarray(array, dtype=np.uint8)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


def write_idx_dir(directory, n_train=40, n_test=20, seed=0):
    """A tiny Fashion-MNIST-shaped IDX directory with balanced labels."""
    rng = np.random.default_rng(seed)
    os.makedirs(directory, exist_ok=True)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28)),
        "train_labels": np.arange(n_train) % 10,
        "test_images": rng.integers(0, 256, (n_test, 28, 28)),
        "test_labels": np.arange(n_test) % 10,
    }
    for key, name in data_lib.IDX_FILES.items():
        write_idx(os.path.join(directory, name), arrays[key])
    return arrays


@pytest.fixture
def idx_dir(tmp_path):
    directory = tmp_path / "idx"
    write_idx_dir(str(directory))
    return str(directory)


def tiny_dataset(n=64, shape=(28, 28, 1), classes=10, seed=0):
    """An in-memory Dataset of random images whose label is a simple function
    of the image (mean brightness bucket), so a model can learn something."""
    rng = np.random.default_rng(seed)

    def make(count):
        x = rng.integers(0, 256, (count,) + shape).astype(np.uint8)
        y = (x.reshape(count, -1).mean(1) * classes / 256).astype(np.int64).clip(0, classes - 1)
        return x, y

    (xtr, ytr), (xv, yv), (xte, yte) = make(n), make(n // 4), make(n // 2)
    return data_lib.Dataset("tiny", xtr, ytr, xv, yv, xte, yte, num_classes=classes)


def write_image_folder(
    directory, classes=("cat", "dog", "eel"), per_class=12, size=(12, 12), channels=1
):
    """An image folder (one sub-folder per class) of tiny PNGs, class ``i``'s
    pixels near ``40 * i`` so that the class is visible in the image."""
    from kd_keras.keras_compat import tf

    rng = np.random.default_rng(0)
    for i, name in enumerate(classes):
        os.makedirs(os.path.join(directory, name), exist_ok=True)
        for j in range(per_class):
            pixels = np.clip(40 * i + rng.integers(0, 30, size + (channels,)), 0, 255)
            png = tf.io.encode_png(pixels.astype(np.uint8)).numpy()
            with open(os.path.join(directory, name, f"{j:02d}.png"), "wb") as f:
                f.write(png)
    return directory


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_python(code, *args, env=None, timeout=300):
    """``python -c code args...`` run from the repository root with the
    project on PYTHONPATH, for checks that need a process of their own (absl
    flags are process-global; a native crash kills its process): the
    CompletedProcess, stdout and stderr captured as text. `env` (default
    this process's environment) gets PYTHONPATH set."""
    env = dict(os.environ if env is None else env, PYTHONPATH=ROOT)
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def trivial_fit(monkeypatch):
    """Replaces the run cache's training by a fit that changes no weight:
    for tests of what is cached, keyed, reported or exported, not learned."""
    monkeypatch.setattr(
        cached, "fit", lambda *a, **k: {"history": {}, "train_time_s": 0.0, "initial_epoch": 0}
    )


def tiny_pipeline_config(workdir, batch_size=16, dataset="fashion_mnist", **overrides):
    """A PipelineConfig for tiny data: width-0.25 `cnn` teacher and student,
    one epoch each, batches of `batch_size`, no export; `overrides` replace
    fields."""
    fields = dict(
        workdir=workdir,
        data=data_lib.DataConfig(dataset=dataset, batch_size=batch_size),
        teacher="cnn",
        teacher_kwargs={"width": 0.25},
        teacher_train=train_lib.TrainConfig(epochs=1),
        student="cnn",
        student_kwargs={"width": 0.25},
        student_train=train_lib.TrainConfig(epochs=1),
        export=variants.ExportSettings(formats=()),
        verbose=0,
    )
    fields.update(overrides)
    return pipeline.PipelineConfig(**fields)


# `python -m kd_keras.main` with every training replaced by a trivial job: a
# fit that sleeps `KD_KERAS_TEST_FIT_SECONDS` and changes no weight. The run
# cache, the study's scheduling (keras-tuner's oracle, chief and workers),
# resumption, aggregation and reports run as they do for real; the tests that
# use it check orchestration, not learning.
TRIVIAL_FIT_MAIN = r"""
import os, sys, time
from absl import app
from kd_keras.train import cached

def fit(model, datasets, config, run_dir, **kwargs):
    seconds = float(os.environ.get("KD_KERAS_TEST_FIT_SECONDS", "0"))
    time.sleep(seconds)
    return {"history": {}, "train_time_s": seconds, "initial_epoch": 0}

cached.fit = fit
from kd_keras import main
app.run(main.main, argv=["kd_keras.main"] + sys.argv[1:], flags_parser=main.parse_flags)
"""

# The smoke study on tiny data with trivial training (TRIVIAL_FIT_MAIN).
TINY_STUDY_FLAGS = [
    "--flagfile=kd_keras/configs/study_smoke.flags",
    "--limit_train=128",
    "--limit_test=64",
    "--val_size=64",
    "--batch_size=32",
    "--teacher=cnn",
    "--teacher_args=width=0.25",
    "--extra_teacher_args=width=0.25",
    "--latency_runs=5",
    "--num_calibration=8",
]


def trivial_fit_study(workdir, *flags, env=None, fit_seconds=0.0):
    """Starts the tiny smoke study in `workdir` with trivial training: a Popen
    (stdout and stderr piped, text)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ if env is None else env, PYTHONPATH=root)
    env["KD_KERAS_TEST_FIT_SECONDS"] = str(fit_seconds)
    return subprocess.Popen(
        [sys.executable, "-c", TRIVIAL_FIT_MAIN, *TINY_STUDY_FLAGS, *flags, f"--workdir={workdir}"],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
