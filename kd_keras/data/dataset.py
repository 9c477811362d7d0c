"""The in-memory Dataset, the data error, and the datasets known without loading."""

import dataclasses
import functools
import hashlib

import numpy as np

DEFAULT_MANUAL_DIR = "/usr/share/datasets/fashion-mnist"
SUPPORTED_DATASETS = ("fashion_mnist", "mnist", "cifar10", "cifar100")
# `--dataset=dir:PATH`: a folder with one sub-folder per class.
FOLDER_PREFIX = "dir:"
# `--dataset=npz:PATH`: arrays in an .npz file (kd_keras.data.npz).
NPZ_PREFIX = "npz:"
DEFAULT_TEST_FRACTION = 0.2
DIGEST_CHUNK = 8192  # Examples hashed at a time.
# (input shape, number of classes) of each supported dataset, known without
# loading it, so configurations are validated before any data is read.
DATASET_SHAPES = {
    "fashion_mnist": ((28, 28, 1), 10),
    "mnist": ((28, 28, 1), 10),
    "cifar10": ((32, 32, 3), 10),
    "cifar100": ((32, 32, 3), 100),
}

# (train, test) examples of each supported dataset's 'train' and 'test'
# splits, known without loading it, so --val_size is checked before any data is read.
DATASET_SIZES = {
    "fashion_mnist": (60000, 10000),
    "mnist": (60000, 10000),
    "cifar10": (50000, 10000),
    "cifar100": (50000, 10000),
}


def digest(arrays, length=16):
    """A sha256 of arrays' shapes, dtypes and bytes, read a chunk at a time."""
    h = hashlib.sha256()
    for array in arrays:
        h.update(f"{tuple(array.shape)}:{array.dtype}".encode())
        for start in range(0, len(array), DIGEST_CHUNK):
            h.update(np.ascontiguousarray(array[start : start + DIGEST_CHUNK]).tobytes())
    return h.hexdigest()[:length]


class DataError(ValueError):
    """Raised when a dataset is missing, malformed or not what was asked for."""


@dataclasses.dataclass
class Dataset:
    """A dataset in memory: uint8 images (N, H, W, C) — or float32 inputs of an
    npz, used as given — and int64 labels (N,)."""

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

    @property
    def image_like(self):
        """False for the inputs of an npz that are not images (float32, or
        other than 1 or 3 channels), which refuse the augmentations that move
        pixels (crop, flip); True for every other dataset's uint8 images."""
        if self.x_train.dtype != np.uint8:
            return False
        return not self.name.startswith(NPZ_PREFIX) or self.input_shape[-1] in (1, 3)

    @functools.cached_property
    def content_digest(self):
        """A sha256 (16 hex digits) of the six split arrays, in order.

        The identity of the data a run trains and is scored on, for run keys:
        a changed image or label, another validation size, limit, test share
        or split seed, a folder whose class folders were swapped or whose
        files changed all give another digest. Computed from the contents,
        not from file names and times, because the splits are in memory (or
        memory-mapped) anyway: one pass of sha256, about 0.2 s for
        Fashion-MNIST. Computed once per Dataset.
        """
        return digest(
            (self.x_train, self.y_train, self.x_val, self.y_val, self.x_test, self.y_test)
        )
