"""kd_keras: knowledge distillation in Keras that stacks with compression."""

from kd_keras.distill import teachers as _teachers
from kd_keras.distill.distiller import Distiller
from kd_keras.distill.losses import AttentionTransfer, HintLoss, LogitsKD


def load_teacher(
    path, input_shape, num_classes, input_range="0,1", custom_objects=None, sample=None
):
    """A saved model as a frozen teacher taking [0, 1] images and giving logits.

    Reads what ``python -m kd_keras.main --teacher=PATH`` reads: a ``.keras``
    or ``.h5`` file of ``tf_keras`` or Keras 3, or a SavedModel directory.

        teacher = kd_keras.load_teacher("my_teacher.keras", (28, 28, 1), 10,
                                        input_range="0,255", sample=(x_val, y_val))

    Args:
      path: the saved model.
      input_shape: (H, W, C) of the images it will be given.
      num_classes: classes (width of its output).
      input_range: the value range the saved model expects: '0,1', '0,255',
        '-1,1' or a (low, high) pair. The returned model rescales [0, 1]
        inputs to it.
      custom_objects: {class name: class} of custom layers the file uses
        that are not registered with Keras.
      sample: optional (images, labels), uint8 images or floats in [0, 1]:
        the teacher's accuracy on them shows whether it expects another
        input range than `input_range`.

    Returns:
      A ``tf_keras`` model, not trainable: [0, 1] images -> logits (a model
      ending in softmax gives its pre-softmax tensor or the log of its
      probabilities).

    Raises:
      ValueError: a missing or unreadable file, shapes that do not fit, or
        (with `sample`) a teacher that plainly expects another input range,
        naming it.
    """
    model, _ = _teachers.open_teacher(
        path,
        input_shape,
        num_classes,
        input_range,
        custom_objects=custom_objects,
        sample=sample,
        fix='input_range="{}"',
    )
    return model


__all__ = ["Distiller", "LogitsKD", "HintLoss", "AttentionTransfer", "load_teacher"]
