"""TensorFlow Lite Micro figures: arena bytes, unsupported ops, accuracy."""

import numpy as np
import pytest

from export import card, micro
from export import convert as convert_lib
from export import measure as measure_lib
from kd_keras import models
from kd_keras.keras_compat import keras, tf

SHAPE = (28, 28, 1)
IMAGES = np.random.default_rng(0).integers(0, 256, (16,) + SHAPE).astype(np.uint8)


def int8_cnn(width):
    keras.utils.set_random_seed(0)
    model = models.build("cnn", SHAPE, 10, width=width)
    return convert_lib.convert(model, "int8", representative_images=IMAGES, num_calibration=16)


@pytest.fixture(scope="module")
def narrow():
    return int8_cnn(0.25)


def test_arena_is_what_tflm_needs(narrow):
    figures = micro.micro(narrow)
    assert figures["tflm_runs"] is True
    arena = figures["arena_bytes"]
    assert arena == figures["arena_head_bytes"] + figures["arena_tail_bytes"]
    # The reported total is the smallest arena TFLM accepts: 16 bytes less fails.
    assert micro.micro(narrow, arena_limit=arena)["arena_bytes"] == arena
    too_small = micro.micro(narrow, arena_limit=arena - 16)
    assert too_small["tflm_runs"] is False and too_small["tflm_missing_ops"] == []


def test_arena_grows_when_a_layer_is_widened(narrow):
    assert micro.micro(int8_cnn(0.5))["arena_bytes"] > micro.micro(narrow)["arena_bytes"]


def test_tflm_accuracy_matches_litert_predictions(narrow):
    logits, _ = measure_lib.predict(narrow, IMAGES)
    labels = logits.argmax(-1)
    labels[::2] = (labels[::2] + 1) % 10  # Half the labels wrong on purpose.
    figures = micro.micro(narrow, IMAGES, labels)
    assert figures["tflm_num_test"] == 16
    assert figures["tflm_accuracy"] == 0.5  # Reference kernels agree with LiteRT's.
    assert figures["tflm_litert_agreement"] == 1.0 and figures["tflm_litert_differ"] == 0
    assert figures["tflm_output_step"] is None  # Float outputs: no output scale.
    assert figures["tflm_litert_max_abs_diff"] < 0.01


def test_a_disagreement_with_litert_is_counted_and_explained(narrow, monkeypatch):
    logits, _ = measure_lib.predict(narrow, IMAGES)
    step = 0.01
    shifted = logits.copy()
    second = np.argsort(logits[0])[-2]
    shifted[0, second] = logits[0].max() + 3 * step  # Image 0 changes class by 3 steps.
    monkeypatch.setattr(micro.measure_lib, "predict", lambda content, x: (shifted, False))
    figures = micro.micro(narrow, IMAGES, logits.argmax(-1))
    assert figures["tflm_litert_differ"] == 1 and figures["tflm_litert_agreement"] == 15 / 16
    gap = logits[0].max() + 3 * step - logits[0, second]
    assert figures["tflm_litert_max_abs_diff"] == pytest.approx(gap, abs=0.01)
    text = card.tflm_text(figures)
    assert "agrees with LiteRT's on 93.8% of the test images (1 differ)" in text
    assert "round differently" in text


def test_unsupported_op_is_named():
    @tf.function(input_signature=[tf.TensorSpec([1, 8], tf.float32)])
    def top3(x):
        return tf.math.top_k(x, 3).values

    content = tf.lite.TFLiteConverter.from_concrete_functions(
        [top3.get_concrete_function()], top3
    ).convert()
    figures = micro.micro(content)
    assert figures["tflm_runs"] is False
    assert figures["tflm_missing_ops"] == ["TOPK_V2"]
    assert "TOPK_V2" in figures["tflm_error"] and "arena_bytes" not in figures


def test_parse_allocations_needs_a_total():
    text = (
        "[RecordingMicroAllocator] Arena allocation total 19040 bytes\n"
        "[RecordingMicroAllocator] 'Persistent buffer data' used 1512 bytes with alignment "
        "overhead (requested 1476 bytes for 19 allocations)\n"
    )
    parsed = micro.parse_allocations(text)
    assert parsed["arena_bytes"] == 19040
    assert parsed["arena_kinds"] == {"Persistent buffer data": 1512}
    with pytest.raises(micro.ExportError, match="no arena total"):
        micro.parse_allocations("nothing here")
