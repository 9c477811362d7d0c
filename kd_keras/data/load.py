"""``load_dataset``: the train / validation / test splits of a dataset, in
memory when they fit or in an on-disk store (:mod:`kd_keras.data.store`)
read back through ``numpy.memmap`` when they do not.
"""

import json
import os

import numpy as np

from kd_keras import console
from kd_keras.data import folders as image_folder
from kd_keras.data import npz, store
from kd_keras.data.dataset import DEFAULT_MANUAL_DIR, DEFAULT_TEST_FRACTION, DataError, Dataset
from kd_keras.data.idx import verify_fashion_mnist
from kd_keras.data.sources import (
    as_numpy,
    builder_image_shape,
    folder_path,
    is_folder,
    prepare_builder,
    split_count,
    write_split,
)
from kd_keras.data.splits import split_test, split_validation, test_index, validation_index

# Channel counts of images with an alpha channel, which a folder's model then
# takes as input too (said on the console: it is rarely what is meant).
ALPHA_CHANNELS = {2: "grayscale and alpha", 4: "RGBA"}


def load_dataset(
    name="fashion_mnist",
    data_dir=None,
    manual_dir=DEFAULT_MANUAL_DIR,
    val_size=5000,
    seed=0,
    verify_counts=True,
    limit_train=0,
    limit_test=0,
    test_fraction=DEFAULT_TEST_FRACTION,
    image_size=None,
    train_split="train",
    test_split="test",
    val_split=None,
    storage="auto",
):
    """Loads a dataset's splits, with a validation split carved from train.

    The splits are read through ``tf.data`` (TFDS) or decoded one image at a
    time (a folder) and kept in memory, or, for data larger than memory,
    written once to a store on disk (:mod:`kd_keras.data.store`) and read from
    there through ``numpy.memmap``: the arrays of the returned Dataset are then
    memmaps, and the pipelines of :func:`make_datasets` read their batches
    from disk.

    Args:
      name: one of SUPPORTED_DATASETS, another TFDS image-classification
        dataset (``image`` and ``label`` features), or ``dir:PATH``, a folder
        with one sub-folder per class (:mod:`kd_keras.data.folders`).
      data_dir: TFDS data directory (default ``~/tensorflow_datasets``).
      manual_dir: directory of the four Fashion-MNIST IDX ``.gz`` files.
      val_size: validation examples taken (stratified) from the train split;
        ignored when `val_split` is given.
      seed: seed of the train/validation (and, for a folder, test) partition.
      verify_counts: check Fashion-MNIST's published split sizes and balance.
      limit_train: if > 0, keep only this many training examples (after the
        validation split), for quick runs.
      limit_test: if > 0, keep only this many test examples.
      test_fraction: for a folder, the share of its images (stratified by
        class) held out for test.
      image_size: (height, width) to resize every image to, or None.
      train_split, test_split: TFDS split strings (e.g. ``train[:90%]``).
      val_split: a TFDS split string for validation (a dataset's own
        validation split), or None to carve `val_size` out of train.
      storage: 'memory', 'disk', or 'auto': memory when the images take at
        most ``kd_keras.data.store.MEMORY_LIMIT_BYTES``, disk otherwise.

    Returns:
      A :class:`Dataset`. Its name is `name`, with ``@HxW`` appended when
      resized (run keys then tell the sizes apart).

    Raises:
      DataError: the dataset is missing, malformed, or not obtainable, or
        its store does not fit on the disk (:class:`store.Build`).

    Length: over 100 lines with its Args and Returns; its code is 98 lines.
    """
    image_size = tuple(image_size) if image_size else None
    if npz.is_npz(name):
        return _npz_dataset(name, val_size, seed, limit_train, limit_test)
    val_split = None if is_folder(name) else val_split
    if is_folder(name):
        try:
            class_names, files, labels = image_folder.list_images(folder_path(name))
            shape = image_folder.decode(files[0]).shape
        except image_folder.FolderError as e:
            raise DataError(str(e)) from None
        shape = (tuple(image_size) + shape[2:]) if image_size else shape
        count = len(files)
        if shape[-1] in ALPHA_CHANNELS:
            console.progress(
                f"image folder {folder_path(name)}: its images have {shape[-1]} channels "
                f"({ALPHA_CHANNELS[shape[-1]]}); the model takes {shape[-1]}-channel input"
            )
        builder = None
    else:
        builder = prepare_builder(name, data_dir, manual_dir, verify_counts)
        shape = builder_image_shape(builder, image_size)
        splits = [train_split, test_split] + ([val_split] if val_split else [])
        counts = [split_count(builder, s) for s in splits]
        count = sum(counts)
    image_bytes = int(np.prod(shape))
    mode = store.choose(storage, count * image_bytes)
    if mode == "disk":
        if builder is None:  # The store of a folder changes with its files.
            stamps = [(f, os.path.getsize(f), os.path.getmtime(f)) for f in files]
            source = {"files": store.digest([np.frombuffer(repr(stamps).encode(), np.uint8)])}
        else:
            source = {"tfds": builder.info.full_name, "data_dir": builder.data_dir}
        settings = dict(
            source,
            name=name,
            image_size=image_size,
            val_size=val_size if not val_split else None,
            seed=seed,
            splits=[train_split, test_split, val_split] if builder else test_fraction,
        )
        if builder is None:  # all.npy, test and rest, then val and train from rest.
            written = 3 * count - int(count * test_fraction)
        else:  # Each split; without a validation split, train twice (rest, val + train).
            written = count + (0 if val_split else counts[0])
        needed = written * image_bytes + 16 * count + STORE_SLACK_BYTES
        arrays, num_classes, class_names = _stored_splits(
            name, builder, settings, image_size, val_size, seed, test_fraction, needed
        )
        x_train, y_train, x_val, y_val, x_test, y_test = arrays
    elif builder is None:
        try:
            x, y, class_names = image_folder.read(folder_path(name), image_size)
        except image_folder.FolderError as e:
            raise DataError(str(e)) from None
        x_train, y_train, x_test, y_test = split_test(x, y, test_fraction, seed)
        x_train, y_train, x_val, y_val = split_validation(x_train, y_train, val_size, seed)
        num_classes = len(class_names)
    else:
        x_train, y_train = as_numpy(builder, train_split, image_size)
        x_test, y_test = as_numpy(builder, test_split, image_size)
        if val_split:
            x_val, y_val = as_numpy(builder, val_split, image_size)
        else:
            x_train, y_train, x_val, y_val = split_validation(x_train, y_train, val_size, seed)
        label = builder.info.features["label"]
        num_classes, class_names = label.num_classes, tuple(label.names)
    if (
        name == "fashion_mnist"
        and verify_counts
        and (train_split, test_split, val_split) == ("train", "test", None)
    ):
        verify_fashion_mnist(np.concatenate([y_train, y_val]), y_test)
    x_train, y_train = _limited(x_train, y_train, limit_train)
    x_test, y_test = _limited(x_test, y_test, limit_test)
    if image_size:
        name = f"{name}@{image_size[0]}x{image_size[1]}"
    return Dataset(
        name,
        x_train,
        y_train,
        x_val,
        y_val,
        x_test,
        y_test,
        num_classes=num_classes,
        class_names=tuple(class_names),
    )


def _limited(x, y, limit):
    """The first `limit` examples of a split (all of them when `limit` is 0)."""
    return (x[:limit], y[:limit]) if limit else (x, y)


def _npz_dataset(name, val_size, seed, limit_train, limit_test):
    """The Dataset of an npz file (:mod:`kd_keras.data.npz`), held in memory:
    its own validation split, or `val_size` examples carved from train."""
    x_train, y_train, x_val, y_val, x_test, y_test, info = npz.read(name)
    if x_val is None:
        x_train, y_train, x_val, y_val = split_validation(x_train, y_train, val_size, seed)
    x_train, y_train = _limited(x_train, y_train, limit_train)
    x_test, y_test = _limited(x_test, y_test, limit_test)
    return Dataset(
        name,
        x_train,
        y_train,
        x_val,
        y_val,
        x_test,
        y_test,
        num_classes=info["num_classes"],
        class_names=info["class_names"],
    )


SPLITS = ("train", "val", "test")
# Bytes a store build needs beyond its images and labels (file headers, meta.json).
STORE_SLACK_BYTES = 1 << 20


def _stored_splits(name, builder, settings, image_size, val_size, seed, test_fraction, needed):
    """The splits of a dataset from its store on disk, building the store first
    when it does not exist yet (see :mod:`kd_keras.data.store`), which takes
    `needed` bytes of disk at most.

    Returns:
      ((x_train, y_train, x_val, y_val, x_test, y_test) with the images as
      read-only memmaps, number of classes, class names).
    """
    final = store.directory(name, settings)
    meta_path = os.path.join(final, "meta.json")
    if not os.path.exists(meta_path):
        with store.Build(final, needed) as build:
            meta = _build_store(
                build, name, builder, settings, image_size, val_size, seed, test_fraction
            )
            with open(build.path("meta.json"), "w") as f:
                json.dump(meta, f, indent=1)
    with open(meta_path) as f:
        meta = json.load(f)
    arrays = []
    for split in SPLITS:
        arrays.append(
            store.open_images(
                os.path.join(final, f"{split}.images.npy"), meta["counts"][split], meta["shape"]
            )
        )
        arrays.append(np.load(os.path.join(final, f"{split}.labels.npy")))
    x_train, y_train, x_val, y_val, x_test, y_test = arrays
    return (
        (x_train, y_train, x_val, y_val, x_test, y_test),
        meta["num_classes"],
        tuple(meta["class_names"]),
    )


def _build_store(build, name, builder, settings, image_size, val_size, seed, test_fraction):
    """Writes the three splits into a store being built; returns its meta dict."""
    out = {}
    if builder is None:
        path = folder_path(name)
        allocate = lambda shape: store.create(build.path("all.npy"), shape[0], shape[1:])  # noqa: E731
        try:
            x, y, class_names = image_folder.read(path, image_size, allocate)
        except image_folder.FolderError as e:
            raise DataError(str(e)) from None
        rest, test = test_index(y, test_fraction, seed)
        out["test"] = (store.take(x, test, build.path("test.images.npy")), y[test])
        x = store.take(x, rest, build.path("rest.npy"))
        y = y[rest]
        num_classes = len(class_names)
    else:
        train_split, test_split, val_split = settings["splits"]
        first = "train.images.npy" if val_split else "rest.npy"
        x, y = write_split(builder, train_split, image_size, build.path(first))
        out["test"] = write_split(builder, test_split, image_size, build.path("test.images.npy"))
        if val_split:
            out["val"] = write_split(builder, val_split, image_size, build.path("val.images.npy"))
        label = builder.info.features["label"]
        num_classes, class_names = label.num_classes, tuple(label.names)
    if "val" not in out:
        train, val = validation_index(y, val_size, seed)
        out["val"] = (store.take(x, val, build.path("val.images.npy")), y[val])
        out["train"] = (store.take(x, train, build.path("train.images.npy")), y[train])
    else:
        out["train"] = (x, y)
    del x
    for temporary in ("all.npy", "rest.npy"):
        if os.path.exists(build.path(temporary)):
            os.remove(build.path(temporary))
    counts = {}
    for split in SPLITS:
        images, labels = out[split]
        if not store.on_disk(images):  # An empty split: no file is mapped.
            np.save(build.path(f"{split}.images.npy"), images)
        np.save(build.path(f"{split}.labels.npy"), np.asarray(labels, np.int64))
        counts[split] = len(labels)
    shape = list(out["train"][0].shape[1:])
    return {
        "name": name,
        "counts": counts,
        "shape": shape,
        "num_classes": int(num_classes),
        "class_names": list(class_names),
    }


# ----------------------------------------------------------------------------
# tf.data
