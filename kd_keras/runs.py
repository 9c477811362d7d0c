"""Run caching and atomic result files.

Every training run lives in ``<workdir>/runs/<name>-<hash>/`` where the hash is
taken over the run's full configuration. A run whose ``result.json`` exists is
finished and is never trained again; an interrupted run resumes from the
checkpoint its ``progress.json`` names (see ``kd_keras.training.fit``). Files
are written to a temporary name and renamed, so a crash never leaves a
half-written result behind.
"""

import dataclasses
import errno
import fcntl
import hashlib
import json
import os
import tempfile

import numpy as np


def _read_umask():
    mask = os.umask(0o022)  # The only way to read it is to set it; read once, at import.
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def config_hash(config, length=10):
    """A stable short hash of a JSON-serializable configuration."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def spec_of(obj):
    """A dataclass as a dict (recursively); anything else unchanged. Run specs
    are built from these so that their hash names every setting."""
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj


def run_dir(workdir, name, config):
    """The directory of the run `name` whose full configuration is `config`."""
    return os.path.join(workdir, "runs", f"{name}-{config_hash(config)}")


def weights_digest(model, length=16):
    """A hash of a model's weight values (in order: shapes, dtypes and bytes).

    It identifies a trained model independently of how it was saved (a
    ``.keras`` file holds a save date, so file checksums differ for equal
    weights). Runs that depend on a model (a student distilled from a
    teacher, a compression stage fine-tuning its parent) put this digest in
    their spec, so a retrained parent with other weights invalidates them.
    """
    h = hashlib.sha256()
    for weight in model.weights:
        value = np.ascontiguousarray(weight.numpy())
        # Not the variable names: Keras numbers them per process.
        h.update(f"{value.shape}:{value.dtype}".encode())
        h.update(value.tobytes())
    return h.hexdigest()[:length]


def write_json(path, obj):
    """Writes `obj` as JSON to `path` atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_text(path, text):
    """Writes `text` (str or bytes) to `path` atomically: temporary file, then rename."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        # mkstemp creates the file private (0600); give it the permissions a
        # plain open() would have (0666 less the umask), so reports stay readable.
        os.chmod(tmp, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb" if isinstance(text, bytes) else "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def read_json(path):
    """The JSON value stored in `path`."""
    with open(path) as f:
        return json.load(f)


def load_result(directory):
    """The finished run's result dict, or None if it has not finished."""
    path = os.path.join(directory, "result.json")
    return read_json(path) if os.path.exists(path) else None


MODEL_FILES = ("model.keras", "model.h5")


def saved_model_path(directory):
    """The model file a finished run saved, or None."""
    for name in MODEL_FILES:
        path = os.path.join(directory, name)
        if os.path.exists(path):
            return path
    return None


def save_model(model, directory):
    """Saves a run's model atomically; returns its path.

    Quantization-aware (TF-MOT) models go to ``model.h5``: the ``.keras``
    format does not restore their quantizer variables. Others go to
    ``model.keras``.
    """
    os.makedirs(directory, exist_ok=True)
    quantized = any(type(layer).__name__.startswith("Quantize") for layer in model.layers)
    stem, ext = ("model", ".h5") if quantized else ("model", ".keras")
    tmp = os.path.join(directory, f"{stem}.partial{ext}")
    path = os.path.join(directory, stem + ext)
    model.save(tmp, **({"include_optimizer": False} if quantized else {}))
    os.replace(tmp, path)
    return path


class WorkdirLockedError(RuntimeError):
    """Another process holds the lock of a workdir."""


class WorkdirLock:
    """An exclusive advisory lock on a workdir (``<workdir>/.lock``).

    Two processes training into one workdir would overwrite each other's runs;
    the second one is refused with a clear message instead. The lock is
    released when the process exits, however it exits (``flock``), so a killed
    run never leaves a stale lock behind.

        with runs.WorkdirLock(workdir):
            ...train...

    Raises:
      WorkdirLockedError: on entry, when another process holds the lock.
    """

    def __init__(self, workdir):
        self.workdir = workdir
        self.path = os.path.join(workdir, ".lock")
        self._fd = None

    def __enter__(self):
        os.makedirs(self.workdir, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                holder = open(self.path).read().strip() or "another process"
                raise WorkdirLockedError(
                    f"Workdir {self.workdir} is in use by {holder}; wait for it to finish or "
                    "choose another --workdir."
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"process {os.getpid()}\n".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc):
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
        return False
