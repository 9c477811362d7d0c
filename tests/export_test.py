"""Tests of the export package: conversion, measurement, export_model and the CLI.

One tiny CNN (width 0.25, ~1.7k weights) trained for one epoch on synthetic
images is converted once per format (module fixtures) and reused.
"""

import dataclasses
import json
import os
import stat
import subprocess
import sys

import numpy as np
import pytest

import export
from export import card as card_lib
from export import convert as convert_lib
from export import measure as measure_lib
from kd_keras import data as data_lib
from kd_keras import models
from kd_keras.keras_compat import keras

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPE = (28, 28, 1)


def synthetic_dataset(n_train=64, n_test=32, seed=0):
    """Images whose class is the brightest of ten horizontal bands."""
    rng = np.random.default_rng(seed)

    def make(count):
        y = rng.integers(0, 10, count)
        x = rng.integers(0, 120, (count,) + SHAPE)
        for i, label in enumerate(y):
            x[i, 2 * label + 4 : 2 * label + 6] += 120
        return x.astype(np.uint8), y.astype(np.int64)

    (xtr, ytr), (xte, yte) = make(n_train), make(n_test)
    return data_lib.Dataset("synthetic", xtr, ytr, xtr[:0], ytr[:0], xte, yte, num_classes=10)


def tiny_model(seed=0, data=None):
    keras.utils.set_random_seed(seed)
    model = models.build("cnn", SHAPE, 10, width=0.25)
    if data is not None:
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(
            np.asarray(data_lib.preprocess(data.x_train)),
            data.y_train,
            epochs=1,
            batch_size=16,
            verbose=0,
        )
    return model


def keras_logits(model, x):
    return model.predict(np.asarray(data_lib.preprocess(x)), verbose=0)


@pytest.fixture(scope="module")
def data():
    return synthetic_dataset()


@pytest.fixture(scope="module")
def model(data):
    return tiny_model(data=data)


@pytest.fixture(scope="module")
def flatbuffers(model, data):
    """Converts lazily, once per format, for the whole module."""
    cache = {}

    def get(quantization):
        if quantization not in cache:
            cache[quantization] = convert_lib.convert(
                model, quantization, representative_images=data.x_train, num_calibration=16
            )
        return cache[quantization]

    return get


def weight_dtypes(content):
    """{op name: dtype of its filter operand} from a no-delegate interpreter."""
    interpreter = measure_lib.make_interpreter(content, xnnpack=False)
    interpreter.allocate_tensors()
    found = {}
    for op in interpreter._get_ops_details():
        if op["op_name"] in ("CONV_2D", "FULLY_CONNECTED"):
            detail = interpreter._get_tensor_details(int(op["inputs"][1]), 0)
            found.setdefault(op["op_name"], set()).add(np.dtype(detail["dtype"]).name)
    return found


# ----------------------------------------------------------------------------
# Conversion


def test_the_converter_writes_what_from_keras_model_writes(model, data):
    """keras_compat.tflite_converter skips from_keras_model's Keras SavedModel
    and gives the same bytes, calibrated int8 and quantization-aware int8."""
    from kd_keras import compression
    from kd_keras.keras_compat import tf, tflite_converter

    images = np.asarray(data_lib.preprocess(data.x_train[:4]), np.float32)

    def calibration():
        for image in images:
            yield [image[None]]

    qat, _ = compression.apply_stage(model, "qat", compression.CompressionConfig(), 2, 1)
    for m in (model, qat):
        files = []
        for make in (tf.lite.TFLiteConverter.from_keras_model, tflite_converter):
            converter = make(m)
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = calibration
            files.append(converter.convert())
        assert files[0] == files[1], m.name


@pytest.mark.parametrize(
    "quantization, filter_dtypes, weight_dtypes_",
    [
        ("float32", ({"float32"}, {"float32"}), {"float32"}),
        # Filters are the float32 outputs of DEQUANTIZE ops fed by float16 constants.
        ("float16", ({"float32"}, {"float32"}), {"float16"}),
        # Dynamic range quantizes only tensors of >= 1024 elements: the last conv here.
        ("dynamic", ({"float32", "int8"}, {"float32"}), {"float32", "int8"}),
        ("int8", ({"int8"}, {"int8"}), {"int8", "int32"}),  # int32 biases.
    ],
)
def test_convert_formats(flatbuffers, quantization, filter_dtypes, weight_dtypes_):
    content = flatbuffers(quantization)
    assert content[4:8] == b"TFL3"
    conv, dense = filter_dtypes
    assert weight_dtypes(content) == {"CONV_2D": conv, "FULLY_CONNECTED": dense}
    assert set(measure_lib.model_stats(content)["weight_dtypes"]) == weight_dtypes_
    interpreter = measure_lib.make_interpreter(content)
    assert interpreter.get_input_details()[0]["dtype"] == np.float32
    assert interpreter.get_output_details()[0]["dtype"] == np.float32
    if quantization != "float32":
        assert len(content) < 0.85 * len(flatbuffers("float32"))


def test_int8_io_quantizes_inputs_correctly(model, data, flatbuffers):
    content = convert_lib.convert(
        model, "int8", representative_images=data.x_train, num_calibration=16, int8_io=True
    )
    interpreter = measure_lib.make_interpreter(content)
    assert interpreter.get_input_details()[0]["dtype"] == np.int8
    out_detail = interpreter.get_output_details()[0]
    assert out_detail["dtype"] == np.int8
    outputs, _ = measure_lib.predict(content, data.x_test)
    # Same calibration, same integer network: the float-I/O int8 model quantizes
    # its input inside the graph. Quantizing it in Python (scale and zero
    # point) must give the same outputs, to one output quantization step.
    in_graph, _ = measure_lib.predict(flatbuffers("int8"), data.x_test)
    np.testing.assert_allclose(outputs, in_graph, atol=1.01 * out_detail["quantization"][0])
    reference = keras_logits(model, data.x_test)
    assert np.corrcoef(outputs.ravel(), reference.ravel())[0, 1] > 0.95


def test_qat_model_converts_to_int8_without_data(model):
    import tensorflow_model_optimization as tfmot

    qat = tfmot.quantization.keras.quantize_model(model)
    assert convert_lib.is_qat_model(qat) and not convert_lib.is_qat_model(model)
    content = convert_lib.convert(qat, "int8")
    assert weight_dtypes(content) == {"CONV_2D": {"int8"}, "FULLY_CONNECTED": {"int8"}}


def test_strip_wrappers_is_identity_on_plain_models(model):
    assert export.strip_wrappers(model) is model


def test_pruned_model_compresses(data, flatbuffers):
    import tensorflow_model_optimization as tfmot

    sparsity = tfmot.sparsity.keras
    pruned = sparsity.prune_low_magnitude(
        tiny_model(seed=1), pruning_schedule=sparsity.ConstantSparsity(0.8, 0, frequency=1)
    )
    pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pruned.fit(
        np.asarray(data_lib.preprocess(data.x_train[:32])),
        data.y_train[:32],
        batch_size=16,
        epochs=1,
        verbose=0,
        callbacks=[sparsity.UpdatePruningStep()],
    )
    # The wrapped model goes straight in: convert() must strip the wrappers.
    sparse_content = convert_lib.convert(pruned, "float32")
    sparse, dense_stats = (
        measure_lib.measure(c, num_runs=2, warmup=0)
        for c in (sparse_content, flatbuffers("float32"))
    )
    assert sparse["ops"] == dense_stats["ops"]  # No mask or pruning ops left.
    assert sparse["nonzero_params"] < 0.35 * sparse["params"]
    assert dense_stats["nonzero_params"] > 0.95 * dense_stats["params"]
    assert sparse["gzip_bytes"] < 0.7 * dense_stats["gzip_bytes"]
    assert (
        abs(sparse["file_bytes"] - dense_stats["file_bytes"]) < 0.05 * dense_stats["file_bytes"]
    )  # Without gzip, zeros cost as much as any weight.


def test_model_path_checked_without_loading(tmp_path, model):
    """check_model_path tells the kind of a path from its first bytes: what
    load_model reads passes, anything else is named."""
    good = str(tmp_path / "good.keras")
    model.save(good)
    export.check_model_path(good)
    cases = {
        "junk.keras": (b"not a model", "not a .keras archive"),
        "junk.h5": (b"not a model", "not an HDF5 file"),
        "m.tflite": (b"\0\0\0\0TFL3", "already a TFLite model"),
        "model.bin": (b"12345678", "not a Keras model"),
    }
    for name, (content, fragment) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(export.ExportError, match=fragment):
            export.check_model_path(str(tmp_path / name))
    (tmp_path / "dir").mkdir()
    with pytest.raises(export.ExportError, match="without saved_model.pb"):
        export.check_model_path(str(tmp_path / "dir"))
    with pytest.raises(export.ExportError, match="does not exist"):
        export.check_model_path(str(tmp_path / "nope.keras"))


def test_conversion_errors_name_the_problem(tmp_path, model):
    missing = str(tmp_path / "nope.keras")
    with pytest.raises(export.ExportError, match="not found: .*nope.keras"):
        convert_lib.convert(missing, "float32")
    junk = tmp_path / "junk.keras"
    junk.write_text("not a model")
    with pytest.raises(export.ExportError, match="Cannot load .*junk.keras"):
        convert_lib.convert(str(junk), "float32")
    with pytest.raises(export.ExportError, match="Unknown quantization 'int4'"):
        convert_lib.convert(model, "int4")
    with pytest.raises(export.ExportError, match="needs representative_images"):
        convert_lib.convert(model, "int8")
    with pytest.raises(export.ExportError, match=r"\(5, 5, 1\) do not fit"):
        convert_lib.convert(model, "int8", representative_images=np.zeros((4, 5, 5, 1), np.uint8))


def test_save_tflite_is_atomic_and_checked(tmp_path, flatbuffers):
    path = tmp_path / "sub" / "m.float32.tflite"
    assert export.save_tflite(flatbuffers("float32"), str(path)) == path.stat().st_size
    assert path.read_bytes() == flatbuffers("float32")
    with pytest.raises(export.ExportError, match="not a TFLite model"):
        export.save_tflite(b"x" * 100, str(tmp_path / "bad.tflite"))
    assert sorted(os.listdir(tmp_path)) == ["sub"]  # No temporary files left behind.


# ----------------------------------------------------------------------------
# Measurement


def test_float32_matches_keras(model, data, flatbuffers):
    content = flatbuffers("float32")
    predicted = keras_logits(model, data.x_test).argmax(-1)
    # Labels equal to Keras' prediction on even examples only: accuracy 0.5.
    labels = np.where(np.arange(len(predicted)) % 2 == 0, predicted, (predicted + 1) % 10)
    result = measure_lib.measure(
        content, data.x_test, labels, keras_model=model, num_runs=3, warmup=1, batch_size=5
    )  # 32 = 6 x 5 + 2: a padded last batch.
    assert result["batched_inference"] is True
    assert result["keras_agreement"] == 1.0
    assert result["accuracy"] == result["keras_accuracy"] == 0.5
    assert result["keras_max_abs_diff"] < 1e-4
    one_by_one, batched = measure_lib.predict(content, data.x_test, batch_size=1)
    assert batched is False
    np.testing.assert_allclose(one_by_one, keras_logits(model, data.x_test), atol=1e-4)


def test_measure_counts_weights_and_macs(model, flatbuffers):
    result = measure_lib.measure(flatbuffers("float32"), num_runs=5, warmup=1)
    kernels = sum(int(np.prod(w.shape)) for w in model.weights if "kernel" in w.name)
    # BN folds into one bias per conv channel; the dense layer keeps its bias.
    biases = sum(int(w.shape[-1]) for w in model.weights if "kernel" in w.name)
    assert result["params"] == kernels + biases
    macs = (28 * 28 * 4 * 9 * 1) + (14 * 14 * 8 * 9 * 4) + (7 * 7 * 16 * 9 * 8) + 16 * 10
    assert result["macs"] == macs
    assert result["file_bytes"] == len(flatbuffers("float32"))
    assert 0 < result["gzip_bytes"] < result["file_bytes"]
    assert 0 < result["latency_us_min"] <= result["latency_us_median"] <= result["latency_us_p90"]
    assert result["latency_runs"] >= 5 and "accuracy" not in result
    assert result["overhead_us_median"] < result["latency_us_median"]
    assert result["benchmark_model"] is None  # No binary on PATH here.


def test_xnnpack_switch(flatbuffers):
    on = measure_lib.latency(flatbuffers("int8"), num_runs=2, warmup=0, xnnpack=True)
    off = measure_lib.latency(flatbuffers("int8"), num_runs=2, warmup=0, xnnpack=False, threads=2)
    assert on["delegated_nodes"] >= 1 and off["delegated_nodes"] == 0
    assert (on["xnnpack"], off["xnnpack"], off["threads"]) == (True, False, 2)


def test_corrupted_and_missing_tflite(tmp_path, flatbuffers):
    missing = str(tmp_path / "absent.tflite")
    with pytest.raises(export.ExportError, match="not found.*absent.tflite"):
        measure_lib.measure(missing)
    content = flatbuffers("float32")
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(content[: len(content) // 2])
    with pytest.raises(export.ExportError, match="truncated.tflite"):
        measure_lib.measure(str(truncated))
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(os.urandom(512))
    with pytest.raises(export.ExportError, match="garbage.tflite is not a TFLite model"):
        measure_lib.measure(str(garbage))


def test_benchmark_model_output_is_parsed(tmp_path, monkeypatch, flatbuffers):
    tool = tmp_path / "bin" / "benchmark_model"
    tool.parent.mkdir()
    tool.write_text(
        '#!/bin/sh\necho "args: $*" >&2\n'
        "echo 'Inference timings in us: Init: 812, First inference: 95, "
        "Warmup (avg): 40.5, Inference (avg): 33.25'\n"
    )
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(tool.parent), prepend=os.pathsep)
    path = tmp_path / "m.tflite"
    path.write_bytes(flatbuffers("float32"))
    result = measure_lib.measure(str(path), num_runs=2, warmup=0, threads=2)["benchmark_model"]
    assert result["returncode"] == 0 and "error" not in result
    assert (result["init_us"], result["inference_avg_us"]) == (812.0, 33.25)
    assert "--num_threads=2" in result["command"] and f"--graph={path}" in result["command"]


# ----------------------------------------------------------------------------
# export_model and the command line


def test_export_model_rows(tmp_path, monkeypatch, model, data, flatbuffers):
    calls = []

    def fake_convert(m, quantization, representative_images=None, **kwargs):
        calls.append((quantization, representative_images is data.x_train))
        return flatbuffers(quantization)

    monkeypatch.setattr(convert_lib, "convert", fake_convert)  # Conversion is tested above.
    rows = export.export_model(
        model,
        str(tmp_path),
        ["float32", "int8"],
        data=data,
        threads=(1, 2),
        latency_runs=3,
        warmup=0,
        name="tiny",
    )
    assert calls == [("float32", True), ("int8", True)]
    assert [(r["format"], r["threads"]) for r in rows] == [
        ("float32", 1),
        ("float32", 2),
        ("int8", 1),
        ("int8", 2),
    ]
    for row in rows:
        assert os.path.getsize(row["path"]) == row["file_bytes"]
        assert row["path"].endswith(f"tiny.{row['format']}.tflite")
        assert row["num_test"] == len(data.y_test)  # Copied to every thread count.
    assert rows[0]["keras_agreement"] == 1.0 and rows[0]["bytes_vs_float32"] == 1.0
    assert rows[2]["bytes_vs_float32"] == round(rows[2]["file_bytes"] / rows[0]["file_bytes"], 4)
    with open(tmp_path / "tiny.export.json") as f:
        assert json.load(f) == json.loads(json.dumps(rows))
    with pytest.raises(export.ExportError, match="formats"):
        export.export_model(model, str(tmp_path), ["int3"])


def test_cli(tmp_path, model, data, flatbuffers):
    """export.main on an npz dataset (``--dataset=npz:PATH``): its training
    inputs check the model's input range and its test split scores the file."""
    model_path = str(tmp_path / "student.keras")
    model.save(model_path)
    npz = str(tmp_path / "bands.npz")
    np.savez(
        npz, x_train=data.x_train, y_train=data.y_train, x_test=data.x_test, y_test=data.y_test
    )
    out_dir = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=REPO)
    command = [
        sys.executable,
        "-m",
        "export.main",
        f"--model={model_path}",
        "--export_formats=float32",
        f"--out_dir={out_dir}",
        f"--dataset=npz:{npz}",
        "--export_threads=1,2",
        "--latency_runs=3",
        "--latency_warmup=0",
    ]
    proc = subprocess.run(
        command, capture_output=True, text=True, cwd=REPO, env=env, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(out_dir / "export_results.json") as f:
        rows = json.load(f)
    assert [(r["format"], r["threads"]) for r in rows] == [("float32", 1), ("float32", 2)]
    # Scored on the npz's test split: as the Keras model scores it.
    keras_accuracy = float(np.mean(keras_logits(model, data.x_test).argmax(-1) == data.y_test))
    assert rows[0]["accuracy"] == pytest.approx(keras_accuracy, abs=1e-6)
    assert "training accuracy" in proc.stdout and "on 64 " in proc.stdout
    assert os.path.getsize(out_dir / "student.float32.tflite") == rows[0]["file_bytes"]
    assert "| float32 | 2 |" in proc.stdout and "export_results.json" in proc.stdout
    assert "--export_threads=1,2" in (out_dir / "export_flags.txt").read_text()
    # Converted from the saved file, the model computes what the in-memory one does.
    x = np.random.default_rng(0).random((4,) + SHAPE, dtype=np.float32)
    from_file, _ = measure_lib.predict(str(out_dir / "student.float32.tflite"), x)
    from_memory, _ = measure_lib.predict(flatbuffers("float32"), x)
    np.testing.assert_allclose(from_file, from_memory, atol=1e-5)


def test_model_card_and_labels(tmp_path, monkeypatch, model, data, flatbuffers):
    monkeypatch.setattr(convert_lib, "convert", lambda m, q, **kwargs: flatbuffers(q))
    names = tuple(f"class-{i}" for i in range(10))
    named = dataclasses.replace(data, class_names=names)
    rows = export.export_model(
        model, str(tmp_path), ["float32", "int8"], data=named, latency_runs=3, warmup=0,
        name="tiny", command=["prog", "--flag=1"],
    )  # fmt: skip
    assert (tmp_path / "tiny.labels.txt").read_text().splitlines() == list(names)
    cards = {}
    for row in rows:
        with open(row["card"]) as f:
            cards[row["format"]] = json.load(f)
        assert row["card"] == str(tmp_path / f"tiny.{row['format']}.card.json")
        assert os.path.exists(row["card"].replace(".json", ".md"))
        assert row["profile"] == str(tmp_path / f"tiny.{row['format']}.profile.json")
    for card in cards.values():
        assert tuple(card) == card_lib.CARD_FIELDS
        assert card["class_labels"] == list(names) and card["labels_file"] == "tiny.labels.txt"
        assert card["input"]["shape"] == [1, 28, 28, 1] and card["command"] == "prog --flag=1"
        assert card["file_bytes"] == os.path.getsize(tmp_path / card["file"])
        assert card["ops"]["CONV_2D"] == 3 and card["gzip_bytes"] < card["file_bytes"]
        profile = card["profile"]
        assert (
            profile["kind"] == "estimate"
            and profile["file"] == f"tiny.{card['format']}.profile.json"
        )
        assert {e["op_type"]: e["count"] for e in profile["by_type"]} == card["ops"]
        assert profile["total_macs"] == rows[0]["macs"]
        assert (
            "## Where the time goes"
            in (tmp_path / card["file"]).with_suffix(".card.md").read_text()
        )
        latency = card["latency"][0]
        assert latency["threads"] == 1 and latency["latency_us_p10"] <= latency["latency_us_p90"]
        assert latency["overhead_us_median"] is not None
        assert card["accuracy"]["keras"] is not None and card["accuracy"]["tflite"] is not None
        assert "not available" in card["litert_peak_memory"]
    assert cards["float32"]["arena_bytes"] is None and cards["float32"]["accuracy"]["tflm"] is None
    assert cards["int8"]["arena_bytes"] > 0 and cards["int8"]["tflm"]["tflm_runs"] is True
    assert cards["int8"]["accuracy"]["tflm"] is not None


def test_qat_model_exports_int8_only(tmp_path, model):
    import tensorflow_model_optimization as tfmot

    qat = tfmot.quantization.keras.quantize_model(model)
    rows = export.export_model(
        qat, str(tmp_path), ["float32", "float16", "int8"], latency_runs=3, warmup=0, name="q"
    )
    assert [r["format"] for r in rows] == ["int8"]
    assert rows[0]["formats_skipped"] == ["float32", "float16"]
    assert not (tmp_path / "q.float32.tflite").exists()
    with pytest.raises(export.ExportError, match="int8 only"):
        export.export_model(qat, str(tmp_path), ["float32"], name="q")
