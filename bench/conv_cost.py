"""What does one int8 convolution over the image cost on this machine?

    PYTHONPATH=. python bench/conv_cost.py

Builds int8 networks of a single convolution over a 28 x 28 x 1 image
(``image -> Conv2D -> BatchNormalization -> ReLU -> global average pool ->
Dense(10)``, untrained: latency does not depend on the weights' values),
one per combination of filters (4, 8, 16), kernel size (1, 3, 5), padding
(same, valid) and stride (1, 2), plus the same network without the
convolution, and times them all interleaved in each of ``--repeats`` timing
processes (:func:`export.measure.latency_together`). Prints, per network,
its output pixels, its kernel taps per output (k x k), each process's net
median (minus the identity model's per-call overhead) and that net figure
over the reference convolution's (4 filters, 3 x 3, same, stride 1) in the
same process. Ratios, not microseconds, are what carry from one process to
the next: this machine's timing processes can run in modes far apart.

Reads: if the ratio hardly moves with the filters, the convolution costs
per output pixel (and per tap) rather than per multiply-accumulate, and a
student is made faster by computing fewer outputs at full resolution (a
valid-padded or strided first convolution), not by narrowing it. About a
minute on a 2-core CPU.
"""

import itertools
import os
import tempfile

import numpy as np
from absl import app, flags

from export import convert as convert_lib
from export import measure as measure_lib
from kd_keras.keras_compat import keras

_REPEATS = flags.DEFINE_integer("repeats", 3, "Timing processes.", lower_bound=1)
_MIN_RUNS = flags.DEFINE_integer("min_runs", 200, "Rounds before the stopping rule.")
SHAPE = (28, 28, 1)
FILTERS = (4, 8, 16)
KERNELS = (1, 3, 5)
PADDINGS = ("same", "valid")
STRIDES = (1, 2)
REFERENCE = "f4_k3_same_s1"


def network(conv=None):
    """The timed network; `conv` = (filters, kernel, padding, stride) or None."""
    layers = keras.layers
    inputs = keras.Input(SHAPE, name="image")
    x = inputs
    if conv is not None:
        filters, kernel, padding, stride = conv
        x = layers.Conv2D(filters, kernel, strides=stride, padding=padding, use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(10)(x))


def output_pixels(kernel, padding, stride):
    size = SHAPE[0] if padding == "same" else SHAPE[0] - kernel + 1
    return (-(-size // stride)) ** 2


def main(argv):
    del argv
    images = np.random.default_rng(0).integers(0, 256, (64,) + SHAPE).astype(np.uint8)
    convs = {"no_conv": None}
    for f, k, p, s in itertools.product(FILTERS, KERNELS, PADDINGS, STRIDES):
        convs[f"f{f}_k{k}_{p}_s{s}"] = (f, k, p, s)
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for name, conv in convs.items():
            content = convert_lib.convert(
                network(conv), "int8", representative_images=images, num_calibration=64
            )
            paths[name] = os.path.join(tmp, f"{name}.int8.tflite")
            with open(paths[name], "wb") as f:
                f.write(content)
        results = [
            measure_lib.latency_together(paths, num_runs=_MIN_RUNS.value)
            for _ in range(_REPEATS.value)
        ]
    net = {n: [r[n]["latency_us_net_median"] for r in results] for n in convs}
    print(f"{len(convs)} int8 networks over a {SHAPE} image, {len(results)} timing processes")
    print("| network | output pixels | taps | net us per process | / reference per process |")
    print("|---|---|---|---|---|")
    for name, conv in convs.items():
        pixels, taps = (0, 0) if conv is None else (output_pixels(*conv[1:]), conv[1] ** 2)
        ratios = [a / b for a, b in zip(net[name], net[REFERENCE])]
        print(
            f"| {name} | {pixels} | {taps} | "
            + ", ".join(f"{v:.2f}" for v in net[name])
            + " | "
            + ", ".join(f"{v:.2f}" for v in ratios)
            + " |"
        )
    overhead = [next(iter(r.values()))["overhead_us_median"] for r in results]
    print("overhead us per process: " + ", ".join(f"{v:.2f}" for v in overhead))


if __name__ == "__main__":
    app.run(main)
