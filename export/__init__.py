"""Deployment export: ``.tflite`` files with measured size, latency and accuracy.

:func:`export_model` (:mod:`export.exporter`) converts a model to every
requested format (:mod:`export.convert`), measures each file in the LiteRT
interpreter (:mod:`export.measure`, :mod:`export.latency`), on TensorFlow Lite
Micro (:mod:`export.micro`), profiles its ops (:mod:`export.profile`) and
writes a model card beside it (:mod:`export.card`). ``python -m export.main``
does the same for a saved model from the command line.
"""

# isort: off
from kd_keras import keras_compat  # noqa: F401  TensorFlow is imported there first, quietly.

# isort: on

from export.convert import (
    QUANTIZATIONS,
    ExportError,
    check_input_range,
    check_model_path,
    load_model,
    save_tflite,
    strip_wrappers,
)
from export.exporter import RESULTS_SUFFIX, export_model

__all__ = [
    "ExportError",
    "QUANTIZATIONS",
    "RESULTS_SUFFIX",
    "check_input_range",
    "check_model_path",
    "export_model",
    "load_model",
    "save_tflite",
    "strip_wrappers",
]
