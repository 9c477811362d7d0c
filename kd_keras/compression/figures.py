"""What compression did to a model, measured on its weights and its TFLite file.

Every function returns plain JSON-able values (dicts of str / int / float /
bool / list), ready for results.json. Kernels are read through any TF-MOT
wrapper: pruning and clustering wrappers are stripped first, quantization
wrappers are looked through (their float kernels are what gets quantized).
"""

import numpy as np
from ai_edge_litert.interpreter import Interpreter
from tensorflow_model_optimization.python.core.quantization.keras import (
    quantize_layer,
    quantize_wrapper,
)

from kd_keras import keras_compat
from kd_keras.compression import cluster as cluster_lib
from kd_keras.compression import prune as prune_lib
from kd_keras.compression import wrappers
from kd_keras.compression.chain import strip
from kd_keras.keras_compat import tf

KERNEL_ATTRS = ("kernel", "depthwise_kernel", "pointwise_kernel")
_WEIGHT_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "CONV_3D")
_NO_COMPUTE_OPS = ("QUANTIZE", "DEQUANTIZE")


def _readable(model):
    """`model` without pruning / clustering wrappers; QAT layers untouched."""
    kinds = wrappers.wrapper_kinds(model)
    if "prune" in kinds:
        model = prune_lib.strip_pruning(model)
    if "cluster" in kinds:
        model = cluster_lib.strip_clustering(model)
    return model


def kernels(model):
    """[(layer name, attribute, numpy kernel)] of every kernel in `model`, in layer order."""
    out = []
    for layer in _readable(model).layers:
        inner = layer.layer if isinstance(layer, quantize_wrapper.QuantizeWrapper) else layer
        # Variables, not attributes: inside a QuantizeWrapper `inner.kernel` is
        # replaced by the fake-quantized tensor of the last call.
        for var in layer.weights:
            attr = var.name.rsplit("/", 1)[-1].split(":")[0]
            if attr in KERNEL_ATTRS:
                out.append((inner.name, attr, var.numpy()))
    return out


_PARAM_ATTRS = KERNEL_ATTRS + ("bias", "gamma", "beta", "moving_mean", "moving_variance")


def _layer_weights(model):
    """[(layer, inner layer name, attribute, variable)] of the model's own
    weights (not the quantizers' ranges), wrappers looked through."""
    out = []
    for layer in _readable(model).layers:
        inner = layer.layer if isinstance(layer, quantize_wrapper.QuantizeWrapper) else layer
        for var in layer.weights:
            attr = var.name.rsplit("/", 1)[-1].split(":")[0]
            if attr in _PARAM_ATTRS:
                out.append((layer, inner.name, attr, var))
    return out


def macs(model):
    """Multiply-accumulates of one example in the model's kernels, from the
    Keras layers' shapes: kernel size times output positions, for every
    convolution, depthwise convolution and dense layer (QAT wrappers looked
    through). Transposed convolutions are not counted right."""
    total = 0
    for layer, _, attr, var in _layer_weights(model):
        if attr in KERNEL_ATTRS:
            shape = layer.output_shape
            positions = int(np.prod(shape[1:-1])) if len(shape) > 2 else 1
            total += int(np.prod(var.shape)) * positions
    return total


def params(model):
    """Weights of the model's layers (kernels, biases, BatchNormalization's
    four vectors), without the ranges QAT adds."""
    return sum(int(np.prod(var.shape)) for _, _, _, var in _layer_weights(model))


def _out_channels(model):
    channels = {}
    for _, name, attr, var in _layer_weights(model):
        if attr == "depthwise_kernel":
            channels[name] = int(var.shape[-2] * var.shape[-1])
        elif attr in KERNEL_ATTRS:
            channels[name] = int(var.shape[-1])
    return channels


def slim_report(unslimmed, slimmed):
    """What slimming removed: params and MACs before and after, and the
    output channels of every kernel layer whose width changed.

    Args:
      unslimmed: the model before the slim stage (or a fresh one of its
        architecture: only shapes are read).
      slimmed: the slimmed model, possibly further wrapped or stripped.

    Returns:
      dict: params_before, params, params_ratio, macs_before, macs,
      macs_ratio, channels {layer: [before, after]}.
    """
    before, after = _out_channels(unslimmed), _out_channels(slimmed)
    p0, p1, m0, m1 = params(unslimmed), params(slimmed), macs(unslimmed), macs(slimmed)
    return {
        "params_before": p0,
        "params": p1,
        "params_ratio": p1 / p0 if p0 else None,
        "macs_before": m0,
        "macs": m1,
        "macs_ratio": m1 / m0 if m0 else None,
        "channels": {n: [c, after[n]] for n, c in before.items() if after.get(n, c) != c},
    }


def _key(name, attr):
    return name if attr == "kernel" else f"{name}/{attr}"


def sparsity_report(model, pruned_layers=None):
    """Fraction of exactly-zero weights per kernel and overall.

    Args:
      model: any model of the chain (wrapped or stripped).
      pruned_layers: names of the layers that were pruned. None means the
        layers holding a pruning wrapper if `model` has any, otherwise the
        kernels that contain at least one zero (an unpruned float kernel has
        none).

    Returns:
      dict: ``layers`` {kernel: {"weights", "zeros", "sparsity", "pruned"}},
      ``overall`` (zeros / weights over all kernels), ``pruned_overall`` (over
      the pruned kernels; None if there are none), ``weights``, ``zeros``.
    """
    if pruned_layers is None and "prune" in wrappers.wrapper_kinds(model):
        pruned_layers = [w.layer.name for w in prune_lib.prune_wrappers(model)]
    layers, tot, zer, p_tot, p_zer = {}, 0, 0, 0, 0
    for name, attr, k in kernels(model):
        n, z = int(k.size), int(np.count_nonzero(k == 0))
        pruned = (name in pruned_layers) if pruned_layers is not None else z > 0
        layers[_key(name, attr)] = {
            "weights": n,
            "zeros": z,
            "sparsity": z / n,
            "pruned": bool(pruned),
        }
        tot, zer = tot + n, zer + z
        if pruned:
            p_tot, p_zer = p_tot + n, p_zer + z
    return {
        "layers": layers,
        "weights": tot,
        "zeros": zer,
        "overall": zer / tot if tot else 0.0,
        "pruned_overall": p_zer / p_tot if p_tot else None,
    }


def unique_values_report(model, layers=None):
    """Number of distinct values in each kernel, and per output channel.

    Args:
      model: a (stripped) model.
      layers: optional names of the clustered layers; the maxima are then
        taken over their kernels only (the per-kernel table keeps them all).

    Returns:
      dict: ``layers`` {kernel: {"weights", "unique", "unique_per_channel"}}
      where ``unique_per_channel`` is the largest count over the kernel's last
      (output-channel) axis; ``max_unique`` and ``max_unique_per_channel`` over
      all kernels, or over those of `layers` when given.
    """
    table, selected = {}, []
    for name, attr, k in kernels(model):
        per_channel = max(np.unique(k[..., c]).size for c in range(k.shape[-1]))
        entry = {
            "weights": int(k.size),
            "unique": int(np.unique(k).size),
            "unique_per_channel": int(per_channel),
        }
        table[_key(name, attr)] = entry
        if layers is None or name in layers:
            selected.append(entry)
    return {
        "layers": table,
        "max_unique": max((v["unique"] for v in selected), default=0),
        "max_unique_per_channel": max((v["unique_per_channel"] for v in selected), default=0),
    }


def has_quantize_layers(model):
    """True when `model` (or a model nested in it) holds TF-MOT quantization layers."""
    return bool(
        wrappers.find_layers(
            model, (quantize_wrapper.QuantizeWrapper, quantize_layer.QuantizeLayer)
        )
    )


def int8_tflite_converts(model):
    """Converts `model` with ``Optimize.DEFAULT`` and inspects the TFLite ops.

    A QAT model converts to an int8 model: every convolution / dense op has
    int8 weights and int8 input activations. A float model gives a
    dynamic-range model instead (int8 weights, float activations), which is
    reported as ``int8 = False``.

    Args:
      model: keras model (a QAT model for int8 output); stripped with
        ``chain.strip`` first, so convert only once training is over.

    Returns:
      dict: ``converts`` (bool), ``error`` (str or None), ``bytes`` (size of the
      flatbuffer), ``weight_ops`` (number of conv / dense ops),
      ``int8_weight_ops`` (with int8 weights and int8 inputs), ``int8`` (all of
      them, and at least one), ``float_ops`` (sorted names of the ops that
      compute in float32, QUANTIZE / DEQUANTIZE excluded).
    """
    result = {
        "converts": False,
        "error": None,
        "bytes": 0,
        "weight_ops": 0,
        "int8_weight_ops": 0,
        "int8": False,
        "float_ops": [],
    }
    try:
        converter = keras_compat.tflite_converter(strip(model))
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        flatbuffer = converter.convert()
    except Exception as e:  # noqa: BLE001  the converter raises many types
        result["error"] = f"{type(e).__name__}: {e}"[:2000]
        return result
    interpreter = Interpreter(model_content=flatbuffer)
    dtype = {d["index"]: np.dtype(d["dtype"]) for d in interpreter.get_tensor_details()}
    float_ops = set()
    for op in interpreter._get_ops_details():  # no public per-op API in LiteRT
        ins = [i for i in op["inputs"] if i >= 0]
        if op["op_name"] in _WEIGHT_OPS and len(ins) >= 2:
            result["weight_ops"] += 1
            if dtype[ins[0]] == np.int8 and dtype[ins[1]] == np.int8:
                result["int8_weight_ops"] += 1
        if op["op_name"] not in _NO_COMPUTE_OPS and any(dtype[i] == np.float32 for i in ins):
            float_ops.add(op["op_name"])
    result.update(
        converts=True,
        bytes=len(flatbuffer),
        float_ops=sorted(float_ops),
        int8=result["weight_ops"] > 0 and result["int8_weight_ops"] == result["weight_ops"],
    )
    return result
