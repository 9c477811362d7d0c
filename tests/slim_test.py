"""Channel slimming: the surgery keeps exactly the kept weights, coupled
channels go together, the slimmed model exports and trains in chains, and
what slim cannot handle is refused in one line.

Tiny models on small inputs; BatchNormalization statistics are randomized so
that a wrongly sliced vector changes the outputs.
"""

import json
import os

import numpy as np
import pytest
from conftest import tiny_dataset, tiny_pipeline_config

from export import convert as convert_lib
from export import measure as measure_lib
from export import micro, slim_target
from kd_keras import compression, distill, models
from kd_keras import train as train_lib
from kd_keras.app import pipeline, report, variants
from kd_keras.app.study import runner, views
from kd_keras.keras_compat import keras, tf

L = keras.layers
CLASSES = 5
N, BATCH = 32, 16
STEPS = N // BATCH


def _randomize(model, seed=0):
    """Random weights everywhere, BatchNormalization statistics included."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = []
        for var in layer.weights:
            w = rng.normal(0, 0.5, var.shape).astype("float32")
            if var.name.split("/")[-1].startswith("moving_variance"):
                w = rng.uniform(0.5, 2.0, var.shape).astype("float32")
            weights.append(w)
        layer.set_weights(weights)
    return model


def _zero_removed(model, plan):
    """Makes the channels `plan` removes output exactly zero, in place: the
    filters and biases producing them, depthwise biases, and BatchNorm's gamma
    and beta over them are zeroed (so every removed position carries 0)."""
    for layer in model.layers:
        removed = plan.removed(model, layer.name)
        if not removed or not layer.weights:
            continue
        weights = []
        for var in layer.weights:
            w, attr = var.numpy(), var.name.split("/")[-1].split(":")[0]
            if attr in ("kernel", "bias", "gamma", "beta"):
                w[..., removed] = 0.0
            weights.append(w)
        layer.set_weights(weights)
    return model


def _coverage_model(shape=(12, 12, 3)):
    """Every coupling slim knows: padding, pooling, dropout, TensorFlow ops, a
    depthwise with multiplier 2, squeeze-excite (Reshape, a multiplying op), a
    residual Add, Concatenate, Flatten into a hidden Dense."""
    inputs = keras.Input(shape)
    x = L.ZeroPadding2D(1, name="pad")(inputs)
    x = L.Conv2D(8, 3, name="c1")(x)
    x = L.BatchNormalization(name="bn1")(x)
    x = L.ReLU(6.0, name="r1")(x)
    x = x * tf.nn.relu6(x + 3.0) * (1.0 / 6.0)  # Hard-swish, as TensorFlow ops.
    d = L.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="dw")(x)
    d = L.BatchNormalization(name="bn_dw")(d)
    s = L.GlobalAveragePooling2D(name="se_gap")(d)
    s = L.Reshape((1, 1, 16), name="se_reshape")(s)
    s = L.Conv2D(4, 1, activation="relu", name="se_reduce")(s)
    s = L.Conv2D(16, 1, activation="sigmoid", name="se_expand")(s)
    d = d * s  # Squeeze-excite as a TensorFlow op: couples d's and s's channels.
    p = L.Conv2D(8, 1, name="pw")(d)
    x = L.Add(name="add")([x, p])
    y = L.Conv2D(6, 3, padding="same", activation="relu", name="side")(x)
    x = L.Concatenate(name="cat")([x, y])
    x = L.MaxPooling2D(2, name="pool")(x)
    x = L.Dropout(0.1, name="drop")(x)
    x = L.Flatten(name="flat")(x)
    x = L.Dense(12, activation="relu", name="hidden")(x)
    outputs = L.Dense(CLASSES, name="logits")(x)
    return keras.Model(inputs, outputs, name="coverage")


def _residual_pair():
    """Two 1x1 convolutions added together, then the classifier."""
    inputs = keras.Input((4, 4, 2))
    a = L.Conv2D(4, 1, use_bias=False, name="a")(inputs)
    b = L.Conv2D(4, 1, use_bias=False, name="b")(inputs)
    x = L.Add(name="add")([a, b])
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, L.Dense(CLASSES, name="logits")(x), name="pair")


def _build(name, shape, **kw):
    keras.utils.set_random_seed(1)
    return models.build(name, shape, CLASSES, **kw)


def _sequential():
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            L.Conv2D(8, 3, activation="relu"),
            L.BatchNormalization(),
            L.MaxPooling2D(),
            L.Flatten(),
            L.Dense(16, activation="relu"),
            L.Dense(CLASSES),
        ],
        name="sequential",
    )


STUDENTS = {
    "coverage": lambda: _coverage_model(),
    "sequential": _sequential,
    "cnn": lambda: _build("cnn", (12, 12, 1), width=0.25),
    "resnet8": lambda: _build("resnet8", (12, 12, 3), width=0.5),
    "ds_cnn": lambda: _build("ds_cnn", (12, 12, 1), width=0.25),
    "mobilenet_v2": lambda: _build("mobilenet_v2", (16, 16, 3), width=0.35),
    # Squeeze-excite and hard-swish as TensorFlow ops, Rescaling, a softmax output.
    "keras_mobilenet_v3": lambda: keras.applications.MobileNetV3Small(
        input_shape=(32, 32, 3), alpha=0.75, weights=None, classes=CLASSES
    ),
}


# ------------------------------------------------------------- the surgery


@pytest.mark.parametrize("name", sorted(STUDENTS))
def test_slimmed_equals_original_with_removed_channels_zeroed(name):
    model = _randomize(STUDENTS[name]())
    plan = compression.plan_slim(model, 0.5)
    slimmed = compression.slim_model(model, plan)
    x = np.random.default_rng(1).random((4,) + model.input_shape[1:]).astype("float32")
    unzeroed = model(x, training=False).numpy()
    got = slimmed(x, training=False).numpy()
    expected = _zero_removed(model, plan)(x, training=False).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    # Something was removed, and it mattered; input and classifier are intact.
    assert compression.params(slimmed) < 0.6 * compression.params(model)
    assert not np.allclose(unzeroed, got, atol=1e-3)
    assert slimmed.input_shape == model.input_shape
    assert slimmed.output_shape == model.output_shape
    names = lambda m: [l.name for l in m.layers if not isinstance(l, L.InputLayer)]  # noqa: E731
    assert names(slimmed) == names(model)
    assert compression.plan_macs(model, plan) == compression.macs(slimmed)


def test_residual_channels_are_removed_together():
    model = _randomize(STUDENTS["resnet8"]())
    plan = compression.plan_slim(model, 0.5)
    slimmed = compression.slim_model(model, plan)
    adds = [l for l in model.layers if isinstance(l, L.Add)]
    assert adds
    for add in adds:
        sources = plan.inputs[add.name]
        kept = [plan.kept[s] for s in sources]
        assert all(k == kept[0] for k in kept), (add.name, kept)
        width = add.output_shape[-1]
        assert 0 < len(kept[0]) < width
        shapes = [slimmed.get_layer(s).output_shape for s in sources]
        assert all(s == shapes[0] for s in shapes) and shapes[0][-1] == len(kept[0])
    # The stem and the block's second convolution are one group, cut as one.
    group = next(g for g in plan.groups if "stem_conv" in g["layers"])
    assert "s1_conv2" in group["layers"]
    assert plan.kept["stem_conv"] == plan.kept["s1_conv2"]


def test_coupled_channels_are_ranked_by_their_summed_l1():
    model = _residual_pair()
    # Channel:            0     1    2    3
    a = np.array([[[[9.0, 0.1, 1.0, 1.0], [0, 0, 0, 0]]]], "float32")
    b = np.array([[[[0.0, 5.0, 1.5, 0.2], [0, 0, 0, 0]]]], "float32")
    model.get_layer("a").set_weights([a])
    model.get_layer("b").set_weights([b])
    # Sums 9, 5.1, 2.5, 1.2: keeps 0 and 1 (a alone would keep 0 and 2 or 3).
    plan = compression.plan_slim(model, 0.5)
    assert plan.kept["a"] == plan.kept["b"] == plan.kept["add"] == [0, 1]
    assert plan.groups == [{"layers": ["a", "b"], "channels": 4, "kept": 2, "criterion": "l1"}]
    assert plan.kept["logits"] == list(range(CLASSES))


def test_bn_gamma_ranks_by_batchnorm_scale():
    inputs = keras.Input((4, 4, 1))
    x = L.Conv2D(4, 1, name="conv")(inputs)
    x = L.BatchNormalization(name="bn")(x)
    x = L.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, L.Dense(CLASSES, name="logits")(x))
    model.get_layer("conv").set_weights(
        [np.array([4.0, 3.0, 2.0, 1.0], "float32").reshape(1, 1, 1, 4), np.zeros(4, "float32")]
    )
    bn = model.get_layer("bn")
    bn.set_weights([np.array([0.1, 0.2, 2.0, 1.0], "float32")] + bn.get_weights()[1:])
    assert compression.plan_slim(model, 0.5, "l1").kept["conv"] == [0, 1]
    plan = compression.plan_slim(model, 0.5, "bn_gamma")
    assert plan.kept["conv"] == [2, 3] and plan.groups[0]["criterion"] == "bn_gamma"
    # Without BatchNormalization, bn_gamma falls back to L1 and says so.
    dense_only = _residual_pair()
    assert compression.plan_slim(dense_only, 0.5, "bn_gamma").groups[0]["criterion"] == "l1"


def test_kept_counts_keep_one_and_round_to_a_multiple():
    model = _build("cnn", (12, 12, 1), width=0.5)  # Convolutions of 8, 16, 32 filters.
    widths = {g["layers"][0]: g["channels"] for g in compression.plan_slim(model, 0.5).groups}
    assert widths == {"b1c1_conv": 8, "b2c1_conv": 16, "b3c1_conv": 32}
    kept = lambda plan: {g["layers"][0]: g["kept"] for g in plan.groups}  # noqa: E731
    assert kept(compression.plan_slim(model, 0.99)) == dict.fromkeys(widths, 1)
    # 70% off leaves 3, 5, 10; rounded up to multiples of 4.
    assert kept(compression.plan_slim(model, 0.7)) == {
        "b1c1_conv": 3,
        "b2c1_conv": 5,
        "b3c1_conv": 10,
    }
    assert kept(compression.plan_slim(model, 0.7, multiple=4)) == {
        "b1c1_conv": 4,
        "b2c1_conv": 8,
        "b3c1_conv": 12,
    }
    slimmed = compression.slim_model(model, compression.plan_slim(model, 0.7, multiple=4))
    assert slimmed.get_layer("b3c1_conv").filters == 12


@pytest.mark.parametrize("target", [0.5, 0.2])
def test_a_macs_target_is_met_with_the_fewest_channels_removed(target):
    model = STUDENTS["resnet8"]()
    full = compression.macs(model)
    plan = compression.plan_slim(model, target_macs=target)
    assert compression.plan_macs(model, plan) <= target * full
    # A slightly smaller fraction misses the target: no more is removed than needed.
    looser = compression.plan_slim(model, max(plan.fraction - 2e-3, 1e-3))
    assert compression.plan_macs(model, looser) > target * full
    with pytest.raises(ValueError, match="slim_target_macs=0.001 cannot be reached"):
        compression.plan_slim(model, target_macs=0.001)


def test_a_fits_predicate_gets_the_plan_a_macs_target_gets_each_plan_measured_once():
    model = STUDENTS["resnet8"]()
    full = compression.macs(model)
    seen = []

    def fits(plan):
        seen.append(tuple(g["kept"] for g in plan.groups))
        return compression.plan_macs(model, plan) <= 0.5 * full

    plan = compression.plan_to_fit(model, fits, tolerance=1e-4)
    assert plan.kept == compression.plan_slim(model, target_macs=0.5).kept
    assert len(seen) == len(set(seen)) >= 3
    with pytest.raises(ValueError, match="^the budget cannot be reached on model"):
        compression.plan_to_fit(model, lambda plan: False, what="the budget")


def _images(model, n=8):
    shape = tuple(model.input_shape[1:])
    return np.random.default_rng(0).integers(0, 256, (n,) + shape, dtype=np.uint8)


def _assert_fewest_removed(model, plan, cost, limit):
    """`plan` meets cost <= limit, and a plan removing a little less does not."""
    assert cost(compression.slim_model(model, plan)) <= limit
    looser = compression.plan_slim(model, plan.fraction - 0.02)
    assert looser.groups != plan.groups
    assert cost(compression.slim_model(model, looser)) > limit


def test_a_bytes_target_keeps_the_fewest_channels_under_it():
    model = STUDENTS["ds_cnn"]()
    images = _images(model)

    def int8_bytes(m):
        return len(convert_lib.convert(m, "int8", representative_images=images, num_calibration=8))

    plan = slim_target.plan(model, compression.CompressionConfig(slim_target_bytes=0.6), images)
    _assert_fewest_removed(model, plan, int8_bytes, 0.6 * int8_bytes(model))
    assert slim_target.plan(model, compression.CompressionConfig(), images) is None


def test_a_latency_target_compares_each_candidate_with_the_unslimmed_file(monkeypatch):
    """Timed here by a stand-in (the MACs of the converted model, no noise):
    every comparison is of one candidate with the unslimmed file, and the
    plan is the least slimming whose ratio meets the share."""
    model = STUDENTS["cnn"]()
    macs_of, calls = {}, []
    real_convert = convert_lib.convert

    def convert(m, *args, **kwargs):
        content = real_convert(m, *args, **kwargs)
        macs_of[content] = compression.macs(m)
        return content

    def latency_together(files, example, **kwargs):
        calls.append(sorted(files))
        return {name: {"latency_us_median": macs_of[c]} for name, c in files.items()}

    monkeypatch.setattr(slim_target.convert_lib, "convert", convert)
    monkeypatch.setattr(slim_target.measure_lib, "latency_together", latency_together)
    config = compression.CompressionConfig(slim_target_latency=0.5)
    plan = slim_target.plan(model, config, _images(model))
    assert calls and all(c == ["slimmed", "unslimmed"] for c in calls)
    _assert_fewest_removed(model, plan, compression.macs, 0.5 * compression.macs(model))


def _slim_run(tmp_path, epochs, export=None, **settings):
    """The pipeline on tiny data, without KD, for `cnn` at width 0.5 and the
    chain `slim` with CompressionConfig(**settings): its (plain, slimmed) rows."""
    config = tiny_pipeline_config(
        str(tmp_path),
        kd_mode="off",
        techniques=("slim",),
        student_kwargs={"width": 0.5},
        compress=variants.CompressSettings(
            config=compression.CompressionConfig(**settings), epochs=epochs
        ),
        export=export or variants.ExportSettings(formats=()),
    )
    data = tiny_dataset(32, shape=(12, 12, 1))
    rows = pipeline.run(config, prepared=(data, pipeline.validate(config)))["models"]
    return tuple(next(m for m in rows if m.get("techniques") == t) for t in ("none", "slim"))


def test_a_pipeline_run_slims_to_an_int8_bytes_target_and_records_the_plan(tmp_path):
    export = variants.ExportSettings(formats=("int8",), latency_runs=5, num_calibration=8)
    plain, slimmed = _slim_run(
        tmp_path, 1, export, slim_target_bytes=0.5, slim_criterion="bn_gamma"
    )
    assert slimmed["slim"]["target"] == {"slim_target_bytes": 0.5}
    plan = slimmed["slim"]["plan"]
    assert plan["criterion"] == "bn_gamma" and plan["ranked_by"] == {"bn_gamma": plan["groups"]}
    assert 0 < plan["fraction"] < 1 and plan["kept"] < plan["channels"]
    size = {m["techniques"]: m["export"][0]["file_bytes"] for m in (plain, slimmed)}
    assert size["slim"] <= 0.5 * size["none"]


def test_iterative_steps_shrink_each_group_towards_the_one_shot_widths():
    model = STUDENTS["resnet8"]()
    one_shot = compression.plan_slim(model, 0.75, multiple=2).groups
    steps = compression.schedule(model, 0.75, 3, multiple=2)
    assert len(steps) == 3
    final = {tuple(g["layers"]): g["kept"] for g in one_shot}
    assert steps[-1] == final
    for g in one_shot:
        name, n = tuple(g["layers"]), g["channels"]
        kept = [step[name] for step in steps]
        assert n >= kept[0] >= kept[1] >= kept[2] == g["kept"]
        assert all(k % 2 == 0 or k == n for k in kept)
    # Applied step by step, each on the model the last one left, the widths are
    # the one-shot plan's.
    current = model
    for counts in steps:
        current = compression.slim_model(current, compression.plan_slim(current, counts=counts))
    assert compression.params(current) == compression.params(
        compression.slim_model(model, compression.plan_slim(model, 0.75, multiple=2))
    )
    with pytest.raises(ValueError, match="slim_steps must be an integer >= 1, got 0"):
        compression.schedule(model, 0.5, 0)


def test_a_pipeline_run_with_a_sparsity_phase_and_steps_trains_them_in_order(tmp_path):
    """The sparsity phase, then two slimming steps, sharing 5 epochs (2, 2, 1):
    the last step leaves the one-shot widths."""
    _, slimmed = _slim_run(
        tmp_path, 5, slim_fraction=0.5, slim_steps=2, slim_sparsity=0.01, slim_criterion="bn_gamma"
    )
    names = [os.path.basename(d).split("-")[0] for d in slimmed["run_dirs"]]
    assert names == ["base", "slim.sparsify", "slim.1of2", "slim.2of2"]
    specs = [json.load(open(os.path.join(d, "spec.json"))) for d in slimmed["run_dirs"][1:]]
    assert [s["epochs"] for s in specs] == [2, 2, 1] and specs[0]["slim_sparsify"] == 0.01
    assert [s.get("slim_step") for s in specs] == [None, [1, 2], [2, 2]]
    plan = slimmed["slim"]["plan"]
    assert plan["steps"] == 2 and plan["sparsity"] == 0.01
    assert plan["kept"] == plan["channels"] // 2  # Of the unslimmed student's channels.
    fresh = models.build("cnn", (12, 12, 1), 10, width=0.5)
    one_shot = compression.slim_model(fresh, compression.plan_slim(fresh, 0.5))
    assert slimmed["params"] == one_shot.count_params()


def test_the_gamma_penalty_is_l1_of_the_batchnorm_scales_and_leaves_outputs_alone():
    model = _randomize(STUDENTS["resnet8"]())
    penalized = compression.with_gamma_penalty(model, 0.01)
    gammas = [
        np.abs(layer.gamma.numpy()).sum()
        for layer in model.layers
        if isinstance(layer, L.BatchNormalization)
    ]
    total = lambda m: float(tf.add_n(m.losses)) if m.losses else 0.0  # noqa: E731
    # Added to what the model had (its own weight decay).
    assert total(penalized) - total(model) == pytest.approx(0.01 * sum(gammas), rel=1e-4)
    x = np.random.default_rng(1).random((2,) + tuple(model.input_shape[1:]), dtype=np.float32)
    np.testing.assert_allclose(penalized(x), model(x), rtol=1e-6, atol=1e-6)
    assert total(compression.with_gamma_penalty(penalized, 0.0)) == pytest.approx(total(model))
    with pytest.raises(ValueError, match="slim_sparsity must be a number >= 0, got -1"):
        compression.with_gamma_penalty(model, -1)


def test_slim_report_counts_params_and_macs():
    inputs = keras.Input((8, 8, 1))
    x = L.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = L.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, L.Dense(CLASSES, name="logits")(x))
    assert compression.macs(model) == 3 * 3 * 1 * 4 * 64 + 4 * CLASSES
    assert compression.params(model) == model.count_params()
    slimmed = compression.slim_model(model, compression.plan_slim(model, 0.5))
    report = compression.slim_report(model, slimmed)
    assert report["macs"] == 3 * 3 * 1 * 2 * 64 + 2 * CLASSES
    assert report["params"] == slimmed.count_params() == 9 * 2 + 2 + 2 * CLASSES + CLASSES
    assert report["channels"] == {"conv": [4, 2]}
    assert report["macs_before"] == compression.macs(model)


def test_results_table_shows_the_macs_slimming_kept():
    plain = {"name": "none-kd-s0", "params": 100, "export": [{"format": "int8"}]}
    slimmed = dict(plain, name="slim-kd-s0", slim={"macs_ratio": 0.3})
    assert "MACs kept" not in report.markdown_table(report.flatten([plain]))
    table = report.markdown_table(report.flatten([plain, slimmed]))
    assert "| MACs kept |" in table and "| 30.0% |" in table


def test_study_techniques_slim_and_their_composition(tmp_path):
    study = runner.StudyConfig(
        pipeline=tiny_pipeline_config(str(tmp_path)),
        techniques=("none", "slim50", "qat", "slim50+qat"),
        bagging_members=0,
    )
    variant = runner.technique_variant(study, "slim50+qat", 0, True)
    assert variant.techniques == ("slim", "qat")
    assert dict(variant.compression) == {"slim_fraction": 0.5}
    rows = [
        dict(label=label, kd=kd, seed=s, test_accuracy=0.8, params=100, export=[])
        for label in study.techniques
        for kd in (False, True)
        for s in (0, 1)
    ]
    for row in rows:
        if row["label"].startswith("slim"):
            row["slim"] = {"macs_ratio": 0.25}
    summary = views.summarize(rows, (0, 1))
    assert summary["slim50"]["slim_macs_ratio"] == (0.25, 0.0)
    assert "slim_macs_ratio" not in summary["qat"]
    pairs = [p["pair"] for p in views.additivity_pairs(rows, (0, 1))]
    assert ["slim50", "qat"] in pairs


# ------------------------------------------------------ export and chains


def _datasets(shape):
    rng = np.random.default_rng(0)
    x = rng.random((N,) + shape).astype("float32")
    y = rng.integers(0, CLASSES, N)
    return {"train": tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH), "val": None}


def _train_chain(model, chain, config, run_dir, teacher=None):
    """Each stage of `chain` for one epoch through train_lib.fit, as the
    pipeline trains it (in the Distiller when a teacher is given)."""
    shape = model.input_shape[1:]
    stages = []
    for technique, previous in compression.stages(chain):
        wrapped, callbacks = compression.apply_stage(model, technique, config, STEPS, 1, previous)
        before = [w.copy() for w in wrapped.get_weights()]
        train_lib.fit(
            wrapped,
            _datasets(shape),
            train_lib.TrainConfig(epochs=1),
            str(run_dir / technique),
            teacher=teacher,
            kd=distill.KDConfig() if teacher is not None else None,
            extra_callbacks=callbacks,
            verbose=0,
        )
        changed = any(not np.array_equal(a, b) for a, b in zip(before, wrapped.get_weights()))
        stages.append((technique, wrapped, changed))
        model = compression.strip(wrapped)
    return model, stages


@pytest.fixture(scope="module")
def slim_qat(tmp_path_factory):
    """A student through the chain slim,qat with KD: (student, stages, final model)."""
    student = _build("cnn", (8, 8, 1), width=0.25)
    teacher = _build("cnn", (8, 8, 1), width=0.5)
    config = compression.CompressionConfig(slim_fraction=0.5)
    chain = compression.validate_chain("slim,qat", config)
    final, stages = _train_chain(student, chain, config, tmp_path_factory.mktemp("c"), teacher)
    return student, stages, final


def test_slim_then_qat_trains_with_kd(slim_qat):
    student, stages, final = slim_qat
    (_, slimmed, slim_trained), (_, qat, qat_trained) = stages
    assert slim_trained and qat_trained
    assert compression.params(slimmed) < 0.5 * compression.params(student)
    assert compression.has_quantize_layers(final)
    assert compression.params(final) == compression.params(slimmed)
    assert compression.scheme_after(("slim",)) == "default"


def test_slimmed_model_exports_int8_and_runs_on_tflite_micro(slim_qat):
    student, _, final = slim_qat
    content = convert_lib.convert(final, "int8")
    stats = measure_lib.model_stats(content)
    assert set(stats["weight_dtypes"]) >= {"int8"}
    # The file's MACs are the slimmed model's, half the student's or fewer.
    assert stats["macs"] == compression.macs(final) < 0.5 * compression.macs(student)
    figures = micro.micro(content)
    assert figures["tflm_runs"] is True and figures["arena_bytes"] > 0


def test_slim_then_prune_keeps_both(tmp_path):
    student = _build("cnn", (8, 8, 1), width=0.25)
    config = compression.CompressionConfig(slim_fraction=0.5, sparsity=0.5, pruning_frequency=1)
    # The whole chain is tried on the student before training (QAT after both).
    assert compression.validate_chain("slim,prune,qat", config, model=student)
    assert compression.stages("slim,prune,qat")[2] == ("qat", ("slim", "prune"))
    assert compression.scheme_after(("slim", "prune")) == "prune_preserve"
    pruned, stages = _train_chain(student, ("slim", "prune"), config, tmp_path)
    assert all(trained for _, _, trained in stages)
    assert pruned.get_layer("b2c1_conv").filters == 4  # Slimmed from 8, then pruned.
    sparsity = compression.sparsity_report(pruned, ["b2c1_conv", "b3c1_conv"])
    assert sparsity["pruned_overall"] == pytest.approx(0.5, abs=0.02)


def test_slim_spec_leaves_other_chains_keys_unchanged():
    config = compression.CompressionConfig(slim_fraction=0.25)
    assert "slim_fraction" not in config.spec(("prune", "qat"))
    assert config.spec(("slim", "qat"))["slim_fraction"] == 0.25
    assert compression.CompressionConfig.from_config(config.get_config()) == config


# ---------------------------------------------------------------- refusals


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = L.Dense(CLASSES)

    def call(self, x):
        return self.dense(x)


class _Odd(L.Layer):
    def call(self, x):
        return x * 2.0


def _with(layer):
    inputs = keras.Input((6, 6, 1))
    x = L.Conv2D(4, 3, name="conv")(inputs)
    x = layer(x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, L.Dense(CLASSES, name="logits")(x), name="odd_model")


@pytest.mark.parametrize(
    "make, fragments",
    [
        (lambda: _Subclassed(), ["slim needs a functional keras.Model, got _Subclassed"]),
        (
            lambda: _with(_Odd(name="doubler")),
            ["layer 'doubler' (_Odd) of model 'odd_model'", "slim handles", "Conv1D/2D/3D"],
        ),
        (
            lambda: _with(lambda x: tf.math.reduce_mean(x, axis=-1, keepdims=True)),
            ["(TFOpLambda)", "tf.math.reduce_mean, not an elementwise op"],
        ),
        (
            lambda: _with(L.LayerNormalization(name="ln")),
            ["layer 'ln' (LayerNormalization)", "not a layer slim knows"],
        ),
        (
            lambda: _with(L.Permute((2, 1, 3), name="perm")),
            ["layer 'perm' (Permute)"],
        ),
    ],
    ids=["subclassed", "custom_layer", "layer_norm", "permute", "tf_reduce"],
)
def test_what_slim_cannot_handle_is_refused_in_one_line(make, fragments):
    model = make()
    config = compression.CompressionConfig()
    with pytest.raises(ValueError) as e:
        compression.validate_chain("slim,qat", config, model=model)
    message = str(e.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_shared_layer_is_refused():
    inputs = keras.Input((6, 6, 4))
    conv = L.Conv2D(4, 1, name="shared")
    x = conv(conv(inputs))
    x = L.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, L.Dense(CLASSES)(x))
    with pytest.raises(ValueError, match="'shared' .*called 2 times"):
        compression.plan_slim(model, 0.5)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"slim_fraction": 1.0}, "slim_fraction must be a number in (0, 1), got 1.0"),
        ({"slim_fraction": 0}, "slim_fraction must be a number in (0, 1), got 0"),
        ({"slim_criterion": "l2"}, "slim_criterion must be one of ('l1', 'bn_gamma'), got 'l2'"),
        ({"slim_multiple": 0}, "slim_multiple must be an integer >= 1, got 0"),
        ({"slim_target_macs": 1.5}, "slim_target_macs must be None or a number in (0, 1)"),
        ({"slim_target_bytes": 0}, "slim_target_bytes must be None or a number in (0, 1)"),
        ({"slim_steps": 0}, "slim_steps must be an integer >= 1, got 0"),
        (
            {"slim_steps": 2, "slim_target_macs": 0.5},
            "slim_steps=2 removes slim_fraction in steps; it does not take a target",
        ),
        (
            {"slim_target_macs": 0.5, "slim_target_latency": 0.6},
            "Give at most one slim target, got slim_target_macs=0.5 and slim_target_latency=0.6",
        ),
    ],
)
def test_config_rejects_bad_slim_values(kwargs, fragment):
    with pytest.raises(ValueError) as e:
        compression.CompressionConfig(**kwargs)
    assert fragment in str(e.value)


def test_slim_goes_first_in_a_chain():
    with pytest.raises(ValueError, match="out of order; use \\['slim', 'prune'\\]"):
        compression.validate_chain("prune,slim", compression.CompressionConfig())
