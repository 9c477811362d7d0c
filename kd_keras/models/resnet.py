"""Teacher family: pre-activation ResNet / Wide-ResNet with depth and width.

``depth`` counts the convolutions of the residual trunk plus stem and head as
in the WRN paper: ``depth = 6 * n + 4`` gives ``n`` basic blocks per stage.
``width`` multiplies the (16, 32, 64) channels of the three stages, so
``resnet(depth=16, width=4)`` is WRN-16-4.
"""

from kd_keras.keras_compat import keras

layers = keras.layers


def _block(x, filters, stride, weight_decay, name, bn_momentum=0.99):
    reg = keras.regularizers.l2(weight_decay) if weight_decay else None
    pre = layers.BatchNormalization(momentum=bn_momentum, name=f"{name}_bn1")(x)
    pre = layers.ReLU(name=f"{name}_relu1")(pre)
    if stride != 1 or x.shape[-1] != filters:
        shortcut = layers.Conv2D(
            filters, 1, strides=stride, use_bias=False, kernel_regularizer=reg, name=f"{name}_proj"
        )(pre)
    else:
        shortcut = x
    y = layers.Conv2D(
        filters,
        3,
        strides=stride,
        padding="same",
        use_bias=False,
        kernel_regularizer=reg,
        name=f"{name}_conv1",
    )(pre)
    y = layers.BatchNormalization(momentum=bn_momentum, name=f"{name}_bn2")(y)
    y = layers.ReLU(name=f"{name}_relu2")(y)
    y = layers.Conv2D(
        filters, 3, padding="same", use_bias=False, kernel_regularizer=reg, name=f"{name}_conv2"
    )(y)
    return layers.Add(name=f"{name}_add")([shortcut, y])


def resnet(
    input_shape,
    num_classes,
    depth=10,
    width: float = 1,
    stem_stride=1,
    weight_decay=5e-4,
    dropout=0.0,
    bn_momentum=0.99,
    name=None,
):
    """Builds a pre-activation (wide) ResNet.

    Args:
      input_shape: (H, W, C).
      num_classes: number of logits.
      depth: 6n + 4 with n >= 1 (10, 16, 22, 28, ...).
      width: channel multiplier (int >= 1 or float > 0).
      stem_stride: stride of the stem convolution; 2 runs the trunk at half
        resolution (4x fewer multiply-adds), which suits 28x28 inputs.
      weight_decay: L2 on convolution and dense kernels; 0 disables it.
      dropout: dropout rate before the classifier.
      bn_momentum: BatchNormalization momentum; 0.9 suits runs of only a few
        hundred steps, whose moving statistics 0.99 leaves unsettled.
      name: model name; default ``resnet{depth}_{width}``.

    Raises:
      ValueError: depth not of the form 6n + 4, or width <= 0.
    """
    if depth < 10 or (depth - 4) % 6:
        raise ValueError(f"depth must be 6n + 4 with n >= 1 (10, 16, 22, ...), got {depth}.")
    if width <= 0:
        raise ValueError(f"width must be > 0, got {width}.")
    if stem_stride not in (1, 2):
        raise ValueError(f"stem_stride must be 1 or 2, got {stem_stride}.")
    n = (depth - 4) // 6
    reg = keras.regularizers.l2(weight_decay) if weight_decay else None
    inputs = keras.Input(input_shape, name="image")
    x = layers.Conv2D(
        16,
        3,
        strides=stem_stride,
        padding="same",
        use_bias=False,
        kernel_regularizer=reg,
        name="stem_conv",
    )(inputs)
    for stage, base in enumerate((16, 32, 64), start=1):
        filters = max(8, int(round(base * width)))
        for b in range(n):
            stride = 2 if (stage > 1 and b == 0) else 1
            x = _block(
                x, filters, stride, weight_decay, name=f"s{stage}b{b + 1}", bn_momentum=bn_momentum
            )
        x = layers.Activation("linear", name=f"stage{stage}")(x)
    x = layers.BatchNormalization(momentum=bn_momentum, name="head_bn")(x)
    x = layers.ReLU(name="head_relu")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    if dropout:
        x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(num_classes, kernel_regularizer=reg, name="logits")(x)
    return keras.Model(inputs, outputs, name=name or f"resnet{depth}_{width:g}")
