"""A chain of compression techniques, trained one stage at a time.

A chain is an ordered subset of ``slim``, ``prune``, ``cluster``, ``qat``, in
that order: ``slim`` removes channels and rebuilds a smaller plain student
(``slim.py``), then TF-MOT's collaborative optimizations go prune ->
(sparsity-preserving) cluster -> (prune/cluster-preserving) QAT. Each
technique is one training stage; between stages the wrappers are stripped, so
the next stage wraps a plain functional student:

    techniques = validate_chain("prune,qat", config, model=student)
    model = student
    for technique, previous in stages(techniques):
        wrapped, callbacks = apply_stage(model, technique, config,
                                         steps_per_epoch, epochs, previous)
        training.fit(wrapped, ..., teacher=teacher or None,
                     extra_callbacks=callbacks)     # Distiller if KD is on
        model = strip(wrapped)
    # `model` is the compressed student: sparse / clustered float, or QAT.

``validate_chain`` raises every error it can before any training.
"""

import re

from tensorflow_model_optimization.python.core.quantization.keras.collab_opts.cluster_preserve import (  # noqa: E501
    cluster_utils,
)

from kd_keras.compression import cluster as cluster_lib
from kd_keras.compression import prune as prune_lib
from kd_keras.compression import quantize as quantize_lib
from kd_keras.compression import selection, slim, wrappers
from kd_keras.compression.config import TECHNIQUES, CompressionConfig


def parse_chain(spec):
    """'prune,qat' (or a sequence of names) -> ('prune', 'qat'); '' or None -> ()."""
    if spec is None:
        return ()
    if isinstance(spec, str):
        spec = spec.split(",")
    return tuple(str(t).strip().lower() for t in spec if str(t).strip())


def validate_chain(techniques, config, model=None):
    """Checks a chain and its config before anything is trained.

    Args:
      techniques: 'slim,prune,cluster,qat'-style string or sequence of names.
      config: CompressionConfig.
      model: optional student; when given, the layers pruning and clustering
        would wrap are resolved now, so bad layer names fail here too.

    Returns:
      the chain as a tuple of technique names.

    Raises:
      ValueError: unknown or repeated technique, techniques out of order
        (slim before prune before cluster before qat; qat last), a config
        that is not a CompressionConfig, or (with `model`) layer names that
        do not resolve, a layer slim cannot slice or a layer a technique
        cannot wrap (:func:`check_wraps`).
    """
    chain = parse_chain(techniques)
    if not isinstance(config, CompressionConfig):
        raise ValueError(f"config must be a CompressionConfig, got {type(config).__name__}.")
    for t in chain:
        if t not in TECHNIQUES:
            raise ValueError(
                f"Unknown technique '{t}' in chain {list(chain)}; allowed "
                f"techniques are {list(TECHNIQUES)}."
            )
    repeated = sorted({t for t in chain if chain.count(t) > 1})
    if repeated:
        raise ValueError(f"Chain {list(chain)} repeats {repeated}; each technique may appear once.")
    if "qat" in chain and chain[-1] != "qat":
        raise ValueError(
            f"Chain {list(chain)} puts 'qat' before {list(chain[chain.index('qat') + 1 :])}; "
            "qat must be last: pruning or clustering a fake-quantized model is not supported "
            "by TF-MOT, and the QAT model is what gets exported."
        )
    order = [t for t in TECHNIQUES if t in chain]
    if list(chain) != order:
        raise ValueError(
            f"Chain {list(chain)} is out of order; use {order}: slim first (it rebuilds "
            "a smaller plain model, which the other techniques then wrap), prune before "
            "cluster (sparsity-preserving clustering keeps the zeros, while pruning a "
            "clustered model would add a value to every kernel), and qat last."
        )
    if model is not None:
        for t in ("prune", "cluster"):
            if t in chain:
                selection.select_layers(model, t, config.skip_layers, config.include_layers)
        check_wraps(chain, config, model)
    return chain


# TF-MOT names the class of a layer it cannot wrap as "<class 'module.Name'>".
_CLASS_IN_ERROR = re.compile(r"<class '(?:[\w.]+\.)?(\w+)'>")


def check_wraps(techniques, config, model):
    """Applies the chain's stages to a copy of `model`, as training will
    (slim's surgery, then prune, cluster, qat in chain order, each with the
    scheme the chain gives it, stripped in between), so a layer a technique
    cannot slice or wrap is found before anything is trained. `model` is not
    modified.

    Raises:
      ValueError: one line naming the technique (and its QAT scheme), the
        layer (name and class) it cannot handle and the model.
    """
    current = model
    for technique, previous in stages(techniques):
        try:
            wrapped, _ = apply_stage(current, technique, config, 10, 1, previous)
        except ValueError as e:
            if technique == "slim":
                raise  # Its own message names the layer and what slim handles.
            raise _unwrappable(model, technique, previous, e) from None
        current = strip(wrapped)


def _unwrappable(model, technique, previous, error):
    """The ValueError of a stage that could not wrap `model`, naming the layer."""
    what = technique
    if technique == "qat":
        what = f"qat (its '{quantize_lib.scheme_after(previous)}' scheme)"
    found = _CLASS_IN_ERROR.search(str(error))
    if found is None:
        return ValueError(f"{what} cannot wrap model '{model.name}': {error}")
    cls = found.group(1)
    names = [layer.name for layer in model.layers if type(layer).__name__ == cls]
    layer = f"layer '{names[0]}' ({cls})" if names else f"a {cls} layer"
    more = f" and {len(names) - 1} more like it" if len(names) > 1 else ""
    return ValueError(
        f"{what} cannot wrap {layer}{more} of model '{model.name}': TF-MOT does not "
        f"support {cls} layers; leave {technique} out of the chain or use a student "
        f"without {cls} layers."
    )


def stages(techniques):
    """[(technique, previous techniques), ...] in training order, for :func:`apply_stage`."""
    chain = parse_chain(techniques)
    return [(t, chain[:i]) for i, t in enumerate(chain)]


def plan_for(model, config):
    """The :class:`~kd_keras.compression.slim.SlimPlan` of `config`'s slim
    settings for `model`: its fraction, or the smallest fraction reaching
    ``slim_target_macs``. A target in int8 bytes or latency needs a converted
    model, so it is met one layer up (``export.slim_target.plan``); here it
    falls back to the fraction (enough to check the surgery)."""
    return slim.plan_slim(
        model,
        config.slim_fraction,
        config.slim_criterion,
        config.slim_multiple,
        config.slim_target_macs,
    )


def apply_stage(
    model,
    technique,
    config,
    steps_per_epoch,
    epochs,
    previous=(),
    log_dir=None,
    slim_plan=None,
):
    """Wraps a copy of `model` for one training stage.

    Args:
      model: functional student without TF-MOT wrappers (not modified): the
        fresh or trained student for the first stage, ``strip(previous
        stage's model)`` afterwards.
      technique: 'slim' (a smaller copy without wrappers: the stage
        fine-tunes it), 'prune', 'cluster' or 'qat'.
      config: CompressionConfig.
      steps_per_epoch: optimizer steps per epoch of this stage (>= 1).
      epochs: epochs of this stage (>= 1); pruning schedules its steps over
        ``steps_per_epoch * epochs``.
      previous: techniques already applied and stripped, in order; they pick
        the sparsity-preserving clustering and the preserving QAT scheme.
      log_dir: pruning only: where ``PruningSummaries`` writes; None for none.
      slim_plan: slim only: the plan to apply (e.g. one meeting an int8
        target); None for :func:`plan_for`'s.

    Returns:
      (wrapped model, list of callbacks to pass to fit; pruning needs them,
      with or without the Distiller).

    Raises:
      ValueError: invalid technique, step counts, chain order or layer names,
        or a layer slim cannot slice.
    """
    validate_chain(tuple(previous) + (technique,), config)
    for name, value in (("steps_per_epoch", steps_per_epoch), ("epochs", epochs)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
    if technique == "slim":
        return slim.slim_model(model, slim_plan or plan_for(model, config)), []
    if technique == "prune":
        names = selection.select_layers(model, "prune", config.skip_layers, config.include_layers)
        schedule = prune_lib.schedule_for_stage(config, steps_per_epoch * epochs)
        wrapped = prune_lib.prune_model(model, names, schedule, config.pruning_structure)
        return wrapped, prune_lib.pruning_callbacks(log_dir)
    if technique == "cluster":
        names = selection.select_layers(model, "cluster", config.skip_layers, config.include_layers)
        wrapped = cluster_lib.cluster_model(
            model,
            names,
            config.clusters,
            config.cluster_init,
            config.cluster_per_channel,
            preserve_sparsity="prune" in previous,
        )
        return wrapped, []
    wrapped = quantize_lib.quantize_model(model, quantize_lib.scheme_after(previous))
    return wrapped, []


def strip(model):
    """Removes the pruning and clustering wrappers; returns plain layers with final weights.

    Quantization wrappers stay: the TFLite converter reads the learned ranges
    from them. A cluster-preserving QAT model also loses its CQAT-only
    training variables (``strip_clustering_cqat``, which edits those layers
    in place: strip once training is over). A model without wrappers is
    returned as is. Always strip before saving or exporting; a QAT model is
    loaded back inside ``quantize.quantize_scope()``.
    """
    kinds = wrappers.wrapper_kinds(model)
    if "prune" in kinds:
        model = prune_lib.strip_pruning(model)
    if "cluster" in kinds:
        model = cluster_lib.strip_clustering(model)
    if "quantize" in kinds and _has_cqat_variables(model):
        with quantize_lib.quantize_scope():
            model = cluster_utils.strip_clustering_cqat(model)
    return model


def _has_cqat_variables(model):
    return any(
        "cluster_centroids_tf" in v.name or "pulling_indices_tf" in v.name for v in model.weights
    )
