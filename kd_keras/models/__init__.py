"""Model registry: a name maps to a builder ``fn(input_shape, num_classes, **kw)``.

Every builder returns a functional ``keras.Model`` whose output is logits (no
softmax), so the Distiller, TF-MOT and the TFLite converter all accept it.
Intermediate layers the feature losses can use are named ``stage1``,
``stage2``, ... (teachers) and ``block1``, ``block2``, ... (students).
"""

from kd_keras.models import cnn, resnet

REGISTRY = {
    "resnet": resnet.resnet,
    "cnn": cnn.cnn,
    "cnn_dws": cnn.cnn_dws,
}


def build(name, input_shape, num_classes, **kwargs):
    """Builds a registered model.

    Args:
      name: a key of REGISTRY.
      input_shape: (H, W, C) of one example.
      num_classes: number of output logits.
      **kwargs: the builder's own hyperparameters (depth, width, ...).

    Raises:
      ValueError: unknown name, or a hyperparameter the builder rejects.
    """
    if name not in REGISTRY:
        raise ValueError(f"Unknown model '{name}'; registered: {sorted(REGISTRY)}.")
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (H, W, C), got {input_shape}.")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}.")
    return REGISTRY[name](tuple(input_shape), int(num_classes), **kwargs)
