"""Every registered model builds for every dataset shape and has named features."""

import numpy as np
import pytest

from kd_keras import models


@pytest.mark.parametrize("name", sorted(models.REGISTRY))
@pytest.mark.parametrize("shape, classes", [((28, 28, 1), 10), ((32, 32, 3), 100)])
def test_builds_and_outputs_logits(name, shape, classes):
    model = models.build(name, shape, classes)
    out = model(np.zeros((2,) + shape, np.float32), training=False)
    assert out.shape == (2, classes)
    assert model.layers[-1].get_config().get("activation") == "linear"


def test_width_scales_parameters():
    small = models.build("cnn", (28, 28, 1), 10, width=0.5).count_params()
    big = models.build("cnn", (28, 28, 1), 10, width=2.0).count_params()
    assert big > 4 * small


def test_depthwise_separable_is_cheaper():
    plain = models.build("cnn", (28, 28, 1), 10).count_params()
    dws = models.build("cnn_dws", (28, 28, 1), 10).count_params()
    assert dws < plain / 2
    names = [l.__class__.__name__ for l in models.build("cnn_dws", (28, 28, 1), 10).layers]
    assert "DepthwiseConv2D" in names


def test_feature_layers_are_named():
    teacher = models.build("resnet", (28, 28, 1), 10)
    student = models.build("cnn", (28, 28, 1), 10)
    assert teacher.get_layer("stage3").output.shape[1:3] == (7, 7)
    assert student.get_layer("block3").output.shape[1:3] == (7, 7)


@pytest.mark.parametrize(
    "name, kwargs, match",
    [
        ("nope", {}, "Unknown model"),
        ("resnet", {"depth": 12}, "6n"),
        ("cnn", {"width": 0}, "width"),
        ("resnet", {"stem_stride": 3}, "stem_stride"),
        ("mobilenet_v2", {"width": 0.0}, "width"),
        ("ds_cnn", {"dropout": 1.0}, "dropout"),
    ],
)
def test_bad_arguments(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        models.build(name, (28, 28, 1), 10, **kwargs)


def test_builder_kwargs_checked_by_name_and_type():
    """check_kwargs reads the builder's signature: unknown names list the
    allowed ones; a value of the wrong type says the type and the default."""
    models.check_kwargs("resnet", {"depth": 16, "width": 1.5, "weight_decay": 0, "name": "t"})
    with pytest.raises(ValueError, match=r"depth='abc' is not an int; .*default 10"):
        models.check_kwargs("resnet", {"depth": "abc"})
    with pytest.raises(ValueError, match=r"takes no argument 'foo'; it takes depth, width"):
        models.check_kwargs("resnet", {"foo": 1})
    with pytest.raises(ValueError, match=r"dropout=True is not a float"):
        models.check_kwargs("cnn", {"dropout": True})
    assert models.arguments("cnn")["convs_per_block"] == (int, 1)
