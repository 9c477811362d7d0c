"""The edge students (MobileNet v1 / v2 / v3-Small, ResNet-8, DS-CNN): their
reference parameter counts, and that each prunes, takes QAT, converts to
int8 and runs on TensorFlow Lite Micro at an image and an MFCC shape."""

import numpy as np
import pytest
import tf_keras

from export import convert as convert_lib
from export import micro
from kd_keras import compression, models
from kd_keras.keras_compat import keras

SHAPES = ((32, 32, 3), (49, 10, 1))
CLASSES = 10


@pytest.mark.parametrize(
    "name, shape, classes, total, trainable",
    [
        # MLPerf Tiny references: ResNet-8 on CIFAR-10 and DS-CNN on 49x10 MFCCs.
        ("resnet8", (32, 32, 3), 10, 78_666, 78_186),
        ("ds_cnn", (49, 10, 1), 12, 24_908, 23_756),
        # tf_keras.applications backbones (include_top=False) + a 10-class Dense.
        ("mobilenet_v1", (32, 32, 3), 10, 3_228_864 + 10_250, None),
        ("mobilenet_v2", (32, 32, 3), 10, 2_257_984 + 12_810, None),
        ("mobilenet_v3_small", (32, 32, 3), 10, 441_000 + 5_770, None),
    ],
)
def test_parameter_counts_at_reference_settings(name, shape, classes, total, trainable):
    model = models.build(name, shape, classes)
    assert model.count_params() == total
    if trainable is not None:
        assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == trainable


@pytest.mark.parametrize(
    "name, application, kwargs",
    [
        ("mobilenet_v1", "MobileNet", {}),
        ("mobilenet_v2", "MobileNetV2", {}),
        ("mobilenet_v3_small", "MobileNetV3Small", {"minimalistic": True}),
    ],
)
def test_mobilenet_backbone_matches_keras_applications(name, application, kwargs):
    """At a width whose channel rounding matters (0.35), the backbone has
    exactly the parameters of the tf_keras.applications model it follows."""
    reference = getattr(tf_keras.applications, application)(
        input_shape=(32, 32, 3), alpha=0.35, include_top=False, weights=None, **kwargs
    )
    model = models.build(name, (32, 32, 3), CLASSES, width=0.35)
    head = model.get_layer("logits").count_params()
    assert model.count_params() - head == reference.count_params()


def test_mobilenet_v3_small_is_minimalistic():
    """No hard-swish (a multiply by a ReLU6) and no squeeze-excite (pooling
    and a broadcast multiply): only layers QAT and TFLite Micro take."""
    model = models.build("mobilenet_v3_small", (32, 32, 3), CLASSES, width=0.25)
    kinds = {type(layer).__name__ for layer in model.layers}
    assert kinds == {
        "InputLayer",
        "Conv2D",
        "DepthwiseConv2D",
        "BatchNormalization",
        "ReLU",
        "Add",
        "Activation",  # the linear blockN markers
        "GlobalAveragePooling2D",
        "Dense",
    }
    assert {l.max_value for l in model.layers if type(l).__name__ == "ReLU"} == {None}


@pytest.mark.parametrize("name", ["resnet8", "ds_cnn", "mobilenet_v1", "mobilenet_v2"])
def test_width_scales_and_stages_are_named(name):
    narrow = models.build(name, (32, 32, 3), CLASSES, width=0.25)
    wide = models.build(name, (32, 32, 3), CLASSES, width=0.5)
    assert wide.count_params() > narrow.count_params()
    assert len(narrow.get_layer("block3").output.shape) == 4  # a feature map for hint/attention


@pytest.fixture(scope="module")
def images():
    """uint8 calibration images per input shape."""
    rng = np.random.default_rng(0)
    return {shape: rng.integers(0, 256, (8,) + shape).astype(np.uint8) for shape in SHAPES}


# (student, input shape, seconds on a 2-core CPU, mostly QAT wrapping and the
# int8 conversion): every standard student at both shapes (models_test builds
# every student at 28x28x1 and 32x32x3 too).
CASES = [
    ("ds_cnn", SHAPES[0], 5),
    ("ds_cnn", SHAPES[1], 5),
    ("resnet8", SHAPES[0], 5),
    ("resnet8", SHAPES[1], 5),
    ("mobilenet_v1", SHAPES[0], 9),
    ("mobilenet_v1", SHAPES[1], 9),
    ("mobilenet_v2", SHAPES[0], 12),
    ("mobilenet_v2", SHAPES[1], 12),
    ("mobilenet_v3_small", SHAPES[0], 10),
    ("mobilenet_v3_small", SHAPES[1], 10),
]


@pytest.mark.parametrize(
    "name, shape",
    [pytest.param(n, shape, marks=pytest.mark.slow(sec)) for n, shape, sec in CASES],
)
def test_student_prunes_quantizes_and_runs_on_tflm(name, shape, images):
    keras.utils.set_random_seed(0)
    model = models.build(name, shape, CLASSES, width=0.25)
    config = compression.CompressionConfig()

    pruned, _ = compression.apply_stage(model, "prune", config, 2, 1)
    wrapped = {w.layer.name for w in compression.prune_wrappers(pruned)}
    assert wrapped == set(compression.select_layers(model, "prune")) and wrapped

    # Every BN follows its convolution, so QAT leaves no float op behind.
    assert compression.standalone_batch_norms(model) == []
    qat, _ = compression.apply_stage(model, "qat", config, 2, 1)
    assert compression.has_quantize_layers(qat)

    content = convert_lib.convert(
        model, "int8", representative_images=images[shape], num_calibration=8
    )
    figures = micro.micro(content)
    assert figures["tflm_runs"] is True, figures.get("tflm_error")
    assert figures["arena_bytes"] > 0
