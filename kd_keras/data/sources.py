"""Where data comes from: TFDS builders (prepared once, under a lock, offline
from the IDX files for Fashion-MNIST), image folders (``dir:PATH``), and the
streaming of a split a chunk at a time.
"""

import contextlib
import fcntl
import os
import socket

import numpy as np

from kd_keras import runs
from kd_keras.data import folders as image_folder
from kd_keras.data import npz, store
from kd_keras.data.dataset import (
    DATASET_SHAPES,
    DATASET_SIZES,
    DEFAULT_MANUAL_DIR,
    DEFAULT_TEST_FRACTION,
    FOLDER_PREFIX,
    SUPPORTED_DATASETS,
    DataError,
    Dataset,
)
from kd_keras.data.idx import IDX_FILES, missing_idx_files, read_idx_split, verify_fashion_mnist
from kd_keras.data.splits import test_size
from kd_keras.keras_compat import tf


def is_folder(name):
    """True for a ``dir:PATH`` dataset name."""
    return name.startswith(FOLDER_PREFIX)


def folder_path(name):
    """The PATH of a ``dir:PATH`` dataset name (``~`` expanded)."""
    return os.path.expanduser(name[len(FOLDER_PREFIX) :])


def folder_shape(path):
    """(input shape, classes) of an image folder from its listing and one image.

    Raises:
      DataError: a missing or empty folder, fewer than 2 classes, or an
        unreadable first image.
    """
    try:
        return image_folder.shape(path)
    except image_folder.FolderError as e:
        raise DataError(str(e)) from None


def _tfds_builder(name, data_dir):
    """The TFDS builder of an image-classification dataset `name` (not prepared
    necessarily), checked to have an ``image`` and a ``label`` feature.

    Raises:
      DataError: not a TFDS dataset, or not image classification.
    """
    import tensorflow_datasets as tfds

    data_dir = os.path.expanduser(data_dir or "~/tensorflow_datasets")
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # noqa: BLE001 — TFDS raises several kinds for unknown names.
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(
            f"'{name}' is neither a registered dataset {SUPPORTED_DATASETS}, a "
            f"{FOLDER_PREFIX}PATH image folder, nor a TFDS dataset ({first})."
        ) from None
    features = builder.info.features
    keys = set(features.keys()) if hasattr(features, "keys") else set()
    if not {"image", "label"} <= keys or not hasattr(features["label"], "num_classes"):
        raise DataError(
            f"TFDS dataset '{name}' is not image classification: it needs an 'image' and a "
            f"class 'label' feature; it has {sorted(keys)}."
        )
    return builder


def _tfds_shape(name, data_dir):
    """(image shape, classes) of a TFDS dataset that is prepared in `data_dir`
    or can be downloaded.

    Raises:
      DataError: unknown, not image classification, or neither prepared nor
        downloadable.
    """
    builder = _tfds_builder(name, data_dir)
    if not builder.is_prepared():
        offline = offline_reason()
        if offline:
            raise DataError(
                f"TFDS dataset '{name}' is not prepared in {builder.data_dir_root} and cannot "
                f"be downloaded ({offline}); prepare it there first "
                f"(`tfds build {name} --data_dir=DIR`, then --data_dir=DIR)."
            )
    features = builder.info.features
    return tuple(features["image"].shape), int(features["label"].num_classes)


def placeholder(name, data_dir=None, image_size=None):
    """An empty Dataset with `name`'s shapes and class count, for validating
    models and configurations before the data is loaded.

    For the four registered datasets the shapes are known; for ``dir:PATH``
    only the folder listing and one image are read; for another TFDS name,
    its builder's info.

    Args:
      name: a registered dataset, another TFDS image-classification dataset,
        or ``dir:PATH``.
      data_dir: TFDS data directory (default ``~/tensorflow_datasets``).
      image_size: (height, width) the images will be resized to, or None.

    Raises:
      DataError: the dataset cannot be found or is not image classification.
    """
    if npz.is_npz(name):
        if image_size:
            raise DataError(
                "--image_size applies to images; an npz dataset is used at its own shape."
            )
        return npz.placeholder(name)
    if is_folder(name):
        shape, classes = folder_shape(folder_path(name))
    elif name in DATASET_SHAPES:
        shape, classes = DATASET_SHAPES[name]
    else:
        shape, classes = _tfds_shape(name, data_dir)
    if image_size:
        shape = tuple(image_size) + tuple(shape[2:])
    if shape[0] is None or shape[1] is None:
        raise DataError(
            f"Dataset '{name}' has images of varying size; give --image_size=HEIGHT,WIDTH."
        )
    x = np.zeros((0,) + tuple(shape), np.uint8)
    y = np.zeros((0,), np.int64)
    return Dataset(name, x, y, x, y, x, y, num_classes=classes)


def split_sizes(
    name, data_dir=None, test_fraction=DEFAULT_TEST_FRACTION, train_split="train", test_split="test"
):
    """(training examples, test examples) of a dataset, known without loading
    it, or None when they are not known cheaply.

    The registered datasets' sizes are known (DATASET_SIZES, for the splits
    'train' and 'test'); a ``dir:PATH`` folder's come from its listing and
    `test_fraction` (the split :func:`kd_keras.data.splits.test_index` makes);
    another TFDS dataset's from its builder's info when it is prepared.

    Raises:
      DataError: a missing or empty folder, or one with fewer than 2 classes.
    """
    if npz.is_npz(name):
        info = npz.describe(npz.npz_path(name))
        return None if info["has_val"] else (info["sizes"]["train"], info["sizes"]["test"])
    if is_folder(name):
        try:
            _, files, _ = image_folder.list_images(folder_path(name))
        except image_folder.FolderError as e:
            raise DataError(str(e)) from None
        test = test_size(len(files), test_fraction) if len(files) > 1 else 0
        return len(files) - test, test
    if (train_split, test_split) != ("train", "test"):
        return None
    if name in DATASET_SIZES:
        return DATASET_SIZES[name]
    try:
        builder = _tfds_builder(name, data_dir)
        if not builder.is_prepared():
            return None
        return split_count(builder, train_split), split_count(builder, test_split)
    except Exception:  # noqa: BLE001 — unknown sizes are checked when the data loads.
        return None


# ----------------------------------------------------------------------------
# IDX files


def _local_fashion_mnist_builder(data_dir, manual_dir, verify_counts=True):
    """A TFDS builder for ``fashion_mnist`` that reads IDX files from disk."""
    import tensorflow_datasets as tfds
    from tensorflow_datasets.image_classification import mnist

    class LocalFashionMNIST(mnist.FashionMNIST, skip_registration=True):
        """``fashion_mnist`` prepared from verified local IDX files."""

        name = "fashion_mnist"

        def _split_generators(self, dl_manager):
            del dl_manager  # Nothing is downloaded; the files are on disk.
            train = read_idx_split(manual_dir, "train")
            test = read_idx_split(manual_dir, "test")
            if verify_counts:
                verify_fashion_mnist(train[1], test[1])
            return [
                tfds.core.SplitGenerator(name=tfds.Split.TRAIN, gen_kwargs=dict(arrays=train)),
                tfds.core.SplitGenerator(name=tfds.Split.TEST, gen_kwargs=dict(arrays=test)),
            ]

        def _generate_examples(self, arrays):
            images, labels = arrays
            for index, (image, label) in enumerate(zip(images, labels)):
                yield index, {"image": image, "label": int(label)}

    return LocalFashionMNIST(data_dir=data_dir)


def _no_data_message(name, data_dir, manual_dir, cause):
    msg = (
        f"Dataset '{name}' is not prepared in {data_dir} and could not be "
        f"downloaded ({type(cause).__name__}: {cause})."
    )
    if name == "fashion_mnist":
        msg += (
            " Two ways to get it: (1) offline, install the IDX files with "
            "`apt-get install dataset-fashion-mnist` (they land in "
            f"{DEFAULT_MANUAL_DIR}) or pass --manual_dir=DIR naming a directory "
            f"holding {sorted(IDX_FILES.values())}; (2) online, let "
            "tensorflow-datasets download it into --data_dir."
        )
    else:
        msg += (
            " It needs internet access for tensorflow-datasets to download it, "
            "or a --data_dir where it is already prepared."
        )
    return msg


STREAM_BATCH = 1024


def _stream_split(builder, split, image_size=None):
    """One split of a prepared builder, read through ``tf.data`` a chunk at a
    time: yields (uint8 images, int64 labels) numpy chunks, resized to
    `image_size` when given (images of varying size need it)."""
    import tensorflow_datasets as tfds

    ds = builder.as_dataset(split=split, as_supervised=True)
    if image_size is not None:

        def resize(image, label):
            out = tf.image.resize(image, image_size, method="bilinear", antialias=True)
            return tf.cast(tf.clip_by_value(tf.round(out), 0, 255), tf.uint8), label

        ds = ds.map(resize, num_parallel_calls=tf.data.AUTOTUNE)
    for x, y in tfds.as_numpy(ds.batch(STREAM_BATCH).prefetch(2)):
        yield x.astype(np.uint8, copy=False), y.astype(np.int64, copy=False)


def split_count(builder, split):
    """Examples in a TFDS split string (``train``, ``train[:90%]``, ...)."""
    return int(builder.info.splits[split].num_examples)


def builder_image_shape(builder, image_size):
    shape = tuple(builder.info.features["image"].shape)
    return (tuple(image_size) + shape[2:]) if image_size else shape


# Folder, inside a prepared TFDS dataset's directory, of its splits decoded to numpy.
DECODED_DIR = "kd_keras_decoded"


def decoded_path(builder, split, image_size=None):
    """Where :func:`as_numpy` keeps a split decoded (``.npz``): in the prepared
    dataset's own directory, named by the split and the size."""
    size = f"@{image_size[0]}x{image_size[1]}" if image_size else ""
    name = "".join(c if c.isalnum() or c in "-_%" else "_" for c in split)
    return os.path.join(builder.data_dir, DECODED_DIR, f"{name}{size}.npz")


def as_numpy(builder, split, image_size=None):
    """One split of a prepared builder in memory, as (uint8 images, int64 labels).

    Decoding a split's images through ``tf.data`` takes seconds (about 3 s
    for Fashion-MNIST's 70,000 PNGs); the decoded arrays are kept beside the
    prepared data (:func:`decoded_path`, written atomically) and read from
    there by later runs in milliseconds. A directory that cannot be written
    is decoded every time.
    """
    path = decoded_path(builder, split, image_size)
    try:
        with np.load(path) as kept:
            return kept["images"], kept["labels"]
    except (OSError, ValueError, KeyError):
        pass  # Not decoded yet (or unreadable): decode it again.
    chunks = list(_stream_split(builder, split, image_size))
    if not chunks:
        return np.zeros((0,) + builder_image_shape(builder, image_size), np.uint8), np.zeros(
            0, np.int64
        )
    images = np.concatenate([c[0] for c in chunks])
    labels = np.concatenate([c[1] for c in chunks])
    try:
        runs.write_npz(path, {"images": images, "labels": labels})
    except OSError:
        pass  # A read-only dataset directory: decoded again next time.
    return images, labels


def write_split(builder, split, image_size, path):
    """One split of a prepared builder written to a store file at `path`, a
    chunk at a time. Returns (uint8 memmap images, int64 labels)."""
    count = split_count(builder, split)
    images = store.create(path, count, builder_image_shape(builder, image_size))
    labels, filled = [], 0
    for x, y in _stream_split(builder, split, image_size):
        if filled + len(x) > count:
            raise DataError(f"split {split!r} holds more than the {count} examples TFDS lists.")
        images[filled : filled + len(x)] = x
        labels.append(y)
        filled += len(x)
    if filled != count:
        raise DataError(f"split {split!r} gave {filled} examples; TFDS lists {count}.")
    return images, np.concatenate(labels) if labels else np.zeros(0, np.int64)


DOWNLOAD_HOST = ("storage.googleapis.com", 443)


def offline_reason(timeout=5.0):
    """Why TFDS's download server is unreachable, or None when it is reachable."""
    host = DOWNLOAD_HOST
    try:
        socket.create_connection(host, timeout=timeout).close()
    except OSError as e:
        return f"no connection to {host[0]}: {e}"
    return None


def prepare_builder(
    name, data_dir=None, manual_dir=DEFAULT_MANUAL_DIR, verify_counts=True, download=True
):
    """Returns a TFDS builder for `name` with its data prepared in `data_dir`.

    For ``fashion_mnist``, already prepared data is used first, then the IDX
    files in `manual_dir`, then a download. For the others (any TFDS
    image-classification dataset), TFDS's usual download-and-prepare.

    Raises:
      DataError: the dataset is unknown, not image classification, malformed,
        or not obtainable.
    """
    data_dir = os.path.expanduser(data_dir or "~/tensorflow_datasets")
    builder = _tfds_builder(name, data_dir)
    if builder.is_prepared():
        return builder
    with preparation_lock(data_dir, name):
        # Another process (a worker of a distributed study, say) may have
        # prepared it while this one waited.
        builder = _tfds_builder(name, data_dir)
        if builder.is_prepared():
            return builder
        return _prepare(builder, name, data_dir, manual_dir, verify_counts, download)


@contextlib.contextmanager
def preparation_lock(data_dir, name):
    """Holds ``<data_dir>/.<name>.prepare.lock`` exclusively: one process at a
    time prepares a dataset in a data directory (TFDS fails the second of two
    concurrent preparations when it renames its finished directory)."""
    os.makedirs(data_dir, exist_ok=True)
    fd = os.open(os.path.join(data_dir, f".{name}.prepare.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"Waiting for another process preparing '{name}' in {data_dir} ...", flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # Closing the only descriptor releases the lock.


def _prepare(builder, name, data_dir, manual_dir, verify_counts, download):
    if name == "fashion_mnist" and manual_dir and os.path.isdir(manual_dir):
        missing = missing_idx_files(manual_dir)
        if not missing:
            local = _local_fashion_mnist_builder(data_dir, manual_dir, verify_counts)
            local.download_and_prepare()
            return local
        if len(missing) < len(IDX_FILES):
            raise DataError(f"{manual_dir} lacks {missing}; it needs all four IDX files.")
    if not download:
        raise DataError(
            _no_data_message(name, data_dir, manual_dir, FileNotFoundError("download disabled"))
        )
    offline = offline_reason()
    if offline:  # TFDS would retry for minutes before giving up.
        raise DataError(_no_data_message(name, data_dir, manual_dir, ConnectionError(offline)))
    try:
        builder.download_and_prepare()
    except Exception as e:  # noqa: BLE001 — any download failure gets the same advice.
        raise DataError(_no_data_message(name, data_dir, manual_dir, e)) from e
    return builder
