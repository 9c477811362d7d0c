"""What a candidate costs on device, measured on its float32 ``.tflite`` file.

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
    keep_int8=False,
):
    """Converts `model` to float32 TFLite and measures it; with
    `calibration_images`, also its int8 file's TensorFlow Lite Micro arena.

    Args:
      model: a functional ``keras.Model``.
      num_runs: timed single-example invocations.
      warmup: untimed invocations before timing.
      threads: LiteRT interpreter threads.
      tflite_path: if given, the flatbuffer is also written there.
      calibration_images: training images (uint8) that calibrate the int8
        conversion whose tensor arena TFLM measures; None: no arena figure.
      keep_int8: with `calibration_images`, also return the int8 flatbuffer
        (bytes) as ``int8_tflite``, for a caller that compares it further.

    Returns:
      dict of numbers: latency_us (median of the timed runs), latency_us_p90,
      file_bytes, gzip_bytes, tflite_params (weights in the flatbuffer, with
      BatchNormalization folded in) and macs (multiply-accumulates of one
      example); with `calibration_images` also arena_bytes (TFLM's tensor
      arena of the int8 file; 0 when the model does not run on TFLM, with
      tflm_runs 0.0).

    Raises:
      export.convert.ExportError: the converter or the interpreter failed.
    """
    content = convert_lib.convert(model, "float32")
    if tflite_path:
        convert_lib.save_tflite(content, tflite_path)
    figures = measure_lib.measure(content, num_runs=num_runs, warmup=warmup, threads=threads)
    out = {
        "latency_us": float(figures["latency_us_median"]),
        "latency_us_p90": float(figures["latency_us_p90"]),
        "file_bytes": int(figures["file_bytes"]),
        "gzip_bytes": int(figures["gzip_bytes"]),
        "tflite_params": int(figures["params"]),
        "macs": int(figures["macs"]),
    }
    if calibration_images is not None:
        int8 = convert_lib.convert(model, "int8", representative_images=calibration_images)
        if tflite_path:
            convert_lib.save_tflite(int8, int8_path(tflite_path))
        timed = measure_lib.measure(int8, num_runs=num_runs, warmup=warmup, threads=threads)
        out["int8_latency_us"] = float(timed["latency_us_median"])
        out["int8_file_bytes"] = int(timed["file_bytes"])
        tflm = micro_lib.micro(int8)
        out["tflm_runs"] = float(bool(tflm["tflm_runs"]))
        out["arena_bytes"] = int(tflm.get("arena_bytes") or 0)
        if keep_int8:
            out["int8_tflite"] = int8
    return out
