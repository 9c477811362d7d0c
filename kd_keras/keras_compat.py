"""The one place kd_keras imports Keras.

TF-MOT wraps only Keras 2 models, so the project uses Keras 2 through the
``tf_keras`` package. ``TF_USE_LEGACY_KERAS=1`` makes ``tf.keras`` resolve to
the same package, so models built here are the ones TF-MOT and the TFLite
converter expect. Every other module does ``from kd_keras.keras_compat import
keras``.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

DETERMINISTIC = os.environ.get("KD_KERAS_DETERMINISTIC", "1").strip().lower() not in (
    "0", "false", "no", "off")

keras.backend.experimental.enable_tf_random_generator()
if DETERMINISTIC:
    tf.config.experimental.enable_op_determinism()

__all__ = ["keras", "tf", "DETERMINISTIC"]
