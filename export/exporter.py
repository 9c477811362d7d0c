"""``export_model``: ``.tflite`` files with measured size, latency and accuracy.

It is what the pipeline calls for each student: it converts the
model to every requested format (:func:`export.convert.convert`), saves
``<name>.<format>.tflite``, measures each file in the LiteRT interpreter
(:func:`export.measure.measure`), times all formats together with the latency
protocol of :mod:`export.latency` once per thread count, runs int8 files on
TensorFlow Lite Micro (:mod:`export.micro`), profiles each file's ops
(:mod:`export.profile`, a cost-model estimate) and writes a model card beside
each file (:mod:`export.card`). ``python -m export.main`` does
the same for a saved model from the command line.
"""

# isort: off
from kd_keras import keras_compat  # noqa: F401  TensorFlow is imported there first, quietly.

# isort: on

import os
import sys

from export import card as card_lib
from export import convert as convert_lib
from export import measure as measure_lib
from export import micro as micro_lib
from export import profile as profile_lib
from export.convert import (
    DEFAULT_NUM_CALIBRATION,
    QUANTIZATIONS,
    ExportError,
    load_model,
    save_tflite,
    strip_wrappers,
)
from export.measure import DEFAULT_BATCH_SIZE, DEFAULT_MAX_RUNS, DEFAULT_NUM_RUNS, DEFAULT_WARMUP
from kd_keras import runs
from kd_keras.distill import teachers

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
    class_names=None,
    command=None,
    max_latency_runs=DEFAULT_MAX_RUNS,
    tflm=True,
    input_range="0,1",
):
    """Converts, saves and measures a model in several TFLite formats, with model cards.

    All formats are timed together, interleaved, in one timing process per
    thread count (:func:`export.measure.latency_together`). int8 files are
    also run on TensorFlow Lite Micro (:func:`export.micro.micro`: arena
    bytes, op support, accuracy). Beside every ``<name>.<format>.tflite`` go
    ``<name>.<format>.profile.json`` (per-op cost estimate, :mod:`export.profile`),
    ``<name>.<format>.card.json`` and ``.card.md`` (:mod:`export.card`), and
    ``<name>.labels.txt`` when class names are known.

    A quantization-aware-trained model converts to int8 whatever the format
    asked for, so only its int8 file is made; every row then carries
    ``formats_skipped`` (the other formats requested).

    Args:
      model: a ``keras.Model`` (wrappers are stripped) or a saved model path.
      out_dir: directory of the ``.tflite`` files and the results file.
      formats: quantizations to export, each in QUANTIZATIONS.
      data: a :class:`kd_keras.data.Dataset`; its training images calibrate
        int8 and its test split measures accuracy. None: sizes and latency
        only (int8 then works for QAT models only).
      num_calibration: training images used to calibrate int8.
      threads: interpreter thread counts; latency is measured for each.
      latency_runs: timed rounds before the latency stopping rule is checked.
      name: file name stem; defaults to the model's name (or the file stem).
      warmup: untimed rounds before timing.
      xnnpack: XNNPack delegate on or off.
      int8_io: int8 inputs and outputs for the int8 format.
      batch_size: examples per invocation when measuring accuracy.
      results_file: file name (in `out_dir`) of the JSON list of rows;
        default ``<name>.export.json``.
      class_names: class name per output index; default ``data.class_names``.
      command: the command recorded in the cards; default ``sys.argv``.
      max_latency_runs: cap on timed rounds.
      tflm: run int8 files on TFLM.
      input_range: the value range the model expects its images in ('0,1',
        '0,255', '-1,1' or a (low, high) pair): `data`'s uint8 images are
        mapped to it for calibration, accuracy and timing.

    Returns:
      One dict per (format, thread count), in that order: name, format, path,
      card (JSON card path), profile (profile JSON path), the figures of
      :func:`export.measure.measure` and of the latency protocol, for int8 the
      TFLM figures, and, when
      float32 is among the formats, bytes_vs_float32 / gzip_bytes_vs_float32 /
      latency_vs_float32 (this row's figure over float32's at the same thread
      count). The list is also written to `results_file` in `out_dir`.

    Raises:
      ExportError: unknown format, empty thread list, a QAT model without
        int8 among the formats, or a failed conversion or measurement.

    Length: over 100 lines with its Args and Returns; its code is 74 lines.
    """
    formats, threads = _checked_request(formats, threads)
    source, keras_model, name = _resolve_source(model, name)
    formats, skipped = _qat_formats(keras_model, formats, name)
    if class_names is None and data is not None:
        class_names = getattr(data, "class_names", ())
    class_names = list(class_names or ())
    x_train = x_test = y_test = None
    if data is not None:
        x_train = convert_lib.in_range(data.x_train, input_range)
        x_test, y_test = convert_lib.in_range(data.x_test, input_range), data.y_test
    paths, static = {}, {}
    for fmt in formats:
        paths[fmt] = os.path.join(out_dir, f"{name}.{fmt}.tflite")
        static[fmt] = _convert_and_measure(
            source,
            keras_model,
            fmt,
            paths[fmt],
            (x_train, x_test, y_test),
            num_calibration=num_calibration,
            int8_io=int8_io and fmt == "int8",
            threads=threads[0],
            xnnpack=xnnpack,
            batch_size=batch_size,
            tflm=tflm,
        )
    example = x_test[0] if x_test is not None and len(x_test) else None
    timed = {
        count: measure_lib.latency_together(
            paths,
            example,
            num_runs=latency_runs,
            warmup=warmup,
            threads=count,
            xnnpack=xnnpack,
            max_runs=max_latency_runs,
        )
        for count in threads
    }
    if class_names:
        card_lib.write_labels(out_dir, name, class_names)
    rows = []
    for fmt in formats:
        file_rows = []
        for count in threads:
            row = {"name": name, "format": fmt, "path": paths[fmt], **static[fmt]}
            row.update(timed[count][fmt])
            if skipped:
                row["formats_skipped"] = skipped
            file_rows.append(row)
        json_path, _ = card_lib.write_card(
            file_rows, class_names, sys.argv if command is None else command
        )
        for row in file_rows:
            row["card"] = json_path
        rows += file_rows
    _add_ratios(rows)
    runs.write_json(os.path.join(out_dir, results_file or name + RESULTS_SUFFIX), rows)
    return rows


def _checked_request(formats, threads):
    """(formats, thread counts) as lists, or ExportError naming what is allowed."""
    formats = list(formats)
    unknown = [f for f in formats if f not in QUANTIZATIONS]
    if unknown or not formats:
        raise ExportError(f"formats must be a non-empty subset of {QUANTIZATIONS}, got {formats}.")
    threads = [int(t) for t in threads]
    if not threads or min(threads) < 1:
        raise ExportError(f"threads must be a non-empty list of counts >= 1, got {threads}.")
    return formats, threads


def _resolve_source(model, name):
    """(what the converter reads, the Keras model or None, the file name stem).

    A path is loaded through the one loader; a SavedModel that Keras did not
    write goes to the converter as is, with no Keras model to compare
    predictions with. Wrappers are stripped."""
    source = keras_model = model
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        name = name or os.path.splitext(os.path.basename(path.rstrip("/")))[0]
        keras_model = None if convert_lib.is_plain_saved_model(path) else load_model(path)
        source = keras_model or path
    if keras_model is not None:
        if not teachers.is_keras3_model(keras_model):  # TF-MOT wraps tf_keras models only.
            source = keras_model = strip_wrappers(keras_model)
        name = name or keras_model.name
    return source, keras_model, name


def _qat_formats(keras_model, formats, name):
    """(formats to make, formats skipped): a QAT model exports as int8 only."""
    if keras_model is None or not convert_lib.is_qat_model(keras_model):
        return formats, []
    if "int8" not in formats:
        raise ExportError(
            f"Model '{name}' is quantization-aware-trained: it exports as int8 only, "
            f"and int8 is not among the formats {formats}."
        )
    return ["int8"], [f for f in formats if f != "int8"]


def _convert_and_measure(
    source,
    keras_model,
    fmt,
    path,
    images,
    num_calibration,
    int8_io,
    threads,
    xnnpack,
    batch_size,
    tflm,
):
    """Converts `source` to `fmt`, saves it at `path` and returns its untimed
    figures: size, accuracy, agreement with the Keras model, the profile path
    and, for int8 with `tflm`, the TFLite Micro figures. `images`: (x_train,
    x_test, y_test), each None without data."""
    x_train, x_test, y_test = images
    content = convert_lib.convert(
        source,
        fmt,
        representative_images=x_train,
        num_calibration=num_calibration,
        int8_io=int8_io,
    )
    save_tflite(content, path)
    figures = measure_lib.measure(
        path,
        x_test=x_test,
        y_test=y_test,
        keras_model=keras_model if x_test is not None else None,
        threads=threads,
        xnnpack=xnnpack,
        batch_size=batch_size,
        timing=False,
    )
    figures["profile"], _ = profile_lib.write_profile(path)
    if fmt == "int8" and tflm:
        figures.update(micro_lib.micro(content, x_test, y_test))
    return figures


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
