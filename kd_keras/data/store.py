"""Image arrays on disk: the storage behind datasets larger than memory.

A split is kept either in memory (a numpy array) or on disk as a raw uint8
file read through ``numpy.memmap``: the operating system pages in the rows a
batch reads, so a split larger than RAM trains. The training pipeline needs
random access by example id (every epoch is a full permutation that is a pure
function of the seed and the epoch; the teacher cache stores views and logits
per example id), which a streamed TFDS record file or a shuffle buffer cannot
give; the store gives it at the cost of one pass that writes the images once.

A store is a directory ``<root>/<name>-<hash of its settings>/`` holding
``<split>.images.npy`` (read through ``numpy.memmap``), ``<split>.labels.npy``
and ``meta.json``; it is built
in a temporary directory and renamed into place, so a killed build leaves
nothing a later run would read. The root is ``$KD_KERAS_STORE`` or
``~/.cache/kd_keras/store``.
"""

import hashlib
import json
import os
import re
import shutil

import numpy as np

# `--data_storage=auto` keeps the splits in memory up to this many image bytes.
MEMORY_LIMIT_BYTES = 2 << 30
STORAGES = ("auto", "memory", "disk")
# Rows copied per chunk when a split on disk is reordered or sliced.
CHUNK = 8192
FORMAT_VERSION = 1


def root():
    """The directory under which stores are kept."""
    return os.path.expanduser(os.environ.get("KD_KERAS_STORE", "~/.cache/kd_keras/store"))


def on_disk(array):
    """True for an array read from a store file (a ``numpy.memmap``)."""
    return isinstance(array, np.memmap)


def choose(storage, image_bytes, limit=MEMORY_LIMIT_BYTES):
    """'memory' or 'disk' for a `storage` setting and the splits' total image bytes.

    Raises:
      ValueError: `storage` is not one of STORAGES.
    """
    if storage not in STORAGES:
        raise ValueError(f"storage must be one of {STORAGES}, got {storage!r}.")
    if storage == "auto":
        return "memory" if image_bytes <= limit else "disk"
    return storage


def directory(name, settings):
    """The store directory of dataset `name` built with `settings` (a JSON-able dict)."""
    key = json.dumps(dict(settings, version=FORMAT_VERSION), sort_keys=True, default=str)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")[-60:] or "data"
    return os.path.join(root(), f"{safe}-{digest}")


def create(path, count, shape):
    """A new writable uint8 memmap of `count` images of `shape` at `path`."""
    shape = (int(count),) + tuple(int(s) for s in shape)
    if shape[0] == 0:  # numpy cannot map an empty file.
        return np.zeros(shape, np.uint8)
    return np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)


def open_images(path, count, shape):
    """A read-only memmap of a store's image file (an empty array for 0 images)."""
    if int(count) == 0:
        return np.zeros((0,) + tuple(shape), np.uint8)
    return np.load(path, mmap_mode="r")


def take(images, index, path=None):
    """``images[index]``: in memory for an array in memory; for an array on
    disk, copied chunk by chunk into a new file (the result is on disk too).

    Args:
      images: (N, ...) array, in memory or a memmap.
      index: int array of rows, any order, repeats allowed.
      path: where to write the rows of an array on disk; default a file
        beside its source named by a hash of `index`, written atomically and
        reused when it exists.
    """
    index = np.asarray(index, np.int64)
    if not on_disk(images):
        return images[index]
    if path is None:
        name = hashlib.sha256(index.tobytes()).hexdigest()[:16]
        path = f"{images.filename}.take-{len(images)}-{name}.npy"
        if not os.path.exists(path):
            tmp = f"{path}.tmp-{os.getpid()}.npy"
            take(images, index, tmp)
            os.replace(tmp, path)
        return open_images(path, len(index), images.shape[1:])
    out = create(path, len(index), images.shape[1:])
    for start in range(0, len(index), CHUNK):
        part = index[start : start + CHUNK]
        out[start : start + len(part)] = images[part]
    if len(index):
        out.flush()
        return open_images(path, len(index), images.shape[1:])
    return out


def digest(arrays, length=16):
    """A sha256 of arrays' shapes, dtypes and bytes, read a chunk at a time."""
    h = hashlib.sha256()
    for array in arrays:
        h.update(f"{tuple(array.shape)}:{array.dtype}".encode())
        for start in range(0, len(array), CHUNK):
            h.update(np.ascontiguousarray(array[start : start + CHUNK]).tobytes())
    return h.hexdigest()[:length]


class Build:
    """Builds a store directory in a temporary sibling and renames it into place.

    Use as a context manager; ``path(name)`` gives a file inside the
    temporary directory; on success the directory is renamed to `final` (if
    another process finished the same store first, theirs is kept); on error
    the temporary directory is deleted.
    """

    def __init__(self, final):
        self.final = final
        self.tmp = f"{final}.tmp-{os.getpid()}"

    def __enter__(self):
        shutil.rmtree(self.tmp, ignore_errors=True)
        os.makedirs(self.tmp)
        return self

    def path(self, name):
        return os.path.join(self.tmp, name)

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return False
        try:
            os.rename(self.tmp, self.final)
        except OSError:  # Built concurrently by another process: keep theirs.
            shutil.rmtree(self.tmp, ignore_errors=True)
        return False
