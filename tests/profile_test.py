"""Tests of export.profile: the per-op cost model of a .tflite file."""

import json

import numpy as np
import pytest

from export import convert as convert_lib
from export import profile as profile_lib
from kd_keras.keras_compat import keras

# Conv2D(4, 3x3, same) on 8x8x1 -> MaxPool 2 -> Flatten -> Dense(3).
CONV_MACS = 8 * 8 * 4 * (3 * 3 * 1)  # Output pixels x channels x filter taps.
FC_MACS = (4 * 4 * 4) * 3


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(3)(x))


@pytest.fixture(scope="module")
def float32(model):
    return convert_lib.convert(model, "float32")


def test_ops_counts_macs_and_shares(float32):
    result = profile_lib.profile(float32)
    assert result["kind"] == "estimate" and "not a measurement" in result["basis"]
    counts = {e["op_type"]: e["count"] for e in result["by_type"]}
    assert counts == {"CONV_2D": 1, "MAX_POOL_2D": 1, "RESHAPE": 1, "FULLY_CONNECTED": 1}
    assert [o["op_type"] for o in result["ops"]] == [
        "CONV_2D",
        "MAX_POOL_2D",
        "RESHAPE",
        "FULLY_CONNECTED",
    ]
    conv = result["ops"][0]
    assert conv["macs"] == CONV_MACS
    # float32: filter 4x3x3x1 + bias 4; input 8x8x1, output 8x8x4.
    assert conv["weight_bytes"] == 4 * (4 * 3 * 3 * 1 + 4)
    assert conv["activation_bytes"] == 4 * (8 * 8 * 1 + 8 * 8 * 4)
    assert conv["cost"] == conv["macs"] + conv["bytes"]
    assert result["total_macs"] == CONV_MACS + FC_MACS
    assert sum(o["share"] for o in result["ops"]) == pytest.approx(1.0)
    assert sum(e["share"] for e in result["by_type"]) == pytest.approx(1.0)
    shares = [e["share"] for e in result["by_type"]]
    assert shares == sorted(shares, reverse=True) and result["by_type"][0]["op_type"] == "CONV_2D"
    # A memory-only op still costs something.
    assert result["ops"][1]["macs"] == 0 and result["ops"][1]["share"] > 0


def test_int8_weights_are_one_byte(model):
    images = np.random.default_rng(0).integers(0, 256, (8, 8, 8, 1), dtype=np.uint8)
    content = convert_lib.convert(model, "int8", representative_images=images, num_calibration=8)
    conv = next(o for o in profile_lib.op_costs(content) if o["op_type"] == "CONV_2D")
    assert conv["macs"] == CONV_MACS
    assert conv["weight_bytes"] == 4 * 3 * 3 * 1 + 4 * 4  # int8 filter, int32 bias.


def test_write_profile_and_table(tmp_path, float32):
    path = tmp_path / "tiny.float32.tflite"
    path.write_bytes(float32)
    written, result = profile_lib.write_profile(str(path))
    assert written == str(tmp_path / "tiny.float32.profile.json")
    with open(written) as f:
        assert json.load(f) == json.loads(json.dumps(result))
    lines = profile_lib.markdown_table(result, net_us=10.0)
    assert lines[0].startswith("Per-op cost (estimate:")
    rows = [line for line in lines if line.startswith("| CONV_2D")]
    assert len(rows) == 1 and rows[0].split(" | ")[1] == "1"
    micros = [float(line.rstrip(" |").split(" | ")[-1]) for line in lines[4:]]
    assert sum(micros) == pytest.approx(10.0, abs=0.2)
