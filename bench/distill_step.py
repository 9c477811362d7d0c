"""Cost of distillation: a plain student epoch vs a Distiller epoch, same process.

    python bench/distill_step.py [--images 4096] [--batch_size 128]

Prints the time of one epoch of plain ``student.fit``, one epoch of
``Distiller.fit`` and one pass of the teacher's forward alone, and the ratios,
so the overhead beyond the teacher's forward pass is visible. Each figure is
the median of --repeats epochs after one warm-up epoch. Models: the
fashion_mnist.flags teacher (resnet depth 10, width 2, stem stride 2) and
student (cnn width 1).
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from kd_keras import Distiller, models  # noqa: E402
from kd_keras import train as train_lib
from kd_keras.keras_compat import keras, tf  # noqa: E402


def _median_time(fn, repeats):
    fn()  # warm-up: tracing and first-call costs
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.random((args.images, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, args.images)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(args.batch_size).cache().prefetch(2)

    teacher = models.build("resnet", (28, 28, 1), 10, depth=10, width=2, stem_stride=2)
    student = models.build("cnn", (28, 28, 1), 10, width=1.0)
    plain = models.build("cnn", (28, 28, 1), 10, width=1.0)
    train_lib.compile_plain(plain, keras.optimizers.Adam(1e-3))
    distiller = Distiller(student, teacher)
    distiller.compile(keras.optimizers.Adam(1e-3), metrics=["accuracy"])
    teacher_fwd = tf.function(lambda b: teacher(b, training=False))

    def forward_pass():
        for xb, _ in ds:
            teacher_fwd(xb)

    t_plain = _median_time(lambda: plain.fit(ds, epochs=1, verbose=0), args.repeats)
    t_kd = _median_time(lambda: distiller.fit(ds, epochs=1, verbose=0), args.repeats)
    t_teacher = _median_time(forward_pass, args.repeats)

    print(
        f"images/epoch={args.images} batch={args.batch_size} "
        f"teacher_params={teacher.count_params():,} student_params={student.count_params():,}"
    )
    print(f"plain student epoch   {t_plain:8.3f} s  ({args.images / t_plain:8.0f} img/s)")
    print(f"Distiller epoch       {t_kd:8.3f} s  ({args.images / t_kd:8.0f} img/s)")
    print(f"teacher forward only  {t_teacher:8.3f} s")
    print(f"ratio Distiller / plain                     {t_kd / t_plain:6.2f}x")
    print(f"ratio (Distiller - teacher fwd) / plain     {(t_kd - t_teacher) / t_plain:6.2f}x")


if __name__ == "__main__":
    main()
