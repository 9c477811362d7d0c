"""The offline Fashion-MNIST reader: IDX files, read and verified.

Debian's ``dataset-fashion-mnist`` package puts the four IDX ``.gz`` files in
:data:`kd_keras.data.dataset.DEFAULT_MANUAL_DIR`. They are re-compressed, so
their checksums differ from the ones TFDS records; instead of checksums, the
content is verified: well-formed IDX headers, matching image and label counts,
60000/10000 examples and 6000 training examples per class.
"""

import gzip
import os
import struct

import numpy as np

from kd_keras.data.dataset import DataError

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
