"""What a candidate costs on device, measured on its float32 ``.tflite`` file.

A thin layer over the project's exporter: :func:`export.convert.convert` makes
the flatbuffer and :func:`export.measure.measure` times it in the LiteRT
interpreter (warm-up invocations, then single-example invocations; the median
is reported) and reads its size and weights. Nothing here is estimated from
the Keras model.
"""

from export import convert as convert_lib
from export import measure as measure_lib


def measure_candidate(model, num_runs=50, warmup=10, threads=1, tflite_path=None):
    """Converts `model` to float32 TFLite and measures it.

    Args:
      model: a functional ``keras.Model``.
      num_runs: timed single-example invocations.
      warmup: untimed invocations before timing.
      threads: LiteRT interpreter threads.
      tflite_path: if given, the flatbuffer is also written there.

    Returns:
      dict of numbers: latency_us (median of the timed runs), latency_us_p90,
      file_bytes, gzip_bytes, tflite_params (weights in the flatbuffer, with
      BatchNormalization folded in) and macs (multiply-accumulates of one
      example).

    Raises:
      export.convert.ExportError: the converter or the interpreter failed.
    """
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
