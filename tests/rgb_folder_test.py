"""The RGB folder of bench/make_rgb_folder.py (deterministic, the layout the
pipeline reads) and kd_keras/configs/rgb_folder.flags (parses and validates
on such a folder with a Keras 3 teacher expecting [0, 255])."""

import filecmp
import os
import subprocess
import sys

import pytest
from conftest import run_python

from kd_keras import data as data_lib
from kd_keras.data import folders

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GENERATOR = os.path.join(ROOT, "bench", "make_rgb_folder.py")
CONFIG = os.path.join(ROOT, "kd_keras", "configs", "rgb_folder.flags")
SLIM_CONFIG = os.path.join(ROOT, "kd_keras", "configs", "rgb_folder_slim.flags")
CLASSES = ("blob checker circle cross dots ring square star stripes triangle").split()


def _generate(out, *args):
    proc = subprocess.run(
        [sys.executable, GENERATOR, f"--out={out}", "--per_class=3", "--size=16", *args],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=ROOT),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_the_generator_writes_a_class_folder_the_same_way_for_a_seed(tmp_path):
    assert "30 images (10 classes, 16x16)" in _generate(tmp_path / "a")
    _generate(tmp_path / "b")
    _generate(tmp_path / "c", "--seed=1")
    assert sorted(os.listdir(tmp_path / "a")) == CLASSES
    names = ["00000.png", "00001.png", "00002.png"]
    for name in CLASSES:
        assert sorted(os.listdir(tmp_path / "a" / name)) == names
        match, mismatch, errors = filecmp.cmpfiles(
            tmp_path / "a" / name, tmp_path / "b" / name, names, shallow=False
        )
        assert match == names and not mismatch and not errors
    _, other, _ = filecmp.cmpfiles(tmp_path / "a" / "star", tmp_path / "c" / "star", names, False)
    assert other == names  # Another seed, other images.
    classes, files, labels = folders.list_images(str(tmp_path / "a"))
    assert classes == tuple(CLASSES) and len(files) == 30 and labels.max() == 9
    image = folders.decode(files[0])
    assert image.shape == (16, 16, 3) and image.std() > 0


KERAS3_TEACHER = r"""
import sys
import keras
inputs = keras.Input((16, 16, 3))
x = keras.layers.Rescaling(1 / 255)(inputs)
x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(x))
keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x)).save(sys.argv[1])
"""

# Each flagfile (argv[1], comma-separated) with the flags after it, one after
# the other in one process: absl flags are process-global, so each starts
# from unparsed flags.
CHECK = r"""
import sys
from absl import flags
from kd_keras import flags as kd_flags
from kd_keras import models
from kd_keras.app import pipeline

for flagfile in sys.argv[1].split(","):
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["check", f"--flagfile={flagfile}", *sys.argv[2:],
                 "--workdir=/nonexistent/never_written"])
    cfg, lines = kd_flags.resolved_pipeline_config()
    pipeline.validate(cfg)
    student = models.build(cfg.student, (32, 32, 3), 10, **cfg.student_kwargs)
    print("OK", cfg.teacher_input_range, cfg.student, student.count_params(),
          "+".join(cfg.techniques) or "none", cfg.export.xnnpack, cfg.compress.lr_scale)
    print("\n".join(lines))
"""


@pytest.mark.slow(10)
def test_the_rgb_folder_recipe_parses_and_validates_on_such_a_folder(tmp_path):
    _generate(tmp_path / "folder")
    teacher = str(tmp_path / "teacher.keras")
    made = run_python(KERAS3_TEACHER, teacher, timeout=120)
    assert made.returncode == 0, made.stderr[-2000:]
    proc = run_python(
        CHECK,
        f"{CONFIG},{SLIM_CONFIG}",
        f"--dataset={data_lib.FOLDER_PREFIX}{tmp_path / 'folder'}",
        f"--teacher={teacher}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    checked = proc.stdout.split("OK ")[1:]
    assert len(checked) == 2
    for out, techniques in zip(checked, ("none", "slim")):
        ok = out.split()
        assert ok[0] == "0,255"
        assert int(ok[2]) <= 100_000  # A standard student of at most 100k parameters.
        assert ok[3] == techniques
    # The slim recipe times with the built-in kernels and fine-tunes at the full rate.
    assert ok[4:6] == ["False", "1.0"]
