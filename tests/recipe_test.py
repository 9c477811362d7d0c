"""Defaults that scale with the data (kd_keras.app.recipe): the rules, that a
flag set is kept, and that a folder's sizes are read from its listing."""

import dataclasses
import json
import os
import struct
import zlib

import numpy as np
import pytest
from conftest import run_python

from kd_keras import data as data_lib
from kd_keras import train as train_lib
from kd_keras.app import pipeline, recipe


def test_validation_is_a_tenth_of_train_capped_at_5000():
    assert recipe.val_size_for(3200) == 320
    assert recipe.val_size_for(60000) == 5000  # Fashion-MNIST keeps its 5,000.
    assert recipe.val_size_for(50000) == 5000
    assert recipe.val_size_for(7) == 1
    assert recipe.val_size_for(2) == 1  # Leaves one to train on.
    assert recipe.val_size_for(1) == 0


@pytest.mark.parametrize(
    "n, batch", [(55000, 128), (2880, 128), (2400, 64), (1000, 32), (300, 16), (40, 16)]
)
def test_the_batch_is_halved_until_an_epoch_has_20_steps_not_below_16(n, batch):
    assert recipe.batch_size_for(n) == batch
    steps = recipe.steps_per_epoch(n, batch)
    assert steps >= pipeline.MIN_STEPS_PER_EPOCH or batch == recipe.BATCH_FLOOR
    if batch < recipe.BATCH_START:  # Halving stopped as soon as it had enough steps.
        assert recipe.steps_per_epoch(n, 2 * batch) < pipeline.MIN_STEPS_PER_EPOCH


def test_batch_norm_momentum_is_0_9_for_runs_under_2000_steps():
    assert recipe.bn_momentum_for(1999) == 0.9
    assert recipe.bn_momentum_for(2000) is None


def _folder(root, per_class=50, classes=4):
    for k in range(classes):
        os.makedirs(root / f"c{k}")
        for i in range(per_class):
            (root / f"c{k}" / f"{i}.png").write_bytes(b"")  # Listed, never decoded.
    return f"{data_lib.FOLDER_PREFIX}{root}"


def _config(dataset, **kwargs):
    return pipeline.PipelineConfig(
        workdir="/nonexistent",
        data=data_lib.DataConfig(dataset=dataset),
        student="resnet8",
        student_train=train_lib.TrainConfig(epochs=20),
        **kwargs,
    )


def test_a_folder_of_2000_images_gets_scaled_defaults_and_says_so(tmp_path):
    config = _config(_folder(tmp_path, per_class=500))  # 2000 images: 1600 train + val.
    scaled, lines = recipe.scale(config, present=set())
    assert scaled.data.val_size == 160
    assert scaled.data.batch_size == 64  # 1440 / 64 = 23 steps; 1440 / 128 = 12.
    assert scaled.student_kwargs == {"bn_momentum": 0.9}  # 20 epochs x 23 steps.
    assert scaled.teacher_kwargs == {"bn_momentum": 0.9}  # The registry teacher too.
    assert len(lines) == 4
    assert lines[0].startswith("--val_size not set: 160")
    assert lines[1].startswith(
        "--batch_size not set: 64, so an epoch of 1440 examples has 23 steps"
    )
    assert "460 steps" in lines[2]


def test_flags_that_are_set_are_kept(tmp_path):
    config = _config(_folder(tmp_path, per_class=500), student_kwargs={"bn_momentum": 0.99})
    config = dataclasses.replace(
        config, data=dataclasses.replace(config.data, val_size=400, batch_size=128)
    )
    scaled, lines = recipe.scale(config, present={"val_size", "batch_size"})
    assert scaled.data.val_size == 400 and scaled.data.batch_size == 128
    assert scaled.student_kwargs == {"bn_momentum": 0.99}
    assert [line for line in lines if "--val_size" in line or "--batch_size" in line] == []
    assert "460" not in " ".join(lines)


def test_a_set_val_size_still_scales_the_batch_to_what_is_left(tmp_path):
    config = _config(_folder(tmp_path, per_class=500))
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, val_size=1000))
    scaled, _ = recipe.scale(config, present={"val_size"})
    assert scaled.data.val_size == 1000
    assert scaled.data.batch_size == 16  # 600 examples: 38 steps of 16, 19 of 32.


def test_a_long_run_keeps_the_builders_momentum_and_limit_train_counts(tmp_path):
    config = _config(_folder(tmp_path, per_class=500))
    config = dataclasses.replace(config, student_train=train_lib.TrainConfig(epochs=100))
    scaled, _ = recipe.scale(config, present=set())
    assert "bn_momentum" not in scaled.student_kwargs  # 100 x 23 = 2300 steps.
    limited = dataclasses.replace(config, data=dataclasses.replace(config.data, limit_train=320))
    scaled, _ = recipe.scale(limited, present=set())
    assert scaled.data.batch_size == 16  # 320 examples per epoch.


def test_a_teacher_given_by_path_and_an_own_student_are_left_alone(tmp_path):
    config = dataclasses.replace(_config(_folder(tmp_path, per_class=500)), student="nas:/x")
    scaled, _ = recipe.scale(config, present=set())
    assert scaled.student_kwargs == {}


def test_fashion_mnist_defaults_are_unchanged():
    config = _config("fashion_mnist", student_kwargs={})
    config = dataclasses.replace(config, student_train=train_lib.TrainConfig(epochs=10))
    scaled, lines = recipe.scale(config, present=set())
    assert (scaled.data.val_size, scaled.data.batch_size) == (5000, 128)
    assert scaled.student_kwargs == {} and lines == []  # 10 x 430 steps.


def test_unknown_sizes_keep_the_defaults(tmp_path):
    config = _config(_folder(tmp_path / "missing_parent", per_class=0, classes=0))
    scaled, lines = recipe.scale(config, present=set())
    assert scaled == config and lines == []


def test_the_rules_agree_with_the_few_steps_warning():
    for n in np.linspace(20 * 16, 60000, 50).astype(int):
        assert pipeline.few_steps_warning(n, recipe.batch_size_for(n)) is None


def test_teacher_view_clean_reaches_the_kd_variants_only():
    config = dataclasses.replace(
        _config("fashion_mnist"), teacher_view="clean", techniques=("prune",)
    )
    views = {(v.label, v.kd): v.teacher_view for v in pipeline.student_variants(config)}
    assert views == {
        ("none", False): "same",
        ("none", True): "clean",
        ("prune", False): "same",
        ("prune", True): "clean",
    }
    with pytest.raises(ValueError, match="--teacher_view=blurry: allowed: same, clean"):
        _config("fashion_mnist", teacher_view="blurry")


def _png(size=8):
    """A valid grayscale PNG of `size` x `size` zeros."""

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", size, size, 8, 0, 0, 0, 0)
    rows = b"".join(b"\x00" + bytes(size) for _ in range(size))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


PNG_28X28 = _png(28)

# Each case (a JSON list of extra flags) parsed and configured in one process;
# absl flags are process-global, so each starts from unparsed flags.
NAS_CONFIGURE = r"""
import json, sys
from absl import flags
from nas import main
for extra in json.loads(sys.argv[1]):
    flags.FLAGS.unparse_flags()
    main.parse_flags([sys.argv[0]] + sys.argv[2:] + extra)
    cfg = main.configure()
    data = cfg["data"]
    print("CASE", json.dumps([data.val_size, data.batch_size, data.image_size,
                              data.test_fraction, cfg["data_lines"]]), flush=True)
"""


@pytest.mark.slow(10)
def test_the_search_scales_the_same_defaults_and_keeps_a_set_flag(tmp_path):
    """nas.main scales --val_size and --batch_size as the pipeline does, keeps
    a set flag, and takes the pipeline's source flags (--image_size,
    --test_fraction)."""
    dataset = _folder(tmp_path / "folder", per_class=500)  # As the pipeline's test above.
    for path in (tmp_path / "folder").glob("*/*.png"):  # The search reads one image's shape.
        path.write_bytes(PNG_28X28)
    cases = [[], ["--batch_size=32"], ["--image_size=16,16", "--test_fraction=0.5"]]
    proc = run_python(
        NAS_CONFIGURE,
        json.dumps(cases),
        f"--dataset={dataset}",
        "--nodistill",
        f"--project_dir={tmp_path}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = [json.loads(line[5:]) for line in proc.stdout.splitlines() if line.startswith("CASE ")]
    (val, batch, size, fraction, lines) = out[0]
    assert (val, batch, size, fraction) == (160, 64, None, 0.2)
    assert lines[0].startswith("--val_size not set: 160") and "--batch_size not set: 64" in lines[1]
    (val, batch, _, _, lines) = out[1]
    assert (val, batch) == (160, 32) and len(lines) == 1
    (val, batch, size, fraction, lines) = out[2]  # Half of 2,000 images held out for test.
    assert (val, size, fraction) == (100, [16, 16], 0.5)
