"""--dataset=dir:PATH: an image folder the test writes, read, split and resized."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import write_image_folder

from kd_keras import data as data_lib
from kd_keras.data import folders as image_folder


@pytest.fixture
def folder(tmp_path):
    return write_image_folder(str(tmp_path / "pets"))


def test_placeholder_reads_the_listing_and_one_image(folder):
    shapes = data_lib.placeholder(f"dir:{folder}")
    assert shapes.input_shape == (12, 12, 1) and shapes.num_classes == 3
    assert data_lib.placeholder(f"dir:{folder}", image_size=(8, 10)).input_shape == (8, 10, 1)


def test_split_sizes_stratified_and_deterministic(folder):
    data = data_lib.load_dataset(f"dir:{folder}", val_size=6, seed=3)
    assert data.class_names == ("cat", "dog", "eel") and data.num_classes == 3
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (23, 6, 7)
    assert data.x_train.dtype == np.uint8 and data.input_shape == (12, 12, 1)
    assert np.bincount(data.y_val, minlength=3).tolist() == [2, 2, 2]
    assert sorted(np.bincount(data.y_test, minlength=3).tolist()) == [2, 2, 3]
    # Class i's pixels lie in [40 i, 40 i + 30): labels follow the folders.
    for x, y in ((data.x_train, data.y_train), (data.x_test, data.y_test)):
        np.testing.assert_array_equal(x.reshape(len(x), -1).min(1) // 40, y)
    again = data_lib.load_dataset(f"dir:{folder}", val_size=6, seed=3)
    np.testing.assert_array_equal(again.x_test, data.x_test)
    np.testing.assert_array_equal(again.y_train, data.y_train)
    other = data_lib.load_dataset(f"dir:{folder}", val_size=6, seed=4)
    assert not np.array_equal(other.x_test, data.x_test)
    half = data_lib.load_dataset(f"dir:{folder}", val_size=0, test_fraction=0.5)
    assert (len(half.x_train), len(half.x_test)) == (18, 18)


def test_resized_and_channels_kept(tmp_path):
    folder = write_image_folder(str(tmp_path / "rgb"), ("a", "b"), per_class=3, channels=3)
    data = data_lib.load_dataset(f"dir:{folder}", val_size=0, image_size=(8, 6))
    assert data.input_shape == (8, 6, 3) and data.name.endswith("@8x6")
    assert data.x_train.dtype == np.uint8


def test_sizes_must_agree_without_image_size(folder):
    write_image_folder(os.path.join(folder, "dog", "big"), ("x",), per_class=1, size=(20, 20))
    # dog/big/x/00.png is found recursively (class dog) and is 20x20.
    with pytest.raises(data_lib.DataError, match="--image_size"):
        data_lib.load_dataset(f"dir:{folder}", val_size=0)
    data = data_lib.load_dataset(f"dir:{folder}", val_size=0, image_size=(12, 12))
    assert len(data.x_train) + len(data.x_test) == 37 and data.num_classes == 3


def test_folder_errors(tmp_path, folder):
    with pytest.raises(image_folder.FolderError, match="does not exist"):
        image_folder.list_images(str(tmp_path / "nope"))
    one = write_image_folder(str(tmp_path / "one"), ("only",), per_class=2)
    with pytest.raises(image_folder.FolderError, match="at least 2"):
        image_folder.list_images(one)
    os.makedirs(os.path.join(folder, "zebra"))
    with pytest.raises(image_folder.FolderError, match="zebra holds no image"):
        image_folder.list_images(folder)
    os.rmdir(os.path.join(folder, "zebra"))
    with open(os.path.join(folder, "cat", "00.png"), "wb") as f:
        f.write(b"not a png")
    with pytest.raises(data_lib.DataError, match="cannot decode image .*00.png"):
        data_lib.placeholder(f"dir:{folder}")


def test_links_are_followed_once(tmp_path, folder):
    """A link loop, a link to the root or to another class adds no image twice."""
    before = image_folder.list_images(folder)
    os.symlink("..", os.path.join(folder, "cat", "loop"))  # Back to the root: every class.
    os.symlink(os.path.join(folder, "cat"), os.path.join(folder, "cat", "self"))
    os.symlink(os.path.join(folder, "eel"), os.path.join(folder, "dog", "eels"))
    after = image_folder.list_images(folder)
    assert after[0] == before[0] and after[1] == before[1]
    np.testing.assert_array_equal(after[2], before[2])
    # A linked folder outside the tree is read, once.
    extra = write_image_folder(str(tmp_path / "more"), ("x",), per_class=2)
    os.symlink(os.path.join(extra, "x"), os.path.join(folder, "dog", "more"))
    os.symlink(os.path.join(extra, "x"), os.path.join(folder, "dog", "again"))
    assert len(image_folder.list_images(folder)[1]) == len(before[1]) + 2
    # One real image under two classes has no single label.
    os.symlink(os.path.join(folder, "cat", "00.png"), os.path.join(folder, "dog", "cat.png"))
    with pytest.raises(image_folder.FolderError, match="two class folders"):
        image_folder.list_images(folder)


def test_the_content_digest_tells_splits_and_contents_apart(tmp_path, folder):
    data = data_lib.load_dataset(f"dir:{folder}", val_size=6)
    assert data_lib.load_dataset(f"dir:{folder}", val_size=6).content_digest == data.content_digest
    assert data_lib.load_dataset(f"dir:{folder}", val_size=3).content_digest != data.content_digest
    assert data_lib.load_dataset(f"dir:{folder}", val_size=6, limit_train=5).content_digest != (
        data.content_digest
    )
    os.rename(os.path.join(folder, "cat"), os.path.join(folder, "tmp"))
    os.rename(os.path.join(folder, "dog"), os.path.join(folder, "cat"))
    os.rename(os.path.join(folder, "tmp"), os.path.join(folder, "dog"))
    swapped = data_lib.load_dataset(f"dir:{folder}", val_size=6)
    assert swapped.content_digest != data.content_digest


def test_test_fraction_bounds():
    x, y = np.zeros((10, 2, 2, 1), np.uint8), np.arange(10) % 2
    with pytest.raises(data_lib.DataError, match="test_fraction"):
        data_lib.split_test(x, y, 1.0)
    assert len(data_lib.split_test(x, y, 0.01)[2]) == 1
    assert len(data_lib.split_test(x, y, 0.99)[2]) == 9


@pytest.mark.slow(20)
def test_folder_end_to_end_through_main(tmp_path, folder):
    """smoke.flags on a folder kept on disk (--data_storage=disk: training,
    teacher logits, evaluation, calibration and export accuracy all read the
    store's memmaps): the pipeline trains, and its class names reach
    results.json, results.md and the exported labels files."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    workdir = tmp_path / "work"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "kd_keras.main",
            "--flagfile=kd_keras/configs/smoke.flags",
            f"--dataset=dir:{folder}",
            "--image_size=10,10",
            "--teacher=cnn",
            "--teacher_args=width=0.25",
            "--techniques=",
            "--export_formats=float32",
            "--val_size=6",
            "--limit_test=0",
            "--data_storage=disk",
            f"--workdir={workdir}",
        ],
        cwd=root,
        env=dict(os.environ, PYTHONPATH=root, KD_KERAS_STORE=str(tmp_path / "store")),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(list((tmp_path / "store").glob("*/meta.json"))) == 1
    results = json.loads((workdir / "results.json").read_text())
    assert results["class_names"] == ["cat", "dog", "eel"]
    assert "Classes (3): cat, dog, eel" in (workdir / "results.md").read_text()
    assert results["config"]["data"]["image_size"] == [10, 10]
    labels = sorted(workdir.glob("runs/*/tflite/*.labels.txt"))
    assert len(labels) == 2  # the student without and with KD
    for path in labels:
        assert path.read_text().split() == ["cat", "dog", "eel"]


def test_rgba_folder_says_its_channels(tmp_path, capsys):
    """An RGBA folder trains a 4-channel model: one console line says so; an
    RGB folder's load says nothing of channels."""
    rgba = write_image_folder(str(tmp_path / "rgba"), ("a", "b"), per_class=3, channels=4)
    data = data_lib.load_dataset(f"dir:{rgba}", val_size=0)
    assert data.input_shape[-1] == 4
    lines = [line for line in capsys.readouterr().out.splitlines() if "channels" in line]
    assert len(lines) == 1, lines
    assert rgba in lines[0] and "4 channels (RGBA)" in lines[0]
    assert "the model takes 4-channel input" in lines[0]
    rgb = write_image_folder(str(tmp_path / "rgb"), ("a", "b"), per_class=3, channels=3)
    data_lib.load_dataset(f"dir:{rgb}", val_size=0)
    assert "channels" not in capsys.readouterr().out


def test_val_size_checked_against_the_listing(folder):
    """36 images, 7 held out for test (--test_fraction=0.2): at most 28 for validation."""
    assert data_lib.split_sizes(f"dir:{folder}") == (29, 7)
    config = data_lib.DataConfig(dataset=f"dir:{folder}", val_size=29)
    with pytest.raises(ValueError) as raised:
        config.placeholder()
    message = str(raised.value)
    assert message.startswith("--val_size=29: ") and "36 images, 29 for training" in message
    assert "at most 28" in message, message
    data_lib.DataConfig(dataset=f"dir:{folder}", val_size=28).placeholder()
    data = data_lib.DataConfig(dataset=f"dir:{folder}", val_size=28).load()
    assert len(data.x_val) == 28 and len(data.x_train) == 1
