"""Does the latency protocol hold still? Five back-to-back measurements of the same files.

    PYTHONPATH=. python bench/latency_stability.py

Builds the fashion_mnist.flags student (``cnn``, 28x28x1, 10 classes, 24k
weights; untrained: latency does not depend on the weights' values),
converts it to float32 and int8 (int8 calibrated on random images), then runs
:func:`export.measure.latency_together` five times in a row on the two files
(each a fresh timing process; both formats interleaved with the identity
model). Prints the five medians per format, max/min of the medians, the
per-call overhead, and one cross-check of the int8 file against
``litert-benchmark`` (ai_edge_litert's own benchmark tool; its figures are
printed to 0.01 ms, and its mean is recovered from its throughput). Goal: max/min
within 1.05 on a quiet machine. About 30 s on a 2-core CPU.

With ``--files=GLOB`` (e.g. a search's final int8 files,
``'workdirs/nas_aim_keep/fashion_mnist_aim/final/*/export/*.int8.tflite'``)
it times those files instead, all interleaved in each of the ``--repeats``
timing processes, and prints per file the median of every process, max/min
of them, and the same for the net figure (median minus the identity
model's per-call overhead timed in the same rounds), then the overhead per
process: does a slow process slow every file, and is it the per-call
overhead or the models? With ``--train_between``, every other timing
process starts right after this process trained a small CNN for one epoch
(as the search's final step times its files right after its last
training), and the table adds, per file, the mean median after training
over the mean median of the others.
"""

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
from absl import app, flags

from export import convert as convert_lib
from export import measure as measure_lib
from kd_keras import models
from kd_keras.keras_compat import keras

_REPEATS = flags.DEFINE_integer("repeats", 5, "Back-to-back measurements.", lower_bound=2)
_THREADS = flags.DEFINE_integer("threads", 1, "Interpreter threads.", lower_bound=1)
_MIN_RUNS = flags.DEFINE_integer("min_runs", 200, "Rounds before the stopping rule.")
_TRAIN_BETWEEN = flags.DEFINE_bool(
    "train_between", False, "--files: train a CNN for one epoch before every other timing."
)
_FILES = flags.DEFINE_string(
    "files", None, "Glob of .tflite files (one input shape) to time instead of the cnn student."
)
FORMATS = ("float32", "int8")


def litert_benchmark(path, runs=2000, warmup=200, threads=1):
    """litert-benchmark's figures for one file (None when the tool is absent)."""
    tool = shutil.which("litert-benchmark") or os.path.join(
        os.path.dirname(sys.executable), "litert-benchmark"
    )
    if not os.path.exists(tool):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        subprocess.run(
            [tool, f"--model={path}", f"--num_runs={runs}", f"--warmup_runs={warmup}",
             f"--num_threads={threads}", f"--result_json={out}"],
            capture_output=True, check=True, timeout=600,
        )  # fmt: skip
        with open(out) as f:
            result = json.load(f)
    input_bytes = 28 * 28 * 1 * 4  # float32 input of the student.
    mean_us = input_bytes / (1024 * 1024) / result["throughput_mb_s"] * 1e6
    return {"median_ms": result["latency"]["median_ms"], "mean_us_from_throughput": mean_us}


def _join(values, fmt="{:.2f}"):
    return ", ".join(fmt.format(v) for v in values)


def _repeated(paths, before=None):
    """--repeats timings of `paths` ({name: file}), each a fresh timing
    process; `before(i)` runs first when given."""
    out = []
    for i in range(_REPEATS.value):
        if before is not None:
            before(i)
        out.append(
            measure_lib.latency_together(paths, num_runs=_MIN_RUNS.value, threads=_THREADS.value)
        )
    return out


def _trainer():
    """before(i) for _repeated: one epoch of a small CNN on random images for
    odd i (this process then holds TensorFlow's thread pools warm, as the
    final step's does), nothing for even i."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.random((20000, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, 20000)
    model = models.build("cnn", (28, 28, 1), 10)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    def before(i):
        if i % 2:
            model.fit(x, y, epochs=1, batch_size=128, verbose=0)

    return before


def time_files(pattern):
    """--files: every matching file timed in each of --repeats timing processes."""
    found = sorted(glob.glob(pattern))
    if not found:
        raise app.UsageError(f"--files={pattern!r} matches no file.")
    root = os.path.commonpath([os.path.dirname(p) for p in found])
    paths = {os.path.relpath(p, root): p for p in found}
    results = _repeated(paths, _trainer() if _TRAIN_BETWEEN.value else None)
    print(f"{len(paths)} files, {_REPEATS.value} timing processes, threads={_THREADS.value}")
    trained = _TRAIN_BETWEEN.value and len(results) > 1
    if trained:
        print("timings 2, 4, ... right after one epoch of training in this process")
    extra = " after training / others |" if trained else ""
    print("| file | medians us | max/min | net medians us | max/min |" + extra)
    print("|---|---|---|---|---|" + ("---|" if trained else ""))
    for name in paths:
        medians = [r[name]["latency_us_median"] for r in results]
        net = [r[name]["latency_us_net_median"] for r in results]
        line = (
            f"| {name} | {_join(medians)} | {max(medians) / min(medians):.3f} | "
            f"{_join(net)} | " + (f"{max(net) / min(net):.3f} |" if min(net) > 0 else "n/a |")
        )
        if trained:
            line += f" {np.mean(medians[1::2]) / np.mean(medians[0::2]):.3f} |"
        print(line)
    overhead = [next(iter(r.values()))["overhead_us_median"] for r in results]
    print(f"overhead us per process: {_join(overhead)}")


def main(argv):
    del argv
    if _FILES.value:
        time_files(_FILES.value)
        return
    model = models.build("cnn", (28, 28, 1), 10)
    images = np.random.default_rng(0).integers(0, 256, (64, 28, 28, 1)).astype(np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for fmt in FORMATS:
            paths[fmt] = os.path.join(tmp, f"student.{fmt}.tflite")
            content = convert_lib.convert(
                model, fmt, representative_images=images, num_calibration=64
            )
            with open(paths[fmt], "wb") as f:
                f.write(content)
        results = _repeated(paths)
        print(f"student cnn ({model.count_params()} params), threads={_THREADS.value}")
        print("| format | medians us | max/min | runs | CV | overhead us (medians) |")
        print("|---|---|---|---|---|---|")
        for fmt in FORMATS:
            rows = [r[fmt] for r in results]
            medians = [r["latency_us_median"] for r in rows]
            print(
                f"| {fmt} | {_join(medians)} | {max(medians) / min(medians):.3f} | "
                f"{_join([r['latency_runs'] for r in rows], '{}')} | "
                f"{_join([r['latency_cv'] for r in rows])} | "
                f"{_join([r['overhead_us_median'] for r in rows])} |"
            )
        for fmt in FORMATS:
            ours = results[-1][fmt]
            theirs = litert_benchmark(paths[fmt], threads=_THREADS.value)
            print(
                f"cross-check {fmt}: protocol median {ours['latency_us_median']:.2f} us "
                f"(mean {ours['latency_us_mean']:.2f}); litert-benchmark "
                + (
                    "absent"
                    if theirs is None
                    else f"median {theirs['median_ms']:.2f} ms, mean "
                    f"{theirs['mean_us_from_throughput']:.2f} us (from its throughput)"
                )
            )


if __name__ == "__main__":
    app.run(main)
