"""Trains and saves a Keras 3 teacher on an image folder, as a user would.

    PYTHONPATH=. python bench/make_rgb_teacher.py --data=/tmp/shapes32 \
        --out=/tmp/shapes32_teacher.keras

The teacher is what a user brings to ``--teacher=PATH``: a model trained and
saved with Keras 3 (``import keras``, not ``tf_keras``), a small ResNet with
``Rescaling(1/255)`` and random flip and rotation layers inside and a softmax
head, so it expects [0, 255] images (``--teacher_input_range=0,255``).

It trains on the pipeline's training split of the folder only: the split is
made by the project's own loader (``kd_keras.data.DataConfig``) with the
pipeline's defaults for a folder (``--test_fraction``, and the validation
size that ``kd_keras.app.recipe`` gives when ``--val_size`` is not set), so
the pipeline's validation and test images are never seen. Prints the
validation and test accuracy. About 5 min on a 2-core CPU for the 4,000
images of ``bench/make_rgb_folder.py`` at 32 x 32 (341 s measured on a
shared machine: 84.7% on validation, 85.25% on test; docs/rgb_folder.md).
"""

import dataclasses
import time

import numpy as np
from absl import app, flags

from kd_keras import data as data_lib
from kd_keras.app import recipe
from kd_keras.keras_compat import keras3

_DATA = flags.DEFINE_string("data", None, "The image folder (one sub-folder per class).")
_OUT = flags.DEFINE_string("out", None, "Where to save the teacher (.keras).")
_EPOCHS = flags.DEFINE_integer("epochs", 25, "Training epochs.", lower_bound=1)
_WIDTH = flags.DEFINE_integer("width", 16, "Filters of the first stage.", lower_bound=4)
_BATCH = flags.DEFINE_integer("batch_size", 64, "Batch size.", lower_bound=1)
_LR = flags.DEFINE_float("lr", 2e-3, "Peak learning rate (Adam, cosine decay).")
_TEST_FRACTION = flags.DEFINE_float(
    "test_fraction", data_lib.DEFAULT_TEST_FRACTION, "As the pipeline's --test_fraction."
)
_VAL_SIZE = flags.DEFINE_integer(
    "val_size", None, "As the pipeline's --val_size (default: the pipeline's scaled default)."
)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the weights and the batches.")


def resnet(keras, input_shape, num_classes, width):
    """A small ResNet (3 stages of 2 residual blocks, widths w, 2w, 4w) that
    takes [0, 255] images and ends in softmax; flips and rotations are
    layers of the model (active in training only)."""
    layers = keras.layers
    inputs = keras.Input(input_shape)
    x = layers.Rescaling(1 / 255)(inputs)
    x = layers.RandomFlip("horizontal_and_vertical")(x)
    x = layers.RandomRotation(0.5, fill_mode="reflect")(x)
    x = layers.Conv2D(width, 3, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization(momentum=0.9)(x)
    x = layers.ReLU()(x)
    for stage, filters in enumerate((width, 2 * width, 4 * width)):
        for block in range(2):
            stride = 2 if stage and not block else 1
            y = layers.Conv2D(filters, 3, stride, padding="same", use_bias=False)(x)
            y = layers.BatchNormalization(momentum=0.9)(y)
            y = layers.ReLU()(y)
            y = layers.Conv2D(filters, 3, padding="same", use_bias=False)(y)
            y = layers.BatchNormalization(momentum=0.9)(y)
            if stride != 1 or x.shape[-1] != filters:
                x = layers.Conv2D(filters, 1, stride, use_bias=False)(x)
                x = layers.BatchNormalization(momentum=0.9)(x)
            x = layers.ReLU()(layers.Add()([x, y]))
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="rgb_teacher")


def pipeline_split(path, test_fraction, val_size):
    """The pipeline's splits of folder `path` (``kd_keras.data.Dataset``), with
    --val_size as the pipeline resolves it when `val_size` is None."""
    data = data_lib.DataConfig(
        dataset=f"{data_lib.FOLDER_PREFIX}{path}", test_fraction=test_fraction
    )
    if val_size is None:
        data, _, _ = recipe.scale_data(data, {"batch_size"}, recipe.training_pool(data))
    else:
        data = dataclasses.replace(data, val_size=val_size)
    return data.load()


def main(argv):
    del argv
    if not _DATA.value or not _OUT.value:
        raise app.UsageError("--data and --out are required.")
    start = time.time()
    data = pipeline_split(_DATA.value, _TEST_FRACTION.value, _VAL_SIZE.value)
    print(
        f"{data.name}: {len(data.y_train)} train, {len(data.y_val)} validation, "
        f"{len(data.y_test)} test images, {data.num_classes} classes"
    )
    keras = keras3()
    keras.utils.set_random_seed(_SEED.value)
    model = resnet(keras, data.input_shape, data.num_classes, _WIDTH.value)
    steps = _EPOCHS.value * -(-len(data.y_train) // _BATCH.value)
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, steps, alpha=0.05, warmup_target=_LR.value, warmup_steps=steps // 20
    )
    model.compile(
        keras.optimizers.Adam(schedule),
        "sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    x_train = np.asarray(data.x_train, np.float32)
    model.fit(
        x_train,
        data.y_train,
        batch_size=_BATCH.value,
        epochs=_EPOCHS.value,
        validation_data=(np.asarray(data.x_val, np.float32), data.y_val),
        verbose=2,
    )
    model.save(_OUT.value)
    val = model.evaluate(np.asarray(data.x_val, np.float32), data.y_val, verbose=0)[1]
    test = model.evaluate(np.asarray(data.x_test, np.float32), data.y_test, verbose=0)[1]
    print(
        f"teacher {_OUT.value}: {model.count_params()} parameters, validation accuracy "
        f"{val:.4f}, test accuracy {test:.4f} ({time.time() - start:.0f} s)"
    )


if __name__ == "__main__":
    app.run(main)
