"""The one place kd_keras imports Keras.

TF-MOT wraps only Keras 2 models, so the project uses Keras 2 through the
``tf_keras`` package. ``TF_USE_LEGACY_KERAS=1`` makes ``tf.keras`` resolve to
the same package, so models built here are the ones TF-MOT and the TFLite
converter expect. Every other module does ``from kd_keras.keras_compat import
keras``; :func:`keras3` gives Keras 3 itself, used only to load a teacher Keras
3 saved (``kd_keras.distill.teachers``).

What TensorFlow's C++ side writes to stderr while it is imported and probes
for GPUs (oneDNN and CUDA notices, some printed before its log level applies)
is captured into
``import_log``; ``kd_keras.console.setup`` copies it into the run's log. If
the import fails, the captured text goes back to stderr.

Training is deterministic by default: op determinism is on, and layers draw
randomness from ``tf.random.Generator`` state that checkpoints can save.
``KD_KERAS_DETERMINISTIC=0`` turns op determinism off.
"""

import os
import sys
import tempfile

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _import_capturing_stderr():
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf
            import tf_keras as keras

            tf.config.list_physical_devices("GPU")  # The CUDA probe's "failed call to cuInit".
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        captured.seek(0)
        return tf, keras, captured.read().decode(errors="replace")


tf, keras, import_log = _import_capturing_stderr()

DETERMINISTIC = os.environ.get("KD_KERAS_DETERMINISTIC", "1").strip().lower() not in (
    "0",
    "false",
    "no",
    "off",
)

keras.backend.experimental.enable_tf_random_generator()
if DETERMINISTIC:
    tf.config.experimental.enable_op_determinism()


def keras3():
    """The Keras 3 package (``import keras``), imported on first use.

    ``tf_keras`` cannot load what Keras 3 saves; a teacher saved by Keras 3
    is loaded by Keras 3 itself and run frozen (``kd_keras.distill.teachers``).

    Raises:
      ValueError: Keras 3 is not installed.
    """
    try:
        import keras as keras_3
    except ImportError as e:
        raise ValueError(f"loading a Keras 3 model needs the keras package ({e}).") from None
    if not keras_3.__version__.startswith("3."):
        raise ValueError(f"loading a Keras 3 model needs Keras 3; found {keras_3.__version__}.")
    return keras_3


def tflite_converter(model):
    """A TFLite converter of a tf_keras model: the flatbuffer it writes is
    byte for byte the one of ``tf.lite.TFLiteConverter.from_keras_model``.

    ``from_keras_model`` first saves the model as a Keras SavedModel, which
    traces every layer's call functions for Keras's metadata (about 10 s for
    MobileNetV2's 150 layers). The converter needs only the inference
    function and the variables: this converts the model's call, traced on
    its input signature with the output named after the model's output (as
    ``from_keras_model`` names it), from a plain module holding the
    variables, and records the Keras origin in the file's conversion
    metadata as ``from_keras_model`` does. 3-5x faster on this project's
    students.
    """
    from tensorflow.lite.python import conversion_metadata_schema_py_generated as metadata

    specs = [tf.TensorSpec(t.shape, t.dtype, name=t.name.split(":")[0]) for t in model.inputs]

    def call(*inputs):
        outputs = model(inputs[0] if len(inputs) == 1 else list(inputs), training=False)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        return dict(zip(model.output_names, outputs))

    function = tf.function(call).get_concrete_function(*specs)
    holder = tf.Module()
    holder.variables_of_model = list(model.variables)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], holder)
    converter._metadata.environment.modelType = metadata.ModelType.KERAS_MODEL  # noqa: SLF001
    return converter


__all__ = ["keras", "tf", "import_log", "DETERMINISTIC", "keras3", "tflite_converter"]
