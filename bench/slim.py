"""What channel slimming saves on the device: for each student, its int8 file
slimmed by each fraction, with MACs kept, bytes, TensorFlow Lite Micro arena
and LiteRT latency, every file timed together with the unslimmed one.

    PYTHONPATH=. python bench/slim.py --students=resnet8,mobilenet_v1:0.5 \\
        --input_shape=32,32,3 --fractions=0.25,0.5,0.75

Each student is built untrained (bytes, arena and latency depend on the
shapes, not the weights' values), slimmed by `kd_keras.compression.slim` at
each fraction (L1 ranking), converted to int8 (calibrated on random images)
and measured with TensorFlow Lite Micro; then all files are timed in one
timing process, interleaved, so the ratios share one clock (the machine may
be busy; ratios between rows hold better than absolute figures), once with
LiteRT's XNNPack delegate and once with its built-in kernels alone
(`--noxnnpack` in the pipeline and the exporter). A last row
per student times the model cut after its first convolution (with its
BatchNormalization and activation): the share of the latency that removing
channels cannot touch when that convolution reads the input's few channels.
Prints a Markdown table with each file's latency as a share of its unslimmed
student's; asserts nothing. Accuracy needs training: the pipeline gives it
(`--techniques=slim --slim_fraction=F`).
"""

import numpy as np
from absl import app, flags, logging

from export import convert as convert_lib
from export import measure as measure_lib
from export import micro
from kd_keras import models
from kd_keras.compression import figures, slim
from kd_keras.keras_compat import keras

_STUDENTS = flags.DEFINE_list(
    "students",
    ["resnet8", "ds_cnn", "mobilenet_v1:0.5", "mobilenet_v2:0.5", "mobilenet_v3_small:0.5"],
    "Registry students, NAME or NAME:WIDTH.",
)
_FRACTIONS = flags.DEFINE_list("fractions", ["0.25", "0.5", "0.75"], "Slim fractions.")
_MULTIPLE = flags.DEFINE_integer("multiple", 1, "--slim_multiple.", lower_bound=1)
_INPUT_SHAPE = flags.DEFINE_list("input_shape", ["32", "32", "3"], "H,W,C of the input.")
_CLASSES = flags.DEFINE_integer("classes", 10, "Classes.", lower_bound=2)
_RUNS = flags.DEFINE_integer("runs", 200, "Timed rounds before the stopping rule.", lower_bound=1)


def first_convolution(model):
    """`model` cut after its first convolution and the BatchNormalization and
    activation right after it (None when it has no convolution)."""
    layers = model.layers
    for i, layer in enumerate(layers):
        if isinstance(layer, keras.layers.Conv2D):  # DepthwiseConv2D is one too.
            end = i
            while end + 1 < len(layers) and isinstance(
                layers[end + 1],
                (keras.layers.BatchNormalization, keras.layers.Activation, keras.layers.ReLU),
            ):
                end += 1
            return keras.Model(model.inputs, layers[end].output, name=f"{model.name}_first")
    return None


def measure(model, images, name):
    """(row without latency, int8 flatbuffer)."""
    content = convert_lib.convert(
        model, "int8", representative_images=images, num_calibration=len(images)
    )
    arena = micro.micro(content)
    row = {
        "file": name,
        "params": int(model.count_params()),
        "macs": figures.macs(model),
        "int8_bytes": len(content),
        "arena_bytes": arena.get("arena_bytes") if arena.get("tflm_runs") else None,
    }
    return row, content


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # The converter's INFO lines.
    shape = tuple(int(d) for d in _INPUT_SHAPE.value)
    images = np.random.default_rng(0).integers(0, 256, (32,) + shape).astype(np.uint8)
    fractions = [float(f) for f in _FRACTIONS.value]
    groups = []  # (student, [rows]); the first row is the unslimmed student.
    files = {}
    for spec in _STUDENTS.value:
        name, _, width = spec.partition(":")
        keras.utils.set_random_seed(0)
        model = models.build(name, shape, _CLASSES.value, width=float(width or 1.0))
        variants = [("unslimmed", model)]
        for fraction in fractions:
            plan = slim.plan_slim(model, fraction, multiple=_MULTIPLE.value)
            variants.append((f"slim {fraction:g}", slim.slim_model(model, plan)))
        first = first_convolution(model)
        if first is not None:
            variants.append(("first conv only", first))
        rows = []
        for label, m in variants:
            row, content = measure(m, images, f"{spec} {label}")
            files[row["file"]] = content
            rows.append(dict(row, label=label))
            print(f"converted {row['file']}: {row['int8_bytes']:,} bytes", flush=True)
        groups.append((spec, rows))
    timed = {
        xnnpack: measure_lib.latency_together(
            files, num_runs=_RUNS.value, warmup=_RUNS.value // 10, xnnpack=xnnpack
        )
        for xnnpack in (True, False)
    }
    print(f"\nInput {'x'.join(map(str, shape))}, {_CLASSES.value} classes; int8, 1 thread.\n")
    print(
        "| student | file | params | MACs kept | int8 bytes | TFLM arena bytes "
        "| XNNPack µs | vs unslimmed | built-in kernels µs | vs unslimmed |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for spec, rows in groups:
        base = rows[0]
        for row in rows:
            arena = "does not run" if row["arena_bytes"] is None else f"{row['arena_bytes']:,}"
            if row["label"] == "first conv only":
                arena = "(float output)"  # Its float32 output map fills the arena.
            cells = []
            for xnnpack in (True, False):
                latency = timed[xnnpack][row["file"]]["latency_us_median"]
                ratio = latency / timed[xnnpack][base["file"]]["latency_us_median"]
                cells.append(f"{latency:,.1f} | {ratio:.2f}")
            print(
                f"| {spec} | {row['label']} | {row['params']:,} | "
                f"{row['macs'] / base['macs']:.1%} | {row['int8_bytes']:,} | {arena} | "
                + " | ".join(cells)
                + " |"
            )


if __name__ == "__main__":
    app.run(main)
