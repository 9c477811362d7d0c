"""Which layers of a student pruning and clustering wrap.

TF-MOT prunes and clusters the kernels of convolutions and dense layers, but
not ``DepthwiseConv2D`` (its registries list no weights for it), so in a
depthwise-separable student only the pointwise 1x1 convolutions are pruned or
clustered. The defaults leave out the layers where a few weights matter most:

* pruning skips the first convolution (``b1c1_conv`` / ``stem_conv``: a handful
  of weights that see raw pixels; 2:4 over one input channel is meaningless)
  and the classifier (``logits``: one row per class);
* clustering skips the first convolution only. The classifier is a large
  share of a small student's weights and 16 shared values per kernel cost
  little accuracy there, as in TF-MOT's clustering guide, which clusters the
  whole model.
"""

from kd_keras.keras_compat import keras

layers = keras.layers

# Exact classes whose kernel TF-MOT both prunes (PruneRegistry) and clusters
# (ClusteringRegistry). Exact, because DepthwiseConv2D and friends subclass the
# convolution base class but are not wrapped by either registry.
CONV_TYPES = (
    layers.Conv1D,
    layers.Conv2D,
    layers.Conv3D,
    layers.SeparableConv1D,
    layers.SeparableConv2D,
)
KERNEL_TYPES = CONV_TYPES + (layers.Conv2DTranspose, layers.Conv3DTranspose, layers.Dense)
DEFAULT_SKIPS = {"prune": ("first_conv", "classifier"), "cluster": ("first_conv",)}


def wrappable_layers(model):
    """Names of the layers whose kernel pruning and clustering can wrap, in order."""
    return [l.name for l in model.layers if type(l) in KERNEL_TYPES]


def first_conv(model):
    """Name of the first convolution in topological order, or None."""
    for layer in model.layers:
        if type(layer) in CONV_TYPES:
            return layer.name
    return None


def classifier(model):
    """Name of the layer producing the model's (single) output if it has a kernel."""
    names = getattr(model, "output_names", None) or []
    if len(names) != 1:
        return None
    layer = model.get_layer(names[0])
    return layer.name if type(layer) in KERNEL_TYPES else None


def default_skip_layers(model, technique):
    """The layers `technique` ('prune' or 'cluster') leaves alone by default."""
    if technique not in DEFAULT_SKIPS:
        raise ValueError(f"technique must be one of {tuple(DEFAULT_SKIPS)}, got {technique!r}.")
    found = {"first_conv": first_conv(model), "classifier": classifier(model)}
    return tuple(found[k] for k in DEFAULT_SKIPS[technique] if found[k] is not None)


def select_layers(model, technique, skip_layers=None, include_layers=None):
    """Names of the layers `technique` wraps.

    Args:
      model: functional keras.Model without TF-MOT wrappers.
      technique: 'prune' or 'cluster'.
      skip_layers: names to leave out; None means the technique's default
        (:func:`default_skip_layers`).
      include_layers: if given, exactly these names (then `skip_layers` must be
        None).

    Returns:
      list of layer names, in the model's order.

    Raises:
      ValueError: a name that is not a layer of `model` or whose layer cannot
        be wrapped, both lists given, or nothing left to wrap.
    """
    if skip_layers is not None and include_layers is not None:
        raise ValueError("Give skip_layers or include_layers, not both.")
    candidates = wrappable_layers(model)
    all_names = [l.name for l in model.layers]
    for field, names in (("skip_layers", skip_layers), ("include_layers", include_layers)):
        for name in names or ():
            if name not in all_names:
                raise ValueError(
                    f"{field} names '{name}', which is not a layer of model '{model.name}'; "
                    f"its {technique}-able layers are {candidates}."
                )
            if field == "include_layers" and name not in candidates:
                raise ValueError(
                    f"include_layers names '{name}' "
                    f"({type(model.get_layer(name)).__name__}), which TF-MOT cannot "
                    f"{technique}; the {technique}-able layers of '{model.name}' are "
                    f"{candidates}."
                )
    if include_layers is not None:
        chosen = [n for n in candidates if n in include_layers]
    else:
        skip = default_skip_layers(model, technique) if skip_layers is None else skip_layers
        chosen = [n for n in candidates if n not in skip]
    if not chosen:
        raise ValueError(
            f"No layer of model '{model.name}' is left to {technique}: its {technique}-able "
            f"layers are {candidates}, skip_layers={skip_layers}, "
            f"include_layers={include_layers}."
        )
    return chosen
