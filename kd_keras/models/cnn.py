"""Student family: a plain CNN and its depthwise-separable ("cheap conv") twin.

Three blocks of (conv 3x3 -> BN -> ReLU) with (16, 32, 64) x ``width`` channels,
max-pooling between blocks, global average pooling and a dense classifier.
``cnn_dws`` keeps the first (full) convolution and replaces the others with a
depthwise 3x3 followed by a pointwise 1x1 convolution, written as two layers
(``DepthwiseConv2D`` + ``Conv2D``) so that TF-MOT quantizes both and prunes
and clusters the pointwise one (TF-MOT does not prune or cluster depthwise
kernels).
"""

from kd_keras.keras_compat import keras

layers = keras.layers
BASE_FILTERS = (16, 32, 64)


def _check(width, convs_per_block):
    if width <= 0:
        raise ValueError(f"width must be > 0, got {width}.")
    if convs_per_block < 1:
        raise ValueError(f"convs_per_block must be >= 1, got {convs_per_block}.")


def _build(
    input_shape,
    num_classes,
    width,
    convs_per_block,
    dropout,
    weight_decay,
    separable,
    name,
    bn_momentum=0.99,
):
    _check(width, convs_per_block)
    reg = keras.regularizers.l2(weight_decay) if weight_decay else None
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    for block, base in enumerate(BASE_FILTERS, start=1):
        filters = max(4, int(round(base * width)))
        if block > 1:
            x = layers.MaxPooling2D(2, name=f"pool{block - 1}")(x)
        for i in range(convs_per_block):
            prefix = f"b{block}c{i + 1}"
            if separable and not (block == 1 and i == 0):
                x = layers.DepthwiseConv2D(
                    3,
                    padding="same",
                    use_bias=False,
                    depthwise_regularizer=reg,
                    name=f"{prefix}_dw",
                )(x)
                x = layers.BatchNormalization(momentum=bn_momentum, name=f"{prefix}_dw_bn")(x)
                x = layers.ReLU(name=f"{prefix}_dw_relu")(x)
                x = layers.Conv2D(
                    filters, 1, use_bias=False, kernel_regularizer=reg, name=f"{prefix}_pw"
                )(x)
            else:
                x = layers.Conv2D(
                    filters,
                    3,
                    padding="same",
                    use_bias=False,
                    kernel_regularizer=reg,
                    name=f"{prefix}_conv",
                )(x)
            x = layers.BatchNormalization(momentum=bn_momentum, name=f"{prefix}_bn")(x)
            x = layers.ReLU(name=f"{prefix}_relu")(x)
        x = layers.Activation("linear", name=f"block{block}")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    if dropout:
        x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(num_classes, kernel_regularizer=reg, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def cnn(
    input_shape,
    num_classes,
    width=1.0,
    convs_per_block=1,
    dropout=0.0,
    weight_decay=0.0,
    bn_momentum=0.99,
    name=None,
):
    """Plain CNN student with a width multiplier.

    Args:
      input_shape: (H, W, C).
      num_classes: number of logits.
      width: multiplies the (16, 32, 64) block widths.
      convs_per_block: 3x3 convolutions per block.
      dropout: dropout before the classifier.
      weight_decay: L2 on kernels.
      bn_momentum: BatchNormalization momentum; 0.9 suits runs of only a few
        hundred steps, whose moving statistics 0.99 leaves unsettled.
      name: model name; default ``cnn_{width}``.
    """
    return _build(
        input_shape,
        num_classes,
        width,
        convs_per_block,
        dropout,
        weight_decay,
        separable=False,
        name=name or f"cnn_{width:g}",
        bn_momentum=bn_momentum,
    )


def cnn_dws(
    input_shape,
    num_classes,
    width=1.0,
    convs_per_block=1,
    dropout=0.0,
    weight_decay=0.0,
    bn_momentum=0.99,
    name=None,
):
    """Depthwise-separable CNN student; same arguments as :func:`cnn`."""
    return _build(
        input_shape,
        num_classes,
        width,
        convs_per_block,
        dropout,
        weight_decay,
        separable=True,
        name=name or f"cnn_dws_{width:g}",
        bn_momentum=bn_momentum,
    )
