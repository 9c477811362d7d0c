"""Teachers a user already has: a saved model turned into a frozen logits model.

    model, report = teachers.load_teacher("my_teacher.keras", (28, 28, 1), 10)

accepts

* a ``tf_keras`` ``.keras`` or ``.h5`` file (and a ``tf_keras`` SavedModel
  directory): loaded as it is, its layers readable by feature losses;
* a Keras 3 ``.keras`` (or ``.h5``) file, which ``tf_keras`` cannot
  deserialize: Keras 3 loads it in the same process and it runs, frozen, inside
  one :class:`ForeignModel` layer of a ``tf_keras`` model;
* a SavedModel directory without Keras metadata, such as Keras 3's
  ``model.export()`` writes: its ``serve`` endpoint (or ``serving_default``
  signature) runs inside a :class:`ForeignModel` layer.

The returned model takes float32 images in [0, 1] (what
``kd_keras.data.preprocess`` gives) and returns logits. A model ending in
softmax gives its pre-softmax tensor (a ``tf_keras`` model whose last layer is
a softmax) or the log of its clipped probabilities (any model whose outputs on
sample images are rows of non-negative numbers summing to 1); the report says
which. A foreign model is one opaque layer: losses that read intermediate
layers (hint, attention) cannot use it, and ``find_layer`` says so.

The report's ``digest`` (sha256 of the file, or of every file of a
directory) identifies the teacher in the run cache: students distilled from it
key their runs by it.
"""

import hashlib
import json
import os
import zipfile

import numpy as np

from kd_keras import models
from kd_keras.keras_compat import keras, keras3, tf

FILE_SUFFIXES = (".keras", ".h5", ".hdf5")
DIGEST_LENGTH = 16
# Rows of non-negative numbers summing to 1 within this are probabilities.
PROB_TOLERANCE = 1e-3
PROBE_IMAGES = 8


class ForeignModel(keras.layers.Layer):
    """A model ``tf_keras`` cannot represent (Keras 3, a SavedModel), run frozen.

    Args:
      fn: a callable mapping a float32 image batch to one output tensor.
      num_classes: width of that output.
      log_probs: the output is probabilities; return the log of them (clipped
        to ``keras.backend.epsilon()``) as logits.
      source: where the model came from (for messages).
    """

    opaque = True  # Its intermediate layers cannot be read.

    def __init__(self, fn, num_classes, log_probs=False, source="", **kwargs):
        super().__init__(trainable=False, **kwargs)
        # Not tracked: the foreign variables belong to the foreign model, and
        # a frozen teacher's weights are never saved with a student's run.
        self._setattr_tracking = False
        self.fn = fn
        self._setattr_tracking = True
        self.num_classes = int(num_classes)
        self.log_probs = bool(log_probs)
        self.source = source

    def call(self, inputs):
        out = tf.convert_to_tensor(self.fn(tf.cast(inputs, tf.float32)))
        out = tf.cast(out, tf.float32)
        if self.log_probs:
            out = tf.math.log(tf.clip_by_value(out, keras.backend.epsilon(), 1.0))
        return tf.ensure_shape(out, [None, self.num_classes])

    def compute_output_shape(self, input_shape):
        return tf.TensorShape([input_shape[0], self.num_classes])

    def get_config(self):
        raise NotImplementedError(
            f"A teacher loaded from {self.source} runs a foreign model; it cannot be "
            "serialized. Save the original file instead."
        )


class LogOfProbabilities(keras.layers.Layer):
    """Probabilities -> log of them clipped to ``keras.backend.epsilon()``: logits."""

    def call(self, inputs):
        return tf.math.log(tf.clip_by_value(inputs, keras.backend.epsilon(), 1.0))


def parse_teacher(value):
    """Splits a ``--teacher`` value into a registry name or teacher paths.

    Args:
      value: a ``kd_keras.models`` registry name, or one or more
        comma-separated paths of saved models.

    Returns:
      (name, []) for a registry name, (None, [paths]) for paths.

    Raises:
      ValueError: a path that does not exist, or an item that is neither a
        registered name nor a path.
    """
    value = str(value or "").strip()
    if value in models.REGISTRY:
        return value, []
    paths = [p.strip() for p in value.split(",")]
    for path in paths:
        if not path:
            raise ValueError(f"{value!r} has an empty item; give a name or comma-separated paths.")
        if os.path.exists(path):
            continue
        if os.sep in path or path.endswith(FILE_SUFFIXES):
            raise ValueError(f"teacher path {path} does not exist.")
        raise ValueError(
            f"{path!r} is neither a registered model {sorted(models.REGISTRY)} nor the path "
            "of a saved model (.keras, .h5 or a SavedModel directory)."
        )
    return None, paths


def file_digest(path, length=DIGEST_LENGTH):
    """sha256 of a file's bytes, or of a directory's files (relative paths and bytes)."""
    h = hashlib.sha256()
    if os.path.isdir(path):
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                full = os.path.join(root, name)
                h.update(os.path.relpath(full, path).encode() + b"\0")
                _hash_file(h, full)
    else:
        _hash_file(h, path)
    return h.hexdigest()[:length]


def _hash_file(h, path):
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)


def detect_format(path):
    """'tf_keras', 'keras3' or 'saved_model' for a teacher path.

    A ``.keras`` file says which Keras wrote it in its ``metadata.json``; an
    ``.h5`` file is tried with ``tf_keras`` first; a directory is a
    SavedModel, read by ``tf_keras`` when it holds Keras metadata.

    Raises:
      ValueError: not a ``.keras`` / ``.h5`` file or a SavedModel directory.
    """
    if os.path.isdir(path):
        if not os.path.exists(os.path.join(path, "saved_model.pb")):
            raise ValueError(f"{path} is a directory without saved_model.pb: not a SavedModel.")
        has_meta = os.path.exists(os.path.join(path, "keras_metadata.pb"))
        return "tf_keras" if has_meta else "saved_model"
    if path.endswith(".keras"):
        try:
            with zipfile.ZipFile(path) as z:
                meta = json.loads(z.read("metadata.json"))
        except (zipfile.BadZipFile, KeyError, ValueError) as e:
            raise ValueError(f"{path} is not a .keras archive ({e}).") from None
        version = str(meta.get("keras_version", ""))
        return "keras3" if version.split(".")[0] == "3" else "tf_keras"
    if path.endswith((".h5", ".hdf5")):
        return "tf_keras"
    raise ValueError(f"{path}: a teacher is a .keras or .h5 file or a SavedModel directory.")


def load_teacher(path, input_shape, num_classes, sample_images=None):
    """Loads a saved model as a frozen teacher giving logits.

    Args:
      path: a ``.keras`` / ``.h5`` file or a SavedModel directory.
      input_shape: (H, W, C) of the data's images.
      num_classes: classes of the data.
      sample_images: float32 images in [0, 1] on which a foreign model's
        outputs are checked for probabilities (default: a few seeded uniform
        random images of `input_shape`).

    Returns:
      (model, report). `model` is a ``tf_keras`` functional model, input
      `input_shape`, output (num_classes,) logits, not trainable. `report` is
      a dict: path, format, digest, params (None if unknown), softmax ('no',
      'pre-softmax tensor' or 'log of probabilities'), layers_readable.

    Raises:
      ValueError: the path is missing or unreadable, or the teacher's input
        shape or class count differs from the data's (naming both).
    """
    if not os.path.exists(path):
        raise ValueError(f"teacher path {path} does not exist.")
    input_shape, num_classes = tuple(int(d) for d in input_shape), int(num_classes)
    fmt = detect_format(path)
    if sample_images is None:
        rng = np.random.default_rng(0)
        sample_images = rng.random((PROBE_IMAGES,) + input_shape, dtype=np.float32)
    sample_images = tf.convert_to_tensor(sample_images, tf.float32)
    if fmt == "tf_keras":
        try:
            model = keras.models.load_model(path, compile=False)
        except Exception as e:  # noqa: BLE001 — an .h5 file may come from Keras 3.
            if not path.endswith((".h5", ".hdf5")):
                raise _unreadable(path, "tf_keras", e) from None
            fmt = "keras3"
        else:
            model, softmax = _tf_keras_logits(model, path, input_shape, num_classes, sample_images)
            layers_readable = True
            params = int(model.count_params())
    if fmt != "tf_keras":
        fn, t_in, params = _foreign(path, fmt)
        _check_input(path, t_in, input_shape, num_classes, fn, sample_images)
        out = np.asarray(fn(sample_images))
        _check_output(path, input_shape, out.shape[1:], input_shape, num_classes)
        probs = is_probabilities(out)
        inputs = keras.Input(input_shape, name="image")
        layer = ForeignModel(fn, num_classes, log_probs=probs, source=path, name=f"{fmt}_teacher")
        model = keras.Model(inputs, layer(inputs), name=_model_name(path))
        softmax = "log of probabilities" if probs else "no"
        layers_readable = False
    model.trainable = False
    report = {
        "path": os.path.abspath(path),
        "format": fmt,
        "digest": file_digest(path),
        "params": params,
        "softmax": softmax,
        "layers_readable": layers_readable,
    }
    return model, report


# Input value ranges a saved teacher may expect: (scale, offset) that map the
# [0, 1] images kd_keras feeds (``kd_keras.data.preprocess``) onto them.
INPUT_RANGES = {"0,1": (1.0, 0.0), "0,255": (255.0, 0.0), "-1,1": (2.0, -1.0)}
DEFAULT_INPUT_RANGE = "0,1"
# A teacher scoring this much higher (absolute accuracy) in another range
# than in the one it is fed is taken to expect that other range.
RANGE_MARGIN = 0.25


def with_input_range(model, input_range):
    """`model` fed [0, 1] images rescaled to `input_range` (a key of INPUT_RANGES).

    For any range but [0, 1] the result is a new frozen model whose first
    layer rescales; the teacher itself is nested inside it, so losses that
    read intermediate layers cannot find its layers by name.
    """
    if input_range not in INPUT_RANGES:
        raise ValueError(f"input range must be one of {list(INPUT_RANGES)}, got {input_range!r}.")
    if input_range == DEFAULT_INPUT_RANGE:
        return model
    scale, offset = INPUT_RANGES[input_range]
    inputs = keras.Input(model.input_shape[1:], name="image")
    scaled = keras.layers.Rescaling(scale, offset, name="input_range")(inputs)
    wrapped = keras.Model(inputs, model(scaled, training=False), name=model.name)
    wrapped.trainable = False
    return wrapped


def range_accuracies(model, images, labels, batch_size=256):
    """Top-1 accuracy of a logits `model` on uint8 `images` mapped to each of
    INPUT_RANGES: {range: accuracy}."""
    x = np.asarray(images, np.float32) / 255.0
    labels = np.asarray(labels).reshape(-1)
    out = {}
    for name, (scale, offset) in INPUT_RANGES.items():
        logits = model.predict(x * scale + offset, batch_size=batch_size, verbose=0)
        out[name] = float(np.mean(np.argmax(logits, -1) == labels))
    return out


def input_range_error(path, accuracies, fed, num_classes, count):
    """A one-line message when the teacher at `path` plainly expects another
    input range than `fed` (None when it does not): its accuracy on `count`
    labelled images there beats the fed range's by RANGE_MARGIN and chance."""
    best = max(accuracies, key=accuracies.get)
    if best == fed or accuracies[best] < accuracies[fed] + RANGE_MARGIN:
        return None
    if accuracies[best] <= 1.5 / num_classes:
        return None
    shown = lambda r: "[" + ", ".join(r.split(",")) + "]"  # noqa: E731
    return (
        f"teacher {path} scores {accuracies[fed]:.0%} on {count} training images with inputs "
        f"in {shown(fed)} (what it is fed) but {accuracies[best]:.0%} with inputs in "
        f"{shown(best)}: it expects inputs in {shown(best)}; pass --teacher_input_range={best}."
    )


def is_probabilities(outputs, tolerance=PROB_TOLERANCE):
    """True when every row of `outputs` is non-negative and sums to 1."""
    out = np.asarray(outputs, np.float64)
    if out.ndim != 2 or out.shape[0] == 0 or out.shape[1] < 2:
        return False
    return bool(np.all(out >= -tolerance) and np.allclose(out.sum(-1), 1.0, atol=tolerance))


def _model_name(path):
    stem = os.path.splitext(os.path.basename(os.path.normpath(path)))[0]
    clean = "".join(c if c.isalnum() or c in "_-" else "_" for c in stem)
    return f"teacher_{clean or 'model'}"


def _unreadable(path, fmt, error):
    return ValueError(
        f"{path} cannot be loaded as a {fmt} model ({type(error).__name__}: {str(error)[:200]})."
    )


def _mismatch(path, t_in, t_classes, input_shape, num_classes):
    return ValueError(
        f"teacher {path} expects inputs of shape {tuple(t_in)} and gives {t_classes} classes; "
        f"the data gives images of shape {tuple(input_shape)} and {num_classes} classes."
    )


def _fits(t_in, input_shape):
    """True when a declared input shape (None: any size) accepts `input_shape`."""
    return len(t_in) == len(input_shape) and all(
        d is None or d == want for d, want in zip(t_in, input_shape)
    )


def _check_output(path, t_in, t_out, input_shape, num_classes):
    t_in, t_out = tuple(t_in), tuple(t_out)
    if len(t_out) != 1 or not _fits(t_in, input_shape) or t_out[0] != num_classes:
        classes = t_out[0] if len(t_out) == 1 else f"outputs of shape {t_out}, not"
        raise _mismatch(path, t_in, classes, input_shape, num_classes)


def _tf_keras_logits(model, path, input_shape, num_classes, sample_images):
    """(logits model, softmax note) of a loaded tf_keras model, shapes checked."""
    if len(model.inputs or []) != 1 or len(model.outputs or []) != 1:
        raise ValueError(
            f"teacher {path} must have one input and one output; it has "
            f"{len(model.inputs or [])} and {len(model.outputs or [])}."
        )
    _check_output(path, model.input_shape[1:], model.output_shape[1:], input_shape, num_classes)
    last = model.layers[-1]
    activation = getattr(last, "activation", None)
    if isinstance(last, keras.layers.Softmax) or (
        isinstance(last, keras.layers.Activation) and activation is keras.activations.softmax
    ):
        return keras.Model(model.inputs, last.input, name=model.name), "pre-softmax tensor"
    if activation is keras.activations.softmax:
        config = dict(last.get_config(), activation="linear")
        linear = type(last).from_config(config)
        logits = linear(last.input)
        linear.set_weights(last.get_weights())
        return keras.Model(model.inputs, logits, name=model.name), "pre-softmax tensor"
    if is_probabilities(model(sample_images, training=False)):
        logits = LogOfProbabilities(name="log_of_probabilities")(model.output)
        return keras.Model(model.inputs, logits, name=model.name), "log of probabilities"
    return model, "no"


def _foreign(path, fmt):
    """(callable, its input shape or None, params or None) of a foreign model."""
    if fmt == "keras3":
        k3 = keras3()
        try:
            model = k3.models.load_model(path, compile=False)
        except Exception as e:  # noqa: BLE001 — any failure to load means an unusable file.
            raise _unreadable(path, "Keras 3", e) from None
        if len(model.inputs or []) > 1 or len(model.outputs or []) > 1:
            raise ValueError(f"teacher {path} must have one input and one output.")
        t_in = tuple(model.inputs[0].shape[1:]) if model.inputs else None
        return lambda x: model(x, training=False), t_in, int(model.count_params())
    try:
        obj = tf.saved_model.load(path)
    except Exception as e:  # noqa: BLE001
        raise _unreadable(path, "SavedModel", e) from None
    serve = getattr(obj, "serve", None)
    signature = obj.signatures.get("serving_default")
    variables = getattr(obj, "variables", None) or (signature.variables if signature else ())
    params = sum(int(np.prod(v.shape)) for v in variables) or None
    if signature is None and serve is None:
        raise ValueError(f"teacher {path} has neither a 'serve' endpoint nor 'serving_default'.")
    args, kwargs = signature.structured_input_signature if signature is not None else ((), {})
    specs = list(args) + list(kwargs.values())
    if len(specs) != 1 or (signature is not None and len(signature.structured_outputs) != 1):
        raise ValueError(f"teacher {path} must serve one input and one output.")
    spec = specs[0]
    t_in = tuple(spec.shape[1:]) if spec.shape.rank else None
    if serve is not None:
        fn = lambda x: serve(tf.cast(x, spec.dtype))  # noqa: E731
    else:
        key = next(iter(kwargs)) if kwargs else None
        (out_key,) = signature.structured_outputs

        def fn(x):
            x = tf.cast(x, spec.dtype)
            return (signature(**{key: x}) if key else signature(x))[out_key]

    fn.saved_model = obj  # Keeps the loaded object (and its variables) alive.
    return fn, t_in, params


def _check_input(path, t_in, input_shape, num_classes, fn, sample_images):
    """A foreign teacher's declared input shape against the data's (before running it)."""
    if t_in is None or all(d is None for d in t_in):
        return
    if not _fits(t_in, input_shape):
        try:
            classes = int(np.asarray(fn(tf.zeros((1,) + tuple(d or 1 for d in t_in)))).shape[-1])
        except Exception:  # noqa: BLE001 — only for the message.
            classes = "?"
        raise _mismatch(path, t_in, classes, input_shape, num_classes)
