"""How slimming to an int8 target lands: for each student, the plan that
``export.slim_target`` finds for a share of the int8 bytes and a share of the
int8 latency, what it costs to find, and the shares the found files have.

    PYTHONPATH=. python bench/slim_target.py --students=resnet8,ds_cnn \\
        --input_shape=32,32,3 --bytes=0.5 --latency=0.6 --noxnnpack

Each student is built untrained (bytes and latency depend on shapes, not on
the weights' values), with random calibration images. The latency search
times each candidate with the unslimmed file in one timing process; at the
end every found file is timed again with its unslimmed file, interleaved in
one process, and that ratio is the one printed (the machine may be busy: the
ratio of one process holds, absolute figures do not). Prints a Markdown
table; asserts nothing.
"""

import time

import numpy as np
from absl import app, flags, logging

from export import convert as convert_lib
from export import measure as measure_lib
from export import slim_target
from kd_keras import compression, models

_STUDENTS = flags.DEFINE_list("students", ["resnet8", "ds_cnn"], "NAME or NAME:WIDTH.")
_INPUT_SHAPE = flags.DEFINE_list("input_shape", ["32", "32", "3"], "H,W,C of the input.")
_CLASSES = flags.DEFINE_integer("classes", 10, "Classes.", lower_bound=2)
_BYTES = flags.DEFINE_float("bytes", 0.5, "--slim_target_bytes to meet.")
_LATENCY = flags.DEFINE_float("latency", 0.6, "--slim_target_latency to meet.")
_XNNPACK = flags.DEFINE_bool("xnnpack", True, "Time with LiteRT's XNNPack delegate.")
_RUNS = flags.DEFINE_integer("runs", 100, "Timed rounds before the stopping rule.", lower_bound=1)


def build(item, shape, classes):
    name, _, width = item.partition(":")
    kwargs = {"width": float(width)} if width else {}
    return models.build(name, shape, classes, **kwargs)


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # The converter's INFO lines.
    shape = tuple(int(v) for v in _INPUT_SHAPE.value)
    images = np.random.default_rng(0).integers(0, 256, (16,) + shape, dtype=np.uint8)
    int8 = lambda m: convert_lib.convert(m, "int8", representative_images=images)  # noqa: E731
    print(
        "| student | target | fraction found | candidates | seconds | int8 bytes | "
        "bytes share | latency share (timed together) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for item in _STUDENTS.value:
        model = build(item, shape, _CLASSES.value)
        full = int8(model)
        for target, share in (
            ("slim_target_bytes", _BYTES.value),
            ("slim_target_latency", _LATENCY.value),
        ):
            lines = []
            start = time.perf_counter()
            try:
                plan = slim_target.plan(
                    model,
                    compression.CompressionConfig(**{target: share}),
                    images,
                    xnnpack=_XNNPACK.value,
                    num_runs=_RUNS.value,
                    progress=lines.append,
                )
            except ValueError:  # Missed even with one channel per group.
                seconds = time.perf_counter() - start
                print(
                    f"| {item} | {target}={share} | unreachable | {len(lines)} | "
                    f"{seconds:.1f} | | | |",
                    flush=True,
                )
                continue
            seconds = time.perf_counter() - start
            content = int8(compression.slim_model(model, plan))
            timed = measure_lib.latency_together(
                {"full": full, "slim": content},
                images[0],
                num_runs=_RUNS.value,
                xnnpack=_XNNPACK.value,
            )
            ratio = timed["slim"]["latency_us_median"] / timed["full"]["latency_us_median"]
            print(
                f"| {item} | {target}={share} | {plan.fraction:.4f} | {len(lines)} | "
                f"{seconds:.1f} | {len(content):,} | {len(content) / len(full):.3f} | "
                f"{ratio:.3f} |",
                flush=True,
            )


if __name__ == "__main__":
    app.run(main)
