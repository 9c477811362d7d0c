"""Deployment export: ``.tflite`` files with measured size, latency and accuracy.

``export_model`` is what the pipeline calls for each student: it converts the
model to every requested format (:func:`export.convert.convert`), saves
``<name>.<format>.tflite`` and measures each file in the LiteRT interpreter
(:func:`export.measure.measure`), once per thread count. ``python -m export.main`` does
the same for a saved model from the command line.
"""

# isort: off
from kd_keras import keras_compat  # noqa: F401  TensorFlow is imported there first, quietly.

# isort: on

import os

from export import convert as convert_lib
from export import measure as measure_lib
from export.convert import (
    DEFAULT_NUM_CALIBRATION,
    QUANTIZATIONS,
    ExportError,
    load_model,
    save_tflite,
    strip_wrappers,
)
from export.measure import DEFAULT_BATCH_SIZE, DEFAULT_NUM_RUNS, DEFAULT_WARMUP
from kd_keras import runs

# The submodules keep their names: export.convert.convert(), export.measure.measure().
__all__ = [
    "ExportError",
    "QUANTIZATIONS",
    "export_model",
    "load_model",
    "save_tflite",
    "strip_wrappers",
]

RESULTS_SUFFIX = ".export.json"


def export_model(
    model,
    out_dir,
    formats=QUANTIZATIONS,
    data=None,
    num_calibration=DEFAULT_NUM_CALIBRATION,
    threads=(1,),
    latency_runs=DEFAULT_NUM_RUNS,
    name=None,
    warmup=DEFAULT_WARMUP,
    xnnpack=True,
    int8_io=False,
    batch_size=DEFAULT_BATCH_SIZE,
    results_file=None,
):
    """Converts, saves and measures a model in several TFLite formats.

    Args:
      model: a ``keras.Model`` (wrappers are stripped) or a saved model path.
      out_dir: directory of the ``.tflite`` files and the results file.
      formats: quantizations to export, each in QUANTIZATIONS.
      data: a :class:`kd_keras.data.Dataset`; its training images calibrate
        int8 and its test split measures accuracy. None: sizes and latency
        only (int8 then works for QAT models only).
      num_calibration: training images used to calibrate int8.
      threads: interpreter thread counts; latency is measured for each.
      latency_runs: timed single-example invocations per measurement.
      name: file name stem; defaults to the model's name (or the file stem).
      warmup: untimed invocations before timing.
      xnnpack: XNNPack delegate on or off.
      int8_io: int8 inputs and outputs for the int8 format.
      batch_size: examples per invocation when measuring accuracy.
      results_file: file name (in `out_dir`) of the JSON list of rows;
        default ``<name>.export.json``.

    Returns:
      One dict per (format, thread count), in that order: name, format, path,
      the figures of :func:`export.measure.measure`, and, when float32 is
      among the formats, bytes_vs_float32 / gzip_bytes_vs_float32 /
      latency_vs_float32 (this row's figure over float32's at the same thread
      count). The list is also written to `results_file` in `out_dir`.

    Raises:
      ExportError: unknown format, empty thread list, or a failed
        conversion or measurement.
    """
    formats = list(formats)
    unknown = [f for f in formats if f not in QUANTIZATIONS]
    if unknown or not formats:
        raise ExportError(f"formats must be a non-empty subset of {QUANTIZATIONS}, got {formats}.")
    threads = [int(t) for t in threads]
    if not threads or min(threads) < 1:
        raise ExportError(f"threads must be a non-empty list of counts >= 1, got {threads}.")
    source = keras_model = model
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        name = name or os.path.splitext(os.path.basename(path.rstrip("/")))[0]
        # A SavedModel that Keras did not write goes to the converter as is,
        # and there is no Keras model to compare predictions with.
        keras_model = None if convert_lib.is_plain_saved_model(path) else load_model(path)
        source = keras_model or path
    if keras_model is not None:
        source = keras_model = strip_wrappers(keras_model)
        name = name or keras_model.name
    x_train = data.x_train if data is not None else None
    rows = []
    for fmt in formats:
        content = convert_lib.convert(
            source,
            fmt,
            representative_images=x_train,
            num_calibration=num_calibration,
            int8_io=int8_io and fmt == "int8",
        )
        path = os.path.join(out_dir, f"{name}.{fmt}.tflite")
        save_tflite(content, path)
        accuracy_fields = None
        for count in threads:
            with_data = data is not None and accuracy_fields is None
            figures = measure_lib.measure(
                path,
                x_test=data.x_test if with_data else None,
                y_test=data.y_test if with_data else None,
                keras_model=keras_model if with_data else None,
                num_runs=latency_runs,
                warmup=warmup,
                threads=count,
                xnnpack=xnnpack,
                batch_size=batch_size,
            )
            if with_data:  # Accuracy does not depend on threads: measured once.
                accuracy_fields = {
                    k: v
                    for k, v in figures.items()
                    if k.startswith(("accuracy", "num_test", "keras_", "batched_"))
                }
            elif accuracy_fields:
                figures.update(accuracy_fields)
            rows.append({"name": name, "format": fmt, "path": path, **figures})
    _add_ratios(rows)
    runs.write_json(os.path.join(out_dir, results_file or name + RESULTS_SUFFIX), rows)
    return rows


def _add_ratios(rows):
    """Adds size and latency ratios against the float32 row of the same threads."""
    reference = {(r["name"], r["threads"]): r for r in rows if r["format"] == "float32"}
    for row in rows:
        base = reference.get((row["name"], row["threads"]))
        if base is None:
            continue
        row["bytes_vs_float32"] = round(row["file_bytes"] / base["file_bytes"], 4)
        row["gzip_bytes_vs_float32"] = round(row["gzip_bytes"] / base["gzip_bytes"], 4)
        row["latency_vs_float32"] = round(row["latency_us_median"] / base["latency_us_median"], 4)
