"""Quantization-aware training (QAT) with TF-MOT's 8-bit schemes.

    qat_student = quantize_model(student)                  # plain QAT
    qat_student = quantize_model(strip(pruned), "prune_preserve")
    Distiller(qat_student, teacher).fit(...)              # no callback needed
    # export: TFLiteConverter.from_keras_model(qat_student), Optimize.DEFAULT

Schemes (``tfmot.quantization.keras`` and ``tfmot.experimental.combine``):

* 'default': ``Default8BitQuantizeScheme``, what TF-MOT's own ``quantize_model`` uses.
* 'prune_preserve' (PQAT): ``Default8BitPrunePreserveQuantizeScheme``; zero
  weights stay zero.
* 'cluster_preserve' (CQAT): ``Default8BitClusterPreserveQuantizeScheme``;
  each kernel keeps its few shared values.
* 'prune_cluster_preserve' (PCQAT): the same with ``preserve_sparsity=True``.

Two TF-MOT 0.8.1 behaviours of the cluster-preserving schemes:

* Its registry hands every Conv2D (and every Dense) one shared weight
  quantizer, and that quantizer switches its own ``preserve_sparsity`` off
  when it meets a kernel without zeros, such as the unpruned first
  convolution: from then on no layer keeps its zeros (PCQAT silently becomes
  CQAT and the pruned zeros come back). :class:`ClusterPreserveScheme` gives
  each layer its own copy of the quantizer.
* For a Conv2D whose output channels all hold about the same number of
  distinct values (always the case after clustering), CQAT keeps one set of
  centroids per output channel and trains them apart, so a kernel ends with
  at most `clusters` values per channel rather than per kernel.

Batch normalization: the default scheme quantizes a BatchNormalization only
after a Conv2D / DepthwiseConv2D / Dense with a linear activation (it then
places no fake-quant between them; the converter folds BN into the
convolution). A BN elsewhere, like the pre-activation BNs of the ResNet family
(after an Add), makes TF-MOT raise "not supported". Here such BNs get
:class:`OutputQuantizeConfig` (quantize the output only), so those students
quantize too; in the int8 TFLite model each becomes a float MUL/ADD between
DEQUANTIZE and QUANTIZE (see ``measure.int8_tflite_converts``'s
``float_ops``), while every convolution and dense layer is int8.
"""

import copy

import tensorflow_model_optimization as tfmot
from tensorflow_model_optimization.python.core.quantization.keras.collab_opts.cluster_preserve import (  # noqa: E501
    cluster_preserve_quantize_registry as cpq_registry,
)

from kd_keras.compression import wrappers
from kd_keras.keras_compat import keras

qkeras = tfmot.quantization.keras
SCHEMES = ("default", "prune_preserve", "cluster_preserve", "prune_cluster_preserve")
# Layer classes TF-MOT's default 8-bit transforms pair with a following BN.
_BN_PARTNERS = ("Conv2D", "DepthwiseConv2D", "Dense")


class OutputQuantizeConfig(qkeras.QuantizeConfig):
    """Quantizes only a layer's output (8 bits, per tensor, asymmetric)."""

    def get_weights_and_quantizers(self, layer):
        return []

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        pass

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return [
            qkeras.quantizers.MovingAverageQuantizer(
                num_bits=8, per_axis=False, symmetric=False, narrow_range=False
            )
        ]

    def get_config(self):
        return {}


class _PerLayerClusterPreserveRegistry(cpq_registry.Default8bitClusterPreserveQuantizeRegistry):
    """TF-MOT's cluster-preserve registry with one weight quantizer per layer."""

    def get_quantize_config(self, layer):
        config = super().get_quantize_config(layer)
        quantizer = getattr(config, "weight_quantizer", None)
        if isinstance(quantizer, cpq_registry.ClusterPreserveDefaultWeightsQuantizer):
            config.weight_quantizer = copy.copy(quantizer)
        return config


class ClusterPreserveScheme(tfmot.experimental.combine.Default8BitClusterPreserveQuantizeScheme):
    """``Default8BitClusterPreserveQuantizeScheme`` without shared quantizer state.

    Args:
      preserve_sparsity: also keep zero weights at zero (PCQAT).
    """

    def get_quantize_registry(self):
        return _PerLayerClusterPreserveRegistry(self.preserve_sparsity)


def quantize_scope():
    """The ``quantize_scope`` needed to load or clone a model made by :func:`quantize_model`."""
    return qkeras.quantize_scope({"OutputQuantizeConfig": OutputQuantizeConfig})


def scheme(name):
    """The TF-MOT QuantizeScheme called `name` (one of SCHEMES).

    Raises:
      ValueError: unknown name.
    """
    combine = tfmot.experimental.combine
    schemes = {
        "default": lambda: qkeras.default_8bit.Default8BitQuantizeScheme(),
        "prune_preserve": lambda: combine.Default8BitPrunePreserveQuantizeScheme(),
        "cluster_preserve": lambda: ClusterPreserveScheme(preserve_sparsity=False),
        "prune_cluster_preserve": lambda: ClusterPreserveScheme(preserve_sparsity=True),
    }
    if name not in schemes:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {name!r}.")
    return schemes[name]()


def scheme_after(previous):
    """The scheme that preserves what the `previous` techniques did.

    Args:
      previous: techniques applied (and stripped) before QAT, e.g. ('prune',).
    """
    previous = set(previous)
    if "cluster" in previous:
        return "prune_cluster_preserve" if "prune" in previous else "cluster_preserve"
    return "prune_preserve" if "prune" in previous else "default"


def standalone_batch_norms(model):
    """Names of the BatchNormalization layers TF-MOT's transforms do not pair with a layer.

    TF-MOT pairs a BN with the Conv2D / DepthwiseConv2D / Dense (linear
    activation) that feeds it when that layer feeds nothing else. Read from
    ``model.get_config()``, so only `model`'s own graph counts (a layer shared
    with another model has more inbound nodes).
    """
    config = model.get_config()
    layers = {l["name"]: l for l in config["layers"]}
    sources = {
        name: [inbound[0] for node in l["inbound_nodes"] for inbound in node]
        for name, l in layers.items()
    }
    consumers = {}  # TF-MOT pairs a BN only with a layer that feeds nothing else
    for srcs in list(sources.values()) + [[o[0] for o in config["output_layers"]]]:
        for src in srcs:
            consumers[src] = consumers.get(src, 0) + 1
    names = []
    for name, layer in layers.items():
        if layer["class_name"] != "BatchNormalization":
            continue
        source = layers.get(sources[name][0]) if len(sources[name]) == 1 else None
        paired = (
            source is not None
            and source["class_name"] in _BN_PARTNERS
            and source["config"].get("activation") == "linear"
            and consumers.get(source["name"]) == 1
        )
        if not paired:
            names.append(name)
    return names


def quantize_model(model, scheme_name="default"):
    """A quantization-aware copy of `model` (8-bit weights and activations).

    Args:
      model: functional keras.Model without TF-MOT wrappers (not modified);
        after pruning or clustering, strip them first.
      scheme_name: one of SCHEMES (see :func:`scheme_after`).

    Returns:
      the QAT model (a new functional keras.Model of ``QuantizeWrapperV2``).

    Raises:
      ValueError: wrapped `model`, unknown scheme, or a layer TF-MOT cannot
        quantize (the message names it).
    """
    wrappers.check_plain(model, "quantize_model()")
    quant_scheme = scheme(scheme_name)
    plain = wrappers.fresh_copy(model)
    lone_bns = set(standalone_batch_norms(plain))

    def annotate(layer):
        if layer.name in lone_bns:
            return qkeras.quantize_annotate_layer(layer, quantize_config=OutputQuantizeConfig())
        return layer

    annotated = qkeras.quantize_annotate_model(
        keras.models.clone_model(plain, clone_function=annotate)
    )
    with quantize_scope():
        try:
            return qkeras.quantize_apply(annotated, quant_scheme)
        except (RuntimeError, ValueError) as e:
            raise ValueError(
                f"Model '{model.name}' cannot be quantized with the '{scheme_name}' 8-bit "
                f"scheme: {e}"
            ) from e
