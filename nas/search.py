"""The search: keras-tuner oracles driving our own trial loop, hardware-aware.

keras-tuner's ``Tuner`` refuses ``tf_keras`` models when Keras 3 is installed,
so :class:`StudentSearch` builds on ``keras_tuner.engine.base_tuner.BaseTuner``
and keeps what keras-tuner is good at: the oracles (random search, Bayesian
optimization, Hyperband, and here regularized evolution started from given
points such as the hand-designed students), the project directory with resumption
(``overwrite=False``: finished trials are never rerun, an interrupted one is
rerun) and the chief/worker distributed mode (``KERASTUNER_*`` environment
variables). Each trial (:meth:`StudentSearch.run_trial`):

1. builds the candidate from its hyperparameters (``nas.space``);
2. trains it with ``kd_keras.train.fit`` -- through the Distiller when a
   teacher is given, with the teacher's logits computed once per search in
   the teacher cache (``<project>/teacher_cache``) when the students train
   with augmentation and ``KDConfig.teacher_cache_views`` > 0 -- for the
   configured epochs; under Hyperband (successive halving) up to
   ``tuner/epochs`` epochs of a learning-rate schedule defined over the
   largest budget (``max_epochs``). A promoted trial (``tuner/trial_id``)
   *continues* its parent's training: the parent's checkpoint (weights,
   optimizer moments and iteration count, random state) is copied into the
   new trial's directory and ``fit`` resumes it at epoch
   ``tuner/initial_epoch``, on the schedule where the parent stopped. A
   trial promoted to ``max_epochs`` thus ends with the very weights of a
   trial trained ``max_epochs`` in one go (tests/nas_test.py);
3. measures validation accuracy, saves ``trial_<id>/model.keras``, converts
   the model to float32 TFLite (``trial_<id>/model.tflite``) and measures its
   median single-example latency in LiteRT, its bytes and its parameters;
   converts it to int8 and measures that file's latency and bytes and its
   TensorFlow Lite Micro arena;
4. applies the budget and returns the objective.

The objective and the budget are :mod:`nas.objective`'s, the oracles
:mod:`nas.oracles`', and what a candidate costs is measured by
:mod:`nas.candidate`.
"""

import dataclasses
import logging
import os

import keras_tuner as kt
from keras_tuner.engine import base_tuner

from kd_keras import data as data_lib
from kd_keras import distill, runs
from kd_keras import train as train_lib
from kd_keras.keras_compat import keras
from nas import oracles
from nas.candidate import CandidateMeasurement, MeasureConfig
from nas.objective import Budget, objective

MODEL_FILE = "model.keras"
DATA_FILE = "data.json"  # The data a project searches on (dataset name, content digest).


class OtherDataError(ValueError):
    """A project's trials were trained on other data than this run's."""


class StudentSearch(CandidateMeasurement, base_tuner.BaseTuner):
    """A keras-tuner tuner whose trials train, export and measure students.

    Args:
      hypermodel: a :class:`nas.space.StudentSpace`.
      oracle: from :func:`make_oracle`.
      data: a ``kd_keras.data.Dataset`` with a non-empty validation split.
      train_config: ``kd_keras.train.TrainConfig`` of every trial (its
        ``epochs`` is replaced by Hyperband's budget under Hyperband).
      batch_size: training batch size.
      augment: ``kd_keras.data.AugmentConfig`` of the training split.
      budget: :class:`Budget`.
      teacher: None (no distillation), a teacher ``keras.Model``, or a
        zero-argument callable returning one, called once at the first trial
        (a distributed worker thus loads the teacher only when it gets work).
      kd: ``kd_keras.train.KDConfig`` (default ``KDConfig()``) when a
        teacher is given.
      measure: :class:`MeasureConfig`.
      directory: keras-tuner's project directory.
      project_name: keras-tuner's project name; outputs go to
        ``directory/project_name``.
      overwrite: start afresh instead of resuming an existing project.
      verbose: Keras verbosity of each trial's training (0, 1 or 2).

    Raises:
      ValueError: a dataset without a validation split, or a bad argument.
    """

    def __init__(
        self,
        hypermodel,
        oracle,
        data,
        train_config,
        batch_size=64,
        augment=data_lib.AugmentConfig(),
        budget=Budget(),
        teacher=None,
        kd=None,
        measure=MeasureConfig(),
        directory=".",
        project_name="nas",
        overwrite=False,
        verbose=0,
    ):
        if len(data.x_val) == 0:
            raise ValueError(
                f"Dataset '{data.name}' has an empty validation split; the search "
                "ranks candidates by validation accuracy (set val_size > 0)."
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        if verbose not in (0, 1, 2):
            raise ValueError(f"verbose must be 0, 1 or 2, got {verbose!r}.")
        self.data = data
        self.train_config = train_config
        self.batch_size = int(batch_size)
        self.augment = augment
        self.budget = budget
        self.kd = (kd or distill.KDConfig()) if teacher is not None else None
        self.measure = measure
        self.fit_verbose = verbose
        self._teacher = teacher
        self._datasets = None
        self._timed = {}  # frozenset of trial ids -> their int8 latencies timed together
        super().__init__(
            oracle, hypermodel, directory=directory, project_name=project_name, overwrite=overwrite
        )
        self._check_data()

    def _check_data(self):
        """Records which data the project searches on; refuses to resume it on other data.

        Raises:
          OtherDataError: the project's trials were trained on other images
            (its ``data.json`` holds another content digest).
        """
        path = os.path.join(self.project_dir, DATA_FILE)
        mine = {"dataset": self.data.name, "digest": self.data.content_digest}
        if os.path.exists(path):
            theirs = runs.read_json(path)
            if theirs.get("digest") != mine["digest"]:
                raise OtherDataError(
                    f"the search in {self.project_dir} was run on other data "
                    f"({theirs.get('dataset')}, digest {theirs.get('digest')}; this run's "
                    f"{mine['dataset']} has digest {mine['digest']}: other images, splits or "
                    "limits). Pass --overwrite to start it afresh, or another --project_name."
                )
        else:
            runs.write_json(path, mine)

    # -- pieces --------------------------------------------------------------

    @property
    def datasets(self):
        """The train / val / test tf.data pipelines (built once)."""
        if self._datasets is None:
            keras.utils.set_random_seed(self.train_config.seed)  # Before the pipeline is built.
            self._datasets = data_lib.make_datasets(
                self.data, self.batch_size, self.augment, seed=self.train_config.seed
            )
        return self._datasets

    def get_teacher(self):
        """The teacher model (materialized on first use), or None without KD."""
        if self._teacher is not None and not isinstance(self._teacher, keras.Model):
            teacher = self._teacher()
            if not isinstance(teacher, keras.Model):
                raise ValueError(
                    f"The teacher callable returned {type(teacher).__name__}, not a keras.Model."
                )
            self._teacher = teacher
        return self._teacher

    def trial_model_path(self, trial_id):
        return os.path.join(self.get_trial_dir(trial_id), MODEL_FILE)

    @staticmethod
    def epoch_budget(values, default_epochs):
        """(epochs the trial ends at, epochs done before, continued trial id or None).

        Hyperband trials carry ``tuner/epochs`` (cumulative target),
        ``tuner/initial_epoch`` and, when continuing a trial, ``tuner/trial_id``.
        """
        if "tuner/epochs" not in values:
            return int(default_epochs), 0, None
        target = int(values["tuner/epochs"])
        parent = values.get("tuner/trial_id")
        done = int(values.get("tuner/initial_epoch", 0)) if parent else 0
        return max(target, done + 1), done, parent

    @property
    def teacher_cache_dir(self):
        """Where the teacher cache of an augmented search lives (one per search)."""
        return os.path.join(self.project_dir, "teacher_cache")

    def train(self, model, train_config, run_dir, until_epoch=None):
        """Trains `model` in place as a trial does (teacher, KD recipe, teacher
        cache, data); resumable in `run_dir`. Returns ``train_lib.fit``'s dict."""
        return self._fit(model, train_config, run_dir, until_epoch)

    def _fit(self, model, train_config, trial_dir, until_epoch=None):
        """Trains `model` in place; returns kd_keras.train.fit's dict."""
        teacher = self.get_teacher()
        # Without augmentation the teacher's logits are computed in memory once per
        # fit; with it and teacher_cache_views > 0, once per search (teacher cache).
        offline = self.data if teacher is not None and not self.augment.enabled else None
        return train_lib.fit(
            model,
            self.datasets,
            train_config,
            trial_dir,
            teacher=teacher,
            kd=self.kd,
            verbose=self.fit_verbose,
            offline_data=offline,
            batch_size=self.batch_size,
            teacher_cache_dir=self.teacher_cache_dir,
            until_epoch=until_epoch,
        )

    def sample_within_budget(self):
        """Makes the oracle redraw candidates that miss the budget before any
        training (random search and Hyperband; see the module docstring).

        Returns:
          True when the oracle does so; False for an oracle that cannot (the
          Bayesian one proposes its own points) or a budget with no limit.
        """
        limits = any(getattr(self.budget, attr) for _, attr in Budget.LIMITS)
        if not limits or not isinstance(self.oracle, oracles.BudgetedDraws):
            return False
        self.oracle.budget_check = self.within_budget
        return True

    # -- keras-tuner ---------------------------------------------------------

    def run_trial(self, trial, *args, **kwargs):
        """Builds, trains, exports and measures one candidate.

        Returns:
          dict of float metrics (METRICS), ``score`` being the objective.
        """
        del args, kwargs  # Everything a trial needs is held by the tuner.
        hp = trial.hyperparameters
        trial_dir = self.get_trial_dir(trial.trial_id)
        keras.utils.set_random_seed(self.train_config.seed)
        model = self.hypermodel.build(hp)
        target, done, parent = self.epoch_budget(hp.values, self.train_config.epochs)
        # The schedule spans the largest budget; a trial stops at its own.
        config = self.train_config
        until = target if target < config.epochs else None
        if target > config.epochs:
            config = dataclasses.replace(config, epochs=target)
        continued = parent is not None and self.continue_from(parent, trial_dir)
        if parent is not None and not continued:
            # No checkpoint to continue (a parent trained elsewhere): warm-start from
            # its weights, with a fresh schedule over the remaining epochs.
            logging.warning(
                "Trial %s: no training state of trial %s to continue; warm-starting "
                "from its weights with a new schedule.",
                trial.trial_id,
                parent,
            )
            previous = keras.models.load_model(self.trial_model_path(parent), compile=False)
            model.set_weights(previous.get_weights())
            epochs = target - done
            config = dataclasses.replace(
                config, epochs=epochs, warmup_epochs=min(config.warmup_epochs, epochs - 1)
            )
            until = None
        fit_out = self.train(model, config, trial_dir, until)
        val_accuracy = train_lib.evaluate(model, self.datasets["val"])
        self.save_model(trial.trial_id, model)
        figures, excess = self._cost(model, trial_dir)
        metrics = dict(
            figures,
            val_accuracy=val_accuracy,
            epochs=target,
            train_time_s=round(float(fit_out["train_time_s"]), 3),
            feasible=float(not any(excess.values())),
            score=objective(val_accuracy, excess),
        )
        for figure, _ in Budget.LIMITS:
            metrics[f"over_{figure}"] = float(excess.get(figure, 0.0))
        metrics = {k: float(v) for k, v in metrics.items()}
        runs.write_json(
            os.path.join(trial_dir, "result.json"),
            {
                "trial_id": trial.trial_id,
                "hyperparameters": dict(hp.values),
                "metrics": metrics,
                "budget": dataclasses.asdict(self.budget),
                "kd": dataclasses.asdict(self.kd) if self.kd else None,
                "history": fit_out["history"],
            },
        )
        return metrics

    def continue_from(self, parent, trial_dir):
        """Copies trial `parent`'s training state into `trial_dir` (unless the
        trial already has one of its own: an interrupted continuation resumes).

        Returns:
          True when `trial_dir` now holds a state to continue.
        """
        if train_lib.read_progress(trial_dir) is not None:
            return True
        return train_lib.copy_state(self.get_trial_dir(parent), trial_dir)

    def on_trial_end(self, trial):
        if trial.status in (
            kt.engine.trial.TrialStatus.INVALID,
            kt.engine.trial.TrialStatus.FAILED,
        ):
            logging.warning("Trial %s failed:\n%s", trial.trial_id, trial.message)
        super().on_trial_end(trial)

    def save_model(self, trial_id, model, step=0):
        """Saves a trial's trained model atomically (temporary name, then rename)."""
        del step
        path = self.trial_model_path(trial_id)
        partial = path[: -len(".keras")] + ".partial.keras"
        model.save(partial)
        os.replace(partial, path)

    def load_model(self, trial):
        """The trained model of a finished trial."""
        return keras.models.load_model(self.trial_model_path(trial.trial_id), compile=False)
