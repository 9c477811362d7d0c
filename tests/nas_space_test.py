"""nas.space: the search space, its points, hand-designed and start points, TFLite/TFLM."""

import dataclasses
import os

import numpy as np
import pytest
from conftest import tiny_dataset, tiny_pipeline_config
from nas_helpers import (
    CLASSES,
    HAND_FILTERS,
    POINT,
    SHAPE,
    check_structure,
    random_points,
    weights_structure,
)

import nas
from kd_keras import data as data_lib
from kd_keras import models
from kd_keras import train as train_lib
from kd_keras.app import pipeline
from kd_keras.keras_compat import keras
from nas import space as search_space


def test_load_student_rebuilds_the_best_architecture_untrained(searched):
    search, outputs = searched
    trained = keras.models.load_model(outputs["paths"]["best_model.keras"], compile=False)
    fresh = nas.load_student(search.project_dir, SHAPE, CLASSES)
    assert [type(l).__name__ for l in fresh.layers] == [type(l).__name__ for l in trained.layers]
    assert [l.name for l in fresh.layers] == [l.name for l in trained.layers]
    assert fresh.count_params() == trained.count_params() == outputs["best"]["params"]
    assert not all(np.array_equal(a, b) for a, b in zip(fresh.get_weights(), trained.get_weights()))
    train_lib.compile_plain(fresh)
    before = fresh.get_layer("logits").get_weights()[0].copy()
    x = np.random.default_rng(0).random((8,) + SHAPE, dtype=np.float32)
    loss = fresh.train_on_batch(x, np.arange(8) % CLASSES)[0]
    assert np.isfinite(loss)
    assert not np.array_equal(before, fresh.get_layer("logits").get_weights()[0])
    other = nas.load_student(
        os.path.join(search.project_dir, search_space.BEST_HPS_FILE), (16, 16, 3), 4
    )
    assert other.output_shape == (None, 4) and other.input_shape == (None, 16, 16, 3)
    with pytest.raises(ValueError, match="best_hyperparameters.json"):
        nas.load_student(os.path.join(search.project_dir, "trial_0"), SHAPE, CLASSES)


def test_random_and_extreme_space_points_build_from_allowed_layers():
    space = search_space.StudentSpace(SHAPE, CLASSES)  # Default ranges, 4 stages on 12x12.
    widest = {
        "stages": 4,
        "conv": "separable",
        "expansion": 4,
        "kernel_size": 5,
        "downsample": "strided",
        "head_units": 128,
        "dropout": 0.25,
        **{f"stage{i}_{k}": v for i in range(1, 5) for k, v in (("filters", 64), ("blocks", 2))},
    }
    first = dict(widest, downsample="strided_first", conv="inverted", stage3_blocks=1)
    stem = dict(widest, downsample="strided_stem", stage1_blocks=1)
    for values in [widest, first, stem] + random_points(space, 8, seed=0):
        check_structure(space.build(search_space.hyperparameters_from_values(values)), values)


def test_each_downsampling_and_stem_padding_ends_the_stages_at_its_resolutions():
    space = search_space.StudentSpace(SHAPE, CLASSES, max_stages=3, stem_paddings=("same", "valid"))
    point = dict(search_space.hand_point("cnn", 0.5), stage2_blocks=2, stem_padding="same")
    # Each stage's output: 'strided_stem' halves the input in the first
    # convolution and not again into stage 2; a valid 3x3 first convolution
    # makes 12 pixels 10, which the later halvings start from.
    expected = {
        "maxpool": {"same": (12, 6, 3), "valid": (10, 5, 3)},
        "avgpool": {"same": (12, 6, 3), "valid": (10, 5, 3)},
        "strided": {"same": (12, 6, 3), "valid": (10, 5, 3)},
        "strided_first": {"same": (12, 6, 3), "valid": (10, 5, 3)},
        "strided_stem": {"same": (6, 6, 3), "valid": (5, 5, 3)},
    }
    assert set(expected) == set(search_space.DOWNSAMPLING)
    params = space.build(search_space.hyperparameters_from_values(point)).count_params()
    for downsample, by_padding in expected.items():
        for stem_padding, sizes in by_padding.items():
            values = dict(point, downsample=downsample, stem_padding=stem_padding)
            model = space.build(search_space.hyperparameters_from_values(values))
            got = tuple(model.get_layer(f"block{i}").output.shape[1] for i in (1, 2, 3))
            assert got == sizes, values
            assert model.count_params() == params, values
            spatial = [
                l for l in model.layers if type(l).__name__ == "Conv2D" and l.kernel_size != (1, 1)
            ]
            assert [l.padding for l in spatial] == [stem_padding] + ["same"] * (len(spatial) - 1)


def test_a_valid_stem_that_leaves_too_few_pixels_is_refused():
    with pytest.raises(ValueError, match=r"stem_paddings=\['same', 'valid'\].*max_stages=4"):
        search_space.StudentSpace(
            (8, 8, 1), CLASSES, max_stages=4, kernel_sizes=(3,), stem_paddings=("same", "valid")
        )
    search_space.StudentSpace((8, 8, 1), CLASSES, max_stages=4, kernel_sizes=(3,))
    with pytest.raises(ValueError, match="stem_paddings must each be in"):
        search_space.StudentSpace(SHAPE, CLASSES, stem_paddings=("causal",))


def test_space_points_convert_to_tflite_and_match_keras():
    from export import convert, measure

    # Every layer kind (expansion, strided depthwise, maxpool, head, dropout) in
    # two small designed points, plus random points of a small space: a
    # conversion takes seconds per dozen layers.
    space = search_space.StudentSpace(SHAPE, CLASSES, max_stages=3, head_units=(0, 16))
    designed = [
        {
            "stages": 2,
            "conv": "separable",
            "expansion": 4,
            "kernel_size": 5,
            "downsample": "strided",
            "head_units": 16,
            "dropout": 0.25,
            "stage1_filters": 8,
            "stage1_blocks": 1,
            "stage2_filters": 16,
            "stage2_blocks": 2,
        },
        {
            "stages": 3,
            "conv": "standard",
            "kernel_size": 3,
            "downsample": "maxpool",
            "head_units": 0,
            "dropout": 0.0,
            "stage1_filters": 8,
            "stage1_blocks": 1,
            "stage2_filters": 8,
            "stage2_blocks": 1,
            "stage3_filters": 16,
            "stage3_blocks": 1,
        },
    ]
    small = search_space.StudentSpace(SHAPE, CLASSES, max_stages=2, max_blocks=1, filters=(8, 16))
    x = np.random.default_rng(0).random((2,) + SHAPE, dtype=np.float32)
    cases = [(space, v) for v in designed] + [(small, v) for v in random_points(small, 2, 1)]
    for hypermodel, values in cases:
        model = hypermodel.build(search_space.hyperparameters_from_values(values))
        check_structure(model, values)
        content = convert.convert(model, "float32")
        lite, _ = measure.predict(content, x)
        np.testing.assert_allclose(lite, model(x, training=False).numpy(), atol=1e-4)


def test_separable_point_is_accepted_by_tf_mot():
    import tensorflow_model_optimization as tfmot

    values = {
        "stages": 2,
        "conv": "separable",
        "expansion": 2,
        "kernel_size": 3,
        "downsample": "strided",
        "head_units": 16,
        "dropout": 0.1,
        "stage1_filters": 8,
        "stage1_blocks": 2,
        "stage2_filters": 16,
        "stage2_blocks": 1,
    }
    space = search_space.StudentSpace(SHAPE, CLASSES, head_units=(0, 16))
    model = space.build(search_space.hyperparameters_from_values(values))
    pruned = tfmot.sparsity.keras.prune_low_magnitude(model)
    assert any("prune_low_magnitude" in l.name for l in pruned.layers)
    quantized = tfmot.quantization.keras.quantize_model(model)
    assert quantized.output_shape == (None, CLASSES)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(max_stages=5), "max_stages"),  # 12x12 halves to 1 pixel after 4 stages.
        (dict(min_stages=3, max_stages=2), "min_stages"),
        (dict(conv_types=("standard", "fancy")), "conv_types"),
        (dict(kernel_sizes=(4,)), "kernel_sizes"),
        (dict(dropouts=(1.0,)), "dropouts"),
        (dict(filters=()), "filters"),
        (dict(num_classes=1), "num_classes"),
    ],
)
def test_space_rejects_bad_arguments(kwargs, match):
    args = dict(input_shape=SHAPE, num_classes=CLASSES)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        search_space.StudentSpace(**args)


def test_the_pipeline_trains_a_searched_student_by_nas_path(searched, tmp_path):
    _, outputs = searched
    project = os.path.dirname(outputs["paths"]["best_hyperparameters.json"])
    config = tiny_pipeline_config(
        str(tmp_path / "work"), student="nas:" + project, student_kwargs={}, kd_mode="both"
    )
    data = tiny_dataset(64)  # 28x28x1: the architecture is rebuilt for the data.
    results = pipeline.run(config, prepared=(data, pipeline.validate(config)))
    students = [r for r in results["models"] if r["role"] == "student"]
    expected = search_space.load_student(project, (28, 28, 1), 10).count_params()
    assert [r["kd"] for r in students] == [False, True]
    assert all(r["params"] == expected for r in students)
    with pytest.raises(ValueError, match="--student=nas:/nonexistent"):
        pipeline.validate(dataclasses.replace(config, student="nas:/nonexistent"))


@pytest.mark.parametrize("family", ["cnn", "cnn_dws"])
@pytest.mark.parametrize("width", [0.25, 0.5, 0.75, 1.0])
def test_hand_designed_students_are_points_of_the_space(family, width):
    space = search_space.StudentSpace(
        (28, 28, 1), 10, max_stages=3, max_blocks=1, filters=HAND_FILTERS, expansions=(1, 2)
    )
    values = search_space.hand_point(family, width)
    space.check_point(values)
    built = space.build(search_space.hyperparameters_from_values(values))
    registry = models.build(family, (28, 28, 1), 10, width=width)
    assert built.count_params() == registry.count_params()
    assert weights_structure(built) == weights_structure(registry)
    assert built.output_shape == registry.output_shape


def test_check_point_names_what_the_space_lacks():
    space = search_space.StudentSpace((28, 28, 1), 10, max_stages=3, filters=(4, 8, 16, 32, 64))
    space.check_point(search_space.hand_point("cnn", 0.5))
    with pytest.raises(ValueError, match=r"stage1_filters=12 .*allowed: \[4, 8, 16, 32, 64\]"):
        space.check_point(search_space.hand_point("cnn", 0.75))
    with pytest.raises(ValueError, match="conv='separable'"):
        search_space.StudentSpace((28, 28, 1), 10, conv_types=("standard",)).check_point(
            search_space.hand_point("cnn_dws", 0.5)
        )
    with pytest.raises(ValueError, match="FAMILY:WIDTH"):
        search_space.parse_hand_points(["resnet:1"])


def test_start_points_extend_the_hand_family_by_stages_of_the_last_width():
    space = search_space.StudentSpace(
        (28, 28, 1), 10, max_stages=4, max_blocks=1, filters=HAND_FILTERS, expansions=(1, 2)
    )
    (name, values), (plain, three) = search_space.start_points(["cnn:0.5:4", "cnn_dws:1"], space)
    assert name == "cnn_0.5_4stages" and values["stages"] == 4
    assert [values[f"stage{i}_filters"] for i in range(1, 5)] == [8, 16, 32, 32]
    assert (plain, three) == ("cnn_dws_1", search_space.hand_point("cnn_dws", 1.0))
    built = space.build(search_space.hyperparameters_from_values(values))
    convs = [l for l in built.layers if isinstance(l, keras.layers.Conv2D)]
    assert [tuple(l.kernel.shape) for l in convs] == [
        (3, 3, 1, 8),
        (3, 3, 8, 16),
        (3, 3, 16, 32),
        (3, 3, 32, 32),
    ]
    # Three stages of the same width are the registry model itself.
    assert search_space.hand_point("cnn", 0.5, stages=3) == search_space.hand_point("cnn", 0.5)
    for bad in ("cnn:0.5:0", "cnn:0.5:four", "resnet:1:4", "cnn:0.5:4:1"):
        with pytest.raises(ValueError, match="FAMILY:WIDTH\\[:STAGES\\]"):
            search_space.start_points([bad], space)
    with pytest.raises(ValueError, match="cnn:0.5:5 is not a point.*stages=5"):
        search_space.start_points(["cnn:0.5:5"], space)
    # A seed can carry changes, as a screen's --points item does.
    changed = "cnn:0.5:4/stage1_filters=4/kernel_size=5"
    assert search_space.start_points([changed, "cnn:0.5:4"], space) == [
        search_space.changed_point(changed, space),
        (name, values),
    ]
    assert search_space.start_points([changed], space)[0][1] == dict(
        values, stage1_filters=4, kernel_size=5
    )
    with pytest.raises(ValueError, match="stage1_filters=5 is not in the search space"):
        search_space.start_points(["cnn:0.5:4/stage1_filters=5"], space)


def test_changed_points_are_hand_points_with_settings_changed_and_checked():
    space = search_space.StudentSpace((28, 28, 1), 10, filters=HAND_FILTERS)
    name, values = search_space.changed_point(
        "cnn:0.25/downsample=strided_stem/stage1_filters=8/dropout=0.1", space
    )
    assert name == "cnn_0.25+downsample-strided_stem+stage1_filters-8+dropout-0.1"
    assert values == dict(
        search_space.hand_point("cnn", 0.25),
        downsample="strided_stem",
        stage1_filters=8,
        dropout=0.1,
    )
    assert (
        search_space.changed_point("cnn:0.5:4", space)
        == search_space.start_points(["cnn:0.5:4"], space)[0]
    )
    with pytest.raises(ValueError, match="'stage1_filters' is not NAME=VALUE"):
        search_space.changed_point("cnn:0.25/stage1_filters", space)
    with pytest.raises(ValueError, match="stage1_filters=5 is not in the search space"):
        search_space.changed_point("cnn:0.25/stage1_filters=5", space)
    # A name the space lacks, or one the point does not use, would build the
    # unchanged network under a changed name.
    with pytest.raises(ValueError, match="'stage1_filterz' is not a hyperparameter.*stages"):
        search_space.changed_point("cnn:0.25/stage1_filterz=8", space)
    with pytest.raises(ValueError, match="'stem_padding' is not a hyperparameter"):
        search_space.changed_point("cnn:0.25/stem_padding=valid", space)  # not searched here
    with pytest.raises(ValueError, match="expansion has no effect.*conv in \\['separable'"):
        search_space.changed_point("cnn:0.25/expansion=2", space)
    four = search_space.StudentSpace((28, 28, 1), 10, filters=HAND_FILTERS, max_stages=4)
    with pytest.raises(ValueError, match="stage4_filters has no effect.*stages in \\[4\\]"):
        search_space.changed_point("cnn:0.25/stage4_filters=8", four)
    assert search_space.changed_point("cnn:0.25:4/stage4_filters=8", four)[1]["stage4_filters"] == 8
    narrow = search_space.StudentSpace(
        (28, 28, 1), 10, filters=HAND_FILTERS, downsampling=("maxpool",)
    )
    with pytest.raises(ValueError, match="downsample='strided_stem'.*allowed: \\['maxpool'\\]"):
        search_space.changed_point("cnn:0.25/downsample=strided_stem", narrow)


@pytest.mark.slow(15)
@pytest.mark.parametrize(
    "downsample, activation, stem_padding",
    [
        ("avgpool", "hard_swish", "same"),
        ("strided", "relu6", "valid"),
        ("strided_first", "relu", "same"),
        ("strided_stem", "relu", "valid"),
    ],
)
def test_every_option_converts_to_int8_and_runs_on_tflm(downsample, activation, stem_padding):
    from export import convert, measure, micro

    space = search_space.StudentSpace(
        SHAPE, CLASSES, max_stages=3, head_units=(0, 16), stem_paddings=("same", "valid")
    )
    images = np.random.default_rng(0).integers(0, 256, (16,) + SHAPE).astype(np.uint8)
    x = data_lib.preprocess(images[:2])
    values = dict(
        POINT,
        stem_padding=stem_padding,
        stages=3,
        stage2_blocks=2,
        stage3_filters=8,
        stage3_blocks=1,
        se=4,
        activation=activation,
        downsample=downsample,
        head_units=16,
        dropout=0.1,
    )
    model = space.build(search_space.hyperparameters_from_values(values))
    kinds = {type(l).__name__ for l in model.layers}
    assert kinds <= set(search_space.ALLOWED_LAYERS)
    assert {"Add", "Multiply", "DepthwiseConv2D"} <= kinds  # residual, SE, inverted
    int8 = convert.convert(model, "int8", representative_images=images)
    ops = measure.model_stats(int8)["ops"]
    assert {"ADD", "MUL", "MEAN", "LOGISTIC", "DEPTHWISE_CONV_2D"} <= set(ops), ops
    tflm = micro.micro(int8)
    assert tflm["tflm_runs"] and tflm["arena_bytes"] > 0, tflm
    lite, _ = measure.predict(convert.convert(model, "float32"), x)
    np.testing.assert_allclose(lite, model(x, training=False).numpy(), atol=1e-4)


def test_options_tf_mot_refuses_are_the_documented_ones():
    import tensorflow_model_optimization as tfmot

    space = search_space.StudentSpace(SHAPE, CLASSES)

    def accepts(fn, **kw):
        try:
            fn(space.build(search_space.hyperparameters_from_values(dict(POINT, **kw))))
        except (RuntimeError, ValueError):
            return False
        return True

    qat, prune = tfmot.quantization.keras.quantize_model, tfmot.sparsity.keras.prune_low_magnitude
    assert accepts(qat, activation="relu6") and accepts(prune, se=4)
    assert not accepts(qat, se=4) and not accepts(qat, activation="hard_swish")
    assert not accepts(prune, activation="hard_swish")


def test_a_space_saved_before_se_activations_and_stem_paddings_rebuilds_old_points():
    new = search_space.StudentSpace(SHAPE, CLASSES, stem_paddings=("same", "valid"))
    old_config = new.get_config()
    del old_config["se_ratios"], old_config["activations"], old_config["stem_paddings"]
    space = search_space.StudentSpace.from_config(old_config, SHAPE, CLASSES)
    assert space.stem_paddings == ("same",)
    old_values = {k: v for k, v in POINT.items() if k not in ("se", "activation", "stem_padding")}
    model = space.build(
        search_space.hyperparameters_from_values(dict(old_values, conv="separable"))
    )
    kinds = {type(l).__name__ for l in model.layers}
    assert "Multiply" not in kinds and "Rescaling" not in kinds
    assert all(l.max_value is None for l in model.layers if type(l).__name__ == "ReLU")
    assert model.get_layer("s1b1_conv").padding == "same"


def test_same_cost_copies_share_a_key_and_other_moves_do_not():
    point = search_space.hand_point("cnn", 0.25, stages=4)
    key = search_space.same_cost_key(point)
    assert search_space.same_cost_key(dict(point, activation="relu6")) == key
    assert search_space.same_cost_key(dict(point, dropout=0.1, **{"tuner/epochs": 6})) == key
    for move in (
        {"activation": "hard_swish"},
        {"stage2_blocks": 2},
        {"head_units": 32},
        {"downsample": "strided_first"},
        {"kernel_size": 5},
    ):
        assert search_space.same_cost_key(dict(point, **move)) != key, move
