"""Entry point: ``python -m kd_keras.main --flagfile=kd_keras/configs/NAME.flags``.

Trains (or reuses) the teacher(s), trains the student without and with
distillation, evaluates everything on the test split and writes
``results.json``, ``results.md``, the models, TensorBoard logs and the
resolved flags (``flags.txt``) into ``--workdir``.
"""

import os
import sys

from absl import app, flags, logging

from kd_keras import console, pipeline, report, runs
from kd_keras import flags as kd_flags
from kd_keras.study import runner

FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    console.setup(FLAGS.workdir, verbose=FLAGS.show_logs)
    study = kd_flags.mode() == "study"
    try:  # Invalid combinations and missing data fail here, before any training.
        config = kd_flags.pipeline_config()
        if study:
            study_cfg = kd_flags.study_config(config)
            runner.validate(study_cfg)
        else:
            prepared = pipeline.prepare(config)
    except ValueError as e:
        sys.exit(f"Invalid configuration: {e}")
    os.makedirs(config.workdir, exist_ok=True)
    runs.write_text(os.path.join(config.workdir, "flags.txt"), FLAGS.flags_into_string())
    if study:
        runner.run(study_cfg)
        print(f"\nStudy report written to {os.path.join(config.workdir, 'report.md')}")
        return
    module_flags = {f.name: f.value for f in FLAGS.get_key_flags_for_module(kd_flags)}
    results = pipeline.run(config, flags_used=module_flags, prepared=prepared)
    print()
    print(report.markdown_table(report.flatten(results["models"])))
    print(f"\nResults written to {os.path.join(config.workdir, 'results.md')}")


if __name__ == "__main__":
    logging.set_verbosity(logging.WARNING)
    app.run(main)
