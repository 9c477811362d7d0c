"""Compression: pruning, clustering, QAT and their chains, with and without KD.

Tiny students on 8x8 inputs, 64 random examples, batch 16 (4 steps), one
epoch, trained through ``train_lib.fit`` exactly as the pipeline does: plain
when KD is off, inside the Distiller when it is on.
"""

import json

import numpy as np
import pytest
import tensorflow_model_optimization as tfmot

from kd_keras import compression, distill, models
from kd_keras import train as train_lib
from kd_keras.distill.distiller import Distiller
from kd_keras.keras_compat import keras, tf

SHAPE = (8, 8, 1)
CLASSES = 10
N, BATCH = 64, 16
STEPS = N // BATCH


def _student(name="cnn", seed=1, **kw):
    keras.utils.set_random_seed(seed)
    kw = kw or ({"width": 0.5} if name == "resnet" else {"width": 0.25})
    return models.build(name, SHAPE, CLASSES, **kw)


def _teacher():
    keras.utils.set_random_seed(0)
    return models.build("cnn", SHAPE, CLASSES, width=0.5)


def _datasets():
    rng = np.random.default_rng(0)
    x = rng.random((N,) + SHAPE).astype("float32")
    y = rng.integers(0, CLASSES, N)
    return {"train": tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH), "val": None}


def _fit(model, callbacks, kd, run_dir):
    """One epoch of the pipeline's training, distilled when `kd`."""
    train_lib.fit(
        model,
        _datasets(),
        train_lib.TrainConfig(epochs=1),
        str(run_dir),
        teacher=_teacher() if kd else None,
        kd=distill.KDConfig() if kd else None,
        extra_callbacks=callbacks,
        verbose=0,
    )


def _run_stage(model, technique, config, kd, run_dir, previous=(), log_dir=None):
    wrapped, callbacks = compression.apply_stage(
        model, technique, config, STEPS, 1, previous=previous, log_dir=log_dir
    )
    _fit(wrapped, callbacks, kd, run_dir / technique)
    return wrapped, compression.strip(wrapped)


def _nonzeros_per_group_of_4(kernel):
    """Nonzeros in each group of 4 consecutive input channels of a conv kernel."""
    h, w, cin, cout = kernel.shape
    assert cin % 4 == 0
    return (kernel.reshape(h, w, cin // 4, 4, cout) != 0).sum(axis=3)


# ----------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"sparsity": 1.0}, "sparsity must be a number in [0, 1)"),
        ({"sparsity": -0.1}, "got -0.1"),
        ({"pruning_schedule": "cubic"}, "'cubic'"),
        ({"pruning_structure": "4:8"}, "('unstructured', '2:4')"),
        ({"pruning_structure": "2:4", "sparsity": 0.8}, "sparsity must be 0.5"),
        ({"initial_sparsity": 0.6, "sparsity": 0.5}, "initial_sparsity"),
        ({"prune_begin_fraction": 0.5, "prune_end_fraction": 0.5}, "prune_end_fraction"),
        ({"pruning_frequency": 0}, "pruning_frequency"),
        ({"clusters": 1}, "clusters must be an integer >= 2, got 1"),
        ({"cluster_init": "kmeans"}, "'kmeans++', 'linear', 'density-based', 'random'"),
        ({"skip_layers": ["a"], "include_layers": ["b"]}, "not both"),
        ({"skip_layers": ["a", "a"]}, "twice"),
    ],
)
def test_config_rejects_bad_values(kwargs, fragment):
    with pytest.raises(ValueError) as e:
        compression.CompressionConfig(**kwargs)
    assert fragment in str(e.value)


def test_config_round_trips_through_json():
    config = compression.CompressionConfig(
        sparsity=0.8, skip_layers="b1c1_conv,logits", cluster_init="linear"
    )
    assert config.skip_layers == ("b1c1_conv", "logits")
    again = compression.CompressionConfig.from_config(json.loads(json.dumps(config.get_config())))
    assert again == config


def test_cluster_inits_match_tfmot():
    assert tuple(compression.CENTROID_INIT) == compression.CLUSTER_INITS
    assert set(compression.CENTROID_INIT.values()) == set(
        tfmot.clustering.keras.CentroidInitialization
    )


@pytest.mark.parametrize(
    "chain, fragment",
    [
        ("prune,distill", "Unknown technique 'distill'"),
        ("prune,prune", "repeats ['prune']"),
        ("qat,prune", "qat must be last"),
        ("cluster,qat,prune", "qat must be last"),
        ("cluster,prune", "out of order; use ['prune', 'cluster']"),
    ],
)
def test_validate_chain_rejects_bad_chains(chain, fragment):
    with pytest.raises(ValueError) as e:
        compression.validate_chain(chain, compression.CompressionConfig())
    assert fragment in str(e.value)


def test_validate_chain_resolves_layer_names_before_training():
    student = _student()
    assert compression.validate_chain(
        " Prune, qat ", compression.CompressionConfig(), model=student
    ) == ("prune", "qat")
    with pytest.raises(ValueError, match="'nope', which is not a layer"):
        compression.validate_chain(
            "prune", compression.CompressionConfig(skip_layers=["nope"]), model=student
        )
    with pytest.raises(ValueError, match="b1c1_bn.*BatchNormalization.*cannot cluster"):
        compression.validate_chain(
            "cluster", compression.CompressionConfig(include_layers=["b1c1_bn"]), model=student
        )
    with pytest.raises(ValueError, match="must be a CompressionConfig"):
        compression.validate_chain("prune", {"sparsity": 0.5})


def test_apply_stage_rejects_bad_stages_before_wrapping():
    student, config = _student(), compression.CompressionConfig()
    with pytest.raises(ValueError, match="out of order"):
        compression.apply_stage(student, "prune", config, STEPS, 1, previous=("cluster",))
    with pytest.raises(ValueError, match="steps_per_epoch must be an integer >= 1"):
        compression.apply_stage(student, "prune", config, 0, 1)
    wrapped, _ = compression.apply_stage(student, "cluster", config, STEPS, 1)
    with pytest.raises(ValueError, match="call kd_keras.compression.strip"):
        compression.apply_stage(wrapped, "qat", config, STEPS, 1, previous=("cluster",))


def test_stages_name_what_came_before():
    assert compression.stages("prune,cluster,qat") == [
        ("prune", ()),
        ("cluster", ("prune",)),
        ("qat", ("prune", "cluster")),
    ]
    assert [
        compression.scheme_after(p) for p in [(), ("prune",), ("cluster",), ("prune", "cluster")]
    ] == ["default", "prune_preserve", "cluster_preserve", "prune_cluster_preserve"]


# ----------------------------------------------------------- layer selection


@pytest.mark.parametrize(
    "name, first", [("cnn", "b1c1_conv"), ("cnn_dws", "b1c1_conv"), ("resnet", "stem_conv")]
)
def test_default_layer_selection(name, first):
    student = _student(name)
    pruned = compression.select_layers(student, "prune")
    clustered = compression.select_layers(student, "cluster")
    assert first not in pruned and "logits" not in pruned
    assert first not in clustered and "logits" in clustered
    assert set(clustered) - set(pruned) == {"logits"}
    # Depthwise kernels are neither pruned nor clustered by TF-MOT.
    assert not any(
        isinstance(student.get_layer(n), keras.layers.DepthwiseConv2D) for n in clustered
    )
    assert pruned and all(type(student.get_layer(n)) in (keras.layers.Conv2D,) for n in pruned)


def test_include_layers_selects_exactly_those():
    student = _student()
    config = compression.CompressionConfig(include_layers=["logits"])
    assert compression.select_layers(student, "prune", None, config.include_layers) == ["logits"]


# ------------------------------------------------------------- pruning steps


def test_stage_steps_end_inside_the_stage():
    poly = compression.CompressionConfig(prune_end_fraction=0.75, pruning_frequency=10)
    assert compression.stage_steps(poly, 4) == (0, 3, 3)  # last update at step 3 <= 4
    assert compression.stage_steps(poly, 1000) == (0, 750, 10)
    late = compression.CompressionConfig(prune_begin_fraction=0.9, prune_end_fraction=1.0)
    begin, end, freq = compression.stage_steps(late, 1)
    assert 0 <= begin < end <= 1 and (end - begin) % freq == 0
    const = compression.CompressionConfig(pruning_schedule="constant", pruning_frequency=100)
    assert compression.stage_steps(const, 4) == (0, -1, 4)


# ------------------------------------------------------- techniques, KD on/off


@pytest.mark.parametrize("kd", [False, True], ids=["plain", "kd"])
def test_pruning_reaches_target_sparsity(kd, tmp_path):
    student = _student()
    before = [w.copy() for w in student.get_weights()]
    config = compression.CompressionConfig(sparsity=0.75, pruning_frequency=1)
    log_dir = tmp_path / "pruning_logs"
    wrapped, stripped = _run_stage(student, "prune", config, kd, tmp_path, log_dir=str(log_dir))
    assert list(log_dir.rglob("events.out.tfevents.*"))  # PruningSummaries wrote
    # Every wrapper counted each optimizer step once, inside the Distiller too.
    assert [int(w.pruning_step.numpy()) for w in compression.prune_wrappers(wrapped)] == [STEPS] * 2
    report = compression.sparsity_report(stripped, compression.select_layers(student, "prune"))
    assert abs(report["pruned_overall"] - 0.75) <= 0.01
    for layer, entry in report["layers"].items():
        expected = 0.75 if layer in ("b2c1_conv", "b3c1_conv") else 0.0
        assert abs(entry["sparsity"] - expected) <= 0.01, (layer, entry)
    assert compression.wrapper_kinds(wrapped) == ["prune"]
    assert compression.wrapper_kinds(stripped) == []
    json.dumps(report)
    # The caller's model is left untouched.
    assert all(np.array_equal(a, b) for a, b in zip(before, student.get_weights()))


@pytest.mark.parametrize("kd", [False, True], ids=["plain", "kd"])
def test_clustering_limits_unique_values(kd, tmp_path):
    student = _student()
    config = compression.CompressionConfig(clusters=4, cluster_init="linear")
    _, stripped = _run_stage(student, "cluster", config, kd, tmp_path)
    report = compression.unique_values_report(stripped)
    for layer, entry in report["layers"].items():
        if layer in compression.select_layers(student, "cluster"):
            assert entry["unique"] <= 4, (layer, entry)
        else:
            assert entry["unique"] > 4, (layer, entry)  # the first conv is not clustered
    json.dumps(report)


@pytest.mark.parametrize("kd", [False, True], ids=["plain", "kd"])
def test_qat_wraps_every_kernel_layer(kd, tmp_path):
    student = _student()
    assert not compression.has_quantize_layers(student)
    wrapped, stripped = _run_stage(student, "qat", compression.CompressionConfig(), kd, tmp_path)
    assert compression.has_quantize_layers(stripped)
    quantized = {
        l.layer.name
        for l in stripped.layers
        if isinstance(l, tfmot.quantization.keras.QuantizeWrapper)
    }
    assert {"b1c1_conv", "b2c1_conv", "b3c1_conv", "logits"} <= quantized
    # The fake-quant ranges were learned from the data, not left at init.
    ranges = [v.numpy() for v in stripped.weights if v.name.endswith("output_max:0")]
    assert ranges and any(r != 6.0 and r != 0.0 for r in ranges)


# ----------------------------------------------- UpdatePruningStep in the Distiller


def test_tfmot_callback_reaches_wrappers_inside_the_distiller(tmp_path):
    config = compression.CompressionConfig(sparsity=0.5, pruning_frequency=1)
    wrapped, _ = compression.apply_stage(_student(), "prune", config, STEPS, 1)
    distiller = Distiller(wrapped, _teacher())
    from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper

    stock = pruning_wrapper.collect_prunable_layers(distiller)
    ours = compression.prune_wrappers(distiller)
    assert {id(w) for w in stock} == {id(w) for w in ours} and len(ours) == 2
    assert len(stock) == 2 * len(ours)  # the student and its feature extractor
    # TF-MOT's own callback then prunes through the Distiller as well.
    distiller.compile("adam")
    x = np.random.default_rng(0).random((N,) + SHAPE).astype("float32")
    distiller.fit(
        x,
        np.zeros(N, "int64"),
        batch_size=BATCH,
        verbose=0,
        callbacks=[tfmot.sparsity.keras.UpdatePruningStep()],
    )
    assert abs(compression.sparsity_report(wrapped)["pruned_overall"] - 0.5) <= 0.01


def test_update_pruning_step_fails_without_wrappers():
    model = train_lib.compile_plain(_student())
    x = np.zeros((BATCH,) + SHAPE, "float32")
    with pytest.raises(ValueError, match="found no pruning wrapper"):
        model.fit(
            x, np.zeros(BATCH, "int64"), verbose=0, callbacks=[compression.UpdatePruningStep()]
        )


# ------------------------------------------------------------------ chains


def test_prune_then_pqat_keeps_sparsity_and_converts_to_int8(tmp_path):
    student = _student()
    config = compression.CompressionConfig(
        sparsity=0.5, pruning_schedule="constant", pruning_frequency=1
    )
    pruned_layers = compression.select_layers(student, "prune")
    model = student
    for technique, previous in compression.stages("prune,qat"):
        _, model = _run_stage(model, technique, config, False, tmp_path, previous)
        report = compression.sparsity_report(model, pruned_layers)
        assert abs(report["pruned_overall"] - 0.5) <= 0.01, (technique, report)
    assert compression.has_quantize_layers(model)

    tflite = compression.int8_tflite_converts(model)
    assert tflite["converts"] and tflite["int8"], tflite
    assert tflite["weight_ops"] == 4 and tflite["float_ops"] == []
    float_model = compression.int8_tflite_converts(student)  # dynamic range only
    assert float_model["converts"] and not float_model["int8"]
    json.dumps(tflite)


def test_2_4_prune_cluster_pcqat_chain_with_kd(tmp_path):
    student = _student(width=0.5)  # 8, 16, 32 channels: groups of 4 input channels
    config = compression.CompressionConfig(pruning_structure="2:4", clusters=4)
    pruned_layers = compression.select_layers(student, "prune")
    model = student
    for technique, previous in compression.stages("prune,cluster,qat"):
        _, model = _run_stage(model, technique, config, True, tmp_path, previous)
        kernels = {n: k for n, _, k in compression.kernels(model)}
        for name in pruned_layers:
            groups = _nonzeros_per_group_of_4(kernels[name])
            if technique == "prune":
                assert (groups == 2).all(), name  # exactly two of every four
            else:
                assert (groups <= 2).all(), (technique, name)  # zeros survive
        if technique != "prune":
            unique = compression.unique_values_report(model)["layers"]
            for name in compression.select_layers(student, "cluster"):
                # CQAT keeps one set of centroids per output channel of a Conv2D.
                key = "unique_per_channel" if technique == "qat" else "unique"
                assert unique[name][key] <= 4, (technique, name, unique[name])


# --------------------------------------------------------- other students


@pytest.mark.parametrize(
    "name, width, lone_bns",
    [
        ("cnn_dws", 0.25, []),
        ("resnet", 0.5, ["s2b1_bn1", "s3b1_bn1", "head_bn"]),  # BN after an Add
        ("resnet", 1, ["s1b1_bn1", "s2b1_bn1", "s3b1_bn1", "head_bn"]),  # stem feeds BN and Add
    ],
)
def test_other_students_quantize(name, width, lone_bns):
    student = _student(name, width=width)
    lone = compression.standalone_batch_norms(student)
    assert lone == lone_bns
    qat, callbacks = compression.apply_stage(
        student, "qat", compression.CompressionConfig(), STEPS, 1
    )
    assert callbacks == [] and compression.has_quantize_layers(qat)
    wrapped = {
        l.layer.name for l in qat.layers if isinstance(l, tfmot.quantization.keras.QuantizeWrapper)
    }
    assert set(compression.select_layers(student, "cluster")) <= wrapped
    assert set(lone) <= wrapped
    x = np.random.default_rng(0).random((2,) + SHAPE).astype("float32")
    assert np.allclose(qat(x, training=False), student(x, training=False), atol=0.5)


def test_unquantizable_layer_raises_a_clear_error():
    inputs = keras.Input(SHAPE)
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.LayerNormalization(name="ln")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(CLASSES, name="logits")(x), name="odd")
    with pytest.raises(ValueError, match="'odd' cannot be quantized.*Layer ln"):
        compression.apply_stage(model, "qat", compression.CompressionConfig(), STEPS, 1)
