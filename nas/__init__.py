"""Architecture search over student networks with keras-tuner (issue #5).

    python -m nas.main --flagfile=kd_keras/configs/nas_smoke.flags

Modules: ``search_space`` (the HyperModel), ``tuner`` (the tuner, budget and
objective), ``hardware`` (TFLite latency / size of a candidate), ``pareto``,
``report`` (tables, plot, best model), ``teacher``, ``flags`` and ``main``.

The pipeline uses a search's result as a student through :func:`load_student`,
which rebuilds the best feasible architecture untrained.
"""

# isort: off
from kd_keras import keras_compat  # noqa: F401  TensorFlow is imported there first, quietly.

# isort: on

from nas.search_space import StudentSpace, load_student

__all__ = ["StudentSpace", "load_student"]
