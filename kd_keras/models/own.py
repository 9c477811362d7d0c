"""Students a user brings: a saved model file, or a ``MODULE:FUNCTION`` builder.

    model = own.build("my_student.keras", (49, 10, 1), 12)        # fresh weights
    model = own.build("my_student.keras", (49, 10, 1), 12, init="file")  # its weights
    model = own.build("my_models:tiny_cnn", (49, 10, 1), 12, {"width": 8})

A file is a ``tf_keras`` or Keras 3 ``.keras`` / ``.h5`` file or a ``tf_keras``
SavedModel directory (:func:`kd_keras.distill.teachers.load_saved`). Its
architecture is trained: from scratch (``init='scratch'``, the default: every
weight re-initialized by ``keras.models.clone_model``) or from the weights it
holds (``init='file'``). A Keras 3 model is rebuilt as a ``tf_keras`` model
from its config, layer by layer (the Distiller and TF-MOT are ``tf_keras``
code); a model that cannot be rebuilt so is refused with what to do instead.

A builder is a function of an importable module (on ``PYTHONPATH``) called as
``FUNCTION(input_shape, num_classes, **kwargs)``, like the registry's builders,
returning a ``tf_keras`` (or rebuildable Keras 3) model.

Either way the student must take the data's input shape and give one logit
per class; a final softmax is removed (the student's output is logits, as the
registry's are).
"""

import importlib
import inspect
import os
import re

import numpy as np

from kd_keras import models
from kd_keras.distill import teachers
from kd_keras.keras_compat import keras

INITS = ("scratch", "file")
NAS_PREFIX = "nas:"
# MODULE:FUNCTION, e.g. my_models:tiny_cnn or pkg.models:build.
BUILDER = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
FORMS = (
    "a registered model, nas:PATH, the path of a saved model (.keras, .h5 or a SavedModel "
    "directory) or MODULE:FUNCTION (a builder importable from PYTHONPATH)"
)


def kind(value):
    """'registry', 'nas', 'builder' or 'file': which form of ``--student`` `value` is."""
    value = str(value)
    if value in models.REGISTRY:
        return "registry"
    if value.startswith(NAS_PREFIX):
        return "nas"
    if BUILDER.match(value) and not os.path.exists(value):
        return "builder"
    return "file"


def looks_valid(value):
    """True when `value` has one of the forms (without importing or loading
    anything): the check of the flag's validator."""
    value = str(value or "").strip()
    form = kind(value)
    if form == "nas":
        return len(value) > len(NAS_PREFIX)
    if form == "file":
        return os.path.exists(value) or os.sep in value or value.endswith(teachers.FILE_SUFFIXES)
    return bool(value)


def check(value, init="scratch"):
    """Checks an own student's value cheaply: the file exists, the module
    imports and has the function, `init` fits the form.

    Raises:
      ValueError: saying what is wrong (the caller names the flag).
    """
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}.")
    form = kind(value)
    if init == "file" and form != "file":
        raise ValueError(
            f"keeping the student's weights needs a saved model file; {value!r} is a "
            f"{'builder' if form == 'builder' else 'registry or search'} student, trained "
            "from scratch."
        )
    if form == "builder":
        _function(value)
    elif form == "file" and not os.path.exists(value):
        if looks_valid(value):
            raise ValueError(f"student path {value} does not exist.")
        raise ValueError(f"{value!r} is none of: {FORMS}.")


def _function(value):
    """The builder function of a MODULE:FUNCTION value."""
    module_name, name = value.split(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001 — any import failure means an unusable builder.
        raise ValueError(
            f"cannot import module {module_name!r} ({teachers.short_error(e)}); put the "
            "directory holding it on PYTHONPATH."
        ) from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ValueError(f"module {module_name!r} has no function {name!r}.")
    return fn


def digest(value):
    """What identifies an own student's architecture (and weights) in run
    keys: the sha256 of the file, or of the builder module's source file."""
    if kind(value) == "file":
        return teachers.file_digest(value)
    fn = _function(value)
    source = inspect.getsourcefile(fn)
    return teachers.file_digest(source) if source else None


def build(value, input_shape, num_classes, kwargs=None, init="scratch"):
    """A ``tf_keras`` student of an own-student value, checked against the data.

    Args:
      value: a model file path or ``MODULE:FUNCTION``.
      input_shape: (H, W, C) of the data.
      num_classes: classes of the data.
      kwargs: keyword arguments of a builder (a file takes none).
      init: 'scratch' (fresh weights) or 'file' (the file's weights).

    Returns:
      A functional ``tf_keras`` model giving logits.

    Raises:
      ValueError: the student cannot be loaded, built or rebuilt as
        ``tf_keras``, or does not fit the data (saying both shapes).
    """
    check(value, init)
    input_shape, num_classes = tuple(int(d) for d in input_shape), int(num_classes)
    kwargs = dict(kwargs or {})
    if kind(value) == "builder":
        try:
            model = _function(value)(input_shape, num_classes, **kwargs)
        except Exception as e:  # noqa: BLE001 — a user builder may raise anything.
            raise ValueError(
                f"{value}{input_shape, num_classes} with kwargs {kwargs} raised "
                f"{teachers.short_error(e)}."
            ) from None
        what = f"the model {value} builds"
    else:
        if kwargs:
            raise ValueError(
                f"--student_args {kwargs} apply to a registry or MODULE:FUNCTION student; "
                "a saved model's architecture takes none."
            )
        model, fmt = teachers.load_saved(value)
        what = f"student {value}"
    if teachers.is_keras3_model(model):
        model = from_keras3(model, what, keep_weights=init == "file")
    elif not isinstance(model, keras.Model):
        raise ValueError(f"{what} is a {type(model).__name__}, not a Keras model.")
    elif kind(value) == "file" and init == "scratch":
        model = keras.models.clone_model(model)  # Same architecture, fresh weights.
    _check_shapes(model, what, input_shape, num_classes)
    return _logits(model, input_shape, num_classes)


def _check_shapes(model, what, input_shape, num_classes):
    ins, outs = model.inputs or [], model.outputs or []
    if len(ins) != 1 or len(outs) != 1:
        raise ValueError(
            f"{what} must have one input and one output; it has {len(ins)} and {len(outs)}."
        )
    t_in, t_out = tuple(model.input_shape[1:]), tuple(model.output_shape[1:])
    fits = len(t_in) == len(input_shape) and all(
        d is None or d == want for d, want in zip(t_in, input_shape)
    )
    if not fits or t_out != (num_classes,):
        raise ValueError(
            f"{what} takes inputs of shape {t_in} and gives outputs of shape {t_out}; the data "
            f"gives inputs of shape {input_shape} and {num_classes} classes, so the student "
            f"must take {input_shape} and give ({num_classes},)."
        )


def _logits(model, input_shape, num_classes):
    """`model` giving logits: a final softmax (a layer, or a Dense's activation) removed."""
    probe = np.random.default_rng(0).random((2,) + input_shape, dtype=np.float32)
    logits, _ = teachers.logits_model(model, model.name, input_shape, num_classes, probe)
    return logits


def from_keras3(model, what, keep_weights=False):
    """A Keras 3 functional or Sequential model rebuilt as a ``tf_keras`` one,
    layer by layer from its config (fresh weights, or the model's with
    `keep_weights`).

    Raises:
      ValueError: a layer ``tf_keras`` cannot rebuild, naming what to do.
    """
    try:
        rebuilt, pairs = _rebuild(model)
        if keep_weights:
            for new, old in pairs:
                new.set_weights(old.get_weights())
    except Exception as e:  # noqa: BLE001 — whatever fails, the model is not rebuildable.
        raise ValueError(
            f"{what} is a Keras 3 model that tf_keras cannot rebuild from its config "
            f"({teachers.short_error(e)}); save it with tf_keras, or give a "
            "MODULE:FUNCTION builder that returns a tf_keras model."
        ) from None
    return rebuilt


def _rebuild(model):
    """(tf_keras model, [(new layer, Keras 3 layer)]) of a Keras 3 model."""
    config = model.get_config()
    by_name = {layer.name: layer for layer in model.layers}
    tensors, pairs = {}, []
    for entry in config["layers"]:
        name = entry.get("name") or entry["config"]["name"]
        layer_config = _clean(entry["config"])
        if entry["class_name"] == "InputLayer":
            shape = layer_config.get("batch_shape") or layer_config.get("batch_input_shape")
            tensors[(name, 0, 0)] = keras.Input(tuple(shape[1:]), name=name)
            continue
        class_name = entry["class_name"]
        if not isinstance(getattr(keras.layers, class_name, None), type):
            raise ValueError(f"its layer {name!r} is a {class_name}, which tf_keras does not have")
        try:
            layer = keras.layers.deserialize(
                {"class_name": class_name, "config": _known(class_name, layer_config)}
            )
        except Exception as e:  # noqa: BLE001 — said with the layer's name.
            raise ValueError(
                f"its layer {name!r} ({class_name}): {teachers.short_error(e)}"
            ) from None
        nodes = entry.get("inbound_nodes")
        if nodes is None:  # Sequential: one chain.
            previous = tensors[next(reversed(tensors))] if tensors else None
            if previous is None:
                shape = model.inputs[0].shape[1:]
                previous = tensors[("input", 0, 0)] = keras.Input(tuple(shape), name="input")
            tensors[(name, 0, 0)] = layer(previous)
        else:
            for index, node in enumerate(nodes):
                args = _tensors(node.get("args", []), tensors)
                kwargs = _tensors(node.get("kwargs", {}), tensors)
                out = layer(*args, **kwargs)
                outs = out if isinstance(out, (list, tuple)) else [out]
                for i, tensor in enumerate(outs):
                    tensors[(name, index, i)] = tensor
        if name in by_name:
            pairs.append((layer, by_name[name]))
    if "input_layers" in config:
        ins = [tensors[tuple(k)] for k in _history_list(config["input_layers"])]
        outs = [tensors[tuple(k)] for k in _history_list(config["output_layers"])]
    else:
        ins, outs = [tensors[next(iter(tensors))]], [tensors[next(reversed(tensors))]]
    rebuilt = keras.Model(ins[0] if len(ins) == 1 else ins, outs[0] if len(outs) == 1 else outs)
    return rebuilt, pairs


# Keyword arguments every tf_keras layer takes (``Layer.__init__``).
LAYER_KWARGS = {"name", "trainable", "dtype", "dynamic", "input_dim", "input_shape", "batch_size"}


def _known(class_name, config):
    """`config` without the Keras 3 arguments the tf_keras layer does not take
    whose value is off (None or False: a feature not in use, such as
    ``quantization_config``); any other unknown argument is kept, and the
    rebuild then fails rather than silently changing the layer."""
    cls = getattr(keras.layers, class_name, None)
    if cls is None:
        return config
    allowed = LAYER_KWARGS | set(inspect.signature(cls.__init__).parameters)
    return {k: v for k, v in config.items() if k in allowed or v not in (None, False)}


def _history_list(value):
    """[[name, node, index], ...] of a config's input_layers / output_layers."""
    if value and isinstance(value[0], str):
        return [value]
    return value


def _tensors(node, tensors):
    """A node's arguments with Keras 3's ``__keras_tensor__`` entries replaced
    by the rebuilt tf_keras tensors."""
    if isinstance(node, dict):
        if node.get("class_name") == "__keras_tensor__":
            return tensors[tuple(node["config"]["keras_history"])]
        return {k: _tensors(v, tensors) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [_tensors(v, tensors) for v in node]
    return node


def _clean(config):
    """A Keras 3 layer config in tf_keras's terms: dtype policies as names,
    nested objects as {class_name, config} with only the arguments their
    tf_keras class takes."""
    if isinstance(config, (list, tuple)):
        return [_clean(v) for v in config]
    if not isinstance(config, dict):
        return config
    if config.get("class_name") in ("DTypePolicy", "FloatDTypePolicy"):
        return config["config"]["name"]
    if "class_name" in config and "config" in config and "module" in config:
        inner = _clean(config["config"])
        if isinstance(inner, dict) and config["module"].startswith("keras.initializers"):
            cls = getattr(keras.initializers, config["class_name"], None)
            if cls is not None:
                allowed = inspect.signature(cls.__init__).parameters
                inner = {k: v for k, v in inner.items() if k in allowed}
        return {"class_name": config["class_name"], "config": inner}
    return {k: _clean(v) for k, v in config.items() if k not in ("optional",)}
