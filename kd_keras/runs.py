"""Run caching and atomic result files.

Every training run lives in ``<workdir>/runs/<name>-<hash>/`` where the hash is
taken over the run's full configuration. A run whose ``result.json`` exists is
finished and is never trained again; an interrupted run resumes from the
checkpoint its ``progress.json`` names (see ``kd_keras.train.fit``). Files
are written to a temporary name and renamed, so a crash never leaves a
half-written result behind.
"""

import dataclasses
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time

import numpy as np

from kd_keras import console


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
    _write_atomically(path, lambda f: f.write(text), binary=isinstance(text, bytes))


def write_npz(path, arrays):
    """Writes the {name: array} `arrays` to `path` as an uncompressed ``.npz``
    (``numpy.savez``), atomically: temporary file, then rename."""
    _write_atomically(path, lambda f: np.savez(f, **arrays), binary=True)


def _write_atomically(path, write, binary):
    """Calls `write` on a temporary file beside `path`, then renames it to
    `path`; the temporary file is removed if anything fails."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        # mkstemp creates the file private (0600); give it the permissions a
        # plain open() would have (0666 less the umask), so reports stay readable.
        os.chmod(tmp, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def read_json(path):
    """The JSON value stored in `path`."""
    with open(path) as f:
        return json.load(f)


def move_aside(path):
    """Renames the file or directory `path` to ``<path>.corrupt-<time>`` (kept
    for a look, never read again) and returns its new path."""
    aside = f"{path}.corrupt-{int(time.time())}"
    n = 1
    while os.path.exists(aside):
        aside, n = f"{path}.corrupt-{int(time.time())}-{n}", n + 1
    shutil.move(path, aside)
    return aside


def set_aside(path, reason, then):
    """Moves a corrupt `path` aside (:func:`move_aside`) and says so in one
    console line naming it, what is wrong (`reason`) and what happens instead
    (`then`). Returns the new path."""
    aside = move_aside(path)
    logging.warning("%s is corrupt (%s); moved it to %s: %s", path, reason, aside, then)
    console.progress(f"{path} is corrupt ({reason}); moved it to {aside}: {then}")
    return aside


def read_valid_json(path, check=None, then="it is made again"):
    """The JSON value stored in `path`, or None when there is no such file or
    it is corrupt: not JSON, or `check(value)` names a problem.

    A corrupt file is set aside (:func:`set_aside`, with `then` saying what
    the caller does instead) so that the next call finds no file.

    Args:
      path: the file.
      check: optional function (value) -> None when the value is usable, else
        a short description of what is wrong with it.
      then: what happens instead of using the file (said on the console).
    """
    if not os.path.exists(path):
        return None
    try:
        value = read_json(path)
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError.
        set_aside(path, f"not JSON: {e}", then)
        return None
    problem = check(value) if check is not None else None
    if problem:
        set_aside(path, problem, then)
        return None
    return value


def missing_keys(value, keys):
    """None when `value` is a dict holding every key of `keys`, else what is not so."""
    if not isinstance(value, dict):
        return f"a JSON {type(value).__name__}, not an object"
    missing = [key for key in keys if key not in value]
    return f"no {', '.join(map(repr, missing))}" if missing else None


# What every result.json holds (a trained run's and an evaluated teacher's).
RESULT_KEYS = ("name", "test_accuracy")


def load_result(directory):
    """The finished run's result dict, or None if it has not finished (or its
    result.json is corrupt: moved aside, and the run is finished again)."""
    return read_valid_json(
        os.path.join(directory, "result.json"),
        lambda value: missing_keys(value, RESULT_KEYS),
        then="the run is made again (from its saved training state when it has one)",
    )


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
    """An advisory lock on a workdir (``<workdir>/.lock``).

    Two processes training into one workdir would overwrite each other's runs;
    the second one is refused with a clear message instead. The lock is
    released when the process exits, however it exits (``flock``), so a killed
    run never leaves a stale lock behind.

        with runs.WorkdirLock(workdir):
            ...train...

    The processes of one distributed job (a keras-tuner chief and its workers,
    whose runs are keyed by spec and each trained under its own
    :class:`RunLock`) share the workdir: they pass the same `group`, a string
    naming the job. Members of a group hold the workdir lock shared, and the
    group's own ``.lock-<group>`` file shared; a process without a group, or
    of another group, is refused while any member is alive.

    Args:
      workdir: the directory.
      group: None for sole use, or the name of the job whose processes share it.

    Raises:
      WorkdirLockedError: on entry, when another process (or job) holds the lock.
    """

    def __init__(self, workdir, group=None):
        self.workdir = workdir
        self.group = group
        self.path = os.path.join(workdir, ".lock")
        self._fds = []

    def _refuse(self, holder):
        self._release()
        raise WorkdirLockedError(
            f"Workdir {self.workdir} is in use by {holder}; wait for it to finish or "
            "choose another --workdir."
        ) from None

    def _try(self, path, mode):
        """Opens `path` and flocks it without blocking; the fd, or None if held."""
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                return None
            raise
        return fd

    def __enter__(self):
        os.makedirs(self.workdir, exist_ok=True)
        if self.group is None:
            fd = self._try(self.path, fcntl.LOCK_EX)
            if fd is None:
                self._refuse(self._live_jobs() or _holder(self.path))
            os.ftruncate(fd, 0)
            os.write(fd, f"process {os.getpid()}\n".encode())
            self._fds.append(fd)
            return self
        # Group members check the other groups under a short exclusive gate,
        # so two jobs starting at once cannot both see the other as absent.
        gate = os.open(os.path.join(self.workdir, ".lock-gate"), os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(gate, fcntl.LOCK_EX)
        try:
            fd = self._try(self.path, fcntl.LOCK_SH)
            if fd is None:
                self._refuse(_holder(self.path))
            self._fds.append(fd)
            mine = f".lock-{config_hash(self.group)}"
            for name in sorted(os.listdir(self.workdir)):
                if not name.startswith(".lock-") or name in (mine, ".lock-gate"):
                    continue
                other = os.path.join(self.workdir, name)
                probe = self._try(other, fcntl.LOCK_EX)
                if probe is None:
                    self._refuse(f"job '{_holder(other)}'")
                os.remove(other)  # A finished job's file: nobody holds it any more.
                os.close(probe)
            fd = self._try(os.path.join(self.workdir, mine), fcntl.LOCK_SH)
            if fd is None:  # Only an exclusive prober holds it, and only under the gate.
                self._refuse("another job")
            self._fds.append(fd)
            with open(os.path.join(self.workdir, mine), "w") as f:
                f.write(f"{self.group}\n")
        finally:
            fcntl.flock(gate, fcntl.LOCK_UN)
            os.close(gate)
        return self

    def _live_jobs(self):
        """The names of the jobs holding the workdir (', '-joined), or ''."""
        live = []
        for name in sorted(os.listdir(self.workdir)):
            if name.startswith(".lock-") and name != ".lock-gate":
                path = os.path.join(self.workdir, name)
                probe = self._try(path, fcntl.LOCK_EX)
                if probe is None:
                    live.append(f"job '{_holder(path)}'")
                else:
                    os.close(probe)
        return ", ".join(live)

    def _release(self):
        for fd in self._fds:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        self._fds = []

    def __exit__(self, *exc):
        self._release()
        return False


def _holder(path):
    try:
        with open(path) as f:
            return f.read().strip() or "another process"
    except OSError:
        return "another process"


class RunLock:
    """An exclusive, blocking lock on one run (``.<run dir name>.lock`` beside
    it: hidden, so listings and globs of run directories do not see it).

    Processes sharing a workdir (the workers of a distributed study) take it
    around training a run: the first one trains it, the others wait and then
    find it finished. Released when the process exits, however it exits.
    """

    def __init__(self, directory):
        parent, name = os.path.split(directory.rstrip(os.sep))
        self.path = os.path.join(parent, f".{name}.lock")
        self._fd = None

    def __enter__(self):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
        return False
