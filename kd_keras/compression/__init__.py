"""Compression that composes with distillation: channel slimming, and pruning,
clustering, QAT (TF-MOT).

Each technique trains as one stage (with or without a teacher). Slimming
rebuilds a smaller plain student; the others wrap the functional student
*before* the Distiller wraps it and are stripped before the next stage or
the export. See ``chain`` for the stage loop, ``config`` for the
settings, ``measure`` for the numbers that go into results.json.

    from kd_keras import compression
    cfg = compression.CompressionConfig(sparsity=0.75)
    chain = compression.validate_chain("prune,qat", cfg, model=student)
    for technique, previous in compression.stages(chain):
        wrapped, callbacks = compression.apply_stage(
            model, technique, cfg, steps_per_epoch, epochs, previous)
        ...fit wrapped (Distiller or plain) with `callbacks`...
        model = compression.strip(wrapped)
"""

# isort: off
from kd_keras import keras_compat  # noqa: F401  Keras 2 must be chosen before TF-MOT loads.

# isort: on
from kd_keras.compression.chain import (
    apply_stage,
    parse_chain,
    plan_for,
    stages,
    strip,
    validate_chain,
)
from kd_keras.compression.cluster import CENTROID_INIT, cluster_model, strip_clustering
from kd_keras.compression.config import (
    CLUSTER_INITS,
    PRUNING_SCHEDULES,
    PRUNING_STRUCTURES,
    SLIM_CRITERIA,
    SLIM_TARGETS,
    TECHNIQUES,
    CompressionConfig,
)
from kd_keras.compression.figures import (
    has_quantize_layers,
    int8_tflite_converts,
    kernels,
    macs,
    params,
    slim_report,
    sparsity_report,
    unique_values_report,
)
from kd_keras.compression.prune import (
    UpdatePruningStep,
    prune_model,
    prune_wrappers,
    pruning_callbacks,
    pruning_schedule,
    schedule_for_stage,
    stage_steps,
    strip_pruning,
)
from kd_keras.compression.quantize import (
    SCHEMES,
    OutputQuantizeConfig,
    quantize_model,
    quantize_scope,
    scheme_after,
    standalone_batch_norms,
)
from kd_keras.compression.selection import default_skip_layers, select_layers
from kd_keras.compression.slim import (
    SlimPlan,
    plan_macs,
    plan_slim,
    plan_to_fit,
    schedule,
    slim_model,
    with_gamma_penalty,
)
from kd_keras.compression.wrappers import wrapper_kinds

__all__ = [
    "CENTROID_INIT",
    "CLUSTER_INITS",
    "PRUNING_SCHEDULES",
    "PRUNING_STRUCTURES",
    "SCHEMES",
    "SLIM_CRITERIA",
    "SLIM_TARGETS",
    "TECHNIQUES",
    "CompressionConfig",
    "OutputQuantizeConfig",
    "SlimPlan",
    "UpdatePruningStep",
    "apply_stage",
    "cluster_model",
    "default_skip_layers",
    "has_quantize_layers",
    "int8_tflite_converts",
    "kernels",
    "macs",
    "params",
    "parse_chain",
    "plan_macs",
    "plan_for",
    "plan_slim",
    "plan_to_fit",
    "schedule",
    "prune_model",
    "prune_wrappers",
    "pruning_callbacks",
    "pruning_schedule",
    "quantize_model",
    "quantize_scope",
    "schedule_for_stage",
    "scheme_after",
    "select_layers",
    "slim_model",
    "with_gamma_penalty",
    "slim_report",
    "sparsity_report",
    "stage_steps",
    "stages",
    "standalone_batch_norms",
    "strip",
    "strip_clustering",
    "strip_pruning",
    "unique_values_report",
    "validate_chain",
    "wrapper_kinds",
]
