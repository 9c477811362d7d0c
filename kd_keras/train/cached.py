"""``train_or_load``: training a model as a cached run (:mod:`kd_keras.runs`):
trained once per key, loaded on every later call, resumed when interrupted.
"""

import logging
import os

from kd_keras import console, runs
from kd_keras.keras_compat import keras
from kd_keras.train.fit import evaluate, fit


class CorruptRunError(RuntimeError):
    """A finished run's saved model cannot be loaded."""


def _load_finished(directory, model_path, load_fn):
    load = load_fn or (lambda path: keras.models.load_model(path, compile=False))
    try:
        return load(model_path)
    except Exception as e:  # noqa: BLE001 — any failure to load means the file is bad.
        raise CorruptRunError(f"{model_path}: {type(e).__name__}: {str(e)[:200]}") from e


def split_accuracy(model, datasets, split):
    """The model's accuracy on one split's pipeline of `datasets` ('val' or
    'test'), or None when the split is empty or left out (None)."""
    dataset = datasets.get(split)
    return None if dataset is None else evaluate(model, dataset)


def train_or_load(
    workdir,
    name,
    spec,
    build_fn,
    datasets,
    train_cfg,
    teacher=None,
    kd=None,
    callbacks=(),
    verbose=1,
    postprocess=None,
    load_fn=None,
    **fit_kwargs,
):
    """Trains a model as a cached run, or loads it if that run finished.

    The run lives in ``runs.run_dir(workdir, name, spec)``. A finished run
    (``result.json`` and a saved model) is loaded, never retrained. A finished
    run whose model file cannot be loaded is moved aside to
    ``<run dir>.corrupt-<time>`` (said in the log) and trained again. The
    result records the trained weights' digest (:func:`runs.weights_digest`):
    runs that depend on this one put it in their spec.

    Args:
      workdir: pipeline workdir.
      name: short run name (e.g. 'teacher0', 'base-kd-s0').
      spec: JSON-able dict that fully determines the run (hashed), including
        the weights digest of every run it depends on.
      build_fn: () -> fresh keras.Model.
      datasets: dict of tf.data pipelines ('val' and 'test' None when the
        run is not scored on that split).
      train_cfg: TrainConfig.
      teacher, kd: for distillation.
      callbacks: extra Keras callbacks.
      verbose: Keras verbosity.
      postprocess: optional fn(model) -> model applied after training and
        before saving (e.g. stripping compression wrappers).
      load_fn: loads a finished run's model from its path (default
        ``keras.models.load_model`` without compiling).
      **fit_kwargs: passed to :func:`fit` (offline_data, batch_size).

    Returns:
      (model, result dict). The result holds validation accuracy (None
      without a validation split; computed and added to ``result.json`` when
      a run finished before runs recorded it), test accuracy (None when
      `datasets` has no test pipeline), parameters,
      training time, history, the weights digest, the run directory, and
      `reused` (True when the run had finished before and was loaded).

    Length: over 100 lines with its Args and Returns; its code is 73 lines.
    """
    directory = runs.run_dir(workdir, name, spec)
    # Processes sharing the workdir train each run once: the others wait, then load it.
    with runs.RunLock(directory):
        model_path = runs.saved_model_path(directory)
        result = runs.load_result(directory)
        if result is not None and model_path is not None:
            try:
                model = _load_finished(directory, model_path, load_fn)
            except CorruptRunError as e:
                aside = runs.move_aside(directory)
                logging.warning(
                    "Cached run %s could not be loaded (%s); moved it to %s and training it again.",
                    directory,
                    e,
                    aside,
                )
                console.progress(
                    f"cached run {os.path.basename(directory)} is corrupt; moved to "
                    f"{aside}, training it again"
                )
            else:
                logging.info("Reusing finished run %s", directory)
                console.progress(f"reusing finished run {name} ({directory})")
                digest = result.get("weights_digest") or runs.weights_digest(model)
                if "val_accuracy" not in result:  # Written before runs recorded it.
                    result = dict(result, val_accuracy=split_accuracy(model, datasets, "val"))
                    runs.write_json(os.path.join(directory, "result.json"), result)
                # run_dir is where the run is now (the workdir may have been moved).
                return model, dict(result, run_dir=directory, reused=True, weights_digest=digest)
        runs.write_json(os.path.join(directory, "spec.json"), spec)
        console.progress(f"training {name}: {train_cfg.epochs} epoch(s)")
        keras.utils.set_random_seed(train_cfg.seed)
        model = build_fn()
        fit_out = fit(
            model,
            datasets,
            train_cfg,
            directory,
            teacher=teacher,
            kd=kd,
            extra_callbacks=callbacks,
            verbose=verbose,
            name=name,
            **fit_kwargs,
        )
        if postprocess is not None:
            model = postprocess(model)
        runs.save_model(model, directory)
        result = {
            "name": name,
            "model": model.name,
            "val_accuracy": split_accuracy(model, datasets, "val"),
            "test_accuracy": split_accuracy(model, datasets, "test"),
            "params": int(model.count_params()),
            "train_time_s": round(fit_out["train_time_s"], 2),
            "epochs": len(next(iter(fit_out["history"].values()), [])),
            "history": fit_out["history"],
            "weights_digest": runs.weights_digest(model),
            "run_dir": directory,
        }
        runs.write_json(os.path.join(directory, "result.json"), result)
        return model, dict(result, reused=False)
