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

A full disk never reaches a memmap: a build first checks the free space
against the bytes it will write, and every file's blocks are reserved when
it is created (``os.posix_fallocate``), so a full disk is an ``OSError``
there and not a bus error at the first write into a sparse page. A build that
runs out of space removes its temporary directory and raises a
:class:`~kd_keras.data.dataset.DataError` saying what to do; the temporary
directory of a killed build (its process is gone) is removed by the next
build under the same root.
"""

import errno
import hashlib
import json
import os
import re
import shutil
import socket

import numpy as np

from kd_keras import console
from kd_keras.data.dataset import DataError, digest  # noqa: F401 - also store.digest

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
    key_digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")[-60:] or "data"
    return os.path.join(root(), f"{safe}-{key_digest}")


def create(path, count, shape):
    """A new writable uint8 memmap of `count` images of `shape` at `path`, its
    disk blocks reserved (see :func:`reserve`).

    Raises:
      OSError: the disk has no room for it (errno ENOSPC or EDQUOT; the file
        is removed).
    """
    shape = (int(count),) + tuple(int(s) for s in shape)
    if shape[0] == 0:  # numpy cannot map an empty file.
        return np.zeros(shape, np.uint8)
    images = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
    try:
        reserve(path, images.offset, images.nbytes)
    except BaseException:
        del images
        os.remove(path)
        raise
    return images


# errno values of a write that found no room: the disk is full, or the user's quota is.
FULL_DISK = (errno.ENOSPC, errno.EDQUOT)


def reserve(path, offset, length):
    """Allocates the disk blocks of bytes [offset, offset + length) of the file
    at `path`, so writes through a memmap never meet a full disk (which kills
    the process with SIGBUS instead of raising).

    ``os.posix_fallocate`` where the platform and file system have it;
    otherwise zeros are written over the range (the file's contents there are
    zeros already).

    Raises:
      OSError: no room (errno ENOSPC or EDQUOT), with `path` as its filename.
    """
    with open(path, "r+b") as f:
        try:
            os.posix_fallocate(f.fileno(), offset, length)
            return
        except AttributeError:  # Not on this platform (macOS).
            pass
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise OSError(e.errno, e.strerror, path) from None
        f.seek(offset)
        zeros = bytes(1 << 20)
        for start in range(0, length, len(zeros)):
            f.write(zeros[: min(len(zeros), length - start)])
        f.flush()
        os.fsync(f.fileno())


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
            try:
                take(images, index, tmp)
                os.replace(tmp, path)
            except BaseException:
                if os.path.exists(tmp):
                    os.remove(tmp)
                raise
        return open_images(path, len(index), images.shape[1:])
    out = create(path, len(index), images.shape[1:])
    for start in range(0, len(index), CHUNK):
        part = index[start : start + CHUNK]
        out[start : start + len(part)] = images[part]
    if len(index):
        out.flush()
        return open_images(path, len(index), images.shape[1:])
    return out


def free_bytes(path):
    """The bytes free to this user on the file system holding `path` (or its
    nearest existing parent)."""
    path = os.path.abspath(path)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return shutil.disk_usage(path).free


def no_space_message(path, needed, free):
    """The one line said when a store does not fit on its disk."""
    return (
        f"not enough disk space for the data store at {path}: it needs {needed:,} bytes "
        f"and {free:,} are free. Free space there, set $KD_KERAS_STORE to a disk with "
        "room, or keep the splits in memory with --data_storage=memory."
    )


# A build's temporary directory: `<final>.tmp-<host>-<pid>` (`<final>.tmp-<pid>`
# from before the host was part of the name).
_TMP = re.compile(r"^(?P<final>.+)\.tmp-(?:(?P<host>.+)-)?(?P<pid>\d+)$")


def host_name():
    """This host's name as it appears in a temporary directory's name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", socket.gethostname()) or "host"


def _alive(pid):
    """True when a process `pid` runs on this host (or may: not ours to signal)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_orphans(parent):
    """Removes the temporary directories under `parent` left by builds whose
    process no longer runs on this host (killed, or out of power), saying so
    on the console. Directories of other hosts (a shared file system) and of
    running processes are kept.

    Returns:
      The paths removed.
    """
    try:
        entries = os.listdir(parent)
    except FileNotFoundError:
        return []
    removed = []
    for entry in sorted(entries):
        match = _TMP.match(entry)
        path = os.path.join(parent, entry)
        if match is None or not os.path.isdir(path):
            continue
        host, pid = match["host"], int(match["pid"])
        if (host is not None and host != host_name()) or pid == os.getpid() or _alive(pid):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
        console.progress(
            f"removed {path}, the unfinished data store of process {pid} (no longer running)"
        )
    return removed


class Build:
    """Builds a store directory in a temporary sibling and renames it into place.

    Use as a context manager; ``path(name)`` gives a file inside the
    temporary directory; on success the directory is renamed to `final` (if
    another process finished the same store first, theirs is kept); on error
    the temporary directory is deleted. Entering removes the temporary
    directories of dead builds (:func:`remove_orphans`) and checks that
    `needed` bytes are free.

    Raises:
      DataError: fewer than `needed` bytes are free, or the disk (or quota)
        filled up during the build.
    """

    def __init__(self, final, needed=0):
        self.final = final
        self.needed = int(needed)
        self.tmp = f"{final}.tmp-{host_name()}-{os.getpid()}"

    def __enter__(self):
        parent = os.path.dirname(self.final)
        remove_orphans(parent)
        shutil.rmtree(self.tmp, ignore_errors=True)
        free = free_bytes(parent)
        if self.needed > free:
            raise DataError(no_space_message(parent, self.needed, free))
        os.makedirs(self.tmp)
        return self

    def path(self, name):
        return os.path.join(self.tmp, name)

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            if isinstance(exc, OSError) and exc.errno in FULL_DISK:
                parent = os.path.dirname(self.final)
                raise DataError(no_space_message(parent, self.needed, free_bytes(parent))) from exc
            return False
        try:
            os.rename(self.tmp, self.final)
        except OSError:  # Built concurrently by another process: keep theirs.
            shutil.rmtree(self.tmp, ignore_errors=True)
        return False
