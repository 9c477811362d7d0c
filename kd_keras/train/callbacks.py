"""Callbacks: early stopping that survives a resume, and the progress writer
that checkpoints each epoch.
"""

import os
import time

import numpy as np

from kd_keras import console, runs
from kd_keras.keras_compat import keras
from kd_keras.train.state import CHECKPOINT_DIR, PROGRESS_FILE


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """``EarlyStopping`` whose state (patience count, best value and weights) can
    be saved with a checkpoint and given back to a resumed training.

    Args:
      state: what :meth:`state` returned at the checkpoint resumed from, or None.
      best_weights: the best weights saved with that checkpoint, or None.
      **kwargs: passed to ``keras.callbacks.EarlyStopping``.
    """

    def __init__(self, *args, state=None, best_weights=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._resume = state
        self._resume_weights = best_weights

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self._resume:
            self.wait = int(self._resume["wait"])
            self.best = float(self._resume["best"])
            self.best_epoch = int(self._resume["best_epoch"])
            self.stopped_epoch = int(self._resume["stopped_epoch"])
            self.best_weights = self._resume_weights

    def state(self):
        return {
            "wait": int(self.wait),
            "best": float(self.best),
            "best_epoch": int(self.best_epoch),
            "stopped_epoch": int(self.stopped_epoch),
        }


class Progress(keras.callbacks.Callback):
    """Writes a resumable training state into `run_dir` after every epoch.

    At each epoch end: a checkpoint of `checkpoint` to
    ``run_dir/checkpoints/epoch-N`` (and the early-stopping best weights next
    to it), then ``run_dir/progress.json`` is replaced atomically, then older
    checkpoints are deleted. So progress.json always names a complete
    checkpoint. At the end of training, the final weights (e.g. restored by
    early stopping) are written the same way with ``finished: true``.

    progress.json holds ``epochs_done``, ``history`` (per-epoch metrics of all
    epochs so far), ``train_time_s`` (cumulative), ``checkpoint`` (prefix
    relative to `run_dir`), ``early_stopping`` and ``finished``.

    Must come after any callback whose epoch-end effects it should save
    (early stopping).

    With `total_epochs`, a training that ends before that many epochs (and
    was not stopped early) is saved with ``finished: false``: a later fit
    continues it (see ``fit(until_epoch=...)``).
    """

    def __init__(self, run_dir, checkpoint, progress=None, early_stopping=None, total_epochs=None):
        super().__init__()
        self.run_dir = run_dir
        self.checkpoint = checkpoint
        progress = progress or {}
        self.history = {k: list(v) for k, v in progress.get("history", {}).items()}
        self.prior_time = float(progress.get("train_time_s", 0.0))
        self.epochs_done = int(progress.get("epochs_done", 0))
        self.early_stopping = early_stopping
        self.total_epochs = total_epochs
        self.start = time.time()

    @property
    def train_time_s(self):
        return self.prior_time + time.time() - self.start

    def on_train_begin(self, logs=None):
        self.start = time.time()

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        self.epochs_done = epoch + 1
        self.save(f"epoch-{epoch + 1}", finished=False)

    def on_train_end(self, logs=None):
        es = self.early_stopping
        finished = (
            self.total_epochs is None
            or self.epochs_done >= self.total_epochs
            or bool(es is not None and es.stopped_epoch)
        )
        self.save(f"final-{self.epochs_done}", finished=finished)

    def save(self, name, finished):
        directory = os.path.join(self.run_dir, CHECKPOINT_DIR)
        prefix = self.checkpoint.write(os.path.join(directory, name))
        es = self.early_stopping
        best = None
        if es is not None and es.best_weights is not None and not finished:
            best = name + ".best.npz"
            np.savez(os.path.join(directory, best), *es.best_weights)
        # The figure the state holds; fit reports the same one.
        self.saved_train_time_s = self.train_time_s
        runs.write_json(
            os.path.join(self.run_dir, PROGRESS_FILE),
            {
                "epochs_done": self.epochs_done,
                "history": self.history,
                "train_time_s": self.saved_train_time_s,
                "checkpoint": os.path.relpath(prefix, self.run_dir),
                "early_stopping": es.state() if es is not None else None,
                "best_weights": best and os.path.join(CHECKPOINT_DIR, best),
                "finished": finished,
            },
        )
        run = os.path.basename(os.path.normpath(self.run_dir))
        total = self.total_epochs or (self.params or {}).get("epochs")
        console.note_saved(
            None
            if finished
            else f"{run} saved at epoch {self.epochs_done}"
            + (f" of {total}" if total else "")
            + f"; a rerun resumes it from epoch {self.epochs_done + 1}"
        )
        for entry in os.listdir(directory):
            if entry.split(".")[0] != name:
                os.remove(os.path.join(directory, entry))
