"""Datasets through tensorflow-datasets, and the tf.data pipelines around them.

``load_dataset`` returns the train / validation / test splits of one of the
four registered datasets, any other TFDS image-classification dataset, or an
image folder (``dir:PATH``, see :mod:`kd_keras.image_folder`), read through
``tf.data`` a chunk at a time: as numpy arrays in memory when they fit, or
written once to a store on disk and read back through ``numpy.memmap``
(:mod:`kd_keras.store`) when they do not; ``make_datasets`` turns them
into batched and prefetched ``tf.data`` pipelines; the training one shuffles
and augments (as named in an :class:`AugmentConfig`) as a pure function of
the seed and the epoch.

Fashion-MNIST has an offline path: when TFDS has not prepared it yet and cannot
download it, it is prepared through TFDS from the four IDX ``.gz`` files in a
*manual directory* (by default where Debian's ``dataset-fashion-mnist`` package
puts them). Those files are re-compressed, so their checksums differ from the
ones TFDS records; instead of checksums, the content is verified: well-formed
IDX headers, matching image and label counts, 60000/10000 examples and 6000
training examples per class.
"""

import contextlib
import dataclasses
import fcntl
import gzip
import json
import os
import socket
import struct
from typing import Optional

import numpy as np

from kd_keras import image_folder, store
from kd_keras.keras_compat import tf

DEFAULT_MANUAL_DIR = "/usr/share/datasets/fashion-mnist"
SUPPORTED_DATASETS = ("fashion_mnist", "mnist", "cifar10", "cifar100")
# `--dataset=dir:PATH`: a folder with one sub-folder per class.
FOLDER_PREFIX = "dir:"
DEFAULT_TEST_FRACTION = 0.2
# (input shape, number of classes) of each supported dataset, known without
# loading it, so configurations are validated before any data is read.
DATASET_SHAPES = {
    "fashion_mnist": ((28, 28, 1), 10),
    "mnist": ((28, 28, 1), 10),
    "cifar10": ((32, 32, 3), 10),
    "cifar100": ((32, 32, 3), 100),
}

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
FASHION_MNIST_COUNTS = {"train": 60000, "test": 10000, "train_per_class": 6000}
_IDX_DTYPES = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: np.int16,
    0x0C: np.int32,
    0x0D: np.float32,
    0x0E: np.float64,
}


class DataError(ValueError):
    """Raised when a dataset is missing, malformed or not what was asked for."""


@dataclasses.dataclass
class Dataset:
    """A dataset in memory: uint8 images (N, H, W, C) and int64 labels (N,)."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    class_names: tuple = ()

    @property
    def input_shape(self):
        return tuple(self.x_train.shape[1:])


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation. All off by default.

    Attributes:
      crop_padding: pixels of zero padding before a random crop back to the
        original size; 0 disables random cropping.
      flip: random horizontal flip.
      cutout: side of a square zeroed at a random position; 0 disables it.
      mixup: alpha of mixup (Zhang et al. 2018): each batch is blended with
        a permutation of itself, ``lam * x + (1 - lam) * x[perm]`` with
        ``lam ~ Beta(alpha, alpha)``; 0 disables it.
      cutmix: alpha of CutMix (Yun et al. 2019): a box of each image, of
        area ``1 - lam``, is replaced by its partner's; 0 disables it. With
        both mixup and cutmix, each batch uses one of them, with equal odds.

    With mixup or cutmix the training labels are soft: float32 (batch,
    classes), ``lam * onehot(y) + (1 - lam) * onehot(y[perm])`` (see
    :func:`mix_batch`).
    """

    crop_padding: int = 0
    flip: bool = False
    cutout: int = 0
    mixup: float = 0.0
    cutmix: float = 0.0

    def __post_init__(self):
        if self.crop_padding < 0:
            raise ValueError(f"crop_padding must be >= 0, got {self.crop_padding}.")
        if self.cutout < 0:
            raise ValueError(f"cutout must be >= 0, got {self.cutout}.")
        for name in ("mixup", "cutmix"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} alpha must be >= 0, got {getattr(self, name)}.")

    @property
    def enabled(self):
        return bool(self.crop_padding or self.flip or self.cutout or self.mixes)

    @property
    def mixes(self):
        """True when batches are mixed (mixup or cutmix): labels are soft."""
        return bool(self.mixup or self.cutmix)

    @classmethod
    def parse(cls, items):
        """Parses ``["crop=2", "flip", "cutout=8", "mixup=0.2"]`` (a flag's list value).

        Raises:
          ValueError: an unknown item or a malformed value.
        """
        kwargs = {}
        for item in items or ():
            key, _, value = item.strip().partition("=")
            try:
                if key == "crop":
                    kwargs["crop_padding"] = int(value or 2)
                elif key == "flip" and not value:
                    kwargs["flip"] = True
                elif key == "cutout":
                    kwargs["cutout"] = int(value or 8)
                elif key in ("mixup", "cutmix"):
                    kwargs[key] = float(value or (0.2 if key == "mixup" else 1.0))
                    if not kwargs[key] > 0:
                        raise ValueError
                elif key in ("", "none"):
                    continue
                else:
                    raise ValueError
            except ValueError:
                raise ValueError(
                    f"Bad augmentation {item!r}; allowed: crop[=PADDING], flip, "
                    "cutout[=SIZE], mixup[=ALPHA>0], cutmix[=ALPHA>0], none."
                ) from None
        return cls(**kwargs)


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
        offline = _offline_reason()
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


# ----------------------------------------------------------------------------
# IDX files


def read_idx(path):
    """Reads an IDX file (optionally gzip-compressed) into a numpy array.

    Args:
      path: path of a ``.gz`` or raw IDX file.

    Returns:
      The array, with the shape the header declares.

    Raises:
      DataError: the file is missing, not IDX, or shorter or longer than its
        header says.
    """
    if not os.path.exists(path):
        raise DataError(f"IDX file not found: {path}")
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"Cannot read {path}: {e} (truncated or not gzip?)") from e
    if len(raw) < 4:
        raise DataError(f"{path} is {len(raw)} bytes long; an IDX header needs 4.")
    zero1, zero2, type_code, ndim = struct.unpack(">BBBB", raw[:4])
    if zero1 != 0 or zero2 != 0 or type_code not in _IDX_DTYPES or ndim == 0:
        raise DataError(
            f"{path} is not an IDX file: bad magic number {raw[:4].hex()} "
            "(expected 0x0000 then a type code in "
            f"{sorted(hex(c) for c in _IDX_DTYPES)} and a dimension count)."
        )
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise DataError(f"{path} is truncated inside its header.")
    shape = struct.unpack(f">{ndim}I", raw[4:header_len])
    dtype = np.dtype(_IDX_DTYPES[type_code]).newbyteorder(">")
    expected = int(np.prod(shape)) * dtype.itemsize
    body = len(raw) - header_len
    if body != expected:
        raise DataError(
            f"{path} declares shape {shape} ({expected} data bytes) but holds "
            f"{body} data bytes: the file is {'truncated' if body < expected else 'too long'}."
        )
    return (
        np.frombuffer(raw, dtype=dtype, offset=header_len)
        .reshape(shape)
        .astype(dtype.newbyteorder("="))
    )


def read_idx_split(directory, split):
    """Reads and cross-checks one split ('train' or 'test') from IDX files.

    Returns:
      (images uint8 (N, 28, 28, 1), labels int64 (N,)).

    Raises:
      DataError: a file is missing or malformed, or images and labels disagree.
    """
    prefix = "train" if split == "train" else "test"
    images = read_idx(os.path.join(directory, IDX_FILES[f"{prefix}_images"]))
    labels = read_idx(os.path.join(directory, IDX_FILES[f"{prefix}_labels"]))
    if images.ndim != 3 or labels.ndim != 1:
        raise DataError(
            f"{split} split in {directory}: expected images of rank 3 and labels of "
            f"rank 1, got shapes {images.shape} and {labels.shape}."
        )
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{split} split in {directory}: {images.shape[0]} images but {labels.shape[0]} labels."
        )
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(
            f"{split} labels in {directory} must lie in [0, 9], got "
            f"[{labels.min()}, {labels.max()}]."
        )
    return images[..., None].astype(np.uint8), labels.astype(np.int64)


def verify_fashion_mnist(y_train, y_test, counts=None):
    """Checks the split sizes and class balance of Fashion-MNIST.

    Raises:
      DataError: the counts differ from the published dataset's.
    """
    counts = counts or FASHION_MNIST_COUNTS
    if len(y_train) != counts["train"] or len(y_test) != counts["test"]:
        raise DataError(
            f"Fashion-MNIST must have {counts['train']} train and {counts['test']} "
            f"test examples; found {len(y_train)} and {len(y_test)}."
        )
    per_class = np.bincount(y_train, minlength=10)
    if not np.all(per_class == counts["train_per_class"]):
        raise DataError(
            f"Fashion-MNIST train must hold {counts['train_per_class']} examples per "
            f"class; found {per_class.tolist()}."
        )


def missing_idx_files(directory):
    """The Fashion-MNIST IDX file names absent from `directory`."""
    return [n for n in IDX_FILES.values() if not os.path.exists(os.path.join(directory, n))]


# ----------------------------------------------------------------------------
# TFDS


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


def _split_count(builder, split):
    """Examples in a TFDS split string (``train``, ``train[:90%]``, ...)."""
    return int(builder.info.splits[split].num_examples)


def _image_shape(builder, image_size):
    shape = tuple(builder.info.features["image"].shape)
    return (tuple(image_size) + shape[2:]) if image_size else shape


def _as_numpy(builder, split, image_size=None):
    """One split of a prepared builder in memory, as (uint8 images, int64 labels)."""
    chunks = list(_stream_split(builder, split, image_size))
    if not chunks:
        return np.zeros((0,) + _image_shape(builder, image_size), np.uint8), np.zeros(0, np.int64)
    return np.concatenate([c[0] for c in chunks]), np.concatenate([c[1] for c in chunks])


def _write_split(builder, split, image_size, path):
    """One split of a prepared builder written to a store file at `path`, a
    chunk at a time. Returns (uint8 memmap images, int64 labels)."""
    count = _split_count(builder, split)
    images = store.create(path, count, _image_shape(builder, image_size))
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


def _offline_reason(timeout=5.0):
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
    offline = _offline_reason()
    if offline:  # TFDS would retry for minutes before giving up.
        raise DataError(_no_data_message(name, data_dir, manual_dir, ConnectionError(offline)))
    try:
        builder.download_and_prepare()
    except Exception as e:  # noqa: BLE001 — any download failure gets the same advice.
        raise DataError(_no_data_message(name, data_dir, manual_dir, e)) from e
    return builder


def validation_index(y, val_size, seed=0):
    """(train index, validation index) of a class-stratified validation set of
    `val_size` examples carved out of labels `y`, deterministic for `seed`."""
    n = len(y)
    if not 0 <= val_size < n:
        raise DataError(f"val_size must lie in [0, {n}) for {n} training examples; got {val_size}.")
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    if val_size == 0:
        return np.arange(n), order[:0]
    # Stratify: take the first round(val_size * share) indices of each class.
    classes, counts = np.unique(y, return_counts=True)
    quota = np.floor(counts / n * val_size).astype(int)
    quota[: val_size - quota.sum()] += 1
    val_idx = np.concatenate([order[y[order] == c][:q] for c, q in zip(classes, quota)])
    mask = np.zeros(n, bool)
    mask[val_idx] = True
    return order[~mask[order]], order[mask[order]]


def split_validation(x, y, val_size, seed=0):
    """Carves a class-stratified validation set of `val_size` out of (x, y)."""
    train_idx, val_idx = validation_index(y, val_size, seed)
    if val_size == 0:
        return x, y, x[:0], y[:0]
    return x[train_idx], y[train_idx], x[val_idx], y[val_idx]


def test_index(y, fraction, seed=0):
    """(rest index, test index): a class-stratified test set of
    ``round(fraction * N)`` examples (at least 1, at most N - 1),
    deterministic for `seed`.

    Raises:
      DataError: `fraction` outside (0, 1), or fewer than 2 examples.
    """
    if not 0 < fraction < 1:
        raise DataError(f"test_fraction must lie in (0, 1); got {fraction}.")
    if len(y) < 2:
        raise DataError(f"{len(y)} example(s) cannot be split into train and test.")
    size = min(max(1, int(round(fraction * len(y)))), len(y) - 1)
    return validation_index(y, size, seed)


def split_test(x, y, fraction, seed=0):
    """Splits (x, y) into (x, y, x_test, y_test) with :func:`test_index`."""
    rest, test = test_index(y, fraction, seed)
    return x[rest], y[rest], x[test], y[test]


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
    written once to a store on disk (:mod:`kd_keras.store`) and read from
    there through ``numpy.memmap``: the arrays of the returned Dataset are then
    memmaps, and the pipelines of :func:`make_datasets` read their batches
    from disk.

    Args:
      name: one of SUPPORTED_DATASETS, another TFDS image-classification
        dataset (``image`` and ``label`` features), or ``dir:PATH``, a folder
        with one sub-folder per class (:mod:`kd_keras.image_folder`).
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
        most ``kd_keras.store.MEMORY_LIMIT_BYTES``, disk otherwise.

    Returns:
      A :class:`Dataset`. Its name is `name`, with ``@HxW`` appended when
      resized (run keys then tell the sizes apart).

    Raises:
      DataError: the dataset is missing, malformed, or not obtainable.
    """
    image_size = tuple(image_size) if image_size else None
    val_split = None if is_folder(name) else val_split
    if is_folder(name):
        try:
            class_names, files, labels = image_folder.list_images(folder_path(name))
            shape = image_folder.decode(files[0]).shape
        except image_folder.FolderError as e:
            raise DataError(str(e)) from None
        shape = (tuple(image_size) + shape[2:]) if image_size else shape
        count = len(files)
        builder = None
    else:
        builder = prepare_builder(name, data_dir, manual_dir, verify_counts)
        shape = _image_shape(builder, image_size)
        splits = [train_split, test_split] + ([val_split] if val_split else [])
        count = sum(_split_count(builder, s) for s in splits)
    mode = store.choose(storage, count * int(np.prod(shape)))
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
        arrays, num_classes, class_names = _stored_splits(
            name, builder, settings, image_size, val_size, seed, test_fraction
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
        x_train, y_train = _as_numpy(builder, train_split, image_size)
        x_test, y_test = _as_numpy(builder, test_split, image_size)
        if val_split:
            x_val, y_val = _as_numpy(builder, val_split, image_size)
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
    if limit_train:
        x_train, y_train = x_train[:limit_train], y_train[:limit_train]
    if limit_test:
        x_test, y_test = x_test[:limit_test], y_test[:limit_test]
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


SPLITS = ("train", "val", "test")


def _stored_splits(name, builder, settings, image_size, val_size, seed, test_fraction):
    """The splits of a dataset from its store on disk, building the store first
    when it does not exist yet (see :mod:`kd_keras.store`).

    Returns:
      ((x_train, y_train, x_val, y_val, x_test, y_test) with the images as
      read-only memmaps, number of classes, class names).
    """
    final = store.directory(name, settings)
    meta_path = os.path.join(final, "meta.json")
    if not os.path.exists(meta_path):
        with store.Build(final) as build:
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
        x, y = _write_split(builder, train_split, image_size, build.path(first))
        out["test"] = _write_split(builder, test_split, image_size, build.path("test.images.npy"))
        if val_split:
            out["val"] = _write_split(builder, val_split, image_size, build.path("val.images.npy"))
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


def preprocess(images):
    """uint8 images -> float32 in [0, 1]. The exporter uses the same function."""
    return tf.cast(images, tf.float32) / 255.0


def augment_fn(config: AugmentConfig, seed: Optional[int] = None):
    """Returns a per-example function (image float32 HWC, label[, key]) -> (image, label).

    The training pipeline augments whole batches (:func:`augment_batch`); this
    per-example form remains for single images and as the reference the
    vectorized one is benchmarked against (``bench/kd_cache.py``).

    With `key` (an int32/int64 tensor of shape [2]) the randomness is stateless:
    a pure function of the key, so the same key gives the same augmentation in
    any process. Without it, stateful random ops seeded by `seed` are used.
    """

    def fn(image, label, key=None):
        keys = (
            [None] * 3
            if key is None
            else [tf.random.experimental.stateless_fold_in(key, i) for i in range(3)]
        )
        shape = tf.shape(image)
        if config.crop_padding:
            p = config.crop_padding
            padded = tf.pad(image, [[p, p], [p, p], [0, 0]])
            image = (
                tf.image.random_crop(padded, shape, seed=seed)
                if key is None
                else tf.image.stateless_random_crop(padded, shape, seed=keys[0])
            )
        if config.flip:
            image = (
                tf.image.random_flip_left_right(image, seed=seed)
                if key is None
                else tf.image.stateless_random_flip_left_right(image, seed=keys[1])
            )
        if config.cutout:
            image = cutout(image, config.cutout, seed=seed, key=keys[2])
        return image, label

    return fn


def cutout(image, size, seed=None, key=None):
    """Zeroes a `size` x `size` square centred at a random pixel (clipped).

    The centre is drawn statelessly from `key` (shape [2]) when given, else
    with stateful ops seeded by `seed`.
    """
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    if key is None:
        cy = tf.random.uniform([], 0, h, dtype=tf.int32, seed=seed)
        cx = tf.random.uniform([], 0, w, dtype=tf.int32, seed=seed)
    else:
        fold = tf.random.experimental.stateless_fold_in
        cy = tf.random.stateless_uniform([], fold(key, 0), 0, h, dtype=tf.int32)
        cx = tf.random.stateless_uniform([], fold(key, 1), 0, w, dtype=tf.int32)
    ys = tf.range(h)[:, None]
    xs = tf.range(w)[None, :]
    half = size // 2
    inside = (
        (ys >= cy - half) & (ys < cy - half + size) & (xs >= cx - half) & (xs < cx - half + size)
    )
    return image * tf.cast(~inside, image.dtype)[:, :, None]


def epoch_key(seed, epoch):
    """The stateless random key (shape [2], int64) of one epoch of a seeded pipeline."""
    return tf.random.experimental.stateless_fold_in(
        tf.stack([tf.constant(seed, tf.int64), tf.constant(0, tf.int64)]), tf.cast(epoch, tf.int64)
    )


def epoch_order(n, seed, epoch):
    """The order (a permutation of range(n), int64) of the examples in one epoch.

    A pure function of (n, seed, epoch): the same in every process, whichever
    epoch the pipeline starts at.
    """
    key = tf.random.experimental.stateless_fold_in(epoch_key(seed, epoch), 0)
    return tf.cast(tf.argsort(tf.random.stateless_uniform([n], key), stable=True), tf.int64)


MIX_NONE, MIX_MIXUP, MIX_CUTMIX = 0, 1, 2
# The parameters of one epoch's views, one entry per training example (indexed
# by example id). Per example: crop offsets, flip, cutout centre. Per batch
# (the same for every example of a batch): mixing mode, lambda and CutMix box;
# `partner` is the position, within its batch, of the example mixed into it.
VIEW_KEYS = (
    "dy",
    "dx",
    "flip",
    "cy",
    "cx",
    "partner",
    "mode",
    "lam",
    "box_y0",
    "box_y1",
    "box_x0",
    "box_x1",
)


def epoch_views(config: AugmentConfig, n, image_shape, seed, epoch, batch_size):
    """The order and the augmentation parameters of one epoch, drawn at once.

    A pure function of its arguments (stateless random ops keyed by
    ``epoch_key(seed, epoch)``), so every process, and a training resumed at
    `epoch`, draws the same views. Position ``p`` of the epoch holds example
    ``order[p]``; batch ``b`` is positions ``[b * batch_size, (b + 1) *
    batch_size)``; each batch draws its mixing mode, lambda ~ Beta(alpha,
    alpha), CutMix box and a partner permutation of its positions.

    Args:
      config: the augmentation.
      n: training examples.
      image_shape: (H, W, C).
      seed: seed of the pipeline.
      epoch: epoch (int or int64 scalar tensor).
      batch_size: examples per batch (mixing pairs examples of one batch).

    Returns:
      dict: 'order' (n,) int64 and each of VIEW_KEYS, (n,) tensors indexed by
      example id (int32, lam float32).
    """
    h, w = int(image_shape[0]), int(image_shape[1])
    fold = tf.random.experimental.stateless_fold_in
    aug = fold(epoch_key(seed, epoch), 1)  # 0 is the order's key.
    key = lambda tag: fold(aug, tag)  # noqa: E731
    order = epoch_order(n, seed, epoch)

    def ints(tag, high, size=n):
        return tf.random.stateless_uniform([size], key(tag), 0, high, dtype=tf.int32)

    zeros = tf.zeros([n], tf.int32)
    p = config.crop_padding
    views = {
        "dy": ints(0, 2 * p + 1) if p else zeros,
        "dx": ints(1, 2 * p + 1) if p else zeros,
        "flip": ints(2, 2) if config.flip else zeros,
        "cy": ints(3, h) if config.cutout else zeros,
        "cx": ints(4, w) if config.cutout else zeros,
    }
    steps = -(-n // batch_size)
    if config.mixup and config.cutmix:
        mode = tf.where(ints(5, 2, steps) == 0, MIX_MIXUP, MIX_CUTMIX)
    else:
        mode = tf.fill([steps], MIX_MIXUP if config.mixup else MIX_CUTMIX if config.cutmix else 0)
    alpha = tf.where(mode == MIX_MIXUP, config.mixup or 1.0, config.cutmix or 1.0)
    g1 = tf.random.stateless_gamma([steps], key(6), alpha)
    g2 = tf.random.stateless_gamma([steps], key(7), alpha)
    lam = g1 / tf.maximum(g1 + g2, 1e-12)
    # CutMix: a box of side sqrt(1 - lam) times the image's, clipped at the
    # border; lambda becomes the share of the image left outside it.
    ratio = tf.sqrt(1.0 - lam)
    ch = tf.cast(h * ratio, tf.int32) // 2
    cw = tf.cast(w * ratio, tf.int32) // 2
    by, bx = ints(8, h, steps), ints(9, w, steps)
    y0, y1 = tf.clip_by_value(by - ch, 0, h), tf.clip_by_value(by + ch, 0, h)
    x0, x1 = tf.clip_by_value(bx - cw, 0, w), tf.clip_by_value(bx + cw, 0, w)
    lam = tf.where(
        mode == MIX_CUTMIX, 1.0 - tf.cast((y1 - y0) * (x1 - x0), tf.float32) / (h * w), lam
    )
    lam = tf.where(mode == MIX_NONE, 1.0, lam)
    # Partners: sorting (batch, uniform) permutes the positions within each batch.
    batch_of = tf.range(n, dtype=tf.int32) // batch_size
    u = tf.random.stateless_uniform([n], key(10), dtype=tf.float64)
    partner = tf.cast(tf.argsort(tf.cast(batch_of, tf.float64) + u, stable=True), tf.int32)
    per_position = {
        "partner": partner - batch_of * batch_size,
        **{
            k: tf.gather(v, batch_of)
            for k, v in (
                ("mode", mode),
                ("lam", lam),
                ("box_y0", y0),
                ("box_y1", y1),
                ("box_x0", x0),
                ("box_x1", x1),
            )
        },
    }
    position_of = tf.argsort(order)  # example id -> its position this epoch
    views.update({k: tf.gather(v, position_of) for k, v in per_position.items()})
    return dict(views, order=order)


def augment_batch(config: AugmentConfig, images, views):
    """Crops, flips and cuts out a batch with the given per-example parameters.

    Vectorized over the batch (one gather per axis, one select, one mask)
    rather than mapped per example.

    Args:
      config: which augmentations are on.
      images: float32 (B, H, W, C).
      views: dict of VIEW_KEYS tensors (B,) for these examples.

    Returns:
      The augmented images, float32 (B, H, W, C).
    """
    shape = tf.shape(images)
    h, w = shape[1], shape[2]
    if config.crop_padding:
        p = config.crop_padding
        padded = tf.pad(images, [[0, 0], [p, p], [p, p], [0, 0]])
        rows = views["dy"][:, None] + tf.range(h)[None, :]
        cols = views["dx"][:, None] + tf.range(w)[None, :]
        images = tf.gather(padded, rows, axis=1, batch_dims=1)
        images = tf.gather(images, cols, axis=2, batch_dims=1)
    if config.flip:
        flip = tf.reshape(views["flip"] > 0, [-1, 1, 1, 1])
        images = tf.where(flip, tf.reverse(images, [2]), images)
    if config.cutout:
        size, half = config.cutout, config.cutout // 2
        ys = tf.range(h)[None, :, None]
        xs = tf.range(w)[None, None, :]
        cy = views["cy"][:, None, None] - half
        cx = views["cx"][:, None, None] - half
        inside = (ys >= cy) & (ys < cy + size) & (xs >= cx) & (xs < cx + size)
        images = images * tf.cast(~inside, images.dtype)[..., None]
    return images


def mix_batch(images, soft_labels, views):
    """Mixup or CutMix of one batch with its partners, as `views` say.

    The labels are mixed with the same lambda as the images, so that the
    cross-entropy with them is ``lam * CE(y) + (1 - lam) * CE(y_partner)``.

    Args:
      images: float32 (B, H, W, C).
      soft_labels: float32 (B, classes) (one-hot).
      views: dict of VIEW_KEYS tensors (B,); mode, lambda and box are read
        from the first example (they are per batch).

    Returns:
      (images, labels) mixed.
    """
    perm = views["partner"]
    mode, lam = views["mode"][0], views["lam"][0]
    other = tf.gather(images, perm)
    h, w = tf.shape(images)[1], tf.shape(images)[2]
    ys = tf.range(h)[:, None]
    xs = tf.range(w)[None, :]
    box = (
        (ys >= views["box_y0"][0])
        & (ys < views["box_y1"][0])
        & (xs >= views["box_x0"][0])
        & (xs < views["box_x1"][0])
    )
    cut = tf.where(box[None, :, :, None], other, images)
    blend = lam * images + (1.0 - lam) * other
    images = tf.where(mode == MIX_CUTMIX, cut, tf.where(mode == MIX_MIXUP, blend, images))
    labels = lam * soft_labels + (1.0 - lam) * tf.gather(soft_labels, perm)
    return images, labels


def gather_images(images):
    """A function ids -> the uint8 images of those example ids, as a tensor.

    For images in memory, a ``tf.gather`` from a constant; for images on
    disk (a memmap, see :mod:`kd_keras.store`), a read of just those rows
    (``tf.numpy_function``), so the split is never loaded whole.
    """
    if not store.on_disk(images):
        constant = tf.constant(images)
        return lambda ids: tf.gather(constant, ids)
    shape = tuple(images.shape[1:])

    def read(ids):
        return np.asarray(images[np.asarray(ids, np.int64)], np.uint8)

    def gather(ids):
        out = tf.numpy_function(read, [ids], tf.uint8, stateful=False)
        out.set_shape((None,) + shape)
        return out

    return gather


def image_batches(images, batch_size=1024, labels=None):
    """``tf.data`` batches of preprocessed `images` (in memory or on disk), in
    order, with their labels when given: what ``Model.predict`` and
    ``evaluate`` read instead of a whole split in memory."""
    n = len(images)
    gather = gather_images(images)
    label_tensor = None if labels is None else tf.constant(np.asarray(labels))

    def batch(start):
        ids = tf.range(start, tf.minimum(start + batch_size, n))
        x = preprocess(gather(ids))
        return x if label_tensor is None else (x, tf.gather(label_tensor, ids))

    return (
        tf.data.Dataset.range(0, n, batch_size)
        .map(batch, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )


def view_batch(config: AugmentConfig, images, labels, ids, views, num_classes):
    """One training batch: examples `ids` of the training split, augmented and
    mixed with their view parameters.

    Args:
      config: the augmentation.
      images: function ids -> uint8 (B, H, W, C) images of the training split
        (:func:`gather_images`).
      labels: int64 (N,) tensor.
      ids: (B,) example ids of this batch, in batch order.
      views: dict of VIEW_KEYS tensors (N,) indexed by example id.
      num_classes: classes (for the soft labels of a mixing config).

    Returns:
      (images float32 (B, H, W, C), labels: int64 (B,), or float32 (B,
      classes) when `config` mixes).
    """
    x = preprocess(images(ids))
    y = tf.gather(labels, ids)
    if not config.enabled:
        return x, y
    v = {k: tf.gather(views[k], ids) for k in VIEW_KEYS}
    x = augment_batch(config, x, v)
    if config.mixes:
        x, y = mix_batch(x, tf.one_hot(y, num_classes, dtype=tf.float32), v)
    return x, y


def make_datasets(
    data: Dataset,
    batch_size=128,
    augment=AugmentConfig(),
    seed=0,
    shuffle_buffer=None,
    teacher_logits=None,
    epochs=None,
    start_epoch=0,
    replay=None,
    clean_teacher=False,
):
    """Builds the train / val / test ``tf.data`` pipelines.

    The training data order and augmentation are a pure function of (`seed`,
    epoch): epoch ``e`` draws ``epoch_views(augment, n, shape, seed, e,
    batch_size)`` (its order and every example's crop, flip, cutout and
    mixing parameters) and builds each batch with :func:`view_batch`
    (vectorized over the batch). So the batches of epoch ``e`` are the same
    in every process and whether the pipeline starts at epoch 0 or at ``e``
    (what resuming an interrupted training needs). Each epoch has
    ``ceil(n / batch_size)`` batches, the last one possibly partial. With
    mixup or cutmix the training labels are soft (float32, (batch,
    classes)). Validation and test are batched and prefetched, never
    shuffled or augmented; their labels stay sparse.

    Args:
      data: the Dataset.
      batch_size: examples per batch.
      augment: training augmentation.
      seed: seed of the data order and the augmentation.
      shuffle_buffer: kept for compatibility; every epoch is a full
        permutation of the training split.
      teacher_logits: optional array (N_train, teachers, classes) of
        precomputed teacher logits; the train pipeline then yields
        ``(x, {"label": y, "teacher_logits": t})`` for the Distiller. Not
        allowed with augmentation (the teacher must see the augmented image;
        see `replay`), unless `clean_teacher`.
      epochs: with it, 'train' holds epochs ``[start_epoch, epochs)`` one after
        the other (for ``Model.fit(..., steps_per_epoch=...)``, which then
        keeps one iterator across epochs). Without it, 'train' is epoch
        `start_epoch` alone.
      start_epoch: first epoch of 'train'.
      replay: optional stored views (``kd_keras.teacher_cache``): a dict of
        arrays with a leading axis of K views, 'order' and VIEW_KEYS as
        ``epoch_views`` gives them, and optionally 'teacher_logits' (K, N,
        teachers, classes). Epoch ``e`` then replays view ``e mod K`` instead
        of drawing new parameters, with the stored teacher logits as above.
      clean_teacher: `teacher_logits` are the teachers' logits on the clean
        (un-augmented) images, fed by example id beside the augmented batch:
        the student sees an augmented view while the teacher saw the clean
        image ("inconsistent" distillation).

    Returns:
      dict with keys 'train', 'val' (None when the split is empty), 'test',
      'train_epochs': a function (start_epoch, epochs) -> the train pipeline
      of those epochs, which ``kd_keras.training.fit`` uses to start or
      resume at any epoch, and 'recipe': the arguments the train pipeline
      was built from (data, batch_size, augment, seed), from which fit
      builds a teacher cache.

    Raises:
      ValueError: augmentation with teacher logits, batch_size < 1, or
        epochs / start_epoch out of range.
    """
    del shuffle_buffer  # Each epoch is a full permutation.
    if teacher_logits is not None and augment.enabled and not clean_teacher:
        raise ValueError(
            "Precomputed teacher logits need un-augmented training images (or "
            f"clean_teacher=True); got augmentation {augment}."
        )
    if batch_size <= 0:
        raise ValueError(f"batch_size must be > 0, got {batch_size}.")
    last = start_epoch + 1 if epochs is None else epochs
    if not 0 <= start_epoch < last:
        raise ValueError(
            f"Need 0 <= start_epoch < epochs; got start_epoch={start_epoch}, epochs={epochs}."
        )
    autotune = tf.data.AUTOTUNE

    def evaluation(x, y):
        if store.on_disk(x):  # Read from disk each time, never whole.
            return image_batches(x, batch_size, y)
        return (
            tf.data.Dataset.from_tensor_slices((x, y))
            .map(lambda a, b: (preprocess(a), b), num_parallel_calls=autotune)
            .cache()
            .batch(batch_size)
            .prefetch(autotune)
        )

    n = len(data.x_train)
    images = gather_images(data.x_train)
    labels = tf.constant(data.y_train)
    stored = None
    if replay is not None:
        stored = {k: tf.constant(v) for k, v in replay.items()}
        if "teacher_logits" in stored:
            stored["teacher_logits"] = tf.cast(stored["teacher_logits"], tf.float32)
    elif teacher_logits is not None:
        stored = {"teacher_logits": tf.constant(teacher_logits)[None]}

    def one_epoch(epoch):
        if replay is not None:
            k = tf.shape(stored["order"], out_type=tf.int64)[0]
            views = {key: tf.gather(v, epoch % k) for key, v in stored.items()}
        else:
            views = epoch_views(augment, n, data.input_shape, seed, epoch, batch_size)
            if stored is not None:
                views["teacher_logits"] = stored["teacher_logits"][0]

        def batch(ids):
            x, y = view_batch(augment, images, labels, ids, views, data.num_classes)
            if "teacher_logits" in views:
                y = {"label": y, "teacher_logits": tf.gather(views["teacher_logits"], ids)}
            return x, y

        return (
            tf.data.Dataset.from_tensor_slices(views["order"])
            .batch(batch_size)
            .map(batch, num_parallel_calls=autotune)
        )

    def train_epochs(first, end):
        if not 0 <= first < end:
            raise ValueError(f"Need 0 <= start_epoch < epochs; got {first}, {end}.")
        steps = -(-n // batch_size)
        return (
            tf.data.Dataset.range(first, end)
            .flat_map(one_epoch)
            .apply(tf.data.experimental.assert_cardinality((end - first) * steps))
            .prefetch(autotune)
        )

    val = evaluation(data.x_val, data.y_val) if len(data.x_val) else None
    test = evaluation(data.x_test, data.y_test)
    return {
        "train": train_epochs(start_epoch, last),
        "val": val,
        "test": test,
        "train_epochs": train_epochs,
        "recipe": {"data": data, "batch_size": batch_size, "augment": augment, "seed": seed},
    }
