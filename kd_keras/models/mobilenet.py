"""Student family: MobileNet v1, v2 and v3-Small (minimalistic), for any input size.

The layers are those of ``tf_keras.applications`` ``MobileNet``,
``MobileNetV2`` and ``MobileNetV3Small(minimalistic=True)`` with
``include_top=False`` and ``alpha=width`` (the same channel rounding, so at
``width=1.0`` the backbones have those models' parameter counts; a test
checks it), followed by global average pooling and a dense classifier that
outputs logits. They are written out here because the applications refuse
inputs under 32x32 (28x28 images, 49x10 MFCCs). Two departures, neither
changing a parameter count: stride-2 layers use ``'same'`` padding instead of
an explicit ``ZeroPadding2D`` (one op fewer per downsampling in TFLite), and
there is no built-in rescaling (the data pipeline preprocesses).

The last layer of each resolution stage is a linear ``Activation`` named
``block1``, ``block2``, ... for the feature losses.
"""

from kd_keras.keras_compat import keras

layers = keras.layers

# MobileNet v1: (pointwise filters, stride) of the 13 depthwise-separable blocks.
_V1_BLOCKS = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
)
# MobileNet v2: (expansion, filters, repeats, first stride) of the 7 bottleneck groups.
_V2_GROUPS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
# MobileNet v3-Small, minimalistic: (expansion, filters, stride) of the 11 blocks
# (3x3 depthwise kernels, ReLU, no squeeze-excite).
_V3_SMALL_BLOCKS = (
    (1, 16, 2),
    (72 / 16, 24, 2),
    (88 / 24, 24, 1),
    (4, 40, 2),
    (6, 40, 1),
    (6, 40, 1),
    (3, 48, 1),
    (3, 48, 1),
    (6, 96, 2),
    (6, 96, 1),
    (6, 96, 1),
)


def make_divisible(value, divisor=8):
    """The channel rounding of MobileNet v2 / v3: the multiple of `divisor`
    nearest `value`, at least `divisor` and not under 90% of `value`."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class _Layers:
    """Layer factories sharing a model's weight decay and BN momentum."""

    def __init__(self, weight_decay, bn_momentum):
        self.reg = keras.regularizers.l2(weight_decay) if weight_decay else None
        self.bn_momentum = bn_momentum

    def conv(self, x, filters, kernel, stride, name):
        return layers.Conv2D(
            filters,
            kernel,
            strides=stride,
            padding="same",
            use_bias=False,
            kernel_regularizer=self.reg,
            name=name,
        )(x)

    def depthwise(self, x, stride, name):
        # No L2 on depthwise kernels: they hold few weights (MobileNet paper).
        return layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=name)(
            x
        )

    def bn(self, x, name):
        return layers.BatchNormalization(momentum=self.bn_momentum, epsilon=1e-3, name=name)(x)


def _check(width, dropout):
    if width <= 0:
        raise ValueError(f"width must be > 0, got {width}.")
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}.")


def _head(f, inputs, x, num_classes, dropout, name):
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    if dropout:
        x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(num_classes, kernel_regularizer=f.reg, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def _inverted_residual(f, x, expansion, filters, stride, relu6, prefix):
    """Expand (1x1) -> depthwise 3x3 -> project (1x1, linear), plus the input
    when the shape allows. No expansion layer when `expansion` is 1."""
    in_channels = x.shape[-1]
    act = (lambda n: layers.ReLU(6.0, name=n)) if relu6 else (lambda n: layers.ReLU(name=n))
    y = x
    if expansion != 1:
        y = f.conv(y, make_divisible(in_channels * expansion), 1, 1, f"{prefix}_expand")
        y = act(f"{prefix}_expand_relu")(f.bn(y, f"{prefix}_expand_bn"))
    y = f.depthwise(y, stride, f"{prefix}_dw")
    y = act(f"{prefix}_dw_relu")(f.bn(y, f"{prefix}_dw_bn"))
    y = f.bn(f.conv(y, filters, 1, 1, f"{prefix}_project"), f"{prefix}_project_bn")
    if stride == 1 and in_channels == filters:
        y = layers.Add(name=f"{prefix}_add")([x, y])
    return y


def _stage_ends(strides):
    """Indices of the blocks after which the resolution changes, and the last."""
    return {i for i in range(len(strides)) if i + 1 == len(strides) or strides[i + 1] == 2}


def mobilenet_v1(
    input_shape,
    num_classes,
    width=1.0,
    dropout=0.0,
    weight_decay=0.0,
    bn_momentum=0.99,
    name=None,
):
    """MobileNet v1: a 3x3 convolution and 13 depthwise-separable blocks (ReLU6).

    Parameters at ``width=1.0``: 3,228,864 in the backbone (as
    ``tf_keras.applications.MobileNet(include_top=False, weights=None)`` at any
    3-channel input), 3,239,114 with the 10-class classifier at 32x32x3.

    Args:
      input_shape: (H, W, C), any size.
      num_classes: number of logits.
      width: MobileNet's alpha; multiplies every layer's channels.
      dropout: dropout before the classifier.
      weight_decay: L2 on convolution (not depthwise) and dense kernels.
      bn_momentum: BatchNormalization momentum.
      name: model name; default ``mobilenet_v1_{width}``.

    Raises:
      ValueError: width <= 0 or dropout outside [0, 1).
    """
    _check(width, dropout)
    f = _Layers(weight_decay, bn_momentum)
    inputs = keras.Input(input_shape, name="image")
    x = f.conv(inputs, int(32 * width), 3, 2, "stem_conv")
    x = layers.ReLU(6.0, name="stem_relu")(f.bn(x, "stem_bn"))
    ends = _stage_ends([s for _, s in _V1_BLOCKS])
    stage = 0
    for i, (filters, stride) in enumerate(_V1_BLOCKS):
        prefix = f"b{i + 1}"
        x = f.depthwise(x, stride, f"{prefix}_dw")
        x = layers.ReLU(6.0, name=f"{prefix}_dw_relu")(f.bn(x, f"{prefix}_dw_bn"))
        x = f.conv(x, int(filters * width), 1, 1, f"{prefix}_pw")
        x = layers.ReLU(6.0, name=f"{prefix}_pw_relu")(f.bn(x, f"{prefix}_pw_bn"))
        if i in ends:
            stage += 1
            x = layers.Activation("linear", name=f"block{stage}")(x)
    return _head(f, inputs, x, num_classes, dropout, name or f"mobilenet_v1_{width:g}")


def mobilenet_v2(
    input_shape,
    num_classes,
    width=1.0,
    dropout=0.0,
    weight_decay=0.0,
    bn_momentum=0.99,
    name=None,
):
    """MobileNet v2: 17 inverted-residual blocks (ReLU6, linear bottlenecks)
    and a 1x1 convolution to 1280 channels.

    As in the paper and ``tf_keras.applications``, ``width`` below 1 does not
    narrow that last convolution (it stays 1280 wide). Parameters at
    ``width=1.0``: 2,257,984 in the backbone (as
    ``tf_keras.applications.MobileNetV2(include_top=False, weights=None)``),
    2,270,794 with the 10-class classifier at 32x32x3.

    Args:
      input_shape: (H, W, C), any size.
      num_classes: number of logits.
      width: MobileNet's alpha; multiplies the channels (rounded to multiples of 8).
      dropout: dropout before the classifier.
      weight_decay: L2 on convolution (not depthwise) and dense kernels.
      bn_momentum: BatchNormalization momentum.
      name: model name; default ``mobilenet_v2_{width}``.

    Raises:
      ValueError: width <= 0 or dropout outside [0, 1).
    """
    _check(width, dropout)
    f = _Layers(weight_decay, bn_momentum)
    inputs = keras.Input(input_shape, name="image")
    x = f.conv(inputs, make_divisible(32 * width), 3, 2, "stem_conv")
    x = layers.ReLU(6.0, name="stem_relu")(f.bn(x, "stem_bn"))
    blocks = [
        (expansion, filters, stride if r == 0 else 1)
        for expansion, filters, repeats, stride in _V2_GROUPS
        for r in range(repeats)
    ]
    ends = _stage_ends([s for _, _, s in blocks])
    stage = 0
    for i, (expansion, filters, stride) in enumerate(blocks):
        filters = make_divisible(int(filters * width))
        x = _inverted_residual(f, x, expansion, filters, stride, True, f"b{i + 1}")
        if i in ends:
            stage += 1
            x = layers.Activation("linear", name=f"block{stage}")(x)
    last = make_divisible(1280 * width) if width > 1.0 else 1280
    x = f.conv(x, last, 1, 1, "last_conv")
    x = layers.ReLU(6.0, name="last_relu")(f.bn(x, "last_bn"))
    return _head(f, inputs, x, num_classes, dropout, name or f"mobilenet_v2_{width:g}")


def mobilenet_v3_small(
    input_shape,
    num_classes,
    width=1.0,
    dropout=0.0,
    weight_decay=0.0,
    bn_momentum=0.99,
    name=None,
):
    """MobileNet v3-Small in its minimalistic form: ReLU instead of
    hard-swish, no squeeze-excite, 3x3 depthwise kernels throughout.

    The minimalistic form is the one TF-MOT's 8-bit QAT quantizes and TFLite
    Micro runs (hard-swish and the squeeze-excite's broadcast multiply are
    refused by one or the other). The 16-channel stem is not scaled by
    ``width``, as in ``tf_keras.applications``; the last 1x1 convolution has six
    times the last block's channels. Parameters at ``width=1.0``: 441,000 in
    the backbone (as ``tf_keras.applications.MobileNetV3Small(minimalistic=True,
    include_top=False, weights=None)``), 446,770 with the 10-class classifier
    at 32x32x3.

    Args:
      input_shape: (H, W, C), any size.
      num_classes: number of logits.
      width: MobileNet's alpha; multiplies the blocks' channels (rounded to
        multiples of 8).
      dropout: dropout before the classifier.
      weight_decay: L2 on convolution (not depthwise) and dense kernels.
      bn_momentum: BatchNormalization momentum.
      name: model name; default ``mobilenet_v3_small_{width}``.

    Raises:
      ValueError: width <= 0 or dropout outside [0, 1).
    """
    _check(width, dropout)
    f = _Layers(weight_decay, bn_momentum)
    inputs = keras.Input(input_shape, name="image")
    x = f.conv(inputs, 16, 3, 2, "stem_conv")
    x = layers.ReLU(name="stem_relu")(f.bn(x, "stem_bn"))
    ends = _stage_ends([s for _, _, s in _V3_SMALL_BLOCKS])
    stage = 0
    for i, (expansion, filters, stride) in enumerate(_V3_SMALL_BLOCKS):
        filters = make_divisible(filters * width)
        x = _inverted_residual(f, x, expansion, filters, stride, False, f"b{i + 1}")
        if i in ends:
            stage += 1
            x = layers.Activation("linear", name=f"block{stage}")(x)
    x = f.conv(x, make_divisible(x.shape[-1] * 6), 1, 1, "last_conv")
    x = layers.ReLU(name="last_relu")(f.bn(x, "last_bn"))
    return _head(f, inputs, x, num_classes, dropout, name or f"mobilenet_v3_small_{width:g}")
