"""Teachers a user already has: a saved model turned into a frozen logits model.

    model, report = teachers.load_teacher("my_teacher.keras", (28, 28, 1), 10)
    model, report = teachers.open_teacher("my_teacher.keras", (28, 28, 1), 10,
                                          input_range="0,255", sample=(x_val, y_val))

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
import re
import zipfile

import numpy as np

from kd_keras import models
from kd_keras.keras_compat import keras, keras3, tf

FILE_SUFFIXES = (".keras", ".h5", ".hdf5")
DIGEST_LENGTH = 16
# Rows of non-negative numbers summing to 1 within this are probabilities.
PROB_TOLERANCE = 1e-3
PROBE_IMAGES = 8
# An error quoted in a message is cut (at a word) past this many characters.
MESSAGE_LIMIT = 200


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


def load_teacher(path, input_shape, num_classes, sample_images=None, custom_objects=None):
    """Loads a saved model as a frozen teacher giving logits.

    Args:
      path: a ``.keras`` / ``.h5`` file or a SavedModel directory.
      input_shape: (H, W, C) of the data's images.
      num_classes: classes of the data.
      sample_images: float32 images in [0, 1] on which a foreign model's
        outputs are checked for probabilities (default: a few seeded uniform
        random images of `input_shape`).
      custom_objects: {class name: class} of custom layers (and other
        objects) the saved model uses that are not registered with
        ``keras.saving.register_keras_serializable`` (Keras 3) or
        ``tf_keras.saving.register_keras_serializable``.

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
    if fmt != "saved_model":
        loaded, fmt = load_saved(path, custom_objects)
    if fmt == "tf_keras":
        model, softmax = logits_model(loaded, path, input_shape, num_classes, sample_images)
        layers_readable = True
        params = int(model.count_params())
    else:
        fn, t_in, params = _foreign(path, loaded if fmt == "keras3" else None)
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
# Labelled images the input range is checked on (and the accuracy measured).
RANGE_PROBE_IMAGES = 512


def parse_input_range(input_range):
    """The name ('0,255') and (scale, offset) of an input range.

    Args:
      input_range: a key of INPUT_RANGES, 'LOW,HIGH' text, or a (low, high)
        pair of numbers, low < high.

    Returns:
      (name, (scale, offset)): `scale` and `offset` map [0, 1] onto the range.

    Raises:
      ValueError: not a range, saying what is allowed.
    """
    value = input_range
    if isinstance(value, str):
        value = value.strip().strip("[]()").split(",")
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        low = high = None
    if low is None or not low < high:
        raise ValueError(
            f"input range must be (low, high) with low < high, or one of {list(INPUT_RANGES)}; "
            f"got {input_range!r}."
        )
    return f"{low:g},{high:g}", (high - low, low)


def with_input_range(model, input_range):
    """`model` fed [0, 1] images rescaled to `input_range` (as
    :func:`parse_input_range` reads it: '0,255' or a (low, high) pair).

    For any range but [0, 1] the result is a new frozen model whose first
    layer rescales; the teacher itself is nested inside it, so losses that
    read intermediate layers cannot find its layers by name.
    """
    name, (scale, offset) = parse_input_range(input_range)
    if name == DEFAULT_INPUT_RANGE:
        return model
    inputs = keras.Input(model.input_shape[1:], name="image")
    scaled = keras.layers.Rescaling(scale, offset, name="input_range")(inputs)
    wrapped = keras.Model(inputs, model(scaled, training=False), name=model.name)
    wrapped.trainable = False
    return wrapped


def as_unit_images(images):
    """Images as float32 in [0, 1]: uint8 (integer) ones divided by 255,
    floating ones taken as already in [0, 1]."""
    images = np.asarray(images)
    if np.issubdtype(images.dtype, np.integer):
        return images.astype(np.float32) / 255.0
    return images.astype(np.float32)


def range_accuracies(model, images, labels, batch_size=256, also=()):
    """Top-1 accuracy of a logits `model` on `images` (uint8, or floats in
    [0, 1]) mapped to each of INPUT_RANGES and to the ranges in `also`:
    {range name: accuracy}."""
    x = as_unit_images(images)
    labels = np.asarray(labels).reshape(-1)
    ranges = dict(INPUT_RANGES)
    ranges.update(parse_input_range(r) for r in also)
    out = {}
    for name, (scale, offset) in ranges.items():
        logits = model.predict(x * scale + offset, batch_size=batch_size, verbose=0)
        out[name] = float(np.mean(np.argmax(logits, -1) == labels))
    return out


def shown_range(name):
    """'0,255' -> '[0, 255]'."""
    return "[" + ", ".join(name.split(",")) + "]"


def input_range_error(
    path, accuracies, fed, num_classes, count, split="training", fix="--teacher_input_range={}"
):
    """A one-line message when the teacher at `path` plainly expects another
    input range than `fed` (None when it does not): its accuracy on `count`
    labelled `split` images there beats the fed range's by RANGE_MARGIN and
    chance. The message ends with `fix` formatted with the range to give."""
    fed = parse_input_range(fed)[0]
    best = max(accuracies, key=accuracies.get)
    if best == fed or accuracies[best] < accuracies[fed] + RANGE_MARGIN:
        return None
    if accuracies[best] <= 1.5 / num_classes:
        return None
    return (
        f"teacher {path} scores {accuracies[fed]:.0%} on {count} {split} images with inputs "
        f"in {shown_range(fed)} (what it is fed) but {accuracies[best]:.0%} with inputs in "
        f"{shown_range(best)}: it expects inputs in {shown_range(best)}; pass {fix.format(best)}."
    )


def open_teacher(
    path,
    input_shape,
    num_classes,
    input_range=DEFAULT_INPUT_RANGE,
    custom_objects=None,
    sample=None,
    split="validation",
    fix="--teacher_input_range={}",
):
    """:func:`load_teacher`, the input range checked on labelled images, and
    the model made to take [0, 1] inputs (:func:`with_input_range`).

    Args:
      path, input_shape, num_classes, custom_objects: as in :func:`load_teacher`.
      input_range: the range the saved model expects (:func:`parse_input_range`).
      sample: (images, labels) to check the range on and measure the
        accuracy with (uint8 images, or floats in [0, 1]); at most
        RANGE_PROBE_IMAGES of them are used. None: no check.
      split: what the sample is, for messages ('validation', 'training').
      fix: what the refusal tells the user to pass, {} standing for the range.

    Returns:
      (model taking [0, 1] images, report): the report of :func:`load_teacher`
      plus input_range, accuracy (on the sample, fed as `input_range` says;
      None without a sample), sample_count and split.

    Raises:
      ValueError: what :func:`load_teacher` raises, or the teacher plainly
        expects another input range than `input_range` (the message names both).
    """
    fed, _ = parse_input_range(input_range)
    probe = None
    if sample is not None:
        images, labels = sample
        probe = (
            as_unit_images(images[:RANGE_PROBE_IMAGES]),
            np.asarray(labels)[:RANGE_PROBE_IMAGES],
        )
        if not len(probe[1]):
            probe = None
    model, report = load_teacher(
        path,
        input_shape,
        num_classes,
        probe[0][:PROBE_IMAGES] if probe is not None else None,
        custom_objects=custom_objects,
    )
    report.update(input_range=fed, accuracy=None, sample_count=0, split=split)
    if probe is not None:
        accuracies = range_accuracies(model, probe[0], probe[1], also=(fed,))
        count = len(probe[1])
        error = input_range_error(path, accuracies, fed, num_classes, count, split, fix)
        if error:
            raise ValueError(error)
        report.update(accuracy=accuracies[fed], sample_count=count)
    return with_input_range(model, fed), report


def accuracy_line(name, report):
    """One console line: the teacher's accuracy on its sample and the input
    range it is fed (the report of :func:`open_teacher`)."""
    fed = report["input_range"]
    feeding = "" if fed == DEFAULT_INPUT_RANGE else f", fed inputs rescaled to {shown_range(fed)}"
    if report.get("accuracy") is None:
        return f"{name} ({report['path']}): loaded{feeding}; no labelled images to measure it on"
    return (
        f"{name} ({report['path']}): {report['split']} accuracy {report['accuracy']:.4f} "
        f"on {report['sample_count']} images{feeding}"
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


def short_error(error, limit=MESSAGE_LIMIT):
    """`error`'s type and the first line of its message, cut at a word (never
    mid-word) when longer than `limit` characters."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0].rstrip(" ,;:") + " ..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _unreadable(path, fmt, error, tried=None):
    missing = missing_classes(path, error)
    if missing:
        return _custom_classes(path, fmt, missing)
    before = f"tf_keras failed ({short_error(tried)}), then " if tried is not None else ""
    return ValueError(f"{path} cannot be loaded: {before}{fmt} failed ({short_error(error)}).")


def _not_hdf5(path, error):
    """The error of an .h5 teacher that h5py cannot open: truncated or corrupt."""
    size = os.path.getsize(path)
    found = re.search(r"\beof = (\d+).*\bstored_eof = (\d+)", str(error))
    what = (
        f"it is truncated: {found.group(1)} of the {found.group(2)} bytes it declares"
        if found
        else f"it looks truncated or corrupt ({size} bytes; {short_error(error)})"
    )
    return ValueError(
        f"teacher {path} is not a readable HDF5 (.h5) file, so neither tf_keras nor Keras 3 "
        f"can load it: {what}; copy or save the model again."
    )


# Where Keras says it does not know a class: Keras 3 ("Could not locate class
# 'X'") and tf_keras ("Unknown layer: 'X'").
MISSING_CLASS = re.compile(r"(?:Could not locate (?:class|function)|Unknown \w+:) '([^']+)'")
# Modules whose classes Keras knows without registration.
KNOWN_MODULES = ("keras", "tf_keras", "tensorflow")


def missing_classes(path, error=None):
    """The names of the classes a saved model uses that Keras could not find:
    those `error` names, else the custom ones (not from a Keras module) the
    ``config.json`` of a ``.keras`` archive lists. [] when it is not that."""
    names = MISSING_CLASS.findall(str(error or ""))
    if names or error is None or "register_keras_serializable" not in str(error):
        return list(dict.fromkeys(names))
    try:
        with zipfile.ZipFile(path) as z:
            config = json.loads(z.read("config.json"))
    except (OSError, zipfile.BadZipFile, KeyError, ValueError):
        return []
    found = []

    def walk(node):
        if isinstance(node, dict):
            module = node.get("module")
            custom = "module" in node and not str(module or "").startswith(KNOWN_MODULES)
            if "class_name" in node and custom:
                found.append(node.get("registered_name") or node["class_name"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config)
    return list(dict.fromkeys(found))


def _custom_classes(path, fmt, names):
    package = "keras" if fmt == "Keras 3" else "tf_keras"
    listed = ", ".join(names)
    objects = ", ".join(f"'{n}': {n.split('>')[-1]}" for n in names)
    return ValueError(
        f"teacher {path} ({fmt}) uses custom class(es) {listed} that {fmt} does not know: "
        f"decorate each with @{package}.saving.register_keras_serializable() in a module "
        "that is imported before the teacher loads (a Python script that imports it, then "
        "runs kd_keras), or load the teacher from Python with "
        f"kd_keras.load_teacher(path, input_shape, num_classes, "
        f"custom_objects={{{objects}}})."
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


def logits_model(model, path, input_shape, num_classes, sample_images):
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


def load_saved(path, custom_objects=None):
    """The Keras model saved at `path`, as it was saved: the loader of
    teachers and of the exporter.

    Args:
      path: a ``.keras`` / ``.h5`` file (tf_keras or Keras 3) or a tf_keras
        SavedModel directory.
      custom_objects: as in :func:`load_teacher`.

    Returns:
      (model, 'tf_keras' or 'keras3'): a ``tf_keras`` model, or a Keras 3
      one for a file ``tf_keras`` cannot read.

    Raises:
      ValueError: a missing or unreadable path, or a SavedModel without
        Keras metadata (no Keras model to load; :func:`load_teacher` runs it).
    """
    if not os.path.exists(path):
        raise ValueError(f"{path} does not exist.")
    fmt = detect_format(path)
    if fmt == "saved_model":
        raise ValueError(f"{path} is a SavedModel without Keras metadata: not a Keras model.")
    tried = None  # Why tf_keras could not load an .h5 file then tried with Keras 3.
    if fmt == "tf_keras":
        try:
            return keras.models.load_model(path, compile=False, custom_objects=custom_objects), fmt
        except Exception as e:  # noqa: BLE001 — an .h5 file may come from Keras 3.
            if not path.endswith((".h5", ".hdf5")):
                raise _unreadable(path, "tf_keras", e) from None
            if isinstance(e, OSError):  # h5py cannot open it: no format would read it.
                raise _not_hdf5(path, e) from None
            tried = e
    k3 = keras3()
    try:
        return k3.models.load_model(path, compile=False, custom_objects=custom_objects), "keras3"
    except Exception as e:  # noqa: BLE001 — any failure to load means an unusable file.
        raise _unreadable(path, "Keras 3", e, tried) from None


def is_keras3_model(model):
    """True for a model of Keras 3 (not of ``tf_keras``)."""
    return not isinstance(model, keras.Model) and type(model).__module__.startswith("keras")


def _foreign(path, keras3_model=None):
    """(callable, its input shape or None, params or None) of a foreign model:
    a loaded Keras 3 model, or else the plain SavedModel at `path`."""
    if keras3_model is not None:
        model = keras3_model
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
