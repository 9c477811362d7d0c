"""Epoch time with the training split on disk (memmap store) against in memory, same process.

    python bench/streaming.py [--images 0] [--batch_size 128] [--augment crop=2,flip]
                              [--repeats 3]

Loads Fashion-MNIST twice, ``storage='memory'`` and ``storage='disk'``
(``kd_keras.data.store``; the store is built once before timing, and its build
time is printed apart), and trains the same student (cnn width 1.0, 24k
parameters) one epoch at a time on each, in interleaved rounds (the first a
warm-up, the order rotated each round) so that drift of a shared machine
hits both alike. Prints the median epoch times and disk / memory. Also
times iterating the pipelines alone (no model). The store goes to a
temporary directory unless $KD_KERAS_STORE is set.
"""

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kd_keras import data as data_lib  # noqa: E402
from kd_keras import models  # noqa: E402
from kd_keras import train as train_lib
from kd_keras.keras_compat import keras  # noqa: E402


def _rounds(fns, repeats):
    times = {name: [] for name in fns}
    names = list(fns)
    for r in range(repeats + 1):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            fns[name](r)
            if r:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}, times


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=0, help="training images (0: all)")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--augment", default="crop=2,flip")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("KD_KERAS_STORE", tempfile.mkdtemp(prefix="kd_keras_store_"))

    start = time.perf_counter()
    disk = data_lib.load_dataset("fashion_mnist", val_size=5000, storage="disk")
    built = time.perf_counter() - start
    memory = data_lib.load_dataset("fashion_mnist", val_size=5000, storage="memory")
    if args.images:
        disk, memory = (
            dataclasses.replace(
                d, x_train=d.x_train[: args.images], y_train=d.y_train[: args.images]
            )
            for d in (disk, memory)
        )
    augment = data_lib.AugmentConfig.parse(args.augment.split(",") if args.augment else [])
    print(
        f"{len(memory.x_train)} training images, batch {args.batch_size}, augment {augment}; "
        f"store on disk (load or build): {built:.1f} s in {os.environ['KD_KERAS_STORE']}"
    )

    pipes = {
        name: data_lib.make_datasets(
            data, args.batch_size, augment, seed=0, epochs=args.repeats + 1
        )
        for name, data in (("memory", memory), ("disk", disk))
    }
    student = {}
    for name in pipes:
        keras.utils.set_random_seed(0)
        student[name] = models.build("cnn", memory.input_shape, memory.num_classes, width=1.0)
        train_lib.compile_plain(student[name], keras.optimizers.Adam(1e-3))

    def epoch(name):
        return lambda r: student[name].fit(
            pipes[name]["train_epochs"](r, r + 1), epochs=1, verbose=0
        )

    def iterate(name):
        return lambda r: sum(1 for _ in pipes[name]["train_epochs"](r, r + 1))

    medians, _ = _rounds({n: iterate(n) for n in pipes}, args.repeats)
    print(
        f"pipeline alone: memory {medians['memory']:.2f} s, disk {medians['disk']:.2f} s, "
        f"disk / memory = {medians['disk'] / medians['memory']:.3f}"
    )
    medians, times = _rounds({n: epoch(n) for n in pipes}, args.repeats)
    print(
        f"training epoch: memory {medians['memory']:.2f} s, disk {medians['disk']:.2f} s "
        f"(rounds: memory {[round(t, 2) for t in times['memory']]}, "
        f"disk {[round(t, 2) for t in times['disk']]})"
    )
    print(f"disk / memory epoch time = {medians['disk'] / medians['memory']:.3f}")


if __name__ == "__main__":
    main()
