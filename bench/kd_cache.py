"""Cost of augmented distillation with and without the teacher cache, same process.

    python bench/kd_cache.py [--images 8192] [--batch_size 128] [--views 4]
                             [--augment crop=2,flip,mixup=0.2] [--repeats 5]

Times one epoch of (a) plain augmented student training, (b) distillation
with the teacher online on the augmented batches, (c) distillation through
the teacher cache (``kd_keras.distill.teacher_cache``, K = --views views, built once
before timing; its build time is printed apart), and prints (c)/(a) and
(b)/(a). The three are timed in interleaved rounds (one epoch each per
round, in a rotating order, after a warm-up round) and the medians are compared, so drift of a
shared machine hits them alike. Also times iterating one epoch of the input
pipeline with crop/flip/cutout augmentation vectorized over batches (what
``make_datasets`` does) against the same augmentation mapped per example
(``kd_keras.data.augment_fn``). Models: student cnn width 1.0, teacher resnet
depth 10 width 0.5; random 28x28x1 images, 10 classes.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from kd_keras import Distiller, models  # noqa: E402
from kd_keras import data as data_lib  # noqa: E402
from kd_keras import train as train_lib
from kd_keras.distill import teacher_cache
from kd_keras.keras_compat import keras, tf  # noqa: E402

SHAPE = (28, 28, 1)


def _timed(fn, *args):
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def _rounds(fns, repeats):
    """Interleaved rounds, the first one a warm-up, the order rotated each round;
    the median time of each fn."""
    times = {name: [] for name in fns}
    names = list(fns)
    for r in range(repeats + 1):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            t = _timed(fns[name], r)
            if r:
                times[name].append(t)
    return {name: statistics.median(ts) for name, ts in times.items()}, times


def _per_example_pipeline(data, config, batch_size, seed, epoch):
    """The per-example form: augment_fn mapped over examples with stateless keys."""
    images, augment_one = tf.constant(data.x_train), data_lib.augment_fn(config)
    key = data_lib.epoch_key(seed, epoch)

    def example(i):
        image = data_lib.preprocess(tf.gather(images, i))
        return augment_one(image, i, tf.random.experimental.stateless_fold_in(key, i + 1))

    order = data_lib.epoch_order(len(data.x_train), seed, epoch)
    return (
        tf.data.Dataset.from_tensor_slices(order)
        .map(example, num_parallel_calls=tf.data.AUTOTUNE)
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=8192)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--augment", default="crop=2,flip,mixup=0.2")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    augment = data_lib.AugmentConfig.parse(args.augment.split(","))
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (args.images,) + SHAPE, dtype=np.uint8)
    y = rng.integers(0, 10, args.images).astype(np.int64)
    data = data_lib.Dataset("random", x, y, x[:0], y[:0], x[:0], y[:0], num_classes=10)
    pipes = data_lib.make_datasets(data, args.batch_size, augment, seed=0)

    keras.utils.set_random_seed(0)
    teacher = models.build("resnet", SHAPE, 10, depth=10, width=0.5)
    plain = train_lib.compile_plain(
        models.build("cnn", SHAPE, 10, width=1.0), keras.optimizers.Adam(1e-3)
    )
    online = Distiller(models.build("cnn", SHAPE, 10, width=1.0), teacher)
    online.compile(keras.optimizers.Adam(1e-3), metrics=["accuracy"])
    cached = Distiller(models.build("cnn", SHAPE, 10, width=1.0), teacher)
    cached.compile(keras.optimizers.Adam(1e-3), metrics=["accuracy"])

    with tempfile.TemporaryDirectory() as cache_dir:
        start = time.perf_counter()
        replay, _, _ = teacher_cache.load_or_build(
            cache_dir, [teacher], data, augment, args.batch_size, 0, args.views
        )
        t_build = time.perf_counter() - start
    replayed = data_lib.make_datasets(data, args.batch_size, augment, seed=0, replay=replay)

    def epoch(model, pipelines):
        return lambda r: model.fit(
            train_lib.even_batches(pipelines["train_epochs"](r, r + 1)), epochs=1, verbose=0
        )

    t, t_all = _rounds(
        {
            "plain": epoch(plain, pipes),
            "online": epoch(online, pipes),
            "cached": epoch(cached, replayed),
        },
        args.repeats,
    )

    basic = data_lib.AugmentConfig(crop_padding=2, flip=True, cutout=8)
    batched = data_lib.make_datasets(data, args.batch_size, basic, seed=0)["train_epochs"]
    drain = lambda ds: sum(1 for _ in ds)  # noqa: E731
    p, _ = _rounds(
        {
            "batched": lambda r: drain(batched(r, r + 1)),
            "per_example": lambda r: drain(
                _per_example_pipeline(data, basic, args.batch_size, 0, r)
            ),
        },
        args.repeats,
    )

    print(
        f"images/epoch={args.images} batch={args.batch_size} augment={args.augment} "
        f"views={args.views} teacher_params={teacher.count_params():,} "
        f"student_params={plain.count_params():,}"
    )
    spread = lambda k: f"[{min(t_all[k]):.3f} .. {max(t_all[k]):.3f}]"  # noqa: E731
    print(f"(a) plain augmented epoch          {t['plain']:8.3f} s  {spread('plain')}")
    print(f"(b) online KD augmented epoch      {t['online']:8.3f} s  {spread('online')}")
    print(f"(c) cached KD augmented epoch      {t['cached']:8.3f} s  {spread('cached')}")
    print(f"    cache build (once, {args.views} views)    {t_build:8.3f} s")
    print(f"ratio (c)/(a) cached KD / plain    {t['cached'] / t['plain']:6.2f}x")
    print(f"ratio (b)/(a) online KD / plain    {t['online'] / t['plain']:6.2f}x")
    print(
        f"input pipeline epoch, crop=2,flip,cutout=8: batched {p['batched']:.3f} s, "
        f"per example {p['per_example']:.3f} s, "
        f"ratio per-example / batched {p['per_example'] / p['batched']:.2f}x"
    )


if __name__ == "__main__":
    main()
