"""The standard edge students at two widths: parameters, MACs, int8 bytes,
TensorFlow Lite Micro arena and LiteRT latency, all files timed together.

    PYTHONPATH=. python bench/edge_students.py --input_shape=32,32,3 --widths=0.25,0.5

Builds each registry student untrained (bytes, arena and latency do not depend
on the weights' values), converts it to int8 (calibrated on random images),
measures its arena with TensorFlow Lite Micro, then times every file in one
timing process, interleaved, so the latencies share one clock (the machine may
be busy; ratios between rows hold better than absolute figures). Prints a
Markdown table; asserts nothing. Accuracy needs training: the pipeline gives
it (`--student=NAME --student_args=width=W`).
"""

import numpy as np
from absl import app, flags, logging

from export import convert as convert_lib
from export import measure as measure_lib
from export import micro
from kd_keras import models
from kd_keras.compression import figures

_STUDENTS = flags.DEFINE_list(
    "students",
    ["mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small", "resnet8", "ds_cnn"],
    "Registry students.",
)
_WIDTHS = flags.DEFINE_list("widths", ["0.25", "0.5"], "Width multipliers.")
_INPUT_SHAPE = flags.DEFINE_list("input_shape", ["32", "32", "3"], "H,W,C of the input.")
_CLASSES = flags.DEFINE_integer("classes", 10, "Classes.", lower_bound=2)
_RUNS = flags.DEFINE_integer("runs", 200, "Timed rounds before the stopping rule.", lower_bound=1)


def measure_student(name, width, shape, classes, images):
    """(row without latency, int8 flatbuffer) of one student."""
    model = models.build(name, shape, classes, width=width)
    content = convert_lib.convert(
        model, "int8", representative_images=images, num_calibration=len(images)
    )
    arena = micro.micro(content)
    row = {
        "student": f"{name}:{width:g}",
        "params": int(model.count_params()),
        "macs": figures.macs(model),
        "int8_bytes": len(content),
        "arena_bytes": arena.get("arena_bytes"),
        "tflm_runs": arena.get("tflm_runs"),
    }
    return row, content


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # The converter's INFO lines.
    shape = tuple(int(d) for d in _INPUT_SHAPE.value)
    images = np.random.default_rng(0).integers(0, 256, (32,) + shape).astype(np.uint8)
    rows, files = [], {}
    for name in _STUDENTS.value:
        for width in (float(w) for w in _WIDTHS.value):
            row, content = measure_student(name, width, shape, _CLASSES.value, images)
            print(f"converted {row['student']}: {row['int8_bytes']:,} bytes", flush=True)
            rows.append(row)
            files[row["student"]] = content
    timed = measure_lib.latency_together(files, num_runs=_RUNS.value, warmup=_RUNS.value // 10)
    print(f"\nInput {'x'.join(map(str, shape))}, {_CLASSES.value} classes; int8, 1 thread.\n")
    print("| student | params | MACs | int8 bytes | TFLM arena bytes | latency µs (median) |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        arena = f"{row['arena_bytes']:,}" if row["tflm_runs"] else "does not run"
        latency = timed[row["student"]]["latency_us_median"]
        print(
            f"| {row['student']} | {row['params']:,} | {row['macs']:,} | "
            f"{row['int8_bytes']:,} | {arena} | {latency:,.1f} |"
        )


if __name__ == "__main__":
    app.run(main)
