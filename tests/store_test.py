"""Splits kept on disk (kd_keras.data.store): read through tf.data a chunk at a
time, never with ``batch_size=-1``, and identical to the splits in memory."""

import errno
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from kd_keras import data as data_lib
from kd_keras.data import store
from tests.conftest import write_image_folder


@pytest.fixture(autouse=True)
def store_root(tmp_path, monkeypatch):
    root = tmp_path / "store"
    monkeypatch.setenv("KD_KERAS_STORE", str(root))
    return root


@pytest.fixture
def batch_sizes(monkeypatch):
    """Every batch_size TFDS's as_dataset is called with."""
    seen = []
    original = tfds.core.DatasetBuilder.as_dataset

    def spy(self, *args, **kwargs):
        seen.append(kwargs.get("batch_size"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(tfds.core.DatasetBuilder, "as_dataset", spy)
    return seen


def _load(tmp_path, idx_dir, storage):
    return data_lib.load_dataset(
        "fashion_mnist",
        data_dir=str(tmp_path / "tfds"),
        manual_dir=idx_dir,
        val_size=8,
        seed=2,
        verify_counts=False,
        storage=storage,
    )


def test_tfds_on_disk_equals_memory_and_never_loads_a_split_whole(
    tmp_path, idx_dir, batch_sizes, store_root
):
    on_disk = _load(tmp_path, idx_dir, "disk")
    assert batch_sizes and all(b is None for b in batch_sizes)  # never batch_size=-1
    for split in ("x_train", "x_val", "x_test"):
        assert isinstance(getattr(on_disk, split), np.memmap), split
    in_memory = _load(tmp_path, idx_dir, "memory")
    assert all(b is None for b in batch_sizes)
    assert not isinstance(in_memory.x_train, np.memmap)
    for field in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(on_disk, field), getattr(in_memory, field))
    assert on_disk.class_names == in_memory.class_names and len(on_disk.class_names) == 10
    assert (len(on_disk.x_train), len(on_disk.x_val), len(on_disk.x_test)) == (32, 8, 20)

    # Built once: a second load reads the store without touching TFDS's records.
    (meta,) = store_root.glob("*/meta.json")
    calls = len(batch_sizes)
    again = _load(tmp_path, idx_dir, "disk")
    assert len(batch_sizes) == calls
    np.testing.assert_array_equal(again.x_train, on_disk.x_train)
    assert json.loads(meta.read_text())["counts"] == {"train": 32, "val": 8, "test": 20}


def test_disk_pipelines_give_the_same_batches_as_memory(tmp_path, idx_dir):
    """Training (augmented, mixed), validation and test batches read from disk
    equal the in-memory ones, so where the data lives never changes a run."""
    augment = data_lib.AugmentConfig(crop_padding=2, flip=True, cutout=4, mixup=0.2)
    pipes = {
        storage: data_lib.make_datasets(
            _load(tmp_path, idx_dir, storage), batch_size=8, augment=augment, seed=5, epochs=2
        )
        for storage in ("memory", "disk")
    }
    for split in ("train", "val", "test"):
        memory, disk = (list(pipes[s][split].as_numpy_iterator()) for s in ("memory", "disk"))
        assert len(memory) == len(disk) > 0
        for (xm, ym), (xd, yd) in zip(memory, disk):
            np.testing.assert_array_equal(xm, xd)
            np.testing.assert_array_equal(ym, yd)


def test_folder_on_disk_equals_memory(tmp_path):
    folder = write_image_folder(str(tmp_path / "images"), per_class=10)
    kwargs = dict(val_size=4, seed=1, test_fraction=0.3, image_size=(8, 8))
    disk = data_lib.load_dataset(f"dir:{folder}", storage="disk", **kwargs)
    memory = data_lib.load_dataset(f"dir:{folder}", storage="memory", **kwargs)
    assert isinstance(disk.x_train, np.memmap)
    for field in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(disk, field), getattr(memory, field))
    assert disk.class_names == ("cat", "dog", "eel")


def test_a_changed_folder_gets_a_new_store(tmp_path, store_root):
    folder = write_image_folder(str(tmp_path / "images"), per_class=6)
    first = data_lib.load_dataset(f"dir:{folder}", val_size=2, storage="disk")
    write_image_folder(str(tmp_path / "images"), classes=("zebra",), per_class=6)
    second = data_lib.load_dataset(f"dir:{folder}", val_size=2, storage="disk")
    assert len(list(store_root.glob("*/meta.json"))) == 2
    assert second.class_names == ("cat", "dog", "eel", "zebra")
    assert len(second.y_train) + len(second.y_val) + len(second.y_test) == 24
    assert len(first.y_train) + len(first.y_val) + len(first.y_test) == 18


def test_a_failed_build_leaves_nothing(tmp_path, store_root):
    final = str(store_root / "x-1")
    with pytest.raises(RuntimeError):
        with store.Build(final) as build:
            store.create(build.path("train.images.npy"), 4, (2, 2, 1))
            raise RuntimeError("killed")
    assert not os.path.exists(final)
    assert not store_root.exists() or not list(store_root.iterdir())


def test_take_on_disk_is_reused_and_equals_fancy_indexing(tmp_path):
    rng = np.random.default_rng(0)
    source = store.create(str(tmp_path / "a.npy"), 50, (3, 3, 1))
    source[:] = rng.integers(0, 256, source.shape)
    source.flush()
    images = store.open_images(str(tmp_path / "a.npy"), 50, (3, 3, 1))
    index = rng.integers(0, 50, 70)
    taken = store.take(images, index)
    assert isinstance(taken, np.memmap)
    np.testing.assert_array_equal(taken, np.asarray(images)[index])
    assert store.take(images, index).filename == taken.filename  # reused, not rewritten
    np.testing.assert_array_equal(store.take(np.asarray(images), index), taken)


def test_auto_storage_by_size():
    assert store.choose("auto", 10, limit=100) == "memory"
    assert store.choose("auto", 101, limit=100) == "disk"
    assert store.choose("disk", 1) == "disk" and store.choose("memory", 10**12) == "memory"
    with pytest.raises(ValueError, match="storage must be one of"):
        store.choose("ram", 1)


def test_gather_images_reads_only_the_rows_asked(tmp_path):
    source = store.create(str(tmp_path / "b.npy"), 20, (2, 2, 1))
    source[:] = np.arange(20, dtype=np.uint8)[:, None, None, None]
    source.flush()
    images = store.open_images(str(tmp_path / "b.npy"), 20, (2, 2, 1))
    gather = data_lib.gather_images(images)
    out = gather(np.array([7, 3, 3], np.int64)).numpy()
    assert out.shape == (3, 2, 2, 1) and list(out[:, 0, 0, 0]) == [7, 3, 3]
    batches = list(data_lib.image_batches(images, 8, np.arange(20)).as_numpy_iterator())
    assert [len(b[0]) for b in batches] == [8, 8, 4]
    np.testing.assert_allclose(batches[2][0][:, 0, 0, 0], np.arange(16, 20) / 255.0, rtol=1e-6)


def _full_disk(*args):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_is_a_data_error_and_leaves_no_temporary_directory(
    tmp_path, store_root, monkeypatch
):
    folder = write_image_folder(str(tmp_path / "images"), per_class=6)
    monkeypatch.setattr(os, "posix_fallocate", _full_disk)
    with pytest.raises(data_lib.DataError) as error:
        data_lib.load_dataset(f"dir:{folder}", val_size=2, storage="disk")
    message = str(error.value)
    assert "\n" not in message and str(store_root) in message
    assert "bytes" in message and "--data_storage=memory" in message
    assert "$KD_KERAS_STORE" in message
    assert not store_root.exists() or not list(store_root.iterdir())


def test_too_little_free_space_is_refused_before_writing(tmp_path, store_root, monkeypatch):
    folder = write_image_folder(str(tmp_path / "images"), per_class=6)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(store.shutil, "disk_usage", lambda path: usage._replace(free=1000))
    with pytest.raises(data_lib.DataError, match=r"needs [\d,]+ bytes and 1,000 are free"):
        data_lib.load_dataset(f"dir:{folder}", val_size=2, storage="disk")
    assert not store_root.exists() or not list(store_root.iterdir())


def test_reserving_without_fallocate_keeps_the_header(tmp_path, monkeypatch):
    def unsupported(*args):
        raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))

    monkeypatch.setattr(os, "posix_fallocate", unsupported)
    images = store.create(str(tmp_path / "c.npy"), 5, (3, 3, 1))
    images[:] = 7
    images.flush()
    np.testing.assert_array_equal(np.load(str(tmp_path / "c.npy")), np.full((5, 3, 3, 1), 7))


def _dead_pid():
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], **_OUT)
    return int(proc.stdout)


_OUT = dict(capture_output=True, text=True, check=True)


def test_orphans_of_dead_builds_are_removed_at_the_next_build(tmp_path, store_root, capsys):
    host, dead = store.host_name(), _dead_pid()
    orphans = [store_root / f"a-1.tmp-{host}-{dead}", store_root / f"b-2.tmp-{dead}"]
    kept = [
        store_root / f"c-3.tmp-{host}-{os.getppid()}",  # A running process.
        store_root / f"d-4.tmp-elsewhere-{dead}",  # Another host's: its pid means nothing here.
    ]
    for path in orphans + kept:
        path.mkdir(parents=True)
        (path / "train.images.npy").write_bytes(b"x" * 100)
    folder = write_image_folder(str(tmp_path / "images"), per_class=6)
    data = data_lib.load_dataset(f"dir:{folder}", val_size=2, storage="disk")
    assert isinstance(data.x_train, np.memmap)
    assert not any(path.exists() for path in orphans)
    assert all(path.exists() for path in kept)
    out = capsys.readouterr().out
    for path in orphans:
        assert f"removed {path}" in out and f"process {dead} (no longer running)" in out
