"""Size and latency of each TFLite format relative to float32, per student.

    PYTHONPATH=. python bench/export_latency.py --models=cnn:0.25,cnn:1,cnn_dws:1

Builds each registry model untrained (size and latency do not depend on the
weights' values), converts it to every format (int8 calibrated on random
images), times single-example invocations in LiteRT and prints the ratios to
float32. Prints numbers only; asserts nothing. About 10 s per model on a
2-core CPU with the defaults.
"""

import numpy as np
from absl import app, flags

from export import convert as convert_lib
from export import measure as measure_lib
from kd_keras import models

_MODELS = flags.DEFINE_list(
    "models", ["cnn:0.25", "cnn:1", "cnn_dws:1"], "name:width items of the model registry."
)
_RUNS = flags.DEFINE_integer("runs", 200, "Timed invocations.", lower_bound=1)
_THREADS = flags.DEFINE_integer("threads", 1, "Interpreter threads.", lower_bound=1)
_XNNPACK = flags.DEFINE_bool("xnnpack", True, "XNNPack delegate.")


def bench(name, width, runs, threads, xnnpack):
    """Returns {format: measured dict} for one registry model."""
    model = models.build(name, (28, 28, 1), 10, width=width)
    images = np.random.default_rng(0).integers(0, 256, (64, 28, 28, 1)).astype(np.uint8)
    out = {}
    for fmt in convert_lib.QUANTIZATIONS:
        content = convert_lib.convert(model, fmt, representative_images=images, num_calibration=64)
        out[fmt] = measure_lib.measure(
            content, num_runs=runs, warmup=runs // 10, threads=threads, xnnpack=xnnpack
        )
    return out


def main(argv):
    del argv
    print("| model | format | bytes | bytes/f32 | gzip/f32 | MACs | median us | latency/f32 |")
    print("|---|---|---|---|---|---|---|---|")
    for item in _MODELS.value:
        name, _, width = item.partition(":")
        results = bench(name, float(width or 1), _RUNS.value, _THREADS.value, _XNNPACK.value)
        base = results["float32"]
        for fmt, r in results.items():
            print(
                f"| {item} | {fmt} | {r['file_bytes']} | "
                f"{r['file_bytes'] / base['file_bytes']:.3f} | "
                f"{r['gzip_bytes'] / base['gzip_bytes']:.3f} | {r['macs']} | "
                f"{r['latency_us_median']:.1f} | "
                f"{r['latency_us_median'] / base['latency_us_median']:.3f} |"
            )


if __name__ == "__main__":
    app.run(main)
