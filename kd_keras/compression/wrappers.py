"""Finding TF-MOT wrappers in a model, and copying a model before wrapping it.

TF-MOT's documented way to wrap chosen layers, ``clone_model(model,
clone_function=...)``, reuses the original layer objects, so training the
wrapped model would also change the model it came from. Every technique here
first takes a :func:`fresh_copy`, so the caller's model is never modified.
"""

from tensorflow_model_optimization.python.core.clustering.keras import cluster_wrapper
from tensorflow_model_optimization.python.core.quantization.keras import (
    quantize_layer,
    quantize_wrapper,
)
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper

from kd_keras.keras_compat import keras


def fresh_copy(model):
    """A functional copy of `model` with new layers holding equal weights."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def find_layers(model, cls):
    """All layers of type `cls` in `model`, recursing into nested models.

    Each layer appears once even when several nested models share it (the
    Distiller holds the student and a feature extractor built on the
    student's layers).
    """
    found, seen = [], set()

    def visit(layer):
        if id(layer) in seen:
            return
        seen.add(id(layer))
        if isinstance(layer, cls):
            found.append(layer)
        for sub in getattr(layer, "layers", None) or ():
            visit(sub)

    for layer in model.layers:
        visit(layer)
    return found


def wrapper_kinds(model):
    """Which TF-MOT wrappers `model` holds: a sorted list of 'prune', 'cluster', 'quantize'."""

    kinds = {
        "prune": pruning_wrapper.PruneLowMagnitude,
        "cluster": cluster_wrapper.ClusterWeights,
        "quantize": (quantize_wrapper.QuantizeWrapper, quantize_layer.QuantizeLayer),
    }
    return sorted(k for k, cls in kinds.items() if find_layers(model, cls))


def check_plain(model, what):
    """Raises ValueError unless `model` is a functional model without TF-MOT wrappers."""
    if not isinstance(model, keras.Model) or not getattr(model, "_is_graph_network", False):
        raise ValueError(f"{what} needs a functional keras.Model, got {type(model).__name__}.")
    kinds = wrapper_kinds(model)
    if kinds:
        raise ValueError(
            f"{what} needs a model without TF-MOT wrappers, but '{model.name}' holds "
            f"{kinds} wrappers; call kd_keras.compression.strip(model) after the "
            "previous stage first."
        )
