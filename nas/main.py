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

import dataclasses
import os
import sys

from absl import app, flags, logging

from kd_keras import console, distribute, flag_groups, runs
from kd_keras import data as data_lib
from kd_keras.app import recipe
from kd_keras.distill import teachers as teachers_lib
from nas import candidate, final, oracles, search, teacher
from nas import flags as nas_flags
from nas import hand as hand_lib
from nas import objective as objective_lib
from nas import report as search_report
from nas import space as search_space

FLAGS = flags.FLAGS


# absl's flag parsing, an invalid flag reported in one line.
parse_flags = flag_groups.parse_flags


def make_space(input_shape, num_classes):
    """The search space the flags describe, for this input shape and class count."""
    f = nas_flags
    ints = lambda h: flag_groups.numbers(h.value, int, h.name)  # noqa: E731
    return search_space.StudentSpace(
        input_shape,
        num_classes,
        min_stages=f.MIN_STAGES.value,
        max_stages=f.MAX_STAGES.value,
        max_blocks=f.MAX_BLOCKS.value,
        filters=ints(f.FILTERS),
        kernel_sizes=ints(f.KERNELS),
        expansions=ints(f.EXPANSIONS),
        conv_types=f.CONV_TYPES.value,
        downsampling=f.DOWNSAMPLING.value,
        stem_paddings=f.STEM_PADDINGS.value,
        se_ratios=ints(f.SE_RATIOS),
        activations=f.ACTIVATIONS.value,
        head_units=ints(f.HEAD_UNITS),
        dropouts=flag_groups.numbers(f.DROPOUTS.value, float, "dropouts"),
    )


def _teacher_path():
    """(path, flag naming it) of a saved teacher, or (None, None) for a registry one.

    Raises:
      ValueError: --teacher names several paths (the search distils from one).
    """
    f = nas_flags
    if f.TEACHER_MODEL.value:
        return f.TEACHER_MODEL.value, "teacher_model"
    _, paths = teachers_lib.parse_teacher(f.TEACHER.teacher.value)
    if len(paths) > 1:
        raise ValueError(
            f"--teacher={f.TEACHER.teacher.value}: the search distils from one teacher; "
            "give one path."
        )
    return (paths[0], "teacher") if paths else (None, None)


def _teacher_fn(data, project, verbose, batch):
    """A zero-argument callable giving the teacher, or None without KD (a
    registry teacher is trained once, with batches of `batch`)."""
    f = nas_flags
    if not f.DISTILL.value:
        return None
    path, flag = _teacher_path()
    if path:

        def load():
            model, report = teacher.load_teacher(
                path,
                data.input_shape,
                data.num_classes,
                flag,
                f.TEACHER_INPUT_RANGE.value,
                sample=(data.x_val, data.y_val),
            )
            print(teachers_lib.accuracy_line("Teacher", report))
            return model

        return load
    config = flag_groups.train_config(f.TEACHER, "teacher", seed=0)
    kwargs = flag_groups.parse_kwargs(f.TEACHER.teacher_args.value, "teacher_args")
    augment = flag_groups.augment_config(f.TEACHER.teacher_augment)
    name = f.TEACHER.teacher.value

    def make():
        model, result = teacher.train_or_load_teacher(
            data,
            os.path.join(project, "teacher"),
            name,
            kwargs,
            config,
            augment,
            batch,
            verbose=2 if verbose else 0,
        )
        print(
            f"Teacher {name} {kwargs}: test accuracy {result['test_accuracy']:.4f}, "
            f"{result['params']} params ({result['run_dir']})"
        )
        return model

    return make


def _start_points(space):
    """--start_points as hyperparameter values of `space` (raises ValueError naming it)."""
    items = nas_flags.START_POINTS.value
    if items and nas_flags.ORACLE.value != "evolution":
        raise ValueError(
            f"--start_points={','.join(items)}: only --oracle=evolution starts from given "
            f"points (got --oracle={nas_flags.ORACLE.value})."
        )
    try:
        return [values for _, values in search_space.start_points(items, space)]
    except ValueError as e:
        raise ValueError(f"--start_points={','.join(items)}: {e}") from None


def data_config():
    """(the DataConfig the flags describe, with --val_size and --batch_size
    scaled to the data when not set, as the pipeline scales them
    (``kd_keras.app.recipe.scale_data``); one line per default changed)."""
    config = flag_groups.data_config(nas_flags.DATA, nas_flags.SOURCE)
    present = {name for name in ("val_size", "batch_size") if FLAGS[name].present}
    scaled, lines, _ = recipe.scale_data(config, present, recipe.training_pool(config))
    return scaled, lines


def configure():
    """Everything the flags describe that can be checked without data.

    Returns:
      dict of train_config, augment, budget, measure, oracle, kd, data (the
      DataConfig) and data_lines (the defaults scaled to the data, said).

    Raises:
      ValueError: naming the flag, the value and what is allowed.
    """
    f = nas_flags
    epochs = f.STUDENT.student_epochs.value
    train_config = flag_groups.train_config(f.STUDENT, "student", seed=f.SEED.value)
    train_config = dataclasses.replace(
        train_config, warmup_epochs=min(train_config.warmup_epochs, epochs - 1)
    )
    out = dict(
        train_config=train_config,
        augment=flag_groups.augment_config(f.STUDENT.student_augment),
        budget=objective_lib.Budget(
            f.BUDGET.max_latency_us.value,
            f.BUDGET.max_bytes.value,
            f.BUDGET.max_params.value,
            f.BUDGET.max_arena_bytes.value,
            f.BUDGET_INT8.value,
        ),
        measure=candidate.MeasureConfig(
            f.EXPORT.latency_runs.value,
            f.EXPORT.latency_warmup.value,
            flag_groups.export_threads(f.EXPORT)[0],
        ),
        kd=flag_groups.kd_config(f.KD),
    )
    flag_groups.train_config(f.TEACHER, "teacher")
    flag_groups.model_kwargs(f.TEACHER.teacher_args.value, "teacher_args", f.TEACHER.teacher.value)
    flag_groups.augment_config(f.TEACHER.teacher_augment)
    out["data"], out["data_lines"] = data_config()
    shapes = out["data"].placeholder()
    space = make_space(shapes.input_shape, shapes.num_classes)
    out["oracle"] = oracles.make_oracle(
        f.ORACLE.value,
        f.MAX_TRIALS.value,
        epochs,
        f.SEED.value,
        f.HB_FACTOR.value,
        f.HB_ITERATIONS.value,
        f.NUM_INITIAL.value or None,
        start_points=_start_points(space),
        population=f.POPULATION.value,
        sample=f.SAMPLE.value,
        elite=f.ELITE.value,
    )
    if f.FINAL_EPOCHS.value:
        hand = ",".join(f.FINAL_HAND.value)
        losses = out["kd"].build_losses() if f.DISTILL.value else []
        layers = sorted({x.student_layer for x in losses if getattr(x, "student_layer", None)})
        try:  # Registry and own students built once: shapes, classes, feature layers.
            hand_lib.entries(f.FINAL_HAND.value, space, build=True, layers=layers)
        except ValueError as e:
            raise ValueError(f"--final_hand={hand}: {e}") from None
    path, flag = _teacher_path()
    fed = f.TEACHER_INPUT_RANGE.value
    if fed != teachers_lib.DEFAULT_INPUT_RANGE and not (f.DISTILL.value and path):
        why = "--nodistill" if not f.DISTILL.value else f"--teacher={f.TEACHER.teacher.value}"
        raise ValueError(
            f"--teacher_input_range={fed} applies to a teacher given by path that the search "
            f"distils from; with {why} there is none."
        )
    if f.DISTILL.value and path:  # Loads it once: a bad file fails here (its range needs data).
        teacher.load_teacher(path, shapes.input_shape, shapes.num_classes, flag, fed)
    return out


def make_search(cfg, project, verbose=0, overwrite=False):
    """Loads the data and builds the ``nas.search.StudentSearch`` the flags describe.

    Args:
      cfg: :func:`configure`'s result.
      project: the project directory (--project_dir/--project_name).
      verbose: 0, 1 or 2 (--verbose).
      overwrite: start the project afresh (--overwrite).

    Raises:
      kd_keras.data.DataError: the dataset cannot be loaded.
    """
    f = nas_flags
    data = cfg["data"].load()
    return search.StudentSearch(
        make_space(data.input_shape, data.num_classes),
        cfg["oracle"],
        data,
        cfg["train_config"],
        batch_size=cfg["data"].batch_size,
        augment=cfg["augment"],
        budget=cfg["budget"],
        teacher=_teacher_fn(data, project, verbose, cfg["data"].batch_size),
        kd=cfg["kd"],
        measure=cfg["measure"],
        directory=f.PROJECT_DIR.value,
        project_name=f.PROJECT_NAME.value,
        overwrite=overwrite,
        verbose=2 if verbose == 2 else 0,
    )


# What a rerun does after Ctrl-C or a full disk (kd_keras.console.exit_on_interrupt,
# exit_on_full_disk).
RESUMES = (
    "finished trials are kept and the trial in progress is run again; rerun the same "
    "command to go on."
)
FINAL_RESUMES = (
    "the search is finished; the final step keeps the students it measured and resumes "
    "the one in training from its last finished epoch; rerun the same command to go on."
)


def main(argv):
    """Runs (or resumes) the search the flags describe and writes its report."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    f = nas_flags
    role = distribute.distributed_role()
    if role == "worker" and f.OVERWRITE.value:
        sys.exit(
            "Invalid flag: --overwrite would delete the chief's project; pass it to the chief only."
        )
    verbose = int(f.VERBOSE.value)
    project = os.path.join(f.PROJECT_DIR.value, f.PROJECT_NAME.value)
    try:  # Everything that can be invalid is checked before any data or training.
        cfg = configure()
    except ValueError as e:
        sys.exit(f"Invalid configuration: {e}")
    with console.exit_on_full_disk(RESUMES):  # The final step says its own resume text.
        console.setup(project, verbose=f.CONSOLE.show_logs.value)
        for line in cfg["data_lines"]:
            console.progress(line)

        try:
            tuner = make_search(cfg, project, verbose, overwrite=f.OVERWRITE.value)
        except data_lib.DataError as e:
            sys.exit(f"Cannot load the dataset: {e}")
        except search.OtherDataError as e:
            sys.exit(f"Cannot resume the search: {e}")
        if role != "worker":
            if f.SAMPLE_WITHIN_BUDGET.value:
                tuner.sample_within_budget()
            runs.write_text(os.path.join(project, "flags.txt"), FLAGS.flags_into_string())
            try:
                tuner.get_teacher()  # Before serving or searching: workers then only load it.
            except ValueError as e:
                sys.exit(f"Invalid teacher: {e}")
            remaining = tuner.remaining_trials
            print(
                f"Search ({role}) in {project}: "
                + (f"{remaining} new trials to go." if remaining is not None else "Hyperband.")
            )
        with console.exit_on_interrupt(RESUMES):
            tuner.search(verbose=min(verbose, 1))
        if getattr(tuner.oracle, "rejected", 0):
            print(
                f"Sampling within the budget: {tuner.oracle.rejected} of {tuner.oracle.draws} "
                "random draws missed it and were drawn again (never trained)."
            )
        if role == "worker":
            print(f"Worker {os.environ.get('KERASTUNER_TUNER_ID')}: no trials left.")
            return
        outputs = search_report.write_outputs(tuner)
        print()
        print(search_report.summary_text(outputs, f.TOP.value))
        print(
            f"\nTrials table: {outputs['paths']['trials.csv']}\n"
            f"Plot: {outputs['paths']['accuracy_vs_latency.png']}"
        )
        if f.FINAL_EPOCHS.value:
            with (
                console.exit_on_interrupt(FINAL_RESUMES),
                console.exit_on_full_disk(FINAL_RESUMES),
            ):
                result = final.run_final(
                    tuner,
                    outputs["rows"],
                    f.FINAL_EPOCHS.value,
                    top=f.FINAL_TOP.value,
                    hand=f.FINAL_HAND.value,
                    latency_runs=f.EXPORT.latency_runs.value,
                    latency_warmup=f.EXPORT.latency_warmup.value,
                    timings=f.FINAL_TIMINGS.value,
                    report=print,
                    slim_epochs=f.FINAL_SLIM_EPOCHS.value,
                    slim_criterion=f.FINAL_SLIM_CRITERION.value,
                )
            print("\nFinal step (full budget, int8):\n")
            print(open(result["paths"]["final.md"]).read())
            paths = result["paths"]
            print(f"Final table: {paths['final.md']}\nPlot: {paths['final_fronts.png']}")
            if final.BEST_MODEL in paths:
                print(f"Best student of the final step: {paths[final.BEST_MODEL]}")
        if not any(row.get("feasible") for row in outputs["rows"]):
            sys.exit(
                "No trial met the budget (--max_latency_us, --max_bytes, --max_params, "
                "--max_arena_bytes): relax the budget or widen the search space."
            )


if __name__ == "__main__":
    logging.set_verbosity(logging.WARNING)
    app.run(main, flags_parser=parse_flags)
