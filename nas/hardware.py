"""What a candidate costs on device, measured on its float32 and int8 ``.tflite`` files.

A thin layer over the project's exporter: :func:`export.convert.convert` makes
the flatbuffer and :func:`export.measure.measure` times it in the LiteRT
interpreter (warm-up invocations, then single-example invocations; the median
is reported) and reads its size and weights. Nothing here is estimated from
the Keras model.
"""

from export import convert as convert_lib
from export import measure as measure_lib
from export import micro as micro_lib


def int8_path(tflite_path):
    """Where :func:`measure_candidate` writes the int8 file beside `tflite_path`."""
    return tflite_path[: -len(".tflite")] + ".int8.tflite"


def measure_candidate(
    model,
    num_runs=50,
    warmup=10,
    threads=1,
    tflite_path=None,
    calibration_images=None,
):
    """Converts `model` to float32 TFLite and measures it; with
    `calibration_images`, also its int8 file.

    Args:
      model: a functional ``keras.Model``.
      num_runs: timed single-example invocations.
      warmup: untimed invocations before timing.
      threads: LiteRT interpreter threads.
      tflite_path: if given, the flatbuffer is also written there (and the
        int8 one at :func:`int8_path` of it).
      calibration_images: training images (uint8) that calibrate the int8
        conversion; None: no int8 figures.

    Returns:
      dict of numbers: latency_us (median of the timed runs), latency_us_p90,
      file_bytes, gzip_bytes, tflite_params (weights in the flatbuffer, with
      BatchNormalization folded in) and macs (multiply-accumulates of one
      example); with `calibration_images` also the figures of
      :func:`int8_figures`.

    Raises:
      export.convert.ExportError: the converter or the interpreter failed.
    """
    out = float_figures(model, num_runs, warmup, threads, tflite_path)
    if calibration_images is not None:
        figures, int8 = measure_int8(model, calibration_images, num_runs, warmup, threads)
        if tflite_path:
            convert_lib.save_tflite(int8, int8_path(tflite_path))
        out.update(figures)
    return out


def float_figures(model, num_runs=50, warmup=10, threads=1, tflite_path=None):
    """The float32 figures of :func:`measure_candidate` (its file written to
    `tflite_path` if given)."""
    content = convert_lib.convert(model, "float32")
    if tflite_path:
        convert_lib.save_tflite(content, tflite_path)
    figures = measure_lib.measure(content, num_runs=num_runs, warmup=warmup, threads=threads)
    return {
        "latency_us": float(figures["latency_us_median"]),
        "latency_us_p90": float(figures["latency_us_p90"]),
        "file_bytes": int(figures["file_bytes"]),
        "gzip_bytes": int(figures["gzip_bytes"]),
        "tflite_params": int(figures["params"]),
        "macs": int(figures["macs"]),
    }


def int8_figures(content, num_runs=50, warmup=10, threads=1):
    """The figures of an int8 flatbuffer: int8_latency_us (median, timed
    alone), int8_file_bytes, tflm_runs (1.0 when TensorFlow Lite Micro runs
    it) and arena_bytes (TFLM's tensor arena; 0 when it does not run)."""
    timed = measure_lib.measure(content, num_runs=num_runs, warmup=warmup, threads=threads)
    tflm = micro_lib.micro(content)
    return {
        "int8_latency_us": float(timed["latency_us_median"]),
        "int8_file_bytes": int(timed["file_bytes"]),
        "tflm_runs": float(bool(tflm["tflm_runs"])),
        "arena_bytes": int(tflm.get("arena_bytes") or 0),
    }


def measure_int8(model, calibration_images, num_runs=50, warmup=10, threads=1):
    """Converts `model` to int8 TFLite only and measures it (half the
    conversions of :func:`measure_candidate`).

    Returns:
      (the figures of :func:`int8_figures`, the int8 flatbuffer as bytes).

    Raises:
      export.convert.ExportError: the converter or the interpreter failed.
    """
    content = convert_lib.convert(model, "int8", representative_images=calibration_images)
    return int8_figures(content, num_runs, warmup, threads), content
