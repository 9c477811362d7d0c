"""A quiet console: what the run does on screen, library chatter in a log file.

``setup(workdir)`` sends TensorFlow's C++ logs, Python warnings and the
absl / TensorFlow / tf_keras Python loggers to ``<workdir>/log.txt``; the
console keeps Python's own error output (tracebacks, ``sys.exit`` messages),
what the program prints, Keras epoch lines, and the lines of :func:`stage`
and :func:`progress`. ``setup(workdir, verbose=True)`` leaves everything on
the console.

The C++ lines TensorFlow writes while it is imported (before any flag is
parsed) are captured by ``kd_keras.keras_compat`` and always copied into
``log.txt``; with ``verbose=True`` they are printed too.
"""

import contextlib
import errno
import faulthandler
import logging
import os
import sys
import time

from kd_keras import keras_compat

LOG_NAME = "log.txt"
_log_path = None  # The log setup() redirected into; None: nothing redirected.


def setup(workdir, verbose=False):
    """Routes library chatter into ``<workdir>/log.txt`` (created; appended).

    Call once, early in an entry point's ``main``, after the flags are parsed.

    Args:
      workdir: directory of the log (created if missing).
      verbose: if True, nothing is redirected: logs and warnings stay on the
        console (the log still gets TensorFlow's import-time lines).

    Returns:
      The path of the log file.
    """
    global _log_path
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, LOG_NAME)
    with open(path, "a") as f:
        f.write(f"==== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(sys.argv)}\n")
        f.write(keras_compat.import_log)
    if verbose:
        sys.stderr.write(keras_compat.import_log)
        return path
    sys.stdout.flush()
    sys.stderr.flush()
    console_fd = os.dup(2)
    log_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(log_fd, 2)  # Native writes and handlers bound to the old stderr.
    os.close(log_fd)
    # Python's own error output keeps the console.
    sys.stderr = os.fdopen(console_fd, "w", buffering=1)
    if faulthandler.is_enabled():
        faulthandler.enable(sys.stderr)
    logging.captureWarnings(True)
    root = logging.getLogger()
    if not root.handlers:  # Otherwise logging's last resort writes to sys.stderr.
        root.addHandler(logging.StreamHandler(sys.__stderr__))
    _log_path = path
    return path


def log_path():
    """The log file :func:`setup` redirected into, or None."""
    return _log_path


@contextlib.contextmanager
def capture_native_output(log_path=None):
    """Redirects file descriptors 1 and 2 into `log_path` while the block runs.

    For C++ code that prints directly (the TFLite converter). Python
    exceptions raised in the block propagate unchanged.

    Args:
      log_path: file appended to; default: the log of :func:`setup`. When
        that is None too (no setup, or verbose), nothing is redirected.
    """
    path = log_path or _log_path
    if path is None:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    log_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, log_fd):
            os.close(fd)


def stage(index, total, text):
    """Prints ``[index/total] text`` and flushes."""
    print(f"[{index}/{total}] {text}", flush=True)


def progress(text):
    """Prints ``  ... text`` (a step of the current stage) and flushes."""
    print(f"  ... {text}", flush=True)


# The exit status of a process stopped by Ctrl-C (128 + SIGINT).
INTERRUPTED_EXIT = 130


@contextlib.contextmanager
def exit_on_interrupt(resumes):
    """Turns Ctrl-C (KeyboardInterrupt) inside the block into one line on
    stderr, ``Interrupted: <resumes>``, and exit status 130, instead of a
    traceback from inside TensorFlow. `resumes` says what a rerun of the same
    command does with the work done so far; the line ends with what the last
    checkpoint saved (:func:`note_saved`), if any."""
    try:
        yield
    except KeyboardInterrupt:
        where = f" ({_last_saved})" if _last_saved else ""
        print(f"Interrupted: {resumes}{where}", file=sys.stderr, flush=True)
        sys.exit(INTERRUPTED_EXIT)


_last_saved = None  # What the last checkpoint of this process saved, for that line.


def note_saved(text):
    """Records what the latest checkpoint saved (e.g. "student-x saved at epoch
    3 of 10"); an interruption's line ends with it. None clears it."""
    global _last_saved
    _last_saved = text


# errno values of a write that found no room: the disk is full, or the user's quota is.
FULL_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# The exit status of a process stopped by a full disk.
FULL_DISK_EXIT = 1
_FULL_DISK_TEXTS = tuple(os.strerror(code) for code in FULL_DISK_ERRNOS)


def full_disk_error(exc):
    """The error in `exc`'s chain (itself, its causes and contexts) that says
    the disk or quota is full, or None.

    An ``OSError`` with errno ENOSPC or EDQUOT, or an error of a library that
    wraps one in its own type and message (TensorFlow's file writers).
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError):
            if exc.errno in FULL_DISK_ERRNOS:
                return exc
        elif any(text in str(exc) for text in _FULL_DISK_TEXTS):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


@contextlib.contextmanager
def exit_on_full_disk(resumes):
    """Turns a full disk (or quota) inside the block into one line on stderr,
    ``<error>: <path>. Once space is freed: <resumes>``, and exit status
    :data:`FULL_DISK_EXIT`, instead of a traceback. `resumes` says what a
    rerun of the same command does with the work done so far. Any other error
    propagates unchanged."""
    try:
        yield
    except Exception as e:  # noqa: BLE001 - re-raised unless the disk is full.
        full = full_disk_error(e)
        if full is None:
            raise
        if isinstance(full, OSError):
            what = (
                f"{full.strerror or os.strerror(full.errno)}: {full.filename or '(no path given)'}"
            )
        else:
            what = " ".join(str(full).split())[:300]
        print(f"{what}. Once space is freed: {resumes}", file=sys.stderr, flush=True)
        sys.exit(FULL_DISK_EXIT)
