"""Architecture search over student networks with keras-tuner (issue #5).

    python -m nas.main --flagfile=kd_keras/configs/nas_smoke.flags

Modules: ``search_space`` (the HyperModel; the hand-designed students are
points of it), ``tuner`` (the tuner, budget and objective; Hyperband trials
continue their parent's training), ``hardware`` (TFLite latency / size / TFLM
arena of a candidate), ``pareto``, ``search_report`` (tables, Pareto sets,
plots, Spearman, best model), ``final`` (the Pareto set and the hand-designed
students retrained at full budget and measured as int8 files), ``teacher``,
``hand`` (the final step's hand-designed students: space points, registry
students at a width, own students), ``flags`` and ``main``.

The pipeline uses a search's result as a student through :func:`load_student`,
which rebuilds the best feasible architecture untrained.
"""

# isort: off
from kd_keras import keras_compat  # noqa: F401  TensorFlow is imported there first, quietly.

# isort: on

from nas.space import StudentSpace, load_student

__all__ = ["StudentSpace", "load_student"]
