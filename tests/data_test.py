"""The data layer on tiny IDX fixtures written here, and on bad inputs."""

import gzip
import os
import threading
import time

import numpy as np
import pytest
from conftest import tiny_dataset, write_idx, write_idx_dir

from kd_keras import data as data_lib
from kd_keras.data import sources


def test_read_idx_round_trip(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(str(tmp_path / "a.gz"), arr)
    np.testing.assert_array_equal(data_lib.read_idx(str(tmp_path / "a.gz")), arr)


def test_read_idx_split_shapes(idx_dir):
    x, y = data_lib.read_idx_split(idx_dir, "train")
    assert x.shape == (40, 28, 28, 1) and x.dtype == np.uint8
    np.testing.assert_array_equal(y, np.arange(40) % 10)


def test_missing_file(tmp_path):
    with pytest.raises(data_lib.DataError, match="not found"):
        data_lib.read_idx(str(tmp_path / "nope.gz"))


def test_truncated_file(idx_dir):
    path = os.path.join(idx_dir, data_lib.IDX_FILES["train_images"])
    with gzip.open(path) as f:
        raw = f.read()
    with gzip.open(path, "wb") as f:
        f.write(raw[:-100])
    with pytest.raises(data_lib.DataError, match="truncated"):
        data_lib.read_idx_split(idx_dir, "train")


def test_truncated_gzip_stream(idx_dir):
    path = os.path.join(idx_dir, data_lib.IDX_FILES["test_images"])
    with open(path, "rb") as f:
        raw = f.read()
    with open(path, "wb") as f:
        f.write(raw[: len(raw) // 2])
    with pytest.raises(data_lib.DataError, match="Cannot read"):
        data_lib.read_idx_split(idx_dir, "test")


def test_not_an_idx_file(tmp_path):
    path = tmp_path / "x.gz"
    with gzip.open(path, "wb") as f:
        f.write(b"hello world, not idx")
    with pytest.raises(data_lib.DataError, match="not an IDX file"):
        data_lib.read_idx(str(path))


def test_wrong_label_count(idx_dir):
    write_idx(os.path.join(idx_dir, data_lib.IDX_FILES["train_labels"]), np.zeros(39))
    with pytest.raises(data_lib.DataError, match="40 images but 39 labels"):
        data_lib.read_idx_split(idx_dir, "train")


def test_label_out_of_range(idx_dir):
    write_idx(os.path.join(idx_dir, data_lib.IDX_FILES["test_labels"]), np.full(20, 12))
    with pytest.raises(data_lib.DataError, match=r"\[0, 9\]"):
        data_lib.read_idx_split(idx_dir, "test")


def test_fashion_mnist_counts_are_verified():
    with pytest.raises(data_lib.DataError, match="60000 train"):
        data_lib.verify_fashion_mnist(np.arange(40) % 10, np.arange(20) % 10)
    y = np.repeat(np.arange(10), 6000)
    y[0] = 1  # one example moved from class 0 to class 1
    with pytest.raises(data_lib.DataError, match="per class"):
        data_lib.verify_fashion_mnist(y, np.zeros(10000, int))
    data_lib.verify_fashion_mnist(np.repeat(np.arange(10), 6000), np.zeros(10000, int))


def test_prepares_through_tfds_from_manual_dir(tmp_path, idx_dir):
    arrays = write_idx_dir(idx_dir, n_train=40, n_test=20, seed=3)
    ds = data_lib.load_dataset(
        "fashion_mnist",
        data_dir=str(tmp_path / "tfds"),
        manual_dir=idx_dir,
        val_size=10,
        verify_counts=False,
    )
    assert (len(ds.x_train), len(ds.x_val), len(ds.x_test)) == (30, 10, 20)
    assert ds.num_classes == 10 and ds.class_names[0] == "T-shirt/top"
    assert ds.input_shape == (28, 28, 1)
    # Content survived TFDS's encoding: the test images are the ones written.
    got = sorted(map(bytes, ds.x_test[..., 0]))
    want = sorted(map(bytes, arrays["test_images"].astype(np.uint8)))
    assert got == want
    assert (tmp_path / "tfds" / "fashion_mnist").is_dir()


def test_a_decoded_split_is_kept_and_read_back_without_decoding(tmp_path, idx_dir, monkeypatch):
    def load():
        return data_lib.load_dataset(
            "fashion_mnist",
            data_dir=str(tmp_path / "tfds"),
            manual_dir=idx_dir,
            val_size=10,
            verify_counts=False,
        )

    first = load()
    kept = list((tmp_path / "tfds").glob(f"fashion_mnist/*/{sources.DECODED_DIR}/*.npz"))
    assert sorted(p.name for p in kept) == ["test.npz", "train.npz"]

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(sources, "_stream_split", no_decoding)
    again = load()
    for split in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(again, split), getattr(first, split))
    kept[0].write_bytes(b"torn")  # An unreadable copy is decoded again.
    monkeypatch.undo()
    np.testing.assert_array_equal(load().x_test, first.x_test)


def test_one_process_at_a_time_prepares_a_data_dir(tmp_path, idx_dir, capsys):
    data_dir = str(tmp_path / "tfds")
    done = {}

    def prepare():
        done["builder"] = data_lib.prepare_builder(
            "fashion_mnist", data_dir, idx_dir, verify_counts=False
        )

    with data_lib.preparation_lock(data_dir, "fashion_mnist"):  # another preparer
        waiter = threading.Thread(target=prepare)
        waiter.start()
        waiter.join(timeout=2.0)
        assert waiter.is_alive() and not os.path.exists(os.path.join(data_dir, "fashion_mnist"))
    waiter.join(timeout=120)
    assert not waiter.is_alive() and done["builder"].is_prepared()
    assert "Waiting for another process preparing 'fashion_mnist'" in capsys.readouterr().out
    # Prepared once: a second call takes the prepared data without the lock.
    with data_lib.preparation_lock(data_dir, "fashion_mnist"):
        again = data_lib.prepare_builder("fashion_mnist", data_dir, idx_dir, verify_counts=False)
    assert again.is_prepared()


def test_manual_dir_with_wrong_counts_fails_verification(tmp_path, idx_dir):
    with pytest.raises(data_lib.DataError, match="60000 train"):
        data_lib.prepare_builder("fashion_mnist", str(tmp_path / "tfds"), idx_dir)


def test_no_data_names_both_ways(tmp_path):
    with pytest.raises(data_lib.DataError) as e:
        data_lib.prepare_builder(
            "fashion_mnist", str(tmp_path / "tfds"), str(tmp_path / "none"), download=False
        )
    msg = str(e.value)
    assert "apt-get install dataset-fashion-mnist" in msg and "--manual_dir" in msg
    assert "download" in msg


@pytest.mark.parametrize("name, manual", [("cifar10", None), ("fashion_mnist", "empty")])
def test_offline_download_fails_in_seconds(tmp_path, monkeypatch, name, manual):
    # A closed local port stands for an unreachable download server.
    monkeypatch.setattr(sources, "DOWNLOAD_HOST", ("127.0.0.1", 9))
    manual_dir = tmp_path / "empty"
    manual_dir.mkdir()
    start = time.time()
    with pytest.raises(data_lib.DataError, match="no connection to 127.0.0.1"):
        data_lib.prepare_builder(name, str(tmp_path / "tfds"), str(manual_dir) if manual else None)
    assert time.time() - start < 20


def test_partial_manual_dir(tmp_path, idx_dir):
    os.remove(os.path.join(idx_dir, data_lib.IDX_FILES["test_labels"]))
    with pytest.raises(data_lib.DataError, match="lacks"):
        data_lib.prepare_builder("fashion_mnist", str(tmp_path / "tfds"), idx_dir)


def test_unknown_dataset():
    with pytest.raises(data_lib.DataError, match="neither a registered dataset.*nor a TFDS"):
        data_lib.prepare_builder("imagenet")
    with pytest.raises(data_lib.DataError, match="nor a TFDS"):
        data_lib.placeholder("imagenet")


def test_tfds_dataset_not_prepared_offline(tmp_path, monkeypatch):
    """Any TFDS image-classification name is accepted; one neither prepared in
    --data_dir nor downloadable is a clear error (this machine is offline)."""
    monkeypatch.setattr(sources, "offline_reason", lambda: "no network")
    with pytest.raises(data_lib.DataError, match=r"'beans' is not prepared in .*no network"):
        data_lib.placeholder("beans", data_dir=str(tmp_path))
    with pytest.raises(data_lib.DataError, match="not image classification"):
        data_lib.placeholder("imdb_reviews", data_dir=str(tmp_path))


def test_split_validation_is_stratified_and_disjoint():
    x = np.arange(1000)
    y = np.repeat(np.arange(10), 100)
    xt, yt, xv, yv = data_lib.split_validation(x, y, 200, seed=1)
    assert len(xv) == 200 and len(xt) == 800
    assert not set(xt) & set(xv)
    assert np.all(np.bincount(yv) == 20)
    with pytest.raises(data_lib.DataError, match="val_size"):
        data_lib.split_validation(x, y, 1000)


def test_pipelines_batch_and_augment():
    ds = tiny_dataset(64)
    pipes = data_lib.make_datasets(
        ds, batch_size=16, augment=data_lib.AugmentConfig(crop_padding=2, flip=True, cutout=6)
    )
    xb, yb = next(iter(pipes["train"]))
    assert xb.shape == (16, 28, 28, 1) and float(xb.numpy().max()) <= 1.0
    assert sum(int(b[0].shape[0]) for b in pipes["test"]) == 32
    # Augmentation changes the images; evaluation pipelines never do.
    plain = data_lib.make_datasets(ds, batch_size=64)
    assert not np.allclose(
        sorted(xb.numpy().sum((1, 2, 3))),
        sorted(next(iter(plain["train"]))[0].numpy().sum((1, 2, 3)))[:16],
    )
    np.testing.assert_allclose(
        next(iter(pipes["test"]))[0].numpy(), ds.x_test[:16] / 255.0, rtol=1e-6
    )


def test_cutout_zeroes_a_square():
    img = np.ones((10, 10, 1), np.float32)
    for kwargs in ({"key": [1, 2]}, {"seed": 3}):  # Stateless, or stateful seeded.
        out = data_lib.cutout(img, 4, **kwargs).numpy()
        zeros = int((out == 0).sum())
        assert 4 <= zeros <= 16  # a 4x4 square, clipped at the border


def test_augment_parse():
    cfg = data_lib.AugmentConfig.parse(["crop=4", "flip", "cutout"])
    assert cfg == data_lib.AugmentConfig(crop_padding=4, flip=True, cutout=8)
    assert not data_lib.AugmentConfig.parse(["none"]).enabled
    with pytest.raises(ValueError, match="allowed"):
        data_lib.AugmentConfig.parse(["rotate=10"])
