"""Cost of op determinism: epoch time with it on vs off, for a small cnn student.

    python bench/determinism.py [--images 8192] [--batch_size 128] [--repeats 3]

kd_keras turns TensorFlow op determinism on when it is imported (see
``kd_keras.keras_compat``); ``KD_KERAS_DETERMINISTIC=0`` leaves it off. It is
a process-wide switch read when kernels are built, so the two measurements
run in two subprocesses of this script, one per setting, one after the other.
Each trains ``models.build('cnn', (28, 28, 1), 10, width=0.25)`` with
``train_lib.fit``'s pipeline (``make_datasets``) on random 28x28 images and
reports the median of --repeats epochs after one warm-up epoch. Prints both
epoch times and the ratio on / off.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def measure(images, batch_size, repeats):
    """Median epoch time (s) of the cnn student in this process."""
    sys.path.insert(0, ROOT)
    import numpy as np

    from kd_keras import data as data_lib
    from kd_keras import models
    from kd_keras import train as train_lib
    from kd_keras.keras_compat import keras

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (images, 28, 28, 1), dtype=np.uint8)
    y = rng.integers(0, 10, images).astype(np.int64)
    data = data_lib.Dataset("random", x, y, x[:0], y[:0], x[:256], y[:256], num_classes=10)
    datasets = data_lib.make_datasets(data, batch_size, seed=0, epochs=repeats + 1)
    keras.utils.set_random_seed(0)
    model = models.build("cnn", (28, 28, 1), 10, width=0.25)
    train_lib.compile_plain(model, "adam")
    times = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.start)

    steps = int(datasets["train_epochs"](0, 1).cardinality())
    model.fit(
        datasets["train"], epochs=repeats + 1, steps_per_epoch=steps, verbose=0, callbacks=[Timer()]
    )
    from tensorflow.python.framework import config

    return {
        "epoch_s": statistics.median(times[1:]),
        "deterministic": bool(config.is_op_determinism_enabled()),
    }


def _run(deterministic, args):
    env = dict(os.environ, KD_KERAS_DETERMINISTIC="1" if deterministic else "0")
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        "--images",
        str(args.images),
        "--batch_size",
        str(args.batch_size),
        "--repeats",
        str(args.repeats),
    ]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    if result["deterministic"] != deterministic:
        raise RuntimeError(
            f"Child ran with determinism {result['deterministic']}, expected {deterministic}."
        )
    return result["epoch_s"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=8192)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.images, args.batch_size, args.repeats)))
        return
    on = _run(True, args)
    off = _run(False, args)
    print(
        f"cnn width 0.25, {args.images} images, batch {args.batch_size}: "
        f"epoch {on:.3f} s with op determinism, {off:.3f} s without; "
        f"ratio on/off {on / off:.3f}"
    )


if __name__ == "__main__":
    main()
