"""Choosing the KD setting on the validation split (``--kd_select``).

Which distillation loss, temperature and label weight suit a student, a
teacher and a budget is an empirical question: the textbook T = 4 can cost a
small student a point. :func:`select` answers it on the *validation* split,
never the test split: every point of the grid loss x T x alpha trains the
plain student with KD (``epochs`` each, its own seed) and is scored by its
validation accuracy; a no-KD run scored the same way is the reference. The
grid is walked in order and every point is a cached run, so nothing is
trained twice and an interrupted sweep resumes where it stopped. The pipeline
then trains its KD students with the winner and reports the sweep.
"""

import dataclasses
import itertools

from kd_keras import console
from kd_keras import data as data_lib
from kd_keras import train as train_lib
from kd_keras.app import variants
from kd_keras.distill import losses
from kd_keras.keras_compat import keras


@dataclasses.dataclass(frozen=True)
class SelectionConfig:
    """The grid of KD settings and how long each point trains.

    Attributes:
      losses: logit losses to try (names from ``kd_keras.distill.losses.LOGIT_LOSSES``).
      temperatures: temperatures to try (> 0).
      alphas: label-loss weights to try, in [0, 1].
      epochs: epochs per point; 0 means the student's own epochs.
    """

    losses: tuple = ("kd",)
    temperatures: tuple = (1.0, 2.0, 4.0)
    alphas: tuple = (0.1, 0.5)
    epochs: int = 0

    def __post_init__(self):
        bad = [x for x in self.losses if x not in losses.LOGIT_LOSSES]
        if not self.losses or bad:
            raise ValueError(
                f"--kd_select_losses={','.join(self.losses)}: each must be one of "
                f"{list(losses.LOGIT_LOSSES)}."
            )
        if not self.temperatures or min(self.temperatures) <= 0:
            raise ValueError(
                f"--kd_select_temperatures={','.join(map(str, self.temperatures))}: "
                "give numbers > 0."
            )
        if not self.alphas or not all(0 <= a <= 1 for a in self.alphas):
            raise ValueError(
                f"--kd_select_alphas={','.join(map(str, self.alphas))}: give numbers in [0, 1]."
            )
        if self.epochs < 0:
            raise ValueError(f"--kd_select_epochs={self.epochs}: must be >= 0.")

    @property
    def size(self):
        """The number of grid points."""
        return len(self.losses) * len(self.temperatures) * len(self.alphas)


def _kd_of(kd, values):
    return dataclasses.replace(
        kd,
        losses=(values["loss"],),
        weights=(),
        temperature=float(values["temperature"]),
        alpha=float(values["alpha"]),
    )


def validation_accuracy(ctx, variant, kd, train_cfg):
    """Trains the variant's student (with `kd`, or plainly when None) as a
    cached run scored on the validation split only; returns that accuracy.

    Points trained before runs recorded ``val_accuracy`` held it as their
    ``test_accuracy`` (the validation pipeline was passed as the test one);
    on reuse ``train_or_load`` computes their ``val_accuracy`` from the
    validation split, the same figure."""
    if not len(ctx.data.x_val):
        raise ValueError("--kd_select needs a validation split: set --val_size > 0.")
    train_cfg = dataclasses.replace(train_cfg, seed=variant.seed)  # As variants.train does.
    keras.utils.set_random_seed(variant.seed)  # Before the pipeline is built.
    datasets = data_lib.make_datasets(ctx.data, ctx.batch_size, variant.augment, seed=variant.seed)
    # Scored on validation: no test pipeline, so the test split never takes
    # part in the choice (the point's result has val_accuracy, test_accuracy None).
    datasets = data_lib.with_items(datasets, test=None)
    point_ctx = dataclasses.replace(ctx, kd=kd or ctx.kd)
    spec = dict(
        variants.base_spec(point_ctx, dataclasses.replace(variant, kd=kd is not None), train_cfg),
        scored_on="validation",
    )
    name = "select-" + (f"{kd.losses[0]}-T{kd.temperature:g}-a{kd.alpha:g}" if kd else "nokd")
    _, result = train_lib.train_or_load(
        ctx.workdir,
        name,
        spec,
        lambda: variants.build_student(variant, ctx.data),
        datasets,
        train_cfg,
        teacher=ctx.teachers if kd is not None else None,
        kd=kd,
        verbose=ctx.verbose,
        offline_data=None if variant.augment.enabled else ctx.data,
        batch_size=ctx.batch_size,
    )
    return result["val_accuracy"]


def grid(config: SelectionConfig):
    """The grid points in order: dicts of loss, temperature and alpha."""
    return [
        {"loss": x, "temperature": float(t), "alpha": float(a)}
        for x, t, a in itertools.product(config.losses, config.temperatures, config.alphas)
    ]


def select(ctx, variant, train_cfg, config: SelectionConfig):
    """Chooses the KD setting for `variant` on the validation split.

    Every point of the grid is a cached run: a rerun after an interruption
    reuses the finished points, resumes the interrupted one from its last
    epoch and trains the rest, so the choice is always made from the whole
    grid (a point that fails stops the selection; nothing is chosen from
    part of it).

    Args:
      ctx: the ``variants.Context`` (data, teachers, workdir, KD defaults).
      variant: the plain student variant (its seed and augmentation are used).
      train_cfg: the student's TrainConfig (its epochs are replaced by
        ``config.epochs`` when that is > 0).
      config: the grid.

    Returns:
      (the chosen ``distill.KDConfig``, a dict with 'table' (one row per
      point, in grid order: loss, temperature, alpha, val_accuracy),
      'no_kd_val_accuracy', 'chosen' and 'epochs').
    """
    if config.epochs:
        train_cfg = dataclasses.replace(
            train_cfg,
            epochs=config.epochs,
            warmup_epochs=min(train_cfg.warmup_epochs, config.epochs - 1),
        )
    table = []
    points = grid(config)
    for i, values in enumerate(points):
        console.progress(
            f"KD setting {i + 1}/{len(points)}: {values['loss']}, "
            f"T={values['temperature']:g}, alpha={values['alpha']:g}"
        )
        kd = _kd_of(ctx.kd, values)
        table.append(dict(values, val_accuracy=validation_accuracy(ctx, variant, kd, train_cfg)))
    # Highest validation accuracy; ties go to the earlier grid point.
    best = max(enumerate(table), key=lambda item: (item[1]["val_accuracy"], -item[0]))[1]
    no_kd = validation_accuracy(ctx, dataclasses.replace(variant, kd=False), None, train_cfg)
    chosen = _kd_of(ctx.kd, best)
    return chosen, {
        "table": table,
        "no_kd_val_accuracy": no_kd,
        "chosen": {k: best[k] for k in ("loss", "temperature", "alpha")},
        "epochs": train_cfg.epochs,
    }


def markdown(selection):
    """The sweep as a Markdown table, the chosen row marked."""
    lines = [
        f"KD setting chosen on the validation split ({selection['epochs']} epochs per point; "
        f"no KD: {selection['no_kd_val_accuracy']:.4f}).",
        "",
        "| loss | T | alpha | val acc | |",
        "|---|---|---|---|---|",
    ]
    chosen = selection["chosen"]
    for r in selection["table"]:
        mark = "chosen" if all(r[k] == chosen[k] for k in chosen) else ""
        lines.append(
            f"| {r['loss']} | {r['temperature']:g} | {r['alpha']:g} | "
            f"{r['val_accuracy']:.4f} | {mark} |"
        )
    return "\n".join(lines)
