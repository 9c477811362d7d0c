"""Entry point: ``python -m nas.main --flagfile=kd_keras/configs/nas_smoke.flags``.

Loads the data, gets the teacher (loaded from ``--teacher_model`` or trained
once and cached), runs (or resumes) the keras-tuner search over students with
distillation in the loop and the hardware budget, then writes the trials
table, fronts, plot and best model into ``<project_dir>/<project_name>/`` and
prints the top trials and the fronts.

Distributed: start one process with ``KERASTUNER_TUNER_ID=chief`` and any
number with ``KERASTUNER_TUNER_ID=worker<N>``, all with the same flags and
``KERASTUNER_ORACLE_IP`` / ``KERASTUNER_ORACLE_PORT``. The chief serves the
oracle (after training or loading the teacher) and writes the outputs when
the search ends; workers run trials.
"""

import ast
import os
import sys

from absl import app, flags, logging

from kd_keras import console, runs, training
from kd_keras import data as data_lib
from nas import flags as nas_flags
from nas import report, search_space, teacher, tuner

FLAGS = flags.FLAGS


def _numbers(flag, kind):
    try:
        return [kind(v) for v in flag.value]
    except ValueError:
        raise ValueError(f"--{flag.name} must be a list of {kind.__name__}s, got "
                         f"{flag.value}.") from None


def _kwargs(flag):
    out = {}
    for item in flag.value:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--{flag.name}: expected k=v items, got {item!r}.")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def _space(input_shape, num_classes):
    f = nas_flags
    return search_space.StudentSpace(
        input_shape, num_classes, min_stages=f._MIN_STAGES.value,
        max_stages=f._MAX_STAGES.value, max_blocks=f._MAX_BLOCKS.value,
        filters=_numbers(f._FILTERS, int), kernel_sizes=_numbers(f._KERNELS, int),
        expansions=_numbers(f._EXPANSIONS, int), conv_types=f._CONV_TYPES.value,
        downsampling=f._DOWNSAMPLING.value, head_units=_numbers(f._HEAD_UNITS, int),
        dropouts=_numbers(f._DROPOUTS, float))


def _teacher_fn(data, project, verbose):
    """A zero-argument callable giving the teacher, or None without KD."""
    f = nas_flags
    if not f._KD.value:
        return None
    if f._TEACHER_MODEL.value:
        path = f._TEACHER_MODEL.value
        return lambda: teacher.load_teacher(path, data.input_shape, data.num_classes)
    config = training.TrainConfig(
        epochs=f._TEACHER_EPOCHS.value, optimizer=f._TEACHER_OPTIMIZER.value,
        learning_rate=f._TEACHER_LR.value, warmup_epochs=f._TEACHER_WARMUP.value, seed=0)
    kwargs = _kwargs(f._TEACHER_ARGS)
    augment = data_lib.AugmentConfig.parse(f._TEACHER_AUGMENT.value)
    name, batch = f._TEACHER.value, f._BATCH.value

    def make():
        model, result = teacher.train_or_load_teacher(
            data, os.path.join(project, "teacher"), name, kwargs, config, augment, batch,
            verbose=2 if verbose else 0)
        print(f"Teacher {name} {kwargs}: test accuracy {result['test_accuracy']:.4f}, "
              f"{result['params']} params ({result['run_dir']})")
        return model

    return make


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    f = nas_flags
    role = tuner.distributed_role()
    if role == "worker" and f._OVERWRITE.value:
        sys.exit("--overwrite would delete the chief's project: pass it to the chief only.")
    verbose = int(f._VERBOSE.value)
    project = os.path.join(f._PROJECT_DIR.value, f._PROJECT_NAME.value)
    console.setup(project, verbose=f._SHOW_LOGS.value)
    try:  # Everything that can be invalid is checked before any data or training.
        train_config = training.TrainConfig(
            epochs=f._EPOCHS.value, optimizer=f._OPTIMIZER.value, learning_rate=f._LR.value,
            warmup_epochs=min(f._WARMUP.value, f._EPOCHS.value - 1), seed=f._SEED.value)
        augment = data_lib.AugmentConfig.parse(f._AUGMENT.value)
        budget = tuner.Budget(f._MAX_LATENCY.value, f._MAX_BYTES.value, f._MAX_PARAMS.value)
        measure = tuner.MeasureConfig(f._LATENCY_RUNS.value, f._LATENCY_WARMUP.value,
                                      f._LATENCY_THREADS.value)
        oracle = tuner.make_oracle(
            f._ORACLE.value, f._MAX_TRIALS.value, f._EPOCHS.value, f._SEED.value,
            f._HB_FACTOR.value, f._HB_ITERATIONS.value, f._NUM_INITIAL.value or None)
        kd = training.KDConfig(alpha=f._ALPHA.value, temperature=f._TEMPERATURE.value)
        _kwargs(f._TEACHER_ARGS)
        data_lib.AugmentConfig.parse(f._TEACHER_AUGMENT.value)
        _space((1 << 16, 1 << 16, 1), 2)  # The lists' values; the depth is checked below.
    except ValueError as e:
        sys.exit(f"Invalid configuration: {e}")

    data = data_lib.load_dataset(f._DATASET.value, f._DATA_DIR.value, f._MANUAL_DIR.value,
                                 f._VAL_SIZE.value, seed=0, limit_train=f._LIMIT_TRAIN.value)
    try:
        space = _space(data.input_shape, data.num_classes)
    except ValueError as e:
        sys.exit(f"Invalid search space: {e}")
    search = tuner.StudentSearch(
        space, oracle, data, train_config, batch_size=f._BATCH.value, augment=augment,
        budget=budget, teacher=_teacher_fn(data, project, verbose), kd=kd, measure=measure,
        directory=f._PROJECT_DIR.value, project_name=f._PROJECT_NAME.value,
        overwrite=f._OVERWRITE.value, verbose=2 if verbose == 2 else 0)
    if role != "worker":
        runs.write_text(os.path.join(project, "flags.txt"), FLAGS.flags_into_string())
        search.get_teacher()  # Before serving or searching: workers then only load it.
        remaining = search.remaining_trials
        print(f"Search ({role}) in {project}: "
              + (f"{remaining} new trials to go." if remaining is not None else "Hyperband."))
    search.search(verbose=min(verbose, 1))
    if role == "worker":
        print(f"Worker {os.environ.get('KERASTUNER_TUNER_ID')}: no trials left.")
        return
    outputs = report.write_outputs(search)
    print()
    print(report.summary_text(outputs, f._TOP.value))
    print(f"\nTrials table: {outputs['paths']['trials.csv']}\n"
          f"Plot: {outputs['paths']['accuracy_vs_latency.png']}")


if __name__ == "__main__":
    logging.set_verbosity(logging.WARNING)
    app.run(main)
