"""Keras model -> ``.tflite`` flatbuffer, in four numeric formats.

``convert(model, quantization)`` with quantization one of:

* ``float32``: no optimization; the reference the others are compared with.
* ``float16``: weights stored as float16, dequantized at load time.
* ``dynamic``: dynamic-range quantization; int8 weights, float activations.
* ``int8``: full-integer quantization. Activations are calibrated on a
  representative dataset: uint8 images from the training split, run through
  :func:`kd_keras.data.preprocess`, the same preprocessing the exported model
  must be fed. A quantization-aware-trained model (``quantize_model`` output)
  carries its own ranges and converts without representative data.

Pruning and clustering wrappers are stripped before conversion
(:func:`strip_wrappers`), so a pruned model exports its zeroed weights and not
the masks. Every failure (missing path, a file that is not a model, a
converter error) raises :class:`ExportError`, naming the model, the format and
the cause.
"""

import contextlib
import os
import tempfile

import numpy as np

from kd_keras import compression, console, keras_compat, runs
from kd_keras import data as data_lib
from kd_keras.distill import teachers
from kd_keras.keras_compat import keras, keras3, tf

QUANTIZATIONS = ("float32", "float16", "dynamic", "int8")
DEFAULT_NUM_CALIBRATION = 200
TFLITE_IDENTIFIER = b"TFL3"  # Bytes 4..8 of every TFLite flatbuffer.

_QAT_LAYERS = ("QuantizeWrapper", "QuantizeWrapperV2", "QuantizeLayer")


class ExportError(ValueError):
    """A model could not be loaded, converted or measured; the message says why."""


def _tfmot():
    import tensorflow_model_optimization as tfmot  # Heavy; only when needed.

    return tfmot


def _layer_class_names(model):
    """Class names of every layer of `model`, nested models included."""
    names = set()
    for module in [model] + list(model.submodules):
        names.add(type(module).__name__)
    return names


def is_qat_model(model):
    """True if `model` holds TF-MOT quantization-aware-training layers."""
    return isinstance(model, keras.Model) and bool(_layer_class_names(model) & set(_QAT_LAYERS))


def strip_wrappers(model):
    """Removes TF-MOT pruning and clustering wrappers.

    The pruned (zeroed) or clustered weights stay; the masks, cluster indices
    and training-only state go. Quantization-aware-training layers are kept:
    the converter turns them into int8 kernels. A model without such wrappers
    is returned unchanged (the same object).

    Args:
      model: a functional or sequential ``keras.Model``.

    Returns:
      The model without pruning and clustering wrappers.

    Raises:
      ExportError: stripping failed (e.g. a subclassed model holding wrappers).
    """
    try:
        return compression.strip(model)
    except (ValueError, NotImplementedError, TypeError) as e:
        raise ExportError(
            f"Cannot strip pruning/clustering wrappers from model "
            f"'{getattr(model, 'name', model)}': {e}"
        ) from e


def _custom_object_scopes():
    tfmot = _tfmot()
    return (
        tfmot.quantization.keras.quantize_scope(),
        tfmot.sparsity.keras.prune_scope(),
        tfmot.clustering.keras.cluster_scope(),
    )


def load_model(path):
    """Loads a saved Keras model (``.keras``, ``.h5`` or a Keras SavedModel dir)
    with the loader of teachers (``kd_keras.distill.teachers.load_saved``).

    TF-MOT's pruning, clustering and quantization layers are in scope, so
    wrapped models load too. A file ``tf_keras`` cannot read, such as a
    Keras 3 ``.keras`` file, loads as a Keras 3 model; :func:`convert` takes
    it through a SavedModel Keras 3 writes.

    Args:
      path: file or directory.

    Returns:
      The ``keras.Model`` (``tf_keras``, or Keras 3).

    Raises:
      ExportError: the path does not exist or does not hold a Keras model.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ExportError(f"Model path not found: {path}")
    if path.endswith(".tflite"):
        raise ExportError(f"{path} is already a TFLite model; convert takes a Keras model.")
    try:
        with model_scope():
            model, _ = teachers.load_saved(path)
    except ValueError as e:
        raise ExportError(
            f"Cannot load {path} as a Keras model ({_short(e)}). Expected a .keras/.h5 file "
            "or a SavedModel directory."
        ) from e
    if not (isinstance(model, keras.Model) or teachers.is_keras3_model(model)):
        raise ExportError(f"{path} loaded as {type(model).__name__}, not a keras.Model.")
    return model


@contextlib.contextmanager
def model_scope():
    """TF-MOT's pruning, clustering and quantization classes in scope, for loading."""
    with contextlib.ExitStack() as stack:
        for scope in _custom_object_scopes():
            stack.enter_context(scope)
        yield


def write_keras3_saved_model(model, directory):
    """Writes a Keras 3 `model` as a SavedModel (Keras 3's ``ExportArchive``)
    whose one endpoint runs it in inference mode (``training=False``), so
    random augmentation layers inside it (RandomFlip and the like) are
    identities and leave no random ops for the converter.

    Returns:
      `directory`.
    """
    k3 = keras3()
    shape = (None,) + tuple(model.inputs[0].shape[1:])
    archive = k3.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serve",
        lambda x: model(x, training=False),
        input_signature=[tf.TensorSpec(shape, tf.float32)],
    )
    with console.capture_native_output():
        archive.write_out(directory, verbose=False)
    return directory


class RangedImages:
    """uint8 images read, a slice at a time, as float32 images in an input
    range: ``kd_keras.data.preprocess`` ([0, 1]) then ``* scale + offset``.

    Float arrays are what calibration and measurement take as already
    preprocessed, so a model expecting [0, 255] is calibrated and scored on
    [0, 255] images without the split being copied whole.
    """

    dtype = np.dtype(np.float32)

    def __init__(self, images, input_range):
        self.images = images
        _, (self.scale, self.offset) = teachers.parse_input_range(input_range)
        self.shape = tuple(np.shape(images))
        self.ndim = len(self.shape)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        x = np.asarray(data_lib.preprocess(np.asarray(self.images[index])), np.float32)
        return x * np.float32(self.scale) + np.float32(self.offset)

    def __array__(self, dtype=None, copy=None):
        out = self[:]
        return out if dtype is None else out.astype(dtype)


def in_range(images, input_range):
    """`images` as the model expects them: unchanged for [0, 1] (or when
    None), else a :class:`RangedImages` view."""
    if images is None or teachers.parse_input_range(input_range)[0] == "0,1":
        return images
    return RangedImages(images, input_range)


def check_input_range(path, data, input_range="0,1"):
    """The model at `path` read as a teacher (``kd_keras.distill.teachers.open_teacher``)
    and its input range checked on `data`'s training images.

    Returns:
      The loader's report: accuracy on those images fed in `input_range`,
      sample_count, ...

    Raises:
      ExportError: the model plainly expects another range (naming it and
        --input_range), or it cannot be read as a classifier of `data`.
    """
    try:
        with model_scope():
            _, report = teachers.open_teacher(
                os.fspath(path),
                data.input_shape,
                data.num_classes,
                input_range,
                sample=(data.x_train, data.y_train),
                split="training",
                fix="--input_range={}",
            )
    except ValueError as e:
        raise ExportError(str(e)) from None
    return report


# The first bytes of an HDF5 file (an .h5 Keras model) and of a zip archive (a .keras one).
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
ZIP_SIGNATURE = b"PK\x03\x04"


def check_model_path(path):
    """Checks, without loading it, that `path` is a kind of model
    :func:`load_model` reads: a ``.keras`` archive, an HDF5 ``.h5`` file or a
    SavedModel directory.

    Raises:
      ExportError: the path is missing, a TFLite file, a directory without
        saved_model.pb, or a file that is neither a zip archive (.keras) nor
        HDF5 (.h5), saying which.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ExportError(f"{path} does not exist.")
    if os.path.isdir(path):
        if not os.path.exists(os.path.join(path, "saved_model.pb")):
            raise ExportError(f"{path} is a directory without saved_model.pb: not a SavedModel.")
        return
    with open(path, "rb") as f:
        head = f.read(8)
    if path.endswith(".tflite") or head[4:8] == TFLITE_IDENTIFIER:
        raise ExportError(f"{path} is already a TFLite model; give the Keras model it came from.")
    if path.endswith(".keras") and head[:4] != ZIP_SIGNATURE:
        raise ExportError(f"{path} is not a .keras archive (not a zip file); save the model again.")
    if path.endswith((".h5", ".hdf5")) and head != HDF5_SIGNATURE:
        raise ExportError(f"{path} is not an HDF5 file (no HDF5 signature); save the model again.")
    if (
        not path.endswith((".keras", ".h5", ".hdf5"))
        and head[:4] != ZIP_SIGNATURE
        and (head != HDF5_SIGNATURE)
    ):
        raise ExportError(
            f"{path} is not a Keras model: give a .keras or .h5 file or a SavedModel directory."
        )


def is_plain_saved_model(path):
    """True for a SavedModel directory that Keras did not write (no keras_metadata.pb)."""
    return (
        os.path.isdir(path)
        and os.path.exists(os.path.join(path, "saved_model.pb"))
        and not os.path.exists(os.path.join(path, "keras_metadata.pb"))
    )


def _short(error, limit=600):
    """The first and last lines of a (possibly huge) converter error message."""
    text = str(error).strip()
    if len(text) <= limit:
        return text
    return text[: limit // 2] + " [...] " + text[-limit // 2 :]


def representative_dataset(images, num_calibration=DEFAULT_NUM_CALIBRATION, seed=0):
    """A representative-dataset generator for int8 calibration.

    Args:
      images: uint8 images (N, H, W, C) from the training split; they are
        preprocessed with :func:`kd_keras.data.preprocess`. Floating-point
        arrays are taken as already preprocessed.
      num_calibration: how many images (drawn at random without replacement;
        all of them if there are fewer).
      seed: seed of the draw.

    Returns:
      A zero-argument callable yielding ``[float32 array (1, H, W, C)]``.

    Raises:
      ExportError: no images, or images that are not (N, H, W, C).
    """
    if not hasattr(images, "shape"):
        images = np.asarray(images)
    if len(images.shape) != 4 or len(images) == 0:
        raise ExportError(
            f"representative_images must be a non-empty (N, H, W, C) array, got shape "
            f"{tuple(images.shape)}."
        )
    if num_calibration < 1:
        raise ExportError(f"num_calibration must be >= 1, got {num_calibration}.")
    rng = np.random.default_rng(seed)
    count = min(int(num_calibration), len(images))
    chosen = np.asarray(images[np.sort(rng.choice(len(images), count, replace=False))])
    if np.issubdtype(chosen.dtype, np.integer):
        chosen = np.asarray(data_lib.preprocess(chosen))
    chosen = chosen.astype(np.float32)

    def generator():
        for image in chosen:
            yield [image[None]]

    return generator


def _check_input_shape(model, images, name):
    if isinstance(model.input_shape, list):  # Several inputs: leave it to the converter.
        return
    expected = tuple(model.input_shape[1:])
    shape = tuple(images.shape if hasattr(images, "shape") else np.shape(images))
    if None not in expected and shape[1:] != expected:
        raise ExportError(
            f"Representative images of shape {shape[1:]} do not fit model "
            f"'{name}' whose input shape is {expected}."
        )


def convert(
    model,
    quantization,
    representative_images=None,
    num_calibration=DEFAULT_NUM_CALIBRATION,
    int8_io=False,
    seed=0,
):
    """Converts a Keras model to a TFLite flatbuffer.

    Args:
      model: a ``keras.Model`` (pruning/clustering wrappers are stripped; QAT
        layers are honoured) or the path of a saved one (``.keras``, ``.h5``,
        or a SavedModel directory; a SavedModel not written by Keras goes to
        the converter as it is).
      quantization: one of QUANTIZATIONS.
      representative_images: uint8 training images (N, H, W, C), required for
        ``int8`` unless the model is quantization-aware-trained; used for
        calibration there and ignored by the other formats.
      num_calibration: representative images used for calibration.
      int8_io: for ``int8``, make the model's input and output int8 too (the
        caller must then quantize inputs with the input tensor's scale and
        zero point). Otherwise they stay float32.
      seed: seed of the calibration sample.

    Returns:
      The ``.tflite`` flatbuffer as bytes.

    Raises:
      ExportError: unknown quantization, missing or invalid model, int8
        without data for a non-QAT model, or a converter failure.
    """
    if quantization not in QUANTIZATIONS:
        raise ExportError(f"Unknown quantization {quantization!r}; allowed: {QUANTIZATIONS}.")
    if int8_io and quantization != "int8":
        raise ExportError(f"int8_io needs quantization='int8', got {quantization!r}.")
    keras_model, saved_model_dir, label = _resolve(model)
    if keras_model is not None and teachers.is_keras3_model(keras_model):
        if quantization == "int8" and representative_images is not None:
            _check_input_shape(keras_model, representative_images, label)
        with tempfile.TemporaryDirectory() as directory:
            write_keras3_saved_model(keras_model, directory)
            return convert(
                directory, quantization, representative_images, num_calibration, int8_io, seed
            )
    if keras_model is not None:
        keras_model = strip_wrappers(keras_model)
        qat = is_qat_model(keras_model)
        if quantization == "int8" and representative_images is not None:
            _check_input_shape(keras_model, representative_images, label)
        converter = _converter(
            lambda: keras_compat.tflite_converter(keras_model), label, quantization
        )
    else:
        qat = False
        converter = _converter(
            lambda: tf.lite.TFLiteConverter.from_saved_model(saved_model_dir), label, quantization
        )

    if quantization == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantization == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if representative_images is not None:
            converter.representative_dataset = representative_dataset(
                representative_images, num_calibration, seed
            )
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        elif not qat:
            raise ExportError(
                f"int8 export of model '{label}' needs representative_images (uint8 "
                "training images) for calibration; only a quantization-aware-trained "
                "model converts to int8 without them."
            )
        if int8_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    try:
        with console.capture_native_output():  # MLIR and quantizer chatter
            flatbuffer = converter.convert()
    except Exception as e:  # noqa: BLE001 — the converter raises many error types.
        raise ExportError(
            f"TFLite conversion of model '{label}' to {quantization} failed "
            f"({type(e).__name__}): {_short(e)}"
        ) from e
    return bytes(flatbuffer)


def _resolve(model):
    """(keras model or None, plain SavedModel dir or None, label for messages)."""
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if not os.path.exists(path):
            raise ExportError(f"Model path not found: {path}")
        if is_plain_saved_model(path):
            return None, path, path
        loaded = load_model(path)
        return loaded, None, f"{loaded.name} ({path})"
    if isinstance(model, keras.Model) or teachers.is_keras3_model(model):
        return model, None, model.name
    raise ExportError(f"convert() takes a keras.Model or a path, got {type(model).__name__}.")


def _converter(make, label, quantization):
    try:
        return make()
    except Exception as e:  # noqa: BLE001
        raise ExportError(
            f"Cannot build a TFLite converter for model '{label}' ({quantization}): "
            f"{type(e).__name__}: {_short(e)}"
        ) from e


def check_flatbuffer(content, source="<bytes>"):
    """Raises ExportError unless `content` looks like a TFLite flatbuffer."""
    if len(content) < 8 or content[4:8] != TFLITE_IDENTIFIER:
        raise ExportError(
            f"{source} is not a TFLite model: expected the file identifier "
            f"{TFLITE_IDENTIFIER!r} at byte 4, got {bytes(content[4:8])!r} "
            f"({len(content)} bytes in all)."
        )


def save_tflite(content, path):
    """Writes a flatbuffer to `path` atomically (temporary file, then rename).

    Args:
      content: the bytes :func:`convert` returned.
      path: destination, conventionally ``<name>.<quantization>.tflite``.

    Returns:
      The number of bytes written.

    Raises:
      ExportError: `content` is not a TFLite flatbuffer.
    """
    check_flatbuffer(content)
    runs.write_text(path, bytes(content))
    return len(content)


def identity_model(input_shape, dtype=np.float32):
    """A one-op (RESHAPE) ``.tflite`` model whose input is (1, *input_shape).

    Timed beside a model with the same input, it measures the interpreter's
    fixed per-call cost (see :mod:`export.latency`).

    Args:
      input_shape: the input shape without the batch dimension.
      dtype: the input dtype (float32, or int8 for int8-I/O models).

    Returns:
      The flatbuffer bytes.
    """
    shape = [1] + [int(d) for d in input_shape]

    @tf.function(input_signature=[tf.TensorSpec(shape, tf.as_dtype(np.dtype(dtype)))])
    def flatten(x):
        return tf.reshape(x, [1, -1])

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [flatten.get_concrete_function()], flatten
    )
    with console.capture_native_output():
        return bytes(converter.convert())
