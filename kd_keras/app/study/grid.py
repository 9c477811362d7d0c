"""The study's runs as the trials of a keras-tuner oracle, in one process or many.

Every run of the study (a student variant, a bagging member, the second
teacher) is one trial: the oracle's search space is one ``Choice`` named
``run`` whose values are the runs' labels, and :class:`StudyOracle` hands out
each label once, in the study's order. A trial's work is the run's cached
training (``kd_keras.train.train_or_load`` under its ``RunLock``), so its
result lands in the workdir's run cache; the report is built from that cache
once every trial is done.

One process (no ``KERASTUNER_*`` variables): the oracle runs in-process and
this process works through the trials. Distributed, keras-tuner's own
chief/worker mode: the process with ``KERASTUNER_TUNER_ID=chief`` serves the
oracle over gRPC at ``KERASTUNER_ORACLE_IP:KERASTUNER_ORACLE_PORT`` and
returns when every trial has ended; every other process (``tuner0``,
``tuner1``, ...) pulls trials until none is left. All of them share the
workdir. A run that two trials need (the trained base student of 'none' and
of 'prune50') is trained by whichever gets there first; the other waits on
the run's lock and then loads it.
"""

import os
import time

import keras_tuner as kt
from keras_tuner.engine import base_tuner

from kd_keras import distribute

RUN = "run"
OBJECTIVE = "test_accuracy"
PROJECT = "study_trials"  # The oracle's project under the workdir.
WORKERS = "study_workers"  # One project per worker (its tuner state), under the workdir.
# A worker asking while every run is handed out but some still train waits
# this long before asking again (keras-tuner resends IDLE requests at once).
IDLE_WAIT_S = 1.0


class TrialsFailedError(RuntimeError):
    """Trials of the study failed (on workers); the message names them."""


class StudyOracle(kt.Oracle):
    """Hands out every run label once, in order; stops when all have ended.

    Args:
      labels: the runs' unique labels, in the order they should start.

    Raises:
      ValueError: no labels, or a label twice.
    """

    def __init__(self, labels):
        labels = list(labels)
        if not labels or len(set(labels)) != len(labels):
            raise ValueError(f"The study's run labels must be unique and non-empty; got {labels}.")
        hps = kt.HyperParameters()
        hps.Choice(RUN, labels)
        super().__init__(
            objective=kt.Objective(OBJECTIVE, direction="max"),
            hyperparameters=hps,
            allow_new_entries=False,
            tune_new_entries=False,
            # Failures are reported after the search, all of them, not by stopping it.
            max_consecutive_failed_trials=len(labels) + 1,
        )
        self.labels = labels

    def populate_space(self, trial_id):
        del trial_id
        started = {t.hyperparameters.values.get(RUN) for t in self.trials.values()}
        for label in self.labels:
            if label not in started:
                return {"status": kt.engine.trial.TrialStatus.RUNNING, "values": {RUN: label}}
        if self.ongoing_trials:
            time.sleep(IDLE_WAIT_S)
            return {"status": kt.engine.trial.TrialStatus.IDLE, "values": None}
        return {"status": kt.engine.trial.TrialStatus.STOPPED, "values": None}


class StudyGrid(base_tuner.BaseTuner):
    """Runs the trials of a :class:`StudyOracle`: trial ``run=L`` calls ``jobs[L]()``.

    Args:
      oracle: a :class:`StudyOracle`.
      jobs: {label: zero-argument callable returning the run's test accuracy}.
      directory, project_name: keras-tuner's project (its trial records).
      single: this process runs the oracle itself; a failing run then ends
        the search with that run's exception.
    """

    def __init__(self, oracle, jobs, directory, project_name, single):
        self.jobs = jobs
        self.single = single
        self.error = None
        # The run cache holds the work: the trial records start afresh each time.
        super().__init__(
            oracle, None, directory=directory, project_name=project_name, overwrite=True
        )

    def run_trial(self, trial, *args, **kwargs):
        del args, kwargs
        label = trial.hyperparameters.get(RUN)
        try:
            accuracy = self.jobs[label]()
        except Exception as e:
            if not self.single:
                raise  # keras-tuner records the failed trial; the chief reports it.
            self.error = e
            raise kt.errors.FatalError(f"study run {label} failed: {e}") from e
        return {OBJECTIVE: float(accuracy)}

    def save_model(self, trial_id, model, step=0):
        del trial_id, model, step  # Runs are saved by the run cache.

    def load_model(self, trial):
        raise NotImplementedError("Study runs are loaded from the workdir's run cache.")


def run(jobs, workdir, role=None):
    """Runs (or serves, or works on) every job as a trial.

    Args:
      jobs: {label: callable} in the order the runs should start.
      workdir: the study's workdir (holds the oracle's project).
      role: 'single', 'chief' or 'worker' (default: from the KERASTUNER_*
        environment, ``kd_keras.distribute.distributed_role``).

    Returns:
      The role.

    Raises:
      TrialsFailedError: (single or chief) trials that did not complete.
      Exception: in one process, the first failing run's own exception.
    """
    role = role or distribute.distributed_role()
    oracle = StudyOracle(list(jobs))
    if role == "worker":
        directory, project = os.path.join(workdir, WORKERS), os.environ["KERASTUNER_TUNER_ID"]
    else:
        directory, project = workdir, PROJECT
    grid = StudyGrid(oracle, jobs, directory, project, single=role == "single")
    try:
        grid.search(verbose=0)
    except kt.errors.FatalError:
        if grid.error is not None:
            raise grid.error from None
        raise
    if role == "worker":
        return role
    failed = {
        t.hyperparameters.values.get(RUN): (t.message or "").strip().splitlines()[-1:]
        for t in oracle.trials.values()
        if t.status != kt.engine.trial.TrialStatus.COMPLETED
    }
    missing = [label for label in jobs if label not in failed and not _completed(oracle, label)]
    if failed or missing:
        details = "; ".join(f"{k}: {' '.join(v) or 'no message'}" for k, v in failed.items())
        raise TrialsFailedError(
            f"{len(failed) + len(missing)} study run(s) did not complete"
            + (f" ({details})" if details else "")
            + (f"; never started: {missing}" if missing else "")
            + ". Rerun the same command: finished runs are cached."
        )
    return role


def _completed(oracle, label):
    return any(
        t.hyperparameters.values.get(RUN) == label
        and t.status == kt.engine.trial.TrialStatus.COMPLETED
        for t in oracle.trials.values()
    )
