"""Model registry: a name maps to a builder ``fn(input_shape, num_classes, **kw)``.

Every builder returns a functional ``keras.Model`` whose output is logits (no
softmax), so the Distiller, TF-MOT and the TFLite converter all accept it.
Intermediate layers the feature losses can use are named ``stage1``,
``stage2``, ... (teachers) and ``block1``, ``block2``, ... (students).
"""

import inspect

from kd_keras.models import cnn, mobilenet, resnet, tiny

REGISTRY = {
    "resnet": resnet.resnet,
    "cnn": cnn.cnn,
    "cnn_dws": cnn.cnn_dws,
    "mobilenet_v1": mobilenet.mobilenet_v1,
    "mobilenet_v2": mobilenet.mobilenet_v2,
    "mobilenet_v3_small": mobilenet.mobilenet_v3_small,
    "resnet8": tiny.resnet8,
    "ds_cnn": tiny.ds_cnn,
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


def _kind(parameter):
    """The type a builder's keyword argument takes: its annotation, else its
    default's type (a None default: text, such as a model name)."""
    if isinstance(parameter.annotation, type) and parameter.annotation is not parameter.empty:
        return parameter.annotation
    default = parameter.default
    return str if default is None else type(default)


def _fits(value, kind):
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, kind)


def arguments(name):
    """{keyword: (type, default)} of registered model `name`'s builder (its
    hyperparameters; not input_shape and num_classes)."""
    signature = inspect.signature(REGISTRY[name])
    return {
        k: (_kind(p), p.default)
        for k, p in signature.parameters.items()
        if p.default is not inspect.Parameter.empty
    }


def check_kwargs(name, kwargs):
    """Checks builder kwargs against registered model `name`'s keyword
    arguments, by name and type, without building anything.

    Raises:
      ValueError: an unknown name (saying the allowed ones) or a value of
        the wrong type (saying the expected type and the default).
    """
    allowed = arguments(name)
    for key, value in kwargs.items():
        if key not in allowed:
            raise ValueError(f"{name!r} takes no argument {key!r}; it takes {', '.join(allowed)}.")
        kind, default = allowed[key]
        if not _fits(value, kind):
            raise ValueError(
                f"{key}={value!r} is not {_a(kind.__name__)}; {name!r} takes {key} as "
                f"{_a(kind.__name__)} (default {default!r})."
            )


def _a(noun):
    return ("an " if noun[0] in "aeiou" else "a ") + noun
