"""Where a Distiller's teacher outputs come from: the teachers run online at
every step, or their outputs are read from the teacher cache
(:mod:`kd_keras.distill.teacher_cache`), per example and per augmented view.
"""

import logging
import os

from kd_keras import data as data_lib
from kd_keras.distill import losses as losses_lib
from kd_keras.distill import teacher_cache

TEACHER_VIEWS = ("same", "clean")


def distillation_datasets(
    distiller,
    datasets,
    kd,
    seed,
    run_dir,
    offline_data=None,
    batch_size=128,
    teacher_cache_dir=None,
    teacher_view="same",
):
    """The datasets a distilled training reads: where the teacher logits come from.

    * ``teacher_view='clean'`` (augmented training): the teachers' logits on
      the clean training images are computed once and fed by example id with
      the augmented batch, so the student's view and the teacher's differ.
    * ``kd.teacher_cache_views`` > 0 with augmentation: the teacher cache's
      logits on the very augmented views the student sees.
    * `offline_data` (no augmentation): the logits of the plain images,
      computed once.
    * otherwise `datasets` unchanged: the Distiller runs the teachers on each
      batch the student sees.

    Args:
      distiller: the ``Distiller`` (its teachers and losses).
      datasets: from ``kd_keras.data.make_datasets``.
      kd: KDConfig.
      seed: the training seed (data order of an offline pipeline).
      run_dir: the run's directory (the teacher cache lives beside it).
      offline_data, batch_size, teacher_cache_dir: as in :func:`fit`.
      teacher_view: one of TEACHER_VIEWS.

    Returns:
      The datasets dict, its 'train' and 'train_epochs' replaced when the
      logits are fed.

    Raises:
      ValueError: an unknown view, or a view the losses or datasets cannot give.

    Length: over 100 lines with its Args and Returns; its code is 74 lines.
    """

    def rebuilt(data, batch, **kwargs):  # `datasets` with a train pipeline that feeds logits
        out = data_lib.make_datasets(data, batch, **kwargs)
        return data_lib.with_items(
            datasets,
            lazy={"train": lambda: out["train"]},
            train_epochs=out["train_epochs"],
            steps_per_epoch=out["steps_per_epoch"],
        )

    def clean_logits(data):  # The teachers' logits on the clean training images, once.
        return distiller.precompute_teacher_logits(data_lib.image_batches(data.x_train))

    if teacher_view not in TEACHER_VIEWS:
        raise ValueError(f"teacher_view must be one of {TEACHER_VIEWS}, got {teacher_view!r}.")
    recipe = datasets.get("recipe")
    if teacher_view == "clean" and recipe is not None and recipe["augment"].enabled:
        if distiller.uses_features:
            raise ValueError(
                f"teacher_view='clean' feeds logits; the distillation losses {list(kd.losses)} "
                f"read features. Use logit losses {list(losses_lib.LOGIT_LOSSES)}."
            )
        return rebuilt(
            recipe["data"],
            recipe["batch_size"],
            augment=recipe["augment"],
            seed=recipe["seed"],
            teacher_logits=clean_logits(recipe["data"]),
            clean_teacher=True,
        )
    if kd.teacher_cache_views:
        if distiller.uses_features:
            raise ValueError(
                f"teacher_cache_views={kd.teacher_cache_views} caches logits only; the "
                f"distillation losses {list(kd.losses)} read features. Use logit losses "
                f"{list(losses_lib.LOGIT_LOSSES)} or teacher_cache_views=0."
            )
        if recipe is None:
            raise ValueError(
                "teacher_cache_views needs `datasets` from kd_keras.data.make_datasets "
                "(their 'recipe' entry)."
            )
        if not recipe["augment"].enabled:
            offline_data, batch_size = recipe["data"], recipe["batch_size"]
    if kd.teacher_cache_views and recipe["augment"].enabled:
        replay, path, reused = teacher_cache.load_or_build(
            teacher_cache_dir
            or os.path.join(os.path.dirname(os.path.abspath(run_dir)), "teacher_cache"),
            distiller.teachers,
            recipe["data"],
            recipe["augment"],
            recipe["batch_size"],
            recipe["seed"],
            kd.teacher_cache_views,
        )
        logging.info("Teacher cache %s (%s)", path, "reused" if reused else "computed")
        return rebuilt(
            recipe["data"],
            recipe["batch_size"],
            augment=recipe["augment"],
            seed=recipe["seed"],
            replay=replay,
        )
    if offline_data is not None and not distiller.uses_features:
        return rebuilt(
            offline_data, batch_size, seed=seed, teacher_logits=clean_logits(offline_data)
        )
    return datasets
