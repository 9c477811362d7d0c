"""Distillation settings: :class:`KDConfig`, the losses it names (from the
one registry, :data:`kd_keras.distill.losses.REGISTRY`) and the
:class:`~kd_keras.distill.distiller.Distiller` it makes.
"""

import dataclasses

from kd_keras.distill import losses as losses_lib
from kd_keras.distill.distiller import Distiller


@dataclasses.dataclass(frozen=True)
class KDConfig:
    """Distillation settings (see :class:`kd_keras.Distiller`).

    ``teacher_cache_views``: K > 0 distills an augmented training through a
    teacher cache of K views per example (``kd_keras.distill.teacher_cache``): the
    teachers run once per view, not at every step; epoch ``e`` replays view
    ``e mod K``. 0 runs the teachers online.
    """

    losses: tuple = ("kd",)
    weights: tuple = ()
    alpha: float = 0.1
    temperature: float = 4.0
    ensemble: str = "logits"
    teacher_layer: str = "stage3"
    student_layer: str = "block3"
    dkd_alpha: float = 1.0
    dkd_beta: float = 8.0
    dist_beta: float = 1.0
    dist_gamma: float = 1.0
    teacher_cache_views: int = 0

    def __post_init__(self):
        if not isinstance(self.teacher_cache_views, int) or self.teacher_cache_views < 0:
            raise ValueError(
                f"teacher_cache_views must be an integer >= 0, got {self.teacher_cache_views!r}."
            )

    def build_losses(self):
        """The distillation loss objects these settings name, each built from
        the settings its class reads (``kd_settings`` in the registry)."""
        out = []
        for name in self.losses:
            cls = losses_lib.REGISTRY.get(name)
            if cls is None:
                losses_lib.get(name)  # Raises the registry's error naming the known losses.
            out.append(cls(**{arg: getattr(self, field) for arg, field in cls.kd_settings.items()}))
        return out


def make_distiller(kd: KDConfig, student, teachers):
    """The :class:`Distiller` of `student` and `teachers` with the losses,
    weights, alpha, temperature and ensemble rule of `kd`.

    Raises:
      ValueError: the losses do not fit the models (e.g. a feature loss naming
        a layer the student lacks).
    """
    return Distiller(
        student,
        teachers,
        kd.build_losses(),
        list(kd.weights) or None,
        alpha=kd.alpha,
        temperature=kd.temperature,
        ensemble=kd.ensemble,
    )
