"""Student family: the MLPerf Tiny reference models, for any input size.

* ``resnet8``: the image-classification reference (ResNet-8 on CIFAR-10,
  ``resnet_v1_eembc`` in mlcommons/tiny ``benchmark/training/image_classification
  /keras_model.py``, 16 first-stage filters as in the v0.5 to v1.1 releases).
* ``ds_cnn``: the keyword-spotting reference (DS-CNN on 49x10x1 MFCCs,
  ``ds_cnn`` in ``benchmark/training/keyword_spotting/keras_model.py``).

The layers, biases and L2 weight decay (1e-4) are the references'; the
parameter counts at the reference settings equal theirs exactly (a test
checks them). What differs: the output is logits rather than a softmax, the
final average pooling is global, so any input size works (the references pool
over a fixed window; for DS-CNN's 25x5 map that window is 24x5 and drops the
last row), and dropout is one ``dropout`` argument before the classifier
(DS-CNN's reference trains with 0.2 after the first convolution and 0.4
before pooling; ResNet-8's with none). The last layer of each stage is a
linear ``Activation`` named ``block1``, ``block2``, ... for the feature losses.
"""

from kd_keras.keras_compat import keras

layers = keras.layers


def _check(width, dropout):
    if width <= 0:
        raise ValueError(f"width must be > 0, got {width}.")
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}.")


def _head(inputs, x, num_classes, dropout, name):
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    if dropout:
        x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def resnet8(
    input_shape,
    num_classes,
    width=1.0,
    dropout=0.0,
    weight_decay=1e-4,
    bn_momentum=0.99,
    name=None,
):
    """ResNet-8 (ResNet v1, post-activation): a 3x3 convolution and three
    stacks of one basic block each, with (16, 32, 64) x ``width`` filters, the
    second and third stacks at stride 2 with a 1x1 projection shortcut.

    Parameters at the reference settings (32x32x3, 10 classes, ``width=1.0``):
    78,666 (78,186 trainable), as the MLPerf Tiny reference model.

    Args:
      input_shape: (H, W, C), any size.
      num_classes: number of logits.
      width: multiplies the (16, 32, 64) filters.
      dropout: dropout before the classifier.
      weight_decay: L2 on convolution kernels (the reference's 1e-4; the
        reference leaves the classifier without it).
      bn_momentum: BatchNormalization momentum.
      name: model name; default ``resnet8_{width}``.

    Raises:
      ValueError: width <= 0 or dropout outside [0, 1).
    """
    _check(width, dropout)
    reg = keras.regularizers.l2(weight_decay) if weight_decay else None

    def conv(x, filters, kernel, stride, name):
        return layers.Conv2D(
            filters,
            kernel,
            strides=stride,
            padding="same",
            kernel_initializer="he_normal",
            kernel_regularizer=reg,
            name=name,
        )(x)

    def bn(x, name):
        return layers.BatchNormalization(momentum=bn_momentum, name=name)(x)

    inputs = keras.Input(input_shape, name="image")
    x = conv(inputs, max(4, int(round(16 * width))), 3, 1, "stem_conv")
    x = layers.ReLU(name="stem_relu")(bn(x, "stem_bn"))
    for stage, base in enumerate((16, 32, 64), start=1):
        filters = max(4, int(round(base * width)))
        stride = 1 if stage == 1 else 2
        p = f"s{stage}"
        y = conv(x, filters, 3, stride, f"{p}_conv1")
        y = layers.ReLU(name=f"{p}_relu1")(bn(y, f"{p}_bn1"))
        y = bn(conv(y, filters, 3, 1, f"{p}_conv2"), f"{p}_bn2")
        if stride != 1 or x.shape[-1] != filters:
            x = conv(x, filters, 1, stride, f"{p}_proj")
        x = layers.Add(name=f"{p}_add")([x, y])
        x = layers.ReLU(name=f"{p}_relu2")(x)
        x = layers.Activation("linear", name=f"block{stage}")(x)
    return _head(inputs, x, num_classes, dropout, name or f"resnet8_{width:g}")


def ds_cnn(
    input_shape,
    num_classes,
    width=1.0,
    dropout=0.0,
    weight_decay=1e-4,
    bn_momentum=0.99,
    name=None,
):
    """DS-CNN: a 10x4 convolution at stride 2 and four depthwise-separable
    blocks (depthwise 3x3 -> BN -> ReLU -> pointwise 1x1 -> BN -> ReLU), all
    64 x ``width`` channels wide.

    Parameters at the reference settings (49x10x1, 12 classes, ``width=1.0``):
    24,908 (23,756 trainable), as the MLPerf Tiny reference model.

    Args:
      input_shape: (H, W, C), any size (the reference: 49 frames x 10 MFCCs x 1).
      num_classes: number of logits.
      width: multiplies the 64 channels.
      dropout: dropout before the classifier.
      weight_decay: L2 on the convolution kernels but not the depthwise ones
        (the reference passes ``kernel_regularizer`` to ``DepthwiseConv2D``,
        which Keras does not apply to its depthwise kernel).
      bn_momentum: BatchNormalization momentum.
      name: model name; default ``ds_cnn_{width}``.

    Raises:
      ValueError: width <= 0 or dropout outside [0, 1).
    """
    _check(width, dropout)
    reg = keras.regularizers.l2(weight_decay) if weight_decay else None
    filters = max(4, int(round(64 * width)))

    def bn_relu(x, name):
        x = layers.BatchNormalization(momentum=bn_momentum, name=f"{name}_bn")(x)
        return layers.ReLU(name=f"{name}_relu")(x)

    inputs = keras.Input(input_shape, name="image")
    x = layers.Conv2D(
        filters, (10, 4), strides=2, padding="same", kernel_regularizer=reg, name="stem_conv"
    )(inputs)
    x = bn_relu(x, "stem")
    for block in range(1, 5):
        x = layers.DepthwiseConv2D(3, padding="same", name=f"b{block}_dw")(x)
        x = bn_relu(x, f"b{block}_dw")
        x = layers.Conv2D(filters, 1, kernel_regularizer=reg, name=f"b{block}_pw")(x)
        x = bn_relu(x, f"b{block}_pw")
        x = layers.Activation("linear", name=f"block{block}")(x)
    return _head(inputs, x, num_classes, dropout, name or f"ds_cnn_{width:g}")
