"""Entry point: ``python -m kd_keras.main --flagfile=kd_keras/configs/NAME.flags``.

Trains (or reuses) the teacher(s), trains the student without and with
distillation, evaluates everything on the test split and writes
``results.json``, ``results.md``, the models, TensorBoard logs and the
resolved flags (``flags.txt``) into ``--workdir``.

Every invalid flag or combination ends the program with one line naming the
flag, the value and what is allowed, before any data is loaded or model
trained. One process at a time may use a workdir; under
``--distribution=multi_worker`` that is the chief, and every other worker
works in a private copy of the workdir that it deletes at the end (see
``kd_keras.distribute``).
"""

import dataclasses
import json
import os
import sys

from absl import app, flags, logging

from kd_keras import console, distribute, flag_groups, runs
from kd_keras import flags as kd_flags
from kd_keras.app import pipeline, report
from kd_keras.app.study import grid, runner

FLAGS = flags.FLAGS


# absl's flag parsing, an invalid flag reported in one line.
parse_flags = flag_groups.parse_flags


def check_workdir(workdir):
    """Raises ValueError when `workdir` cannot hold the results."""
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ValueError(f"--workdir={workdir} is a file; it must be a directory.")
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as e:
        raise ValueError(f"--workdir={workdir} cannot be created: {e.strerror}.") from None
    if not os.access(workdir, os.W_OK | os.X_OK):
        raise ValueError(f"--workdir={workdir} is not writable.")


def configure():
    """The run's configuration from the flags, validated without data.

    Returns:
      (PipelineConfig, StudyConfig or None, the pipeline's variants or None).

    Raises:
      ValueError: naming the flag, the value and what is allowed.
    """
    config, scaled = kd_flags.resolved_pipeline_config()
    for line in scaled:
        console.progress(line)
    if kd_flags.mode() == "study":
        study_cfg, todo = kd_flags.study_config(config), None
        runner.validate(study_cfg)
    else:
        study_cfg, todo = None, pipeline.validate(config)
    check_workdir(config.workdir)
    return config, study_cfg, todo


def study_job(study_cfg, environ=None):
    """The name of the distributed study job this process belongs to, or None.

    Processes of one keras-tuner study (same flags, same oracle address)
    share the workdir; any other process is refused (``runs.WorkdirLock``).
    """
    env = os.environ if environ is None else environ
    if study_cfg is None or "KERASTUNER_ORACLE_IP" not in env:
        return None
    spec = {
        "study": {k: v for k, v in dataclasses.asdict(study_cfg).items() if k != "pipeline"},
        "pipeline": dict(runs.spec_of(study_cfg.pipeline), verbose=None),
    }
    address = f"{env['KERASTUNER_ORACLE_IP']}:{env.get('KERASTUNER_ORACLE_PORT', '')}"
    return f"study {runs.config_hash(spec)} served at {address}"


def run(config, study_cfg, todo, strategy, multi_worker=False):
    """Runs the study, or the pipeline and prints its tables.

    Args:
      config, study_cfg, todo: what :func:`configure` returned.
      strategy: the ``tf.distribute`` strategy everything is built and trained in.
      multi_worker: this process is one worker of several; it prints its
        models' weights digests (equal on every worker).
    """
    runs.write_text(os.path.join(config.workdir, "flags.txt"), FLAGS.flags_into_string())
    if study_cfg is not None:
        with strategy.scope():
            results = runner.run(study_cfg)
        if results is None:
            print(
                f"\nWorker {os.environ.get('KERASTUNER_TUNER_ID')}: no study runs left; "
                "the chief writes the report."
            )
        else:
            print(f"\nStudy report written to {os.path.join(config.workdir, 'report.md')}")
        return
    module_flags = {
        f.name: f.value
        for module in (kd_flags, flag_groups)
        for f in FLAGS.get_key_flags_for_module(module)
    }
    results = pipeline.run(
        config,
        flags_used=module_flags,
        prepared=pipeline.prepare(config, todo),
        strategy=strategy,
    )
    print()
    print(report.markdown_table(report.flatten(results["models"])))
    gains = report.kd_gains(results["models"])
    if gains:
        print()
        print(report.gains_markdown(gains))
    if multi_worker:  # Equal on every worker, or they did not train in sync.
        digests = {row["name"]: row["weights_digest"] for row in results["models"]}
        print(f"\nWeights digests: {json.dumps(digests, sort_keys=True)}")
    if not multi_worker or distribute.is_chief():
        print(f"\nResults written to {os.path.join(config.workdir, 'results.md')}")
    else:
        kind, index = distribute.task()
        print(f"\n{kind} {index} done; the chief wrote the results.")


def in_workdir(config, study_cfg, workdir):
    """`config` and `study_cfg` writing into `workdir` instead."""
    config = dataclasses.replace(config, workdir=workdir)
    if study_cfg is not None:
        study_cfg = dataclasses.replace(study_cfg, pipeline=config)
    return config, study_cfg


# What a rerun does after Ctrl-C or a full disk (kd_keras.console.exit_on_interrupt,
# exit_on_full_disk).
RESUMES = (
    "finished runs are kept and the run in progress resumes from its last finished "
    "epoch; rerun the same command to go on."
)


def main(argv):
    """Runs the pipeline or the study the flags describe."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:  # Invalid flags and combinations fail here, before any data or training.
        # A multi-worker strategy must exist before any other TensorFlow operation.
        name = kd_flags.DISTRIBUTION.distribution.value
        strategy = distribute.make_strategy(
            name, timeout_s=kd_flags.DISTRIBUTION.distribution_timeout.value
        )
        multi_worker = name == "multi_worker"
        config, study_cfg, todo = configure()
    except ValueError as e:
        sys.exit(f"Invalid configuration: {e}")
    for line in pipeline.pairing_warnings(config, study=study_cfg is not None):
        print(f"Warning: {line}", file=sys.stderr)
    with (
        console.exit_on_interrupt(RESUMES),
        console.exit_on_full_disk(RESUMES),
        distribute.exit_on_lost_peer(RESUMES, active=multi_worker),
    ):
        try:
            if multi_worker and not distribute.is_chief():
                # The chief holds the workdir's lock; this worker writes to its own copy.
                with distribute.worker_workdir(config.workdir) as workdir:
                    config, study_cfg = in_workdir(config, study_cfg, workdir)
                    console.setup(workdir, verbose=kd_flags.CONSOLE.show_logs.value)
                    run(config, study_cfg, todo, strategy, multi_worker)
                return
            with runs.WorkdirLock(config.workdir, group=study_job(study_cfg)):
                console.setup(config.workdir, verbose=kd_flags.CONSOLE.show_logs.value)
                run(config, study_cfg, todo, strategy, multi_worker)
                if multi_worker:  # Left by workers killed in an earlier attempt.
                    distribute.remove_worker_dirs(config.workdir)
        except (runs.WorkdirLockedError, grid.TrialsFailedError) as e:
            sys.exit(str(e))
        except ValueError as e:  # Data that is missing or not what was asked for.
            sys.exit(f"Error: {e}")


if __name__ == "__main__":
    logging.set_verbosity(logging.WARNING)
    app.run(main, flags_parser=parse_flags)
