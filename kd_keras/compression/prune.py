"""Magnitude pruning (TF-MOT ``prune_low_magnitude``) of chosen layers.

    schedule = pruning_schedule("polynomial", 0.8, begin_step=0, end_step=300)
    pruned = prune_model(student, select_layers(student, "prune"), schedule)
    Distiller(pruned, teacher).fit(..., callbacks=pruning_callbacks())
    sparse_student = strip_pruning(pruned)

Each wrapper counts its own training steps (``pruning_step``, +1 per training
call) and updates its mask on the schedule's steps. The count starts when
:class:`UpdatePruningStep` sets it to 0 at the start of training, so schedule
steps are the stage's optimizer steps whether the student trains alone or
inside the Distiller.

About the Distiller: TF-MOT's own ``UpdatePruningStep`` collects wrappers with
``collect_prunable_layers(self.model)``, which recurses into nested models, so
it does reach the student's wrappers through ``Distiller.layers`` (the student
and the Distiller's student feature extractor, which shares its layers: every
wrapper is found twice, harmlessly). The subclass here finds each wrapper
once, can be pointed at the student explicitly, and fails loudly when it finds
no wrapper instead of returning silently.
"""

import tensorflow_model_optimization as tfmot
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper

from kd_keras.compression import wrappers
from kd_keras.keras_compat import keras

K = keras.backend


def pruning_schedule(kind, sparsity, begin_step, end_step, frequency, initial_sparsity=0.0):
    """Builds a TF-MOT pruning schedule.

    Args:
      kind: 'polynomial' (PolynomialDecay from `initial_sparsity` at
        `begin_step` to `sparsity` at `end_step`) or 'constant'
        (ConstantSparsity from `begin_step` on; `end_step` -1 = forever).
      sparsity: target sparsity in [0, 1).
      begin_step: first step that may update masks (>= 0).
      end_step: last step that may update masks.
      frequency: steps between mask updates (>= 1).
      initial_sparsity: start of the polynomial ramp.

    Returns:
      a ``tfmot.sparsity.keras.PruningSchedule``.

    Raises:
      ValueError: unknown `kind`, or steps / sparsities TF-MOT rejects.
    """
    if kind == "polynomial":
        return tfmot.sparsity.keras.PolynomialDecay(
            initial_sparsity=float(initial_sparsity),
            final_sparsity=float(sparsity),
            begin_step=int(begin_step),
            end_step=int(end_step),
            frequency=int(frequency),
        )
    if kind == "constant":
        return tfmot.sparsity.keras.ConstantSparsity(
            float(sparsity),
            begin_step=int(begin_step),
            end_step=int(end_step),
            frequency=int(frequency),
        )
    raise ValueError(f"kind must be 'polynomial' or 'constant', got {kind!r}.")


def stage_steps(config, total_steps):
    """The (begin_step, end_step, frequency) of a pruning stage of `total_steps` steps.

    Wrappers see steps 1..total_steps; a mask is updated at step s when
    ``begin <= s <= end`` and ``(s - begin) % frequency == 0``. The frequency is
    capped at ``end - begin`` and `end` is moved down to ``begin + k *
    frequency``, so the last update (at the target sparsity for the
    polynomial schedule) always happens inside the stage. The constant
    schedule keeps updating (end -1) every `frequency` steps, capped at
    ``total_steps - begin`` so that at least one update happens.

    Args:
      config: CompressionConfig (its prune_* fields and pruning_frequency).
      total_steps: optimizer steps of the stage (steps_per_epoch * epochs).

    Raises:
      ValueError: total_steps < 1.
    """
    if total_steps < 1:
        raise ValueError(f"A pruning stage needs at least one training step, got {total_steps}.")
    begin = min(int(config.prune_begin_fraction * total_steps), total_steps - 1)
    if config.pruning_schedule == "constant":
        return begin, -1, min(config.pruning_frequency, total_steps - begin)
    end = min(max(round(config.prune_end_fraction * total_steps), begin + 1), total_steps)
    frequency = min(config.pruning_frequency, end - begin)
    end = begin + (end - begin) // frequency * frequency
    return begin, end, frequency


def schedule_for_stage(config, total_steps):
    """The TF-MOT schedule of a pruning stage of `total_steps` steps (see stage_steps)."""
    begin, end, frequency = stage_steps(config, total_steps)
    return pruning_schedule(
        config.pruning_schedule, config.sparsity, begin, end, frequency, config.initial_sparsity
    )


def prune_model(model, layer_names, schedule, structure="unstructured"):
    """Wraps `layer_names` of a copy of `model` in ``PruneLowMagnitude``.

    Works the same on a freshly initialized student (pruning from scratch) and
    on a trained one (prune-then-fine-tune): the copy keeps `model`'s weights.

    Args:
      model: functional keras.Model without TF-MOT wrappers (not modified).
      layer_names: names of the layers to prune (see ``select_layers``).
      schedule: a ``tfmot.sparsity.keras.PruningSchedule``.
      structure: 'unstructured' or '2:4' (two zeros in every four consecutive
        weights along the input-channel axis; TF-MOT sets these masks once, at
        the first training step, and ignores the schedule).

    Returns:
      the pruning model (a new functional keras.Model).

    Raises:
      ValueError: wrapped `model`, unknown layer name, unknown structure.
    """
    wrappers.check_plain(model, "prune_model()")
    if structure not in ("unstructured", "2:4"):
        raise ValueError(f"structure must be 'unstructured' or '2:4', got {structure!r}.")
    names = set(layer_names)
    missing = names - {l.name for l in model.layers}
    if missing:
        raise ValueError(f"Model '{model.name}' has no layers {sorted(missing)}.")
    m_by_n = (2, 4) if structure == "2:4" else None

    def wrap(layer):
        if layer.name in names:
            return tfmot.sparsity.keras.prune_low_magnitude(
                layer, pruning_schedule=schedule, sparsity_m_by_n=m_by_n
            )
        return layer

    copy = wrappers.fresh_copy(model)
    return keras.models.clone_model(copy, clone_function=wrap)


def prune_wrappers(model):
    """The ``PruneLowMagnitude`` layers of `model`, nested models included, each once."""
    return wrappers.find_layers(model, pruning_wrapper.PruneLowMagnitude)


class UpdatePruningStep(tfmot.sparsity.keras.UpdatePruningStep):
    """TF-MOT's ``UpdatePruningStep`` that finds wrappers anywhere, once, or fails.

    Args:
      model: the model holding the wrappers (e.g. the pruned student); None
        means the model being fit (a pruned model or a Distiller around one).

    Raises (at the start of training):
      ValueError: no pruning wrapper in the model.
    """

    def __init__(self, model=None):
        super().__init__()
        self._wrapped_model = model

    def on_train_begin(self, logs=None):
        root = self._wrapped_model if self._wrapped_model is not None else self.model
        self.prunable_layers = prune_wrappers(root)
        if not self.prunable_layers:
            raise ValueError(
                f"UpdatePruningStep found no pruning wrapper in model '{root.name}': "
                "nothing would be pruned. Pass the model returned by prune_model()."
            )
        fresh = [l for l in self.prunable_layers if int(K.get_value(l.pruning_step)) == -1]
        K.batch_set_value([(l.pruning_step, 0) for l in fresh])


def pruning_callbacks(log_dir=None, model=None):
    """The callbacks a pruning model needs during fit.

    Args:
      log_dir: if given, ``PruningSummaries`` writes per-layer sparsity and
        thresholds there for TensorBoard (use a directory apart from the
        training run's own TensorBoard logs).
      model: passed to :class:`UpdatePruningStep`.

    Returns:
      list of keras callbacks: UpdatePruningStep, then PruningSummaries.
    """
    callbacks = [UpdatePruningStep(model)]
    if log_dir:
        callbacks.append(tfmot.sparsity.keras.PruningSummaries(log_dir=str(log_dir)))
    return callbacks


def strip_pruning(model):
    """The model with pruning wrappers replaced by their (masked) layers."""
    return tfmot.sparsity.keras.strip_pruning(model)
