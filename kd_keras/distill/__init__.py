"""Distillation: the loss registry (:mod:`.losses`, the one list of losses), the
:class:`Distiller` (:mod:`.distiller`), the KD settings and the one function
that makes a Distiller from them (:mod:`.config`), teachers (:mod:`.teachers`),
the teacher cache (:mod:`.teacher_cache`) and where a Distiller's teacher
outputs come from (:mod:`.outputs`).

This package re-exports the names most callers need; the modules keep the rest
(``from kd_keras.distill import losses, teachers``).
"""

from kd_keras.distill.config import KDConfig, make_distiller
from kd_keras.distill.distiller import Distiller
from kd_keras.distill.outputs import TEACHER_VIEWS, distillation_datasets

__all__ = ["KDConfig", "make_distiller", "Distiller", "TEACHER_VIEWS", "distillation_datasets"]
